"""summary.md: the verdict as a pull-request comment.

Short by design (about 60 lines for a 40-case suite; hard-capped well under GitHub's
65,536-character comment limit): verdict, reasons, label changes, the gate rules, the main
metrics with intervals, the top flips, error and cache counts. Every value that can come
from a user file or a model goes through ``md_cell``, so no cell can break its table row,
open a link or inject HTML.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evalrun.analysis.summary_model import (
    CallCounts,
    Flips,
    RateMetric,
    RuleResult,
    Side,
    Summary,
    as_summary,
)
from evalrun.catalogue import METRICS
from evalrun.report import fmt
from evalrun.report.fmt import AA_NOTE
from evalrun.report.sanitize import md_cell

MAX_REASONS = 6
MAX_WARNINGS = 10
MAX_RULE_ROWS = 30
MAX_FLIPS = 10
MAX_CHARS = 60_000
FOOTER = "Full report: report.html in the run folder"
MAIN_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.short is not None)
"""The compact metric table: the metrics a reviewer decides on, in catalogue order."""


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _status_word(status: Any) -> str:
    return str(status or "").replace("_", " ").upper()


def _rules_table(rules: Sequence[RuleResult]) -> list[str]:
    shown = [r for r in rules if r.status != "not_applicable"]
    skipped = [r for r in rules if r.status == "not_applicable"]
    # Failing rules first: in a long table they must not hide below the cap.
    order = {"fail": 0, "inconclusive": 1, "pass": 2}
    shown.sort(key=lambda r: order.get(r.status, 3))
    lines = [_row(["Rule", md_cell("Observed [interval]"), "Margin", "Status", md_cell("p (Holm)"),
                   md_cell("MDE / cases needed")]),
             "| --- | --- | --- | --- | --- | --- |"]
    for r in shown[:MAX_RULE_ROWS]:
        lines.append(
            _row(
                [
                    md_cell(_scoped(r), 80),
                    md_cell(fmt.rule_observed(r), 80),
                    md_cell(fmt.rule_margin(r), 60),
                    md_cell(_status_word(r.status), 20),
                    md_cell(fmt.rule_p(r), 40),
                    md_cell(fmt.rule_mde(r), 80),
                ]
            )
        )
    if len(shown) > MAX_RULE_ROWS:
        lines.append(_row([md_cell(f"and {len(shown) - MAX_RULE_ROWS} more rules (see report.html)"), "", "", "", "", ""]))
    if skipped:
        names = [_scoped(r) for r in skipped]
        shown_names = ", ".join(names[:12]) + (f", and {len(names) - 12} more" if len(names) > 12 else "")
        lines.append("")
        lines.append(f"Not applicable (nothing in the suite measures them): {md_cell(shown_names, 600)}")
    return lines


def _scoped(r: RuleResult) -> str:
    return r.rule if r.scope == "overall" else f"{r.rule} [{r.scope}]"


def _metrics_table(summary: Summary) -> list[str]:
    lines = [_row(["Metric", "Baseline", "Candidate", md_cell("Change [interval]")]), "| --- | ---: | ---: | --- |"]
    for name in MAIN_METRICS:
        m = summary.metric(name)
        if m is None:
            continue
        if isinstance(m, RateMetric) and not m.paired_n and not m.baseline.n:
            continue  # nothing in the suite measures it: the rules line already says so
        lines.append(
            _row(
                [
                    md_cell(m.label, 60),
                    md_cell(fmt.metric_side(m, "baseline", with_ci=False), 60),
                    md_cell(fmt.metric_side(m, "candidate", with_ci=False), 60),
                    md_cell(fmt.metric_change(m), 100),
                ]
            )
        )
    return lines


def _flips(flips: Flips) -> list[str]:
    reg, imp = flips.regressions, flips.improvements
    if not reg and not imp:
        return ["No case flipped between pass and fail."]
    lines = [f"**Flipped cases:** {len(reg)} regressed, {len(imp)} improved"]
    picked = [("regressed", f) for f in reg[:MAX_FLIPS]]
    picked += [("improved", f) for f in imp[: max(0, MAX_FLIPS - len(picked))]]
    for what, f in picked:
        lines.append(f"- {what}: {md_cell(f.case_id, 100)} ({md_cell(f.kind, 40)}, cohort {md_cell(f.cohort, 60)})")
    rest = len(reg) + len(imp) - len(picked)
    if rest > 0:
        lines.append(f"- and {rest} more")
    return lines


def _calls(calls: dict[Side, CallCounts]) -> list[str]:
    errs = []
    cached = []
    for side in ("baseline", "candidate"):
        c = calls.get(side)
        if c is None:
            continue
        detail = ", ".join(f"{md_cell(k, 40)} {fmt.count(v)}" for k, v in sorted(c.errors_by_kind.items()))
        errs.append(f"{side} {fmt.count(c.errors)}" + (f" ({detail})" if detail else ""))
        cached.append(f"{side} {fmt.count(c.cached)}")
    return [f"**Errors after retries:** {'; '.join(errs)}", "",
            f"**Cached calls:** {', '.join(cached)} (latency recorded earlier)"]


def _latency_measurement(lm: Mapping[str, Any] | None) -> list[str]:
    """One line: the client's own overhead per side (not gated), and what it would have read."""
    if not isinstance(lm, Mapping):
        return []
    parts = []
    for side in ("baseline", "candidate"):
        o = (lm.get(side) or {}).get("overhead") or {}
        share = o.get("share")
        parts.append(
            f"{side} p50 {fmt.seconds(o.get('p50'))}, p95 {fmt.seconds(o.get('p95'))}"
            + (f" ({fmt.pct(share)} of the call)" if share is not None else "")
        )
    ratio = lm.get("client_ratio") or {}
    lines = [
        "",
        f"**Client overhead** (whole call − provider time; latency rules read provider time): {'; '.join(parts)}. "
        f"Whole-call p50 ratio {fmt.times(ratio.get('p50'))}.",
    ]
    lines += [f"- {md_cell(n, 300)}" for n in lm.get("notes") or []]
    return lines


def _judges(block: dict[str, Any] | None) -> list[str]:
    """One line per judge kind: calibrated or not, and what its rule may decide."""
    if not block or not any(isinstance(block.get(k), dict) for k in ("rubric", "pairwise")):
        return []  # no judge model graded anything (similar checks are checks of the output)
    model = md_cell((block.get("judge") or {}).get("model"), 80)
    source = (block.get("calibration") or {}).get("source")
    head = f"**Judges** ({model}; " + (f"calibration set {md_cell(source, 80)})" if source
                                       else "uncalibrated: no human-labelled examples)")
    lines = ["", head, ""]
    for kind in ("rubric", "pairwise"):
        part = block.get(kind)
        if not isinstance(part, dict):
            continue
        rel = part.get("reliability") or {}
        may = ("may PASS or FAIL" if rel.get("may_pass") and rel.get("may_fail") else
               "may FAIL, not PASS" if rel.get("may_fail") else "decides nothing")
        extra = ""
        bias = part.get("position_bias") or {}
        if kind == "pairwise" and bias.get("pairs"):
            extra = f"; orders disagreed on {bias.get('inconsistent')} of {bias.get('pairs')} pairs"
        reason = f": {md_cell(rel.get('reason'), 300)}" if rel.get("reason") else ""
        lines.append(f"- {kind}: {md_cell(rel.get('status'), 20)}, {may}{extra}{reason}")
    return lines


def render_markdown(summary: Summary | Mapping[str, Any]) -> str:
    """summary.md's text (see the module docstring)."""
    typed = as_summary(summary)
    verdict, run = typed.verdict, typed.run
    b, c = typed.variants.get("baseline"), typed.variants.get("candidate")
    lines = [f"## evalrun: {_status_word(verdict.status)} (exit {md_cell(verdict.exit_code, 10)})", ""]
    lines.append(
        f"Suite {md_cell(run.suite, 80)}: {fmt.count(run.n_cases)} cases × "
        f"{fmt.count(run.samples)} sample(s), baseline {md_cell(b.name if b else None, 60)} "
        f"({md_cell(b.model if b else None, 80)}) vs candidate {md_cell(c.name if c else None, 60)} "
        f"({md_cell(c.model if c else None, 80)}), {fmt.pct(run.confidence, 0)} intervals, "
        f"created {md_cell(typed.created, 40)}"
    )
    if run.aa_mode:
        lines += ["", f"**{AA_NOTE}.**"]
    if verdict.reasons:
        lines.append("")
        lines += [f"- {md_cell(r, 300)}" for r in verdict.reasons[:MAX_REASONS]]
        if len(verdict.reasons) > MAX_REASONS:
            lines.append(f"- and {len(verdict.reasons) - MAX_REASONS} more (see the rule table)")
    if verdict.warnings:
        lines += ["", "**Warnings:**"]
        lines += [f"- {md_cell(w, 300)}" for w in verdict.warnings[:MAX_WARNINGS]]
        if len(verdict.warnings) > MAX_WARNINGS:
            lines.append(f"- and {len(verdict.warnings) - MAX_WARNINGS} more (see report.html)")
    lines.append("")
    base_l, cand_l = typed.labels.get("baseline") or {}, typed.labels.get("candidate") or {}
    parts = []
    for k in sorted(set(base_l) | set(cand_l)):
        old, new = base_l.get(k), cand_l.get(k)
        parts.append(f"{md_cell(k, 40)} {md_cell(old, 60)}" + (f" → {md_cell(new, 60)}" if k in typed.label_changes else ""))
    lines.append(f"**Version labels** (baseline → candidate where changed): {'; '.join(parts) or 'none'}")
    lines += ["", "### Gate rules", ""]
    lines += _rules_table(verdict.rules)
    lines += ["", "### Metrics", ""]
    lines += _metrics_table(typed)
    lines += _judges(typed.judges)
    lines.append("")
    lines += _flips(typed.flips)
    lines.append("")
    lines += _calls(typed.calls)
    lines += _latency_measurement(typed.latency_measurement)
    lines += ["", FOOTER]
    text = "\n".join(lines) + "\n"
    if len(text) > MAX_CHARS:
        # Cells are capped, so only pathological inputs get here; cut at a line boundary.
        cut = text.rfind("\n", 0, MAX_CHARS - 200)
        text = text[:cut] + "\n\n(summary cut to fit a comment)\n\n" + FOOTER + "\n"
    return text
