"""What ``evalrun compare`` prints: the verdict line, reasons, a fixed-width metric table.

No colour codes, and the table's own formatting is ASCII ("-", "x" rather than "−", "×")
so it lines up in any console font; every value passes ``terminal_safe`` so a cohort
name or a reason can never carry an escape sequence to the user's terminal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evalrun.analysis.summary_model import RatioMetric, Summary, as_summary
from evalrun.catalogue import METRICS
from evalrun.report import fmt
from evalrun.report.fmt import AA_NOTE
from evalrun.report.sanitize import terminal_safe

ROWS: tuple[tuple[str, str], ...] = tuple((m.name, m.short) for m in METRICS if m.short is not None)
"""(metric, short label) in print order (the catalogue's compact-table metrics)."""
MAX_REASONS = 8
MAX_WARNINGS = 6
MAX_CELL = 48


def _cell(text: Any) -> str:
    s = terminal_safe(text)
    return s if len(s) <= MAX_CELL else s[: MAX_CELL - 3] + "..."


def _ascii(text: str) -> str:
    return text.replace("\u2212", "-").replace("×", "x").replace("≤", "<=").replace("≈", "~").replace("—", "-")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = []
    for r in [header, *rows]:
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if r is header:
            out.append("  ".join("-" * w for w in widths))
    return out


def render_terminal(summary: Summary | Mapping[str, Any]) -> str:
    """The verdict and the main metrics as plain text (ends with a newline)."""
    typed = as_summary(summary)
    verdict = typed.verdict
    lines = [f"VERDICT: {terminal_safe(verdict.status)} (exit {terminal_safe(verdict.exit_code)})"]
    for r in verdict.reasons[:MAX_REASONS]:
        lines.append(f"  - {terminal_safe(r)}")
    if len(verdict.reasons) > MAX_REASONS:
        lines.append(f"  - and {len(verdict.reasons) - MAX_REASONS} more")
    for w in verdict.warnings[:MAX_WARNINGS]:
        lines.append(f"  ! {terminal_safe(w)}")
    if len(verdict.warnings) > MAX_WARNINGS:
        lines.append(f"  ! and {len(verdict.warnings) - MAX_WARNINGS} more warnings (see report.html)")
    if typed.run.aa_mode:
        lines.append(AA_NOTE)
    rules = {r.metric: r.status for r in verdict.rules if r.scope == "overall"}
    rows: list[list[str]] = []
    for name, label in ROWS:
        m = typed.metric(name)
        if m is None:
            continue
        change = fmt.metric_change(m, ascii=True)
        if isinstance(m, RatioMetric) and m.ratio is None:
            change = fmt.NA  # the reason (unpriced, local) is in the rule's status column
        rows.append(
            [
                label,
                _cell(_ascii(fmt.metric_side(m, "baseline", with_ci=False))),
                _cell(_ascii(fmt.metric_side(m, "candidate", with_ci=False))),
                _cell(_ascii(change)),
                _cell(rules.get(name, "").replace("_", " ")),
            ]
        )
    lines.append("")
    lines += _table(["metric", "baseline", "candidate", "change [interval]", "rule"], rows)
    counts = []
    for side, c in sorted(typed.calls.items()):
        counts.append(f"{side} {fmt.count(c.total)} calls, {fmt.count(c.errors)} errors, {fmt.count(c.cached)} cached")
    lines += ["", "; ".join(counts)]
    return "\n".join(lines) + "\n"
