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


def _rules_table(rules: Sequence[Mapping[str, Any]]) -> list[str]:
    shown = [r for r in rules if r.get("status") != "not_applicable"]
    skipped = [r for r in rules if r.get("status") == "not_applicable"]
    # Failing rules first: in a long table they must not hide below the cap.
    order = {"fail": 0, "inconclusive": 1, "pass": 2}
    shown.sort(key=lambda r: order.get(str(r.get("status")), 3))
    lines = [_row(["Rule", md_cell("Observed [interval]"), "Margin", "Status", md_cell("p (Holm)"),
                   md_cell("MDE / cases needed")]),
             "| --- | --- | --- | --- | --- | --- |"]
    for r in shown[:MAX_RULE_ROWS]:
        name = str(r.get("rule"))
        if r.get("scope") not in (None, "overall"):
            name += f" [{r.get('scope')}]"
        lines.append(
            _row(
                [
                    md_cell(name, 80),
                    md_cell(fmt.rule_observed(r), 80),
                    md_cell(fmt.rule_margin(r), 60),
                    md_cell(_status_word(r.get("status")), 20),
                    md_cell(fmt.rule_p(r), 40),
                    md_cell(fmt.rule_mde(r), 80),
                ]
            )
        )
    if len(shown) > MAX_RULE_ROWS:
        lines.append(_row([md_cell(f"and {len(shown) - MAX_RULE_ROWS} more rules (see report.html)"), "", "", "", "", ""]))
    if skipped:
        names = []
        for r in skipped:
            n = str(r.get("rule"))
            names.append(n if r.get("scope") in (None, "overall") else f"{n} [{r.get('scope')}]")
        shown_names = ", ".join(names[:12]) + (f", and {len(names) - 12} more" if len(names) > 12 else "")
        lines.append("")
        lines.append(f"Not applicable (nothing in the suite measures them): {md_cell(shown_names, 600)}")
    return lines


def _metrics_table(metrics: Sequence[Mapping[str, Any]]) -> list[str]:
    by = {str(m.get("metric")): m for m in metrics}
    lines = [_row(["Metric", "Baseline", "Candidate", md_cell("Change [interval]")]), "| --- | ---: | ---: | --- |"]
    for name in MAIN_METRICS:
        m = by.get(name)
        if m is None:
            continue
        if m.get("type") == "rate" and not m.get("paired_n") and not (m.get("baseline") or {}).get("n"):
            continue  # nothing in the suite measures it: the rules line already says so
        lines.append(
            _row(
                [
                    md_cell(m.get("label", name), 60),
                    md_cell(fmt.metric_side(m, "baseline", with_ci=False), 60),
                    md_cell(fmt.metric_side(m, "candidate", with_ci=False), 60),
                    md_cell(fmt.metric_change(m), 100),
                ]
            )
        )
    return lines


def _flips(flips: Mapping[str, Any]) -> list[str]:
    reg = list(flips.get("regressions") or [])
    imp = list(flips.get("improvements") or [])
    if not reg and not imp:
        return ["No case flipped between pass and fail."]
    lines = [f"**Flipped cases:** {len(reg)} regressed, {len(imp)} improved"]
    picked = [("regressed", f) for f in reg[:MAX_FLIPS]]
    picked += [("improved", f) for f in imp[: max(0, MAX_FLIPS - len(picked))]]
    for what, f in picked:
        lines.append(f"- {what}: {md_cell(f.get('case_id'), 100)} ({md_cell(f.get('kind'), 40)}, cohort {md_cell(f.get('cohort'), 60)})")
    rest = len(reg) + len(imp) - len(picked)
    if rest > 0:
        lines.append(f"- and {rest} more")
    return lines


def _calls(calls: Mapping[str, Any]) -> list[str]:
    out = []
    errs = []
    cached = []
    for side in ("baseline", "candidate"):
        c = calls.get(side) or {}
        kinds = c.get("errors_by_kind") or {}
        detail = ", ".join(f"{md_cell(k, 40)} {fmt.count(v)}" for k, v in sorted(kinds.items()))
        errs.append(f"{side} {fmt.count(c.get('errors', 0))}" + (f" ({detail})" if detail else ""))
        cached.append(f"{side} {fmt.count(c.get('cached', 0))}")
    out.append(f"**Errors after retries:** {'; '.join(errs)}")
    out.append("")
    out.append(f"**Cached calls:** {', '.join(cached)} (latency recorded earlier)")
    return out


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


def render_markdown(summary: Mapping[str, Any]) -> str:
    """summary.md's text (see the module docstring)."""
    verdict = summary.get("verdict") or {}
    run = summary.get("run") or {}
    variants = summary.get("variants") or {}
    status = _status_word(verdict.get("status"))
    lines = [f"## evalrun: {status} (exit {md_cell(verdict.get('exit_code'), 10)})", ""]
    b, c = variants.get("baseline") or {}, variants.get("candidate") or {}
    lines.append(
        f"Suite {md_cell(run.get('suite'), 80)}: {fmt.count(run.get('n_cases'))} cases × "
        f"{fmt.count(run.get('samples'))} sample(s), baseline {md_cell(b.get('name'), 60)} "
        f"({md_cell(b.get('model'), 80)}) vs candidate {md_cell(c.get('name'), 60)} "
        f"({md_cell(c.get('model'), 80)}), {fmt.pct(run.get('confidence'), 0)} intervals, "
        f"created {md_cell(summary.get('created'), 40)}"
    )
    if run.get("aa_mode"):
        lines += ["", f"**{AA_NOTE}.**"]
    reasons = list(verdict.get("reasons") or [])
    if reasons:
        lines.append("")
        lines += [f"- {md_cell(r, 300)}" for r in reasons[:MAX_REASONS]]
        if len(reasons) > MAX_REASONS:
            lines.append(f"- and {len(reasons) - MAX_REASONS} more (see the rule table)")
    warnings = list(verdict.get("warnings") or [])
    if warnings:
        lines += ["", "**Warnings:**"]
        lines += [f"- {md_cell(w, 300)}" for w in warnings[:MAX_WARNINGS]]
        if len(warnings) > MAX_WARNINGS:
            lines.append(f"- and {len(warnings) - MAX_WARNINGS} more (see report.html)")
    changes = summary.get("label_changes") or {}
    lines.append("")
    labels = summary.get("labels") or {}
    base_l, cand_l = labels.get("baseline") or {}, labels.get("candidate") or {}
    parts = []
    for k in sorted(set(base_l) | set(cand_l)):
        b, c = base_l.get(k), cand_l.get(k)
        parts.append(f"{md_cell(k, 40)} {md_cell(b, 60)}" + (f" → {md_cell(c, 60)}" if k in changes else ""))
    lines.append(f"**Version labels** (baseline → candidate where changed): {'; '.join(parts) or 'none'}")
    lines += ["", "### Gate rules", ""]
    lines += _rules_table(verdict.get("rules") or [])
    lines += ["", "### Metrics", ""]
    lines += _metrics_table(summary.get("metrics") or [])
    lines.append("")
    lines += _flips(summary.get("flips") or {})
    lines.append("")
    lines += _calls(summary.get("calls") or {})
    lines += _latency_measurement(summary.get("latency_measurement"))
    lines += ["", FOOTER]
    text = "\n".join(lines) + "\n"
    if len(text) > MAX_CHARS:
        # Cells are capped, so only pathological inputs get here; cut at a line boundary.
        cut = text.rfind("\n", 0, MAX_CHARS - 200)
        text = text[:cut] + "\n\n(summary cut to fit a comment)\n\n" + FOOTER + "\n"
    return text
