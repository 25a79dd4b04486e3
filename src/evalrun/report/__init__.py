"""Reports of a run: summary.json, summary.md, report.html, junit.xml, terminal text.

``write_reports`` is what ``evalrun.api.write_outputs`` calls; each format lives in its
own module and renders from the same ``summary`` (and, for the HTML, the result rows), so
the formats always agree. jinja2 is imported only when the HTML is rendered.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalrun.analysis.summary_model import Summary, as_summary
from evalrun.report.markdown import render_markdown
from evalrun.report.sanitize import md_cell, strip_control, terminal_safe
from evalrun.report.terminal import render_terminal

if TYPE_CHECKING:
    from evalrun.project.loader import Project

__all__ = [
    "md_cell",
    "render_html",
    "render_junit",
    "render_markdown",
    "render_terminal",
    "rewrite_summary_md",
    "strip_control",
    "terminal_safe",
    "write_reports",
]


def render_html(project: Project, summary: Summary | dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """report.html's text (see ``evalrun.report.html``)."""
    from evalrun.report.html import render_html as _render

    return _render(project, summary, rows)


def render_junit(summary: Summary | dict[str, Any]) -> str:
    """junit.xml's text (see ``evalrun.report.junit``)."""
    from evalrun.report.junit import render_junit as _render

    return _render(summary)


def write_reports(
    project: Project, summary: Summary | dict[str, Any], rows: list[dict[str, Any]], run_dir: Path, *,
    summary_json: bool = True, report_url: str | None = None,
) -> dict[str, Path]:
    """Write summary.md, report.html, junit.xml and then summary.json into ``run_dir``.

    Each file is written atomically (temp file + rename), so a crash never leaves a
    half-written report that looks complete; summary.json comes last (it marks a finished
    run). ``summary_json=False`` leaves it to the caller (``api.write_outputs`` writes the
    rollout note first). ``report_url`` links the report from summary.md. Returns the paths
    by kind.
    """
    from evalrun.execution.store import write_json, write_text

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "summary_json": run_dir / "summary.json",
        "summary_md": run_dir / "summary.md",
        "html": run_dir / "report.html",
        "junit": run_dir / "junit.xml",
    }
    from evalrun.report.sanitize import strip_bidi

    # Belt and braces: no bidi override survives anywhere in a document a reviewer reads,
    # including the case data embedded as JSON (rendered with textContent).
    typed = as_summary(summary)
    write_text(paths["summary_md"], strip_bidi(render_markdown(typed, rows, report_url=report_url)))
    write_text(paths["html"], strip_bidi(render_html(project, typed, rows)))
    write_text(paths["junit"], render_junit(typed))
    if summary_json:
        write_json(paths["summary_json"], typed.to_json())
    else:
        del paths["summary_json"]
    return paths


def rewrite_summary_md(run_dir: Path, *, report_url: str | None = None) -> Path:
    """Render summary.md again from a finished run folder's summary.json and results.jsonl.

    What ``compare --report-url`` calls once the run is written (also for a run answered
    from an earlier, finished folder): the link is known only to the CI run that uploads
    the report. Nothing but summary.md is touched.
    """
    import json

    from evalrun.execution.store import write_text
    from evalrun.report.sanitize import strip_bidi

    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    rows: list[dict[str, Any]] = []
    results = run_dir / "results.jsonl"
    if results.exists():
        with results.open(encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
    path = run_dir / "summary.md"
    write_text(path, strip_bidi(render_markdown(summary, rows, report_url=report_url)))
    return path
