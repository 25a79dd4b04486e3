"""Judge calls: the requests of a project's model-graded checks, made like variant calls.

After the variant calls of a run exist, every ``rubric`` check asks its judge about each
answered output (``samples`` times), every ``pairwise`` check asks about each (case,
sample) both sides answered, in both orders, and the calibration set (when the suite names
one) is judged with the suite's judge. The calls go through the same ``Executor`` as the
variant calls — harness-owned retries, rate-limit backoff, circuit breaker, response cache,
a journal (``judge/journal.jsonl`` in the run folder) and resume — and are kept apart
from the variant calls everywhere (their tokens, cost and latency are reported separately).

An answer the judge parses badly is asked again (a fresh request: its sample salt moves)
up to ``MAX_ANSWER_RETRIES`` times; after that it is a judge error, never a verdict on the
judged output. Which answer counts is decided by :func:`final_answers`: the first usable
one in retry order, so a resumed or rescored run picks the same answer.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from evalrun.errors import CouldNotMeasureError
from evalrun.execution.options import RunOptions
from evalrun.execution.runner import PlannedCall
from evalrun.execution.store import JUDGE_DIR, read_journals, request_key
from evalrun.judging.answers import (
    ORDERS,
    JudgeError,
    Order,
    PairwiseVerdict,
    RubricVerdict,
    answer_schema,
    parse_pairwise_answer,
    parse_rubric_answer,
    response_format,
)
from evalrun.judging.prompting import render_pairwise_both, render_rubric
from evalrun.judging.spec import PairwiseCheck, ResolvedJudge, RubricCheck, SimilarCheck
from evalrun.project.judges import JudgeSetup
from evalrun.project.loader import Project
from evalrun.records import SIDES, CallResult, Side
from evalrun.secrets import register_secret

__all__ = [
    "CALIBRATION",
    "MAX_ANSWER_RETRIES",
    "JudgeAnswer",
    "JudgeCalls",
    "JudgeTask",
    "check_judge_budget",
    "final_answers",
    "judge_tasks",
    "output_text",
    "read_judge_calls",
    "run_judges",
]

CALIBRATION = "calibration"
"""The check name of calibration calls (their ``case_id`` is the calibration item's id)."""

MAX_ANSWER_RETRIES = 2
"""How many times an unusable judge answer is asked again before it counts as a judge error."""

JUDGE_TIMEOUT_S = 60.0
"""Seconds one judge call may take."""

_RETRY_SALT = 1_000
"""Added to a judge call's sample salt per answer retry: a new request key, so neither the
cache nor the journal hands back the unusable answer."""

Parsed = RubricVerdict | PairwiseVerdict | list[float] | JudgeError


@dataclass(frozen=True)
class JudgeTask:
    """One judge call: which judgment it is (``slot``) and the planned call itself."""

    kind: Literal["rubric", "pairwise", "embedding"]
    case_id: str
    """The judged case, or the calibration item."""
    check: str
    """The check's display name (``rubric``, ``pairwise#2``), or ``CALIBRATION``."""
    side: Side | None
    """Rubric, embedding: the judged side (None for calibration items and a ``similar`` reference)."""
    sample: int
    """The variant sample judged (0 for calibration items)."""
    judge_sample: int
    order: Order | None
    """Pairwise: which output the judge saw as A."""
    retry: int
    planned: PlannedCall
    scale: int | None = None
    pass_threshold: int | None = None
    key_env: str | None = None
    """The judge's ``api_key_env`` (the key is read only when the call is made)."""

    @property
    def slot(self) -> tuple[str, str, str, str, int, int, str]:
        """The judgment this call answers (shared by its retries)."""
        return (self.kind, self.case_id, self.check, self.side or "", self.sample, self.judge_sample,
                self.order or "")


@dataclass(frozen=True)
class JudgeAnswer:
    """The answer that counts for one judgment, after answer retries."""

    task: JudgeTask
    result: CallResult | None
    """The call that gave the answer (None: never made, e.g. replay without it)."""
    parsed: Parsed
    calls: int
    """Judge calls made for this judgment (1 + answer retries)."""


@dataclass
class JudgeCalls:
    """Every judge call of a run (answer retries included) and its result by identity."""

    tasks: list[JudgeTask]
    results: dict[str, CallResult]

    def all_results(self) -> list[CallResult]:
        """The results of the calls made, in task order."""
        return [self.results[t.planned.identity] for t in self.tasks if t.planned.identity in self.results]


def output_text(result: CallResult) -> str:
    """What the judge is shown of an answer: its text, then any tool calls, one per line."""
    parts = [result.output] if result.output else []
    parts += [f"[tool call] {t.name}({t.arguments})" for t in result.tool_calls]
    return "\n".join(parts)


def _user_text(messages: Sequence[dict[str, Any]]) -> str:
    """The last user turn of a rendered conversation (what the judged model was asked)."""
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            return content if isinstance(content, str) else str(content)
    return ""


class _Planner:
    """Builds the planned calls of judge tasks (without keys: see ``_with_keys``)."""

    def planned(self, judge: ResolvedJudge, messages: list[dict[str, Any]], params: dict[str, Any], *,
                case_id: str, side: Side, sample: int, salt: int, meta: dict[str, Any]) -> PlannedCall:
        key = request_key(model=judge.model, api_base=judge.api_base, messages=messages, params=params, sample=salt)
        req = _request(judge, messages, params, api_key=None, meta=meta)
        return PlannedCall(case_id, side, sample, req, key)


def judge_key(env: str) -> str:
    """The judge's key from its environment variable (registered as a secret to scrub)."""
    value = os.environ.get(env)
    if not value:
        raise CouldNotMeasureError(f"judge: field api_key_env: environment variable {env} is not set")
    register_secret(value)
    return value


def _with_keys(tasks: Sequence[JudgeTask]) -> list[PlannedCall]:
    """The planned calls of ``tasks`` with their keys read (only calls about to be made need one)."""
    keys: dict[str, str] = {}
    out = []
    for t in tasks:
        if t.key_env is None:
            out.append(t.planned)
            continue
        if t.key_env not in keys:
            keys[t.key_env] = judge_key(t.key_env)
        out.append(dataclasses.replace(t.planned, request=dataclasses.replace(t.planned.request,
                                                                             api_key=keys[t.key_env])))
    return out


def _request(judge: ResolvedJudge, messages: list[dict[str, Any]], params: dict[str, Any], *,
             api_key: str | None, meta: dict[str, Any]) -> Any:
    from evalrun.providers.base import ProviderRequest

    return ProviderRequest(model=judge.model, messages=messages, params=params, api_base=judge.api_base,
                           api_key=api_key, timeout_s=JUDGE_TIMEOUT_S, metadata=meta)


def _params(judge: ResolvedJudge, kind: Literal["rubric", "pairwise"], scale: int | None) -> dict[str, Any]:
    # The answer schema is asked for as structured output: measured on local/smollm2 it
    # turns 40/40 prose answers into 0 judge errors (see the judge benchmarks).
    return {**judge.params, "response_format": response_format(answer_schema(kind, scale=scale))}


def judge_tasks(project: Project, results: Sequence[CallResult]) -> list[JudgeTask]:
    """Every first-try judge call of a project given its variant results (deterministic order)."""
    setup = project.judges
    if setup is None:
        return []
    planner = _Planner()
    by_slot: dict[tuple[str, str, int], CallResult] = {}
    for r in results:
        by_slot[(r.case_id, r.side, r.sample)] = r
    tasks: list[JudgeTask] = []
    for case in project.cases:
        if not case.judges:
            continue
        rendered = {side: project.renderers[side].render(case) for side in SIDES}
        for sample in range(project.suite.config.samples):
            answered: dict[Side, CallResult] = {}
            for side in SIDES:
                got_r = by_slot.get((case.id, side, sample))
                if got_r is not None and got_r.ok:
                    answered[side] = got_r
            for cj in case.judges:
                check = cj.check
                if isinstance(check, SimilarCheck):
                    for side, judged in sorted(answered.items()):
                        tasks.append(_embedding_task(planner, cj.judge, output_text(judged), case_id=case.id,
                                                     check=cj.name, side=side, sample=sample))
                    if sample == 0:  # the reference: one embedding per check
                        tasks.append(_embedding_task(planner, cj.judge, check.reference, case_id=case.id,
                                                     check=cj.name, side=None, sample=0))
                elif isinstance(check, RubricCheck):
                    params = _params(cj.judge, "rubric", check.scale)
                    for side, judged in sorted(answered.items()):
                        msgs = render_rubric(setup.rubric_template, criteria=check.criteria or "",
                                             input=_user_text(rendered[side]), output=output_text(judged),
                                             reference=check.reference, scale=check.scale,
                                             pass_threshold=check.pass_threshold)
                        for j in range(cj.judge.samples):
                            meta = {"case_id": case.id, "side": side, "sample": sample, "kind": case.kind,
                                    "judge": "rubric", "check": cj.name}
                            planned = planner.planned(cj.judge, list(msgs), params, case_id=case.id, side=side,
                                                      sample=sample, salt=j, meta=meta)
                            tasks.append(JudgeTask("rubric", case.id, cj.name, side, sample, j, None, 0, planned,
                                                   check.scale, check.pass_threshold, cj.judge.api_key_env))
                elif isinstance(check, PairwiseCheck) and len(answered) == 2:
                    params = _params(cj.judge, "pairwise", None)
                    both = render_pairwise_both(setup.pairwise_template, criteria=check.criteria or "",
                                                input=_user_text(rendered["baseline"]),
                                                baseline=output_text(answered["baseline"]),
                                                candidate=output_text(answered["candidate"]),
                                                reference=check.reference)
                    for order in ORDERS:
                        for j in range(cj.judge.samples):
                            meta = {"case_id": case.id, "side": "candidate", "sample": sample, "kind": case.kind,
                                    "judge": "pairwise", "check": cj.name, "order": order}
                            planned = planner.planned(cj.judge, list(both[order]), params, case_id=case.id,
                                                      side="candidate", sample=sample, salt=j, meta=meta)
                            tasks.append(JudgeTask("pairwise", case.id, cj.name, None, sample, j, order, 0, planned,
                                                   key_env=cj.judge.api_key_env))
    tasks += _calibration_tasks(project, setup, planner)
    return tasks


def _embedding_task(planner: _Planner, judge: ResolvedJudge, text: str, *, case_id: str, check: str,
                    side: Side | None, sample: int) -> JudgeTask:
    """One embedding call of a ``similar`` check (``side`` None: the check's reference)."""
    params = {"embedding_input": text}  # what identifies the request (messages are empty)
    key = request_key(model=judge.model, api_base=judge.api_base, messages=[], params=params, sample=0)
    meta = {"case_id": case_id, "side": side or "reference", "sample": sample, "judge": "similar", "check": check}
    from evalrun.providers.base import ProviderRequest

    req = ProviderRequest(model=judge.model, messages=[], params={}, api_base=judge.api_base, api_key=None,
                          timeout_s=JUDGE_TIMEOUT_S, metadata=meta, embed_input=text)
    planned = PlannedCall(case_id, side or "baseline", sample, req, key)
    return JudgeTask("embedding", case_id, check, side, sample, 0, None, 0, planned, key_env=judge.api_key_env)


def _calibration_tasks(project: Project, setup: JudgeSetup, planner: _Planner) -> list[JudgeTask]:
    """The calibration set judged by the suite's judge (only the kinds the suite's checks use)."""
    if setup.calibration is None:
        return []
    kinds = {cj.kind for c in project.cases for cj in c.judges}
    judge = setup.suite_judge()
    tasks: list[JudgeTask] = []
    if "rubric" in kinds:
        params = _params(judge, "rubric", None)
        for item in setup.calibration.rubric:
            msgs = render_rubric(setup.rubric_template, criteria=item.criteria, input=item.input, output=item.output)
            for j in range(judge.samples):
                cid = f"{CALIBRATION}:{item.id}"
                meta = {"case_id": cid, "side": "baseline", "sample": 0, "judge": "rubric", "check": CALIBRATION}
                planned = planner.planned(judge, list(msgs), params, case_id=cid, side="baseline", sample=0, salt=j,
                                          meta=meta)
                tasks.append(JudgeTask("rubric", item.id, CALIBRATION, None, 0, j, None, 0, planned,
                                       key_env=judge.api_key_env))
    if "pairwise" in kinds:
        params = _params(judge, "pairwise", None)
        for pitem in setup.calibration.pairwise:
            # output_a plays the baseline (see judging.calibration.score_pairwise_calibration).
            both = render_pairwise_both(setup.pairwise_template, criteria=pitem.criteria, input=pitem.input,
                                        baseline=pitem.output_a, candidate=pitem.output_b)
            for order in ORDERS:
                for j in range(judge.samples):
                    cid = f"{CALIBRATION}:{pitem.id}"
                    meta = {"case_id": cid, "side": "candidate", "sample": 0, "judge": "pairwise",
                            "check": CALIBRATION, "order": order}
                    planned = planner.planned(judge, list(both[order]), params, case_id=cid, side="candidate",
                                              sample=0, salt=j, meta=meta)
                    tasks.append(JudgeTask("pairwise", pitem.id, CALIBRATION, None, 0, j, order, 0, planned,
                                           key_env=judge.api_key_env))
    return tasks


def retried(task: JudgeTask) -> JudgeTask:
    """The same judgment asked again: same request, a new key (see ``_RETRY_SALT``)."""
    retry = task.retry + 1
    req = task.planned.request
    salt = task.judge_sample + _RETRY_SALT * retry
    key = request_key(model=req.model, api_base=req.api_base, messages=req.messages, params=req.params, sample=salt)
    planned = dataclasses.replace(task.planned, key=key,
                                  request=dataclasses.replace(req, metadata={**req.metadata, "retry": retry}))
    return dataclasses.replace(task, retry=retry, planned=planned)


def parse(task: JudgeTask, result: CallResult) -> Parsed:
    """The judge's answer to ``task`` read (a failed call is a ``call_failed`` judge error)."""
    if not result.ok:
        return JudgeError("call_failed", f"judge call failed: {result.error_kind}: {result.error_message or ''}"[:300])
    if task.kind == "embedding":
        return _vector(result.output)
    if task.kind == "rubric":
        return parse_rubric_answer(result.output, scale=task.scale, pass_threshold=task.pass_threshold,
                                   finish_reason=result.finish_reason)
    assert task.order is not None
    return parse_pairwise_answer(result.output, order=task.order, finish_reason=result.finish_reason)


def _vector(text: str | None) -> list[float] | JudgeError:
    try:
        values = json.loads(text or "")
        return [float(x) for x in values]
    except (ValueError, TypeError):
        return JudgeError("invalid", "the embedding answer is not a list of numbers")


def final_answers(calls: JudgeCalls) -> dict[tuple[str, str, str, str, int, int, str], JudgeAnswer]:
    """Per judgment: its first usable answer in retry order, else its last error."""
    by_slot: dict[tuple[str, str, str, str, int, int, str], list[JudgeTask]] = {}
    for t in calls.tasks:
        by_slot.setdefault(t.slot, []).append(t)
    out: dict[tuple[str, str, str, str, int, int, str], JudgeAnswer] = {}
    for slot, tasks in by_slot.items():
        tasks.sort(key=lambda t: t.retry)
        answer: JudgeAnswer | None = None
        made = 0
        for t in tasks:
            r = calls.results.get(t.planned.identity)
            if r is None:
                continue
            made += 1
            parsed = parse(t, r)
            answer = JudgeAnswer(t, r, parsed, made)
            if not isinstance(parsed, JudgeError):
                break
        out[slot] = answer or JudgeAnswer(tasks[0], None, JudgeError("call_failed", "judge call not made"), 0)
    return out


def _needs_retry(task: JudgeTask, result: CallResult) -> bool:
    # A failed call was already retried by the runner; only a bad answer is asked again.
    # Embeddings are not asked again: the same text gives the same vector.
    return (result.ok and task.kind != "embedding" and task.retry < MAX_ANSWER_RETRIES
            and isinstance(parse(task, result), JudgeError))


def run_judges(project: Project, run_dir: Path, results: Sequence[CallResult], options: RunOptions | None = None,
               *, reuse: bool = True) -> JudgeCalls:
    """Make every judge call of a run (after its variant calls), journaled in ``run_dir/judge``.

    Calls already journaled there with an answer are re-used (``reuse``: a resumed compare,
    a rescore); identical requests are answered by the response cache. A judgment whose
    answer is unusable is asked again, up to ``MAX_ANSWER_RETRIES`` times.
    """
    from evalrun.execution.run import _answer_from_cache, _open_cache

    given = options or RunOptions()
    # The run's progress counts variant calls; judge calls are announced on the log instead.
    opts = dataclasses.replace(given, max_cost=None, workers=1, progress=None)
    tasks = judge_tasks(project, results)
    if not tasks:
        return JudgeCalls([], {})
    jdir = run_dir / JUDGE_DIR
    jdir.mkdir(exist_ok=True)
    done: dict[str, CallResult] = {}
    if reuse:
        for r in read_journals(jdir):
            if r.ok:
                done[r.identity] = r
    made: list[JudgeTask] = []
    got: dict[str, CallResult] = {}
    todo_tasks = tasks
    round_no = 0
    while todo_tasks:
        round_no += 1
        made += todo_tasks
        for t in todo_tasks:
            if t.planned.identity in done:
                got[t.planned.identity] = done[t.planned.identity]
        # One call per identity (a similar check's reference may equal an output).
        pending = list({t.planned.identity: t for t in todo_tasks if t.planned.identity not in got}.values())
        todo = _with_keys(pending) if opts.cache != "replay" else [t.planned for t in pending]
        if todo and opts.log is not None:
            what = "judge calls" if round_no == 1 else "judge calls (unusable answers asked again)"
            opts.log(f"evalrun: {len(todo)} {what}; {len(todo_tasks) - len(pending)} re-used from {jdir}")
        if todo:
            with _open_cache(project, opts) as store:
                hits, rest = _answer_from_cache(store, todo, opts)
                fresh = _make_judge_calls(project, jdir, rest, hits, opts, store, budget_cap=given.max_cost,
                                          already=_spent(results, got))
            for r in [*hits, *fresh]:
                got[r.identity] = r
        todo_tasks = [retried(t) for t in todo_tasks
                      if (last := got.get(t.planned.identity)) is not None and _needs_retry(t, last)]
    return JudgeCalls(made, got)


def check_judge_budget(project: Project) -> None:
    """Under ``--max-cost``: refuse, before any call, judges whose calls cannot be bounded."""
    from evalrun.execution.costs import judge_prices

    for model, max_tokens in sorted({(cj.judge.model, cj.judge.params.get("max_tokens", 0) if cj.kind != "similar"
                                      else 0) for c in project.cases for cj in c.judges}, key=str):
        if judge_prices(model)[0] is None:
            raise CouldNotMeasureError(f"--max-cost cannot be enforced: the judge model {model} has no known price "
                                       "(a judge is priced from litellm's price map)")
        if max_tokens is None:
            raise CouldNotMeasureError("--max-cost needs judge.params.max_tokens to bound each judge call's cost")


def _spent(results: Sequence[CallResult], judged: dict[str, CallResult]) -> float:
    """What the run's calls made so far cost (cache hits cost nothing now)."""
    return sum(r.cost_usd or 0.0 for r in [*results, *judged.values()] if not r.cached)


def _make_judge_calls(project: Project, jdir: Path, todo: list[PlannedCall], hits: list[CallResult],
                      opts: RunOptions, store: Any, *, budget_cap: float | None, already: float) -> list[CallResult]:
    """Journal the cache hits, then make the rest in this process (budgeted under ``--max-cost``)."""
    from evalrun.execution.budget import JudgeBudget
    from evalrun.execution.executor import InProcessExecutor
    from evalrun.execution.run import journal_hits, retry_policy, run_caching
    from evalrun.providers.registry import ModelRouter

    journal_hits(jdir, hits)
    if not todo:
        return []
    budget = JudgeBudget(budget_cap, todo, already) if budget_cap is not None else None
    cfg = project.suite.config
    provider = opts.provider if opts.provider is not None else ModelRouter()
    executor = InProcessExecutor(provider, concurrency=cfg.concurrency, policy=retry_policy(cfg), seed=cfg.seed)
    try:
        fresh = run_caching(executor, todo, jdir, store, opts, on_result=budget.finished if budget is not None else None,
                            admit=budget.admit if budget is not None else None)
    finally:
        executor.close()
    if budget is not None and budget.skipped:
        raise CouldNotMeasureError(
            f"budget reached during the judge calls: spent ${budget.spent:.4f} of --max-cost ${budget_cap:.4f}; "
            f"{budget.skipped} judge calls not made. Finished calls are saved in {jdir.parent}; continue with "
            f"--resume {jdir.parent} and a larger --max-cost")
    return fresh


def read_judge_calls(project: Project, run_dirs: Sequence[Path], results: Sequence[CallResult]) -> JudgeCalls:
    """The judge calls of runs, read back from their judge journals (no call made): what
    ``merge`` combines from shard folders. An answer wins over an error for the same call."""
    tasks = judge_tasks(project, results)
    stored: dict[str, CallResult] = {}
    for rd in run_dirs:
        if (rd / JUDGE_DIR).is_dir():
            for r in read_journals(rd / JUDGE_DIR):
                if r.identity not in stored or (r.ok and not stored[r.identity].ok):
                    stored[r.identity] = r
    made: list[JudgeTask] = []
    level = tasks
    while level:
        made += level
        level = [retried(t) for t in level
                 if (row := stored.get(t.planned.identity)) is not None and _needs_retry(t, row)]
    return JudgeCalls(made, {t.planned.identity: stored[t.planned.identity] for t in made
                             if t.planned.identity in stored})
