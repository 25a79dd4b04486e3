"""The rollout note: what a compare run means for the live rollout, as markdown.

``render_rollout_note`` fills the team's rollout-note template from a finished compare, in
about 50 lines a team pastes into its release: the verdict; the change (label bumps and
the config fields behind them, hidden edits called out); the primary regression risk —
the gate rule with the strongest evidence of harm (FAIL before INCONCLUSIVE before PASS,
then the smallest FAIL-test p-value), with its flip counts and the cohorts where it got
worse; the measured gain; canary / expanded cohorts, owner and dashboard; the rollback
triggers grouped by what they watch, the label filter stated once; and ready-to-paste SQL
and JSON filters for the candidate and control segments.

Facts evalrun cannot know (owner, dashboard, expected gain, cohorts) come from the
candidate's ``rollout:`` block; when absent the note shows a visible ``TODO(owner):``
line instead — it never invents them. The output is a pure function of its inputs
(no clock, no environment), so the note can be diffed and golden-tested.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalrun import catalogue
from evalrun.project.config import VERSION_LABELS, VariantConfig
from evalrun.report.sanitize import md_cell, strip_control, terminal_safe

__all__ = [
    "ROLLOUT_NOTE",
    "json_log_filter",
    "render_rollout_note",
    "sql_where",
    "write_rollout_note",
]

ROLLOUT_NOTE = "rollout_note.md"

# What each documented exit code means (mirrors the CLI's help).
_EXIT_MEANING = {
    0: "the gate passed",
    1: "regression: the gate failed",
    2: "config error",
    3: "inconclusive: the suite cannot tell",
    4: "could not measure",
}

# The metrics a rollout watches, in the order the note lists them (from the catalogue).
_WATCH: tuple[tuple[str, str], ...] = tuple((m.name, m.watch_label) for m in catalogue.METRICS if m.watch_label)

_STATUS_WORDS = {
    "pass": "pass",
    "fail": "FAIL",
    "inconclusive": "inconclusive",
    "not_applicable": "not measured",
}

TODO_CHANGE = "TODO(owner): the change in one sentence"
TODO_GAIN = "TODO(owner): expected gain in words"
TODO_OWNER = "TODO(owner): name the owner who watches the rollout and decides a rollback"
TODO_DASHBOARD = "TODO(owner): link the dashboard / saved query for these segments"


# ---------------------------------------------------------------------------- formatting


def _fence_for(text: str, minimum: int = 1) -> str:
    """A backtick fence longer than any backtick run in ``text`` (so it cannot close early)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(minimum, longest + 1)


def _code(text: str) -> str:
    """``text`` as an inert inline code span: one line, no controls, survives backticks."""
    flat = terminal_safe(text)
    if re.search(r"[<>`|\[\]]", flat):
        # Markup characters: render as escaped text, which every markdown renderer keeps inert
        # (some renderers and chat tools re-interpret HTML even inside code spans).
        return _md(flat)
    fence = _fence_for(flat)
    pad = " " if flat.startswith("`") or flat.endswith("`") or fence != "`" else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def _md(text: Any) -> str:
    """Untrusted free text (config values, reasons, cohort names) as inert markdown."""
    return md_cell(text, 2000)


def _block(lang: str, text: str) -> list[str]:
    """A fenced code block whose fence no line of ``text`` can close."""
    body = strip_control(text).rstrip("\n")
    fence = _fence_for(body, 3)
    return [f"{fence}{lang}", body, fence]


def _num(x: float, digits: int) -> str:
    # Fixed decimals (never repr): the note is golden-tested and diffed between runs.
    text = f"{x:.{digits}f}"
    return "0" + text[2:] if text.startswith("-0") and float(text) == 0 else text


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{_num(x * 100, 1)}%"


def _pts(x: float | None) -> str:
    return "n/a" if x is None else f"{'+' if x * 100 >= 0.05 else ''}{_num(x * 100, 1)} pts"


def _ratio_pct(r: float | None) -> str:
    """A ratio as % above (or below) 1: 1.2 → '+20.0%'."""
    if r is None:
        return "n/a"
    d = (r - 1) * 100
    return f"{'+' if d >= 0.05 else ''}{_num(d, 1)}%"


def _interval(m: dict[str, Any], confidence: float | None) -> str:
    conf = f"{_num(confidence * 100, 0)}% CI " if confidence else "CI "
    if m.get("type") == "rate":
        ci = m.get("delta_ci")
        return f"{conf}[{_pts(ci[0])}, {_pts(ci[1])}]" if ci else "no interval"
    ci = m.get("ratio_ci")
    return f"{conf}[{_ratio_pct(ci[0])}, {_ratio_pct(ci[1])}]" if ci else "no interval"


def _points_word(x: float) -> str:
    n = abs(x) * 100
    return f"{n:g} point" + ("" if n == 1 else "s")


def _side_value(m: dict[str, Any], side: str) -> str:
    entry = m.get(side) or {}
    kind = m.get("type")
    if kind == "rate":
        v = entry.get("value")
        return "n/a" if v is None else f"{_pct(v)} (n={entry.get('n', 0)})"
    if kind == "ratio":
        v = entry.get("mean")
        if v is None:
            return "n/a"
        return f"${_num(v, 6)}" if m.get("metric") == "cost" else _num(v, 1)
    v = entry.get("value")
    return "n/a" if v is None else f"{_num(v, 2)} s"


# ---------------------------------------------------------------------------- metric reading


def _metric_label(m: dict[str, Any]) -> str:
    names = dict(_WATCH)
    return names.get(str(m.get("metric")), str(m.get("label") or m.get("metric")))


def _movement(m: dict[str, Any]) -> tuple[float, bool] | None:
    """(signed favourable size in display units, interval excludes no-change) or None.

    Rates count in points, ratios / quantiles in % above 1; positive means better.
    """
    if m.get("type") == "rate":
        delta, ci = m.get("delta"), m.get("delta_ci")
        if delta is None:
            return None
        sign = 1.0 if m.get("higher_is_better") else -1.0
        excludes = ci is not None and (ci[0] > 0 or ci[1] < 0)
        return sign * delta * 100, excludes
    if m.get("type") in ("ratio", "quantile"):
        ratio, ci = m.get("ratio"), m.get("ratio_ci")
        if ratio is None:
            return None
        excludes = ci is not None and (ci[0] > 1 or ci[1] < 1)
        return -(ratio - 1) * 100, excludes  # every ratio metric is lower-is-better
    return None


def _describe(m: dict[str, Any], confidence: float | None) -> str:
    size = _pts(m.get("delta")) if m.get("type") == "rate" else _ratio_pct(m.get("ratio"))
    return (
        f"{_metric_label(m)}: {_side_value(m, 'baseline')} → {_side_value(m, 'candidate')} "
        f"({size}, {_interval(m, confidence)})"
    )


# ---------------------------------------------------------------------------- monitoring


def _labels(cfg: VariantConfig) -> dict[str, str]:
    data = cfg.versions.model_dump()
    return {k: str(data[k]) for k in VERSION_LABELS}


def sql_where(labels: dict[str, str]) -> str:
    """``WHERE model_version = '...' AND ...`` over the four labels (quotes doubled)."""
    parts = [f"{k} = '{labels[k].replace(chr(39), chr(39) * 2)}'" for k in VERSION_LABELS]
    return "WHERE " + " AND ".join(parts)


def json_log_filter(labels: dict[str, str]) -> str:
    """A JSON object matching log lines of one segment, labels in their canonical order."""
    return json.dumps({k: labels[k] for k in VERSION_LABELS}, ensure_ascii=False)


def _segments(base: dict[str, str], cand: dict[str, str]) -> tuple[str, str, bool]:
    """(candidate segment, control segment, labels distinguish them) for trigger sentences."""
    changed = [k for k in VERSION_LABELS if base[k] != cand[k]]
    keys = changed or list(VERSION_LABELS)
    c = _code(", ".join(f"{k}={cand[k]}" for k in keys))
    b = _code(", ".join(f"{k}={base[k]}" for k in keys))
    return c, b, bool(changed)


# ---------------------------------------------------------------------------- triggers


def _scope_text(scope: str) -> str:
    return (
        f" in cohort {_code(scope.removeprefix('cohort:'))}" if scope.startswith("cohort:") else ""
    )


# ---------------------------------------------------------------------------- sections


def _section_change(
    findings: dict[str, dict[str, Any]],
    base: dict[str, str],
    cand: dict[str, str],
    change: str | None,
) -> list[str]:
    lines = ["## Change", "", _md(change) if change else TODO_CHANGE, ""]
    bumped, same, hidden = [], [], []
    for label in VERSION_LABELS:
        f = findings.get(label) or {}
        status = str(f.get("status") or "")
        fields = _fields(f.get("changed_fields") or [])
        if status == "hidden_edit":
            hidden.append(f"**{label} {_code(cand[label])}: hidden edit, bump the label**: {fields}")
        elif base[label] != cand[label]:
            what = f" ({fields})" if fields else (" (warning: nothing it covers changed)"
                                                    if status == "bumped_without_change" else "")
            bumped.append(f"{label} {_code(base[label])} → {_code(cand[label])}{what}")
        else:
            same.append(f"{label} {_code(cand[label])}")
    parts = bumped + ([f"unchanged: {', '.join(same)}"] if same else [])
    lines.append("Labels: " + "; ".join(parts) + ".")
    lines += [f"- {h}" for h in hidden]
    if not findings:
        lines.append("Config diff: not available (no label audit was passed).")
    return lines


def _fields(fields: Sequence[str], limit: int = 4) -> str:
    """Changed config fields, list items folded (``prompt.examples[0].role`` → ``prompt.examples``)."""
    folded: list[str] = []
    for f in fields:
        key = re.sub(r"\[\d+\].*$", "", str(f))
        if key not in folded:
            folded.append(key)
    shown = ", ".join(folded[:limit]) + (f" and {len(folded) - limit} more" if len(folded) > limit else "")
    return _md(shown)


def _harm(rule: dict[str, Any]) -> tuple[int, float, float] | None:
    """Sort key of a rule's evidence of harm (None: it did not move the harmful way).

    FAIL rules first, then INCONCLUSIVE, then PASS; within, the smaller FAIL-test p-value
    (Holm-adjusted when there is one), then the larger observed change.
    """
    status = str(rule.get("status"))
    rank = {"fail": 0, "inconclusive": 1, "pass": 2}.get(status)
    if rank is None:
        return None
    name = str(rule.get("rule"))
    if name.startswith("label_"):
        return None  # a hidden edit is a process failure, shown under Change, not a user-facing harm
    obs = rule.get("observed")
    metric = catalogue.RULES.get(name)
    if metric is not None and metric.rule is not None and isinstance(obs, int | float):
        if metric.rule.kind == "ratio":
            size = float(obs) - 1.0
        else:
            size = float(obs) if not metric.higher_is_better else -float(obs)
        if size <= 0:
            return None
    elif status != "fail":
        return None  # label, error and custom rules are harm only when they fail
    else:
        size = 0.0
    ps = [rule.get(k) for k in ("p_adjusted", "p_value", "p_bound")]
    p = next((float(x) for x in ps if isinstance(x, int | float)), 0.0 if status == "fail" else 1.0)
    return rank, p, -size


def _rule_label(rule: dict[str, Any]) -> str:
    metric = catalogue.RULES.get(str(rule.get("rule")))
    name = metric.watch_label or metric.label if metric is not None else str(rule.get("rule"))
    return name + _scope_text(str(rule.get("scope", "overall")))


def _rule_evidence(rule: dict[str, Any], by_metric: dict[str, dict[str, Any]],
                   slices: dict[str, Any], confidence: float | None) -> str:
    """``Over-refusal: 5.4% (n=56) → 41.1% (n=56) (+35.7 pts, 90% CI [...])`` or the reason."""
    scope = str(rule.get("scope", "overall"))
    m = by_metric.get(str(rule.get("metric")))
    if scope.startswith("cohort:"):
        entry = slices.get(scope.removeprefix("cohort:")) or {}
        m = next((x for x in entry.get("metrics") or [] if x.get("metric") == rule.get("metric")), None)
    if m is None:
        return f"{_rule_label(rule)}: {_md(rule.get('reason') or '')}"
    text = _describe(m, confidence)
    return text.replace(_metric_label(m), _rule_label(rule), 1) if scope != "overall" else text


def _flip_text(m: dict[str, Any] | None) -> str:
    table = (m or {}).get("table")
    if not isinstance(table, dict):
        return ""
    lost, gained = int(table.get("n10") or 0), int(table.get("n01") or 0)
    worse, better = (lost, gained) if (m or {}).get("higher_is_better") else (gained, lost)
    return f" {worse} case{'s' if worse != 1 else ''} got worse, {better} better."


def _section_risk(summary: dict[str, Any], confidence: float | None) -> list[str]:
    lines = ["## Primary regression risk", ""]
    rules = [r for r in (summary.get("verdict") or {}).get("rules") or [] if _harm(r) is not None]
    rules.sort(key=lambda r: (_harm(r) or (9, 1.0, 0.0), str(r.get("rule")), str(r.get("scope"))))
    by_metric = {str(m.get("metric")): m for m in summary.get("metrics") or []}
    slices = (summary.get("slices") or {}).get("cohort") or {}
    if not rules:
        return [*lines, "No gate rule moved the harmful way offline; the residual risk is what the suite does not cover."]
    top = rules[0]
    status = _STATUS_WORDS.get(str(top.get("status")), str(top.get("status")))
    p = top.get("p_adjusted")
    evidence = f", Holm-adjusted p {_p(p)}" if isinstance(p, int | float) else ""
    lines.append(f"**{_rule_evidence(top, by_metric, slices, confidence)}**: offline {status}{evidence}."
                 + (_flip_text(by_metric.get(str(top.get("metric")))) if top.get("scope") == "overall" else ""))
    degraded = _degraded(slices, str(top.get("metric")), 1.0 - float(confidence or 0.9))
    if degraded:
        lines += ["", f"- Degraded cohorts ({_metric_label(by_metric.get(str(top.get('metric'))) or {}).lower()}, "
                  "any move the harmful way): " + "; ".join(degraded) + "."]
    others = [r for r in rules[1:] if r.get("status") in ("fail", "inconclusive")]
    if others:
        if not degraded:
            lines.append("")
        lines += [f"- Also not cleared: {_rule_evidence(r, by_metric, slices, confidence)}: offline "
                  f"{_STATUS_WORDS.get(str(r.get('status')), str(r.get('status')))}{_settle(r)}" for r in others[:2]]
        if len(others) > 2:
            lines.append(f"- and {len(others) - 2} more rule(s) not cleared (see the report)")
    return lines


def _settle(rule: dict[str, Any]) -> str:
    n = rule.get("cases_needed")
    return f", about {int(n):,} cases would settle it" if rule.get("status") == "inconclusive" and n else ""


def _p(x: Any) -> str:
    v = float(x)
    return "<0.0001" if v < 0.0001 else f"{v:.3g}"


def _degraded(slices: dict[str, Any], metric: str, level: float) -> list[str]:
    """Cohorts whose ``metric`` moved the harmful way (significant or not), worst first."""
    found = []
    for name, entry in sorted(slices.items()):
        m = next((x for x in entry.get("metrics") or [] if x.get("metric") == metric), None)
        mv = _movement(m) if m else None
        if m is None or mv is None or mv[0] >= 0:
            continue
        q = m.get("q_value")
        sig = (q <= level) if isinstance(q, int | float) else mv[1]
        found.append((mv[0], name, f"{_code(name)} {_side_value(m, 'baseline').split(' (')[0]} → "
                      f"{_side_value(m, 'candidate').split(' (')[0]}"
                      f" ({'significant' if sig else 'not significant'})"))
    found.sort(key=lambda t: (t[0], t[1]))
    return [t[2] for t in found]


def _section_gain(
    expected: str | None, metrics: Sequence[dict[str, Any]], confidence: float | None
) -> list[str]:
    lines = ["## Expected gain", "", f"- {_md(expected) if expected else TODO_GAIN}"]
    found = []
    for m in metrics:
        mv = _movement(m)
        if mv is not None and mv[0] > 0 and mv[1]:
            size = _pts(m.get("delta")) if m.get("type") == "rate" else _ratio_pct(m.get("ratio"))
            found.append(f"{_metric_label(m).lower()} {_side_value(m, 'baseline').split(' (')[0]} → "
                         f"{_side_value(m, 'candidate').split(' (')[0]} ({size})")
    return [*lines, "- Measured offline (interval excludes no change): " + ("; ".join(found) if found else "none") + "."]


def _section_rollout(rollout: Any, suite_cohorts: list[str]) -> list[str]:
    choices = _md(", ".join(suite_cohorts)) if suite_cohorts else "(the suite names no cohort)"
    canary = list(rollout.canary_cohorts) if rollout else []
    expanded = list(rollout.expanded_cohorts) if rollout else []
    cohorts = (f"Canary: {_md(', '.join(canary))}" if canary else "TODO(owner): canary cohorts") + " · " + (
        f"Expanded: {_md(', '.join(expanded))}" if expanded else "TODO(owner): expanded cohorts")
    if not (canary and expanded):
        cohorts += f" (suite cohorts: {choices})"
    owner = f"Owner: {_md(rollout.owner)}" if rollout and rollout.owner else TODO_OWNER
    dashboard = f"Dashboard: {_md(rollout.dashboard)}" if rollout and rollout.dashboard else TODO_DASHBOARD
    return ["## Rollout", "", f"- {cohorts}", f"- {owner} · {dashboard}"]


def _group_of(rule: dict[str, Any]) -> tuple[int, str, str]:
    """(order, group heading, the item in it) of one rule's live trigger."""
    name = str(rule.get("rule"))
    scope = _scope_text(str(rule.get("scope", "overall")))
    margin, floor, ceiling = rule.get("margin"), rule.get("floor"), rule.get("ceiling")
    fail_at = rule.get("fail_margin", margin)
    m = float((margin if fail_at is None else fail_at) or 0.0)
    metric = catalogue.RULES.get(name)
    rd = metric.rule if metric is not None else None
    bound = ""
    if floor is not None:
        bound = f" (or below {_pct(floor)})"
    if ceiling is not None:
        bound = f" (or above {_pct(ceiling)})"
    if name == "error_rate":
        # What `evalrun plan` writes: a comparative rollback trigger (an outage both arms share
        # is not the candidate's fault) and Stage 1's max_error_rate as a hold.
        limit = f"; hold above {_pct(margin)}" if margin is not None else ""
        return 0, f"error rate rises measurably above the control's (timeouts, 5xx, malformed responses{limit})", ""
    if name == "known_bad_refusal" and "any-flip" in str(rule.get("trigger") or ""):
        return 3, "answers any harmful request the control refuses", f"known-bad refusal{scope}{bound}"
    if metric is not None and rd is not None and rd.kind == "delta":
        size = "measurably" if m == 0 else f"by more than {_points_word(m)}"
        if name == "known_bad_refusal":
            return 3, f"refusal of harmful requests drops {size} below the control's", f"known-bad refusal{scope}{bound}"
        if not metric.higher_is_better:
            return 2, f"rate rises {size} above the control's", f"{rd.live_subject.removeprefix('the ')}{scope}{bound}"
        return 1, f"quality drops {size} below the control's", f"{rd.live_subject.removeprefix('the ')}{scope}{bound}"
    if rd is not None and rd.kind == "ratio":
        ratio_at = fail_at if fail_at is not None else margin
        pct = f"{(float(ratio_at) - 1) * 100:g}%" if ratio_at is not None else "the margin"
        return 4, "cost or latency exceeds the control's by more than", f"{rd.live_subject} +{pct}"
    if name.startswith("label_") and name.removeprefix("label_") in VERSION_LABELS:
        return 6, "", name.removeprefix("label_")
    if name == "critical_cohort":
        return 5, "critical cohort is unmeasured (hold the rollout)", scope.strip()
    return 5, "other rules fire", f"{_md(rule.get('trigger') or name)}{scope} ({_code(name)})"


def _section_triggers(
    rules: Sequence[dict[str, Any]],
    base: dict[str, str],
    cand: dict[str, str],
    findings: dict[str, dict[str, Any]],
) -> list[str]:
    c, b, distinct = _segments(base, cand)
    lines = ["## Rollback triggers", ""]
    if not distinct:
        lines += [
            "**Warning: baseline and candidate carry the same four labels — live traffic cannot tell them "
            "apart. Bump the label of what changed before rollout.**",
            "",
        ]
    lines += [f"Candidate traffic: {c}; control: {b} (full filters below). Roll back when the candidate's "
              "(offline outcome in brackets):", ""]
    groups: dict[tuple[int, str], list[str]] = {}
    labels: list[str] = []
    for r in rules:
        order, head, item = _group_of(r)
        status = _STATUS_WORDS.get(str(r.get("status")), str(r.get("status")))
        if order == 6:
            f = findings.get(item) or {}
            fp = str(f.get("candidate_fingerprint") or "")
            labels.append(f"{item} {_code(fp[:12])}" if fp else item)
            if r.get("status") == "fail":
                labels[-1] += f" [offline: FAIL: {_md(r.get('reason') or '')}]"
            continue
        groups.setdefault((order, head), []).append(f"{item} [{status}]" if item else f"[{status}]")
    if not any(str(r.get("rule")) == "error_rate" for r in rules):
        groups.setdefault((0, "error rate rises measurably above the control's (timeouts, 5xx, malformed "
                              "responses)"), []).append("[live only]")
    for (_, head), items in sorted(groups.items()):
        lines.append(f"- {head}{'' if items[0].startswith('[') else ':'} {', '.join(items)}")
    if not rules:
        lines.append("- none: the verdict lists no rule")
    if labels:
        lines.append(f"- Re-gate if traffic with these labels is served by another config than the one gated here "
                     f"(fingerprints: {'; '.join(labels)}).")
    return lines


def _section_monitoring(base: dict[str, str], cand: dict[str, str]) -> list[str]:
    return [
        "## Monitoring filters",
        "",
        *_block("sql", f"-- candidate, then control (baseline)\n{sql_where(cand)}\n{sql_where(base)}"),
        "",
        f"JSON log filters: candidate {_code(json_log_filter(cand))}; control {_code(json_log_filter(base))}",
    ]


def render_rollout_note(
    summary: dict[str, Any],
    findings: list[dict[str, Any]],
    baseline: VariantConfig,
    candidate: VariantConfig,
) -> str:
    """The rollout note of a compare run, as deterministic markdown (about 40 lines).

    ``summary`` is summary.json's content, ``findings`` the label audit
    (``[f.to_dict() for f in evalrun.project.fingerprint.label_audit(...)]``; may be empty).
    """
    verdict = summary.get("verdict") or {}
    run = summary.get("run") or {}
    metrics: list[dict[str, Any]] = list(summary.get("metrics") or [])
    confidence = run.get("confidence")
    rollout = candidate.rollout
    base, cand = _labels(baseline), _labels(candidate)
    by_label = {str(f.get("label")): f for f in findings}
    status = str(verdict.get("status", "UNKNOWN"))
    code = verdict.get("exit_code")
    meaning = _EXIT_MEANING.get(int(code), "") if isinstance(code, int) else ""
    if status == "INCONCLUSIVE" and code == 0:
        meaning = "inconclusive, accepted (on_inconclusive: pass)"

    lines = [f"# Rollout note: {_md(baseline.name)} → {_md(candidate.name)}", ""]
    facts = [
        f"suite {_code(str(run.get('suite', '?')))}",
        f"{run.get('n_cases', '?')} cases × {run.get('samples', '?')} sample(s)",
    ]
    if confidence:
        facts.append(f"{_num(confidence * 100, 0)}% intervals")
    if summary.get("created"):
        facts.append(f"run {summary['created']}")
    if run.get("fingerprint"):
        facts.append(f"inputs {_code(str(run['fingerprint']))}")
    lines += [
        f"**Gate verdict: {status}, exit code {code}{f' ({meaning})' if meaning else ''}** · " + ", ".join(facts),
        "",
    ]
    if not (verdict.get("rules") or []):
        lines += [*(f"- {_md(reason)}" for reason in verdict.get("reasons") or []), ""]

    sections = [
        _section_change(by_label, base, cand, rollout.change if rollout else None),
        _section_risk(summary, confidence),
        _section_gain(rollout.expected_gain if rollout else None, metrics, confidence),
        _section_rollout(rollout, sorted((summary.get("slices") or {}).get("cohort") or {})),
        _section_triggers(list(verdict.get("rules") or []), base, cand, by_label),
        _section_monitoring(base, cand),
    ]
    for section in sections:
        lines += [*section, ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_rollout_note(
    run_dir: Path,
    summary: dict[str, Any],
    findings: list[dict[str, Any]],
    baseline: VariantConfig,
    candidate: VariantConfig,
) -> Path:
    """Render the note and write it to ``run_dir/rollout_note.md``; return the path."""
    from evalrun.execution.store import write_text

    path = Path(run_dir) / ROLLOUT_NOTE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, render_rollout_note(summary, findings, baseline, candidate))  # atomic; one-line errors
    return path
