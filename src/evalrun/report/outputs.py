"""Every output file of a run folder, written from its results (and read back when finished).

summary.json goes last, after removing the previous one first: a folder with a
summary.json is one whose every output was written (a kill or a full disk before that
leaves an unfinished run, which the next compare of the same inputs completes without
repeating a call).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalrun.analysis.summary import SequentialVerdict, result_rows, score, sort_results, summarize
from evalrun.analysis.summary_model import Summary
from evalrun.errors import CouldNotMeasureError
from evalrun.execution.judge_calls import JudgeCalls
from evalrun.execution.store import SUMMARY, RunFolderError, write_json, write_jsonl
from evalrun.project.loader import Project
from evalrun.records import CallResult

__all__ = ["OUTPUT_FILES", "CompareOutcome", "stored_outcome", "write_note", "write_outputs"]

OUTPUT_FILES = {"summary_json": SUMMARY, "summary_md": "summary.md", "html": "report.html", "junit": "junit.xml",
                "results": "results.jsonl", "rollout_note": "rollout_note.md"}
"""Each output of a finished run folder by kind."""


@dataclass
class CompareOutcome:
    """Everything a compare produced: ``summary`` is summary.json's content, ``result`` the
    same typed."""

    run_dir: Path
    summary: dict[str, Any]
    verdict_status: str
    exit_code: int
    files: dict[str, Path] = field(default_factory=dict)
    result: Summary | None = None


def write_outputs(project: Project, run_dir: Path, results: Sequence[CallResult], created: str,
                  sequential: SequentialVerdict | None = None, judge_calls: JudgeCalls | None = None) -> CompareOutcome:
    """Score, compare, gate and write every output file of a run folder.

    ``sequential``: what ``compare --sequential`` decided (its block in summary.json and,
    after an early stop, the verdict). ``judge_calls``: the judge calls of the run
    (``execution.judge_calls``), when the suite has judge checks.
    """
    from evalrun.report import write_reports

    ordered = sort_results(results)
    scores = score(project, ordered)
    judged = None
    if judge_calls is not None:
        from evalrun.analysis.judged import apply_evidence, judge_evidence

        judged = judge_evidence(project, ordered, judge_calls, confidence=1.0 - 2.0 * project.suite.config.gate.alpha)
        apply_evidence(judged, ordered, scores)
    typed = summarize(project, ordered, scores, created, sequential=sequential, judged=judged)
    summary = typed.to_json()
    rows = result_rows(project, ordered, scores)
    try:
        (run_dir / SUMMARY).unlink(missing_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot replace {run_dir / SUMMARY}: {exc.strerror or exc}") from exc
    write_jsonl(run_dir / "results.jsonl", rows)
    files = write_reports(project, typed, rows, run_dir, summary_json=False)
    files["results"] = run_dir / "results.jsonl"
    files["rollout_note"] = write_note(project, summary, run_dir)
    write_json(run_dir / SUMMARY, summary)
    files["summary_json"] = run_dir / SUMMARY
    return CompareOutcome(run_dir, summary, typed.verdict.status, typed.verdict.exit_code, files, typed)


def stored_outcome(run_dir: str | Path) -> CompareOutcome:
    """The outcome of a finished run folder, read back from its summary.json (nothing is
    recomputed or rewritten)."""
    rd = Path(run_dir)
    try:
        summary = json.loads((rd / SUMMARY).read_text(encoding="utf-8"))
        verdict = summary["verdict"]
        status, code = str(verdict["status"]), int(verdict["exit_code"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CouldNotMeasureError(f"{rd / SUMMARY}: cannot be read ({exc}): run the compare again") from None
    files = {kind: rd / name for kind, name in OUTPUT_FILES.items() if (rd / name).exists()}
    return CompareOutcome(rd, summary, status, code, files)


def write_note(project: Project, summary: dict[str, Any], run_dir: Path) -> Path:
    """rollout_note.md: the release note filled from this run (TODO where evalrun cannot know)."""
    from evalrun.report.rollout_note import write_rollout_note

    return write_rollout_note(run_dir, summary, list(summary.get("label_audit", [])),
                              project.baseline.config, project.candidate.config)
