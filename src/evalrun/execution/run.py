"""A run: make every planned call of a project (or read it back), journaled as it finishes.

``run`` opens (or takes) the run folder, writes the manifest, reads back what a resumed
folder already holds, answers what the response cache can, and makes the rest through an
``Executor``: worker processes when the suite asks for them and nothing needs one process,
else this process. The ``--max-cost`` budget admits each call (``execution.budget``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from evalrun.errors import CouldNotMeasureError, MissingExtraError
from evalrun.execution.budget import Budget
from evalrun.execution.cache import ResponseCache, default_cache_path
from evalrun.execution.executor import Executor, InProcessExecutor, PoolExecutor
from evalrun.execution.folder import RunFolder, open_run_folder
from evalrun.execution.manifest import created_of, write_manifest
from evalrun.execution.options import LogHook, RunOptions
from evalrun.execution.plan import plan_calls
from evalrun.execution.runner import AdmitHook, PlannedCall, ProgressHook, RetryPolicy
from evalrun.execution.store import JOURNAL, Journal, clear_run, inspect_folder, read_journals
from evalrun.project.config import SuiteConfig, project_root
from evalrun.project.loader import Project
from evalrun.project.preflight import check_model_strings
from evalrun.providers.registry import ModelRouter, spec_for
from evalrun.records import SIDES, CallResult

__all__ = ["RunOutcome", "check_environment", "make_executor", "retry_policy", "run"]

WARM_IMPORTS = ("evalrun.analysis.compare", "scipy.special", "evalrun.analysis.gate", "evalrun.checks.scoring",
                "evalrun.report.html", "jinja2")
"""What this process loads while the calls are made (the comparison and the report)."""
_WARM_ENV = "EVALRUN_WARM_IMPORTS"  # "0": load them when first needed (for measuring the overlap)


@dataclass
class RunOutcome:
    """Results of the calls of one run (journaled as they finished)."""

    run_dir: Path
    results: list[CallResult]
    created: str
    reused: int = 0


def check_environment(project: Project) -> None:
    """Fail fast (could-not-measure) on what the environment lacks: keys, a provider's extra."""
    for side in SIDES:
        v = project.variant(side)
        v.api_key()  # raises when the named variable is unset
        v.router_model_list()  # and for every router deployment
        missing = spec_for(v.config.model).available()
        if missing:
            raise MissingExtraError(f"{v.path}: model {v.config.model} {missing}")
    judges = sorted({(cj.judge.model, cj.judge.api_key_env) for c in project.cases for cj in c.judges
                     if cj.judge is not None}, key=lambda x: (x[0], x[1] or ""))
    for model, env in judges:  # the judge calls come after the variants': fail before either
        if env is not None and not os.environ.get(env):
            raise CouldNotMeasureError(f"{project.suite.path}: field judge.api_key_env: environment variable {env} "
                                       "is not set")
        missing = spec_for(model).available()
        if missing:
            raise MissingExtraError(f"{project.suite.path}: judge model {model} {missing}")


def retry_policy(cfg: SuiteConfig) -> RetryPolicy:
    """The suite's retry settings."""
    return RetryPolicy(cfg.max_attempts, cfg.backoff.initial_s, cfg.backoff.max_s, cfg.backoff.multiplier)


def _needs_one_process(project: Project, options: RunOptions) -> bool:
    """A given provider, a budget, replay or a provider that needs this process keep the calls here."""
    pinned = any(spec_for(project.variant(side).config.model).this_process_only for side in SIDES)
    return options.provider is not None or options.max_cost is not None or options.cache == "replay" or pinned


def make_executor(project: Project, options: RunOptions) -> Executor:
    """The executor of this run: worker processes (already starting) or this process.

    Workers: ``options.workers``, else the suite's ``workers``, else chosen from the calls
    to make and the cores (``execution.workers.auto_workers``).
    """
    cfg = project.suite.config
    policy = retry_policy(cfg)
    if not _needs_one_process(project, options):
        from evalrun.execution.workers import auto_workers, litellm_sides

        slow_sides = litellm_sides(project)
        n = options.workers if options.workers is not None else cfg.workers
        if n is None:
            n = auto_workers(len(project.cases) * cfg.samples * len(SIDES), slow_sides / len(SIDES))
        if n > 1:
            from evalrun.execution.pool import (
                DEFAULT_PRELOAD,
                DIRECT_PRELOAD,
                WorkerPool,
                warm_imports,
            )

            # The class is the factory: pickled by reference; each worker builds its providers.
            # Workers whose calls all take the direct path never import litellm.
            pool = WorkerPool(n, ModelRouter, preload=DEFAULT_PRELOAD if slow_sides else DIRECT_PRELOAD)
            warm_imports(WARM_IMPORTS)
            return PoolExecutor(pool, concurrency=cfg.concurrency, policy=policy, seed=cfg.seed)
    # A router builds each model's provider when the executor first runs (never for a run the
    # journal and the cache answer: replay imports no litellm).
    provider = options.provider if options.provider is not None else ModelRouter()
    if os.environ.get(_WARM_ENV) != "0":
        from evalrun.execution.pool import warm_imports

        # The calls mostly wait on the network: load the comparison's libraries meanwhile.
        warm_imports(WARM_IMPORTS)
    return InProcessExecutor(provider, concurrency=cfg.concurrency, policy=policy, seed=cfg.seed)


def run(project: Project, run_dir: str | Path | RunFolder | None = None, options: RunOptions | None = None) -> RunOutcome:
    """Make every planned call (skipping those already in the journal when resuming).

    ``run_dir``: a path (opened with ``open_run_folder``: locked, and resumed, started over
    or refused as described there) or a ``RunFolder`` already opened by the caller. A folder
    holding the finished run of these inputs is read back, not run again.
    """
    opts = options or RunOptions()
    if opts.cache != "replay":
        if opts.provider is None:
            check_model_strings(project)
        check_environment(project)
    folder = run_dir if isinstance(run_dir, RunFolder) else open_run_folder(
        project, run_dir, resume=opts.resume, fresh=opts.cache == "refresh")
    try:
        if folder.mode == "finished":
            wanted = {p.identity for p in plan_calls(project, with_keys=False)}
            kept = [r for r in read_journals(folder.path) if r.identity in wanted]
            return RunOutcome(folder.path, kept, created_of(folder.path), reused=len(kept))
        return _run(project, folder, opts)
    finally:
        if folder is not run_dir:
            folder.close()


def _reusable(result: CallResult) -> bool:
    """Whether a journaled call stands on resume: answers and content-policy refusals do;
    other errors (rate limits, outages, a wrong key since fixed) are made again."""
    return result.ok or result.error_kind == "content_policy"


def _run(project: Project, folder: RunFolder, opts: RunOptions) -> RunOutcome:
    rd = folder.path
    executor = make_executor(project, opts)  # workers start first: their imports overlap with what follows
    try:
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
        plan = plan_calls(project, with_keys=opts.cache != "replay")
        todo = [p for p in plan if p.identity not in done]
        with _open_cache(project, opts) as store:
            hits, todo = _answer_from_cache(store, todo, opts)
            fresh = _make_calls(project, executor, rd, todo, hits, done, opts, store)
        return RunOutcome(rd, _collect(plan, done, hits, fresh), created, reused=len(done))
    finally:
        executor.close()


def _make_calls(project: Project, executor: Executor, rd: Path, todo: list[PlannedCall], hits: list[CallResult],
                done: dict[str, CallResult], opts: RunOptions, store: ResponseCache | None) -> list[CallResult]:
    """Journal the cache hits, then make the remaining calls (budgeted, cached as they finish)."""
    journal_hits(rd, hits)
    progress = opts.progress
    if progress is not None:
        for hit in hits:
            progress(hit)
    if not todo:
        return []
    budget = None
    if opts.max_cost is not None:
        already = sum(r.cost_usd or 0.0 for r in done.values() if not r.cached)
        budget = Budget(opts.max_cost, todo, project, already=already)
        progress = _both(budget.finished, progress)
    fresh = run_caching(executor, todo, rd, store, opts, on_result=progress,
                        admit=budget.admit if budget is not None else None)
    if budget is not None and budget.skipped:
        raise CouldNotMeasureError(
            f"budget reached: spent ${budget.spent:.4f} of --max-cost ${opts.max_cost:.4f}; {budget.skipped} calls "
            f"not made. Finished calls are saved in {rd}; continue with --resume {rd} and a larger --max-cost"
        )
    return fresh


def journal_hits(directory: Path, hits: Sequence[CallResult]) -> None:
    """Write the cache's answers into ``directory``'s journal before any call is made."""
    journal = Journal(directory / JOURNAL)
    try:
        journal.append_many(hits)
    finally:
        journal.close()


def run_caching(executor: Executor, todo: Sequence[PlannedCall], directory: Path, store: ResponseCache | None,
                opts: RunOptions, *, on_result: ProgressHook | None, admit: AdmitHook | None) -> list[CallResult]:
    """``executor.run`` with fresh answers stored in the response cache as they finish (when
    the cache mode writes), the last batch flushed even when the run stops."""
    writer = _CacheWriter(store) if store is not None and opts.cache in ("use", "refresh") else None
    try:
        return executor.run(todo, directory, on_result=on_result, on_batch=writer.add if writer is not None else None,
                            admit=admit)
    finally:
        if writer is not None:
            writer.flush()


def _both(first: ProgressHook, then: ProgressHook | None) -> ProgressHook:
    def hook(result: CallResult) -> None:
        first(result)
        if then is not None:
            then(result)

    return hook


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


def _answer_from_cache(store: ResponseCache | None, todo: list[PlannedCall],
                       opts: RunOptions) -> tuple[list[CallResult], list[PlannedCall]]:
    """Answers the cache holds for ``todo`` (each planned call gets its own copy), and the rest.

    Two planned calls may make the same request (two cases rendering the same prompt, or
    both sides sending the same one): each gets its own result object, labelled as itself.
    """
    if store is None or opts.cache not in ("use", "replay"):
        return [], todo
    found = store.get_many([p.key for p in todo])
    if store.unreadable and opts.log is not None:
        _warn_unreadable(store, opts.log)
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
    if opts.cache == "replay" and remaining:
        names = ", ".join(f"{p.case_id} ({p.side})" for p in remaining[:5])
        more = f" and {len(remaining) - 5} more" if len(remaining) > 5 else ""
        raise CouldNotMeasureError(f"replay: {len(remaining)} calls are not in the cache {store.path}: {names}{more}")
    return hits, remaining


def _warn_unreadable(store: ResponseCache, log: LogHook) -> None:
    log(f"evalrun: warning: {store.unreadable} cached answer(s) in {store.path} could not be read "
        "(damaged or written by another version): those calls are made again")


def _collect(
    plan: Sequence[PlannedCall], done: dict[str, CallResult], hits: list[CallResult], fresh: list[CallResult]
) -> list[CallResult]:
    """A run's results: resumed ones still in the plan, cache hits, fresh calls."""
    wanted = {p.identity for p in plan}
    return [r for k, r in done.items() if k in wanted] + hits + fresh


class _NoCache:
    """``with`` target when the cache is off."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _open_cache(project: Project, opts: RunOptions) -> ResponseCache | _NoCache:
    if opts.cache == "off":
        return _NoCache()
    target = (Path(opts.cache_dir) / "responses.sqlite3" if opts.cache_dir is not None
              else default_cache_path(project_root(project.suite.path)))
    if opts.cache == "replay" and not target.exists():
        raise CouldNotMeasureError(f"replay: no response cache at {target}")
    return ResponseCache(target)
