"""Terminal and markdown renderings of a stage verdict (untrusted text made inert)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from evalrun.report.sanitize import md_cell, terminal_safe

if TYPE_CHECKING:
    from evalrun.watch.run import WatchOutcome

STATUS_WORD = {"continue": "CONTINUE", "rollback": "ROLLBACK", "hold": "HOLD", "no_data": "NO DATA"}
"""How each verdict is spelled for people."""


def _fmt(t: dict[str, Any], v: float | None) -> str:
    if v is None:
        return "–"
    if t["kind"] == "vs_baseline" and t["metric"] not in ("completion_tokens_ratio", "cost_ratio"):
        return f"{v * 100:+.2f} pts"
    if t["test"] in ("exceedance", "beta_binomial") or (
        t["test"] == "normal_mixture" and t["metric"] not in ("completion_tokens_ratio", "cost_ratio")
    ):
        return f"{v * 100:.2f}%"
    if t["test"] in ("rate_ratio_count", "ratio_mixture"):
        return f"{v:.3f}x"
    return f"{v:.4g}"


def _interval(t: dict[str, Any]) -> str:
    lo = _fmt(t, t["low"]) if t["low"] is not None else ("0" if t["test"].startswith("rate") else "-∞")
    hi = _fmt(t, t["high"]) if t["high"] is not None else "∞"
    return f"[{lo}, {hi}]"


def _bound(t: dict[str, Any], v: float) -> str:
    return _fmt(t, v) if not math.isinf(v) else str(v)


def trigger_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Table rows: trigger, severity, status, estimate [CS], harm boundary, safe boundary, n."""
    rows = []
    for t in summary["triggers"]:
        above = t["harm_side"] == "above"
        # verdict.json before safe_boundary existed: one boundary did both jobs.
        safe = t.get("safe_boundary", t["boundary"])
        rows.append([
            f"{t['metric']} ({t['kind']})",
            t["severity"],
            t["status"],
            f"{_fmt(t, t['estimate'])} {_interval(t)}",
            f"{'>' if above else '<'} {_bound(t, t['boundary'])}",
            f"{'≤' if above else '≥'} {_bound(t, safe)}",
            f"{t['n_candidate']}/{t['n_baseline']}",
        ])
    return rows


HEADER = ["trigger", "severity", "status", "estimate [sequence]", "harm", "safe", "n cand/base"]


def render_terminal(outcome: WatchOutcome) -> str:
    """The verdict, its reasons and the trigger table, for stdout."""
    s = outcome.summary
    lines = [
        f"STAGE {terminal_safe(s['stage'])}: {STATUS_WORD[s['verdict']]} (exit {s['exit_code']})"
        f"  owner: {terminal_safe(s['owner'])}",
        f"  at {s['at']}, candidate live since {s['start'] or '–'}; units: "
        f"{s['units']['candidate']} candidate, {s['units']['baseline']} baseline",
    ]
    lines += [f"  - {terminal_safe(r)}" for r in s["reasons"]]
    rows = [HEADER, *trigger_rows(s)]
    widths = [max(len(terminal_safe(r[i])) for r in rows) for i in range(len(HEADER))]
    lines.append("")
    for r in rows:
        lines.append("  ".join(terminal_safe(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def render_markdown(outcome: WatchOutcome) -> str:
    """summary.md: verdict, reasons, trigger table, coverage and the queries."""
    s = outcome.summary
    lines = [
        f"## evalrun watch — stage `{md_cell(s['stage'])}`: **{STATUS_WORD[s['verdict']]}** (exit {s['exit_code']})",
        "",
        f"Owner: {md_cell(s['owner'])} · cohort rule: `{md_cell(s['cohort_rule'] or 'all traffic')}` · "
        f"at {s['at']} · candidate live since {s['start'] or '–'} · "
        f"{s['units']['candidate']} candidate / {s['units']['baseline']} baseline units · "
        f"plan `{s['plan']['fingerprint']}`",
        "",
    ]
    lines += [f"- {md_cell(r, 600)}" for r in s["reasons"]]
    lines += ["", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in trigger_rows(s)]
    srm = s["srm"]
    if srm.get("expected") is not None:
        observed = f"{srm['observed'] * 100:.2f}%" if srm.get("observed") is not None else "–"
        lines += ["", f"Traffic split: candidate {observed} of the stage's units, expected "
                      f"{srm['expected'] * 100:g}% ({'MISMATCH' if srm['mismatch'] else 'ok'})."]
    lines += ["", "<details><summary>Queries run (look at the data yourself)</summary>", ""]
    for q in s["queries"]:
        fence = "`" * max(3, _longest_backtick_run(q) + 1)
        lines += [fence + "sql", q, fence, ""]
    lines += ["</details>", ""]
    return "\n".join(lines)


def _longest_backtick_run(text: str) -> int:
    best = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        best = max(best, run)
    return best
