"""GitHub Actions workflow-command annotations for a compare (``--format github``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalrun.analysis.summary_model import Summary, as_summary
from evalrun.report.sanitize import terminal_safe

MAX_CASE_ANNOTATIONS = 20  # GitHub shows at most 10 per step per type; keep the log short too


def _data(text: str) -> str:
    # Workflow-command escaping: a newline or '%' in a message would end or alter the command.
    return terminal_safe(text, single_line=False).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotations(summary: Summary | Mapping[str, Any]) -> list[str]:
    """One ``::error``/``::warning``/``::notice`` line per failed or inconclusive rule and
    per regressed case, then the verdict as a notice."""
    typed = as_summary(summary)
    verdict = typed.verdict
    out: list[str] = []
    for rule in verdict.rules:
        scope = "" if rule.scope == "overall" else f" [{rule.scope}]"
        title = _prop(f"evalrun {rule.rule}{scope}")
        msg = _data(f"{rule.trigger}: {rule.reason}")
        if rule.status == "fail":
            out.append(f"::error title={title}::{msg}")
        elif rule.status == "inconclusive":
            level = "error" if verdict.on_inconclusive == "fail" else "warning"
            out.append(f"::{level} title={title}::{_data('inconclusive: ')}{msg}")
    for w in verdict.warnings[:MAX_CASE_ANNOTATIONS]:
        out.append(f"::warning title=evalrun warning::{_data(w)}")
    regressions = typed.flips.regressions
    for flip in regressions[:MAX_CASE_ANNOTATIONS]:
        title = _prop(f"evalrun regressed case {flip.case_id}")
        text = f"kind {flip.kind}, cohort {flip.cohort}: passed in baseline, fails in candidate"
        out.append(f"::warning title={title}::{_data(text)}")
    if len(regressions) > MAX_CASE_ANNOTATIONS:
        out.append(f"::warning title=evalrun::{len(regressions) - MAX_CASE_ANNOTATIONS} more regressed cases in report.html")
    status = f"{verdict.status} (exit {verdict.exit_code})"
    out.append(f"::notice title=evalrun verdict::{_data(status)}")
    return out
