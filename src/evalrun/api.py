"""The library façade: everything the CLI does, as functions.

    import evalrun.api as ev
    project = ev.load_project("evals/baseline.yaml", "evals/candidate.yaml")   # validates all, no litellm
    outcome = ev.compare(project)                                               # runs, scores, gates, writes
    print(outcome.verdict_status, outcome.run_dir)

Stages are separate functions so scoring can be re-run from a stored journal without any
model call (``rescore``), and reports re-rendered from stored results. The work lives in
the stage packages (``project``, ``execution``, ``analysis``, ``report``) and ``pipeline``;
this module only gathers them and accepts run options as keywords.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict, Unpack

from evalrun import pipeline
from evalrun.analysis.error_digest import ErrorGroup
from evalrun.analysis.summary import (
    SUMMARY_FORMAT_VERSION,
    result_rows,
    score,
    sort_results,
    summarize,
)
from evalrun.execution.folder import (
    RunFolder,
    default_run_dir,
    is_unfinished_run_of,
    new_run_dir,
    open_run_folder,
)
from evalrun.execution.manifest import write_manifest
from evalrun.execution.options import CacheMode, LogHook, RunOptions
from evalrun.execution.plan import plan_calls
from evalrun.execution.rerun import failed_case_ids
from evalrun.execution.run import RunOutcome, check_environment
from evalrun.execution.run import run as _run
from evalrun.execution.runner import ProgressHook
from evalrun.pipeline import load_run, merge, note, rescore
from evalrun.project.loader import Project, load_project, shard_cases
from evalrun.project.preflight import Problem, check_model_strings, offline_problems
from evalrun.project.subset import CaseSelection
from evalrun.providers.base import Provider
from evalrun.report import rewrite_summary_md
from evalrun.report.markdown import check_report_url
from evalrun.report.outputs import CompareOutcome, stored_outcome, write_note, write_outputs

__all__ = [
    "SUMMARY_FORMAT_VERSION",
    "CacheMode",
    "CaseSelection",
    "CompareOutcome",
    "ErrorGroup",
    "LogHook",
    "Problem",
    "Project",
    "RunFolder",
    "RunKeywords",
    "RunOptions",
    "RunOutcome",
    "check_environment",
    "check_model_strings",
    "check_report_url",
    "compare",
    "compare_sequential",
    "default_run_dir",
    "error_digest",
    "failed_case_ids",
    "is_unfinished_run_of",
    "load_project",
    "load_run",
    "merge",
    "new_run_dir",
    "note",
    "offline_problems",
    "open_run_folder",
    "plan_calls",
    "rescore",
    "result_rows",
    "rewrite_summary_md",
    "run",
    "score",
    "shard_cases",
    "sort_results",
    "stored_outcome",
    "summarize",
    "write_manifest",
    "write_note",
    "write_outputs",
]


class RunKeywords(TypedDict, total=False):
    """``RunOptions`` fields as keywords (``api.compare(project, cache="off", workers=2)``);
    ``cache_path`` is ``RunOptions.cache_dir``."""

    provider: Provider | None
    progress: ProgressHook | None
    resume: bool
    max_cost: float | None
    cache: CacheMode
    cache_path: str | Path | None
    workers: int | None
    log: LogHook | None


def _options(options: RunOptions | None, keywords: RunKeywords) -> RunOptions:
    if options is not None:
        if keywords:
            raise TypeError(f"give options= or keywords, not both ({', '.join(sorted(keywords))})")
        return options
    fields = dict(keywords)
    cache_path = fields.pop("cache_path", None)
    return RunOptions(**fields, cache_dir=Path(cache_path) if cache_path is not None else None)  # type: ignore[arg-type]


def run(project: Project, *, run_dir: str | Path | RunFolder | None = None, options: RunOptions | None = None,
        **keywords: Unpack[RunKeywords]) -> RunOutcome:
    """Make every planned call (see ``evalrun.execution.run.run``); ``options`` or the keywords."""
    return _run(project, run_dir, _options(options, keywords))


def compare(project: Project, *, run_dir: str | Path | RunFolder | None = None, options: RunOptions | None = None,
            **keywords: Unpack[RunKeywords]) -> CompareOutcome:
    """Run both sides, then score, compare, gate and write the reports (``pipeline.compare``)."""
    return pipeline.compare(project, run_dir, _options(options, keywords))


def compare_sequential(project: Project, *, run_dir: str | Path | None = None, options: RunOptions | None = None,
                       look_every: int | None = None, **keywords: Unpack[RunKeywords]) -> CompareOutcome:
    """`compare --sequential` (``pipeline.compare_sequential``; calls are made in this process)."""
    return pipeline.compare_sequential(project, run_dir, _options(options, keywords), look_every=look_every)


def error_digest(run_dir: str | Path, *, top: int = 5) -> list[ErrorGroup]:
    """The failed calls of a run folder by error kind, each with a sample message."""
    from evalrun.analysis.error_digest import error_digest as digest
    from evalrun.execution.store import read_journals

    return digest(read_journals(Path(run_dir)), top=top)
