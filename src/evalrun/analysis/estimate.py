"""Before any call: what a compare will cost and what its suite can decide (`evalrun estimate`).

Costs: prompt tokens counted for everything a request carries and a provider bills, completion
tokens bounded by ``max_tokens``, prices from the config, litellm's price map or a free
provider (``evalrun.execution.costs``). Power: per gate rule, whether an equally good candidate
can PASS with this suite and the smallest regression a FAIL can catch
(``evalrun.analysis.suite_power``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evalrun.analysis.suite_power import SuitePower, suite_power
from evalrun.execution.costs import (
    CostEstimate,
    CostStatus,
    SideEstimate,
    cost_estimate,
    judge_prices,
)
from evalrun.execution.plan import plan_calls
from evalrun.project.loader import Project

__all__ = ["Estimate", "estimate"]


@dataclass(slots=True)
class Estimate(CostEstimate):
    """Cost bounds of both sides and the suite's power per rule."""

    power: SuitePower | None = None
    judge: SideEstimate | None = None
    """The judge calls (``rubric``, ``pairwise``, ``similar``, calibration), when the suite has any."""

    def judge_line(self) -> str | None:
        """The judge calls' bounds in one line (None without judge checks)."""
        j = self.judge
        if j is None:
            return None
        comp = "unbounded" if j.max_completion_tokens is None else f"<= {j.max_completion_tokens}"
        if j.cost_status == "unpriced":
            cost = "unpriced"
        elif j.cost_status == "local":
            cost = "local (free)"
        else:
            hi = "unbounded" if j.cost_max_usd is None else f"${j.cost_max_usd:.4f}"
            cost = f"${j.cost_min_usd or 0:.4f}..{hi}"
        return (f"judges: {j.calls} calls (up to 3x each when answers are unusable), about {j.prompt_tokens} prompt "
                f"tokens at most (outputs taken at max_tokens), completion {comp}, cost {cost}")

    def text(self) -> str:
        """The cost line, then one line per gate rule: can it PASS, what can it detect."""
        lines = [self.line()]
        judge = self.judge_line()
        if judge is not None:
            lines.append(judge)
        if self.power is not None:
            lines += self.power.lines()
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``evalrun estimate --json``)."""
        return {"sides": {k: v.to_dict() for k, v in self.sides.items()}, "total_min_usd": self.total_min(),
                "total_max_usd": self.total_max(),
                "power": self.power.to_dict() if self.power is not None else None,
                "judge": self.judge.to_dict() if self.judge is not None else None}


def estimate(project: Project) -> Estimate:
    """Costs of every planned call (no key read) and the suite's power."""
    costs = cost_estimate(project, plan_calls(project, with_keys=False))
    return Estimate(costs.sides, costs.per_call_max_usd, costs.costs, power=suite_power(project),
                    judge=judge_estimate(project))


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
            messages = req.messages or [{"role": "user", "content": req.embed_input or ""}]
            counted[t.planned.key] = count_prompt_tokens(req.model, messages, {})
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
