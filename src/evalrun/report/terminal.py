"""What ``evalrun compare`` prints: the verdict line, reasons, a fixed-width metric table.

No colour codes, and the table's own formatting is ASCII ("-", "x" rather than "−", "×")
so it lines up in any console font; every value passes ``terminal_safe`` so a cohort
name or a reason can never carry an escape sequence to the user's terminal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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


def render_terminal(summary: Mapping[str, Any]) -> str:
    """The verdict and the main metrics as plain text (ends with a newline)."""
    verdict = summary.get("verdict") or {}
    status = terminal_safe(verdict.get("status", "COULD_NOT_MEASURE"))
    lines = [f"VERDICT: {status} (exit {terminal_safe(verdict.get('exit_code'))})"]
    reasons = list(verdict.get("reasons") or [])
    for r in reasons[:MAX_REASONS]:
        lines.append(f"  - {terminal_safe(r)}")
    if len(reasons) > MAX_REASONS:
        lines.append(f"  - and {len(reasons) - MAX_REASONS} more")
    warnings = list(verdict.get("warnings") or [])
    for w in warnings[:MAX_WARNINGS]:
        lines.append(f"  ! {terminal_safe(w)}")
    if len(warnings) > MAX_WARNINGS:
        lines.append(f"  ! and {len(warnings) - MAX_WARNINGS} more warnings (see report.html)")
    if (summary.get("run") or {}).get("aa_mode"):
        lines.append(AA_NOTE)
    rules = {
        str(r.get("metric")): str(r.get("status"))
        for r in verdict.get("rules") or []
        if r.get("scope") == "overall"
    }
    by = {str(m.get("metric")): m for m in summary.get("metrics") or []}
    rows: list[list[str]] = []
    for name, label in ROWS:
        m = by.get(name)
        if m is None:
            continue
        change = fmt.metric_change(m, ascii=True)
        if m.get("type") == "ratio" and m.get("ratio") is None:
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
    calls = summary.get("calls") or {}
    counts = []
    for side in ("baseline", "candidate"):
        c = calls.get(side) or {}
        counts.append(f"{side} {fmt.count(c.get('total'))} calls, {fmt.count(c.get('errors'))} errors, {fmt.count(c.get('cached'))} cached")
    lines += ["", "; ".join(counts)]
    return "\n".join(lines) + "\n"
