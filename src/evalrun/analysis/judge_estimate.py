"""Before any call: the judge calls' count, token and cost bounds (part of `evalrun estimate`)."""

from __future__ import annotations

from evalrun.execution.costs import CostStatus, SideEstimate, judge_prices
from evalrun.execution.costs import _count as count_tokens
from evalrun.project.loader import Project

__all__ = ["judge_estimate", "judge_lines"]


def judge_lines(j: SideEstimate | None) -> list[str]:
    """The judge calls' bounds as estimate lines (none without judge checks)."""
    if j is None:
        return []
    return [(f"judges: {j.calls} calls (up to 3x each when answers are unusable), about {j.prompt_tokens} prompt "
            f"tokens at most (outputs taken at max_tokens), completion {j.completion_text()}, cost {j.cost_text()}")]


def judge_estimate(project: Project) -> SideEstimate | None:
    """The judge calls' bounds before any call (None without judge checks).

    The judged outputs do not exist yet: each is taken at its variant's ``max_tokens``
    (one token per word of a placeholder), so prompt tokens are an upper estimate; calls
    count first answers only (an unusable answer is asked again up to twice more).
    """
    from evalrun.execution.judge_calls import judge_tasks
    from evalrun.providers.litellm.tokens import count_prompt_tokens
    from evalrun.records import SIDES, CallResult

    if not any(c.judges for c in project.cases):
        return None
    placeholders = []
    for case in project.cases:
        for sample in range(project.suite.config.samples):
            for side in SIDES:
                n = project.variant(side).config.params.max_tokens or 256
                placeholders.append(CallResult(case.id, side, sample, "-", output=" ".join(["word"] * n)))
    tasks = judge_tasks(project, placeholders)
    est = SideEstimate(calls=len(tasks), max_completion_tokens=0, cost_min_usd=0.0, cost_max_usd=0.0)
    statuses: set[CostStatus] = set()
    counted: dict[str, int] = {}
    for t in tasks:
        req = t.planned.request
        if t.planned.key not in counted:
            if req.embed_input is not None:
                messages = [{"role": "user", "content": req.embed_input}]
                counted[t.planned.key] = count_prompt_tokens(req.model, messages, {})
            else:  # the judge's own tokenizer when it has one (the embedded model: no litellm import)
                counted[t.planned.key] = count_tokens(req.model, t.planned)
        prompt = counted[t.planned.key]
        max_tokens = req.params.get("max_tokens") if t.kind != "embedding" else 0
        est.prompt_tokens += prompt
        if est.max_completion_tokens is not None:
            est.max_completion_tokens = None if max_tokens is None else est.max_completion_tokens + int(max_tokens)
        prices, status = judge_prices(req.model)
        statuses.add(status)
        if prices is None or est.cost_min_usd is None:
            est.cost_min_usd = est.cost_max_usd = None
            continue
        est.cost_min_usd += prompt * prices[0]
        if est.cost_max_usd is not None:
            est.cost_max_usd = None if max_tokens is None else est.cost_max_usd + prompt * prices[0] + int(
                max_tokens) * prices[1]
    est.cost_status = "unpriced" if "unpriced" in statuses else ("priced" if "priced" in statuses else "local")
    return est
