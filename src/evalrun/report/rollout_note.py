"""The rollout note: what a compare run means for the live rollout, as markdown.

``render_rollout_note`` fills the team's rollout-note template from a finished compare:
the verdict, the change (label diffs and the config fields behind them), the expected
gain, the primary regression risk, canary / expanded cohorts, the metrics to watch with
their offline values, every enabled gate rule restated as a live rollback trigger, owner,
dashboard, and ready-to-paste monitoring filters for the candidate and control segments.

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
# Judge-graded quality: listed when the suite has judge checks (live traffic is not judged:
# a rollout re-judges a sample of it offline with the same judge and criteria).
_JUDGED: tuple[tuple[str, str], ...] = (("judge_pass_rate", "Judge pass rate (rubric, offline judge)"),
                                        ("pairwise_net", "Pairwise net preference (offline judge)"))

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
    if m.get("type") in ("rate", "preference"):
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
    if kind == "preference":
        return "—" if side == "baseline" else f"{_num(m.get('wins') or 0, 0)} wins / {_num(m.get('ties') or 0, 0)} ties / " \
            f"{_num(m.get('losses') or 0, 0)} losses"
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


def _change(m: dict[str, Any]) -> str:
    if m.get("type") in ("rate", "preference"):
        if m.get("delta") is None:
            return "not measured" if not m.get("paired_n") else "n/a"
        return f"{_pts(m['delta'])} ({_interval(m, None).removeprefix('CI ')})"
    if m.get("note"):
        return str(m["note"])
    if m.get("ratio") is None:
        return "not measured" if not m.get("paired_n") else "n/a"
    return f"{_ratio_pct(m['ratio'])} ({_interval(m, None).removeprefix('CI ')})"


# ---------------------------------------------------------------------------- metric reading


def _metric_label(m: dict[str, Any]) -> str:
    names = dict(_WATCH + _JUDGED)
    return names.get(str(m.get("metric")), str(m.get("label") or m.get("metric")))


def _movement(m: dict[str, Any]) -> tuple[float, bool] | None:
    """(signed favourable size in display units, interval excludes no-change) or None.

    Rates count in points, ratios / quantiles in % above 1; positive means better.
    """
    if m.get("type") in ("rate", "preference"):
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
    size = _pts(m.get("delta")) if m.get("type") in ("rate", "preference") else _ratio_pct(m.get("ratio"))
    return (
        f"{_metric_label(m)}: {_side_value(m, 'baseline')} → {_side_value(m, 'candidate')} "
        f"({size}, {_interval(m, confidence)})"
    )


def _improvements(metrics: Sequence[dict[str, Any]], confidence: float | None) -> list[str]:
    out = []
    for m in metrics:
        mv = _movement(m)
        if mv is not None and mv[0] > 0 and mv[1]:
            out.append(f"- {_describe(m, confidence)}")
    return out


def _adverse(metrics: Sequence[dict[str, Any]]) -> list[tuple[float, int, dict[str, Any]]]:
    """Watched metrics that moved the wrong way, largest first.

    Only metrics with a rollback trigger count: a longer system prompt raises prompt
    tokens by design, which is a cost (watched as cost per call), not a regression.
    """
    watched = dict(_WATCH + _JUDGED)
    found = []
    for i, m in enumerate(metrics):
        if m.get("metric") not in watched:
            continue
        mv = _movement(m)
        if mv is not None and mv[0] < 0:
            found.append((-mv[0], i, m))
    # Largest adverse size first; the summary's metric order breaks ties.
    found.sort(key=lambda t: (-t[0], t[1]))
    return found


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


def _trigger_sentence(
    rule: dict[str, Any], cand: str, base: str, findings: dict[str, dict[str, Any]]
) -> str:
    name = str(rule.get("rule"))
    margin = rule.get("margin")
    floor = rule.get("floor")
    where = f"on {cand} traffic{_scope_text(str(rule.get('scope', 'overall')))}"
    if name == "error_rate":
        limit = _pct(margin) if margin is not None else "the tolerance"
        return f"Roll back if the error rate {where} exceeds {limit} (timeouts, 5xx, malformed responses)."
    # The live rollback trigger is the offline FAIL threshold (fail_margin, else margin).
    fail_at = rule.get("fail_margin", margin)
    m = float((margin if fail_at is None else fail_at) or 0.0)
    ceiling = rule.get("ceiling")
    if name == "known_bad_refusal":
        scope = _scope_text(str(rule.get("scope", "overall")))
        if "any-flip" in str(rule.get("trigger") or ""):
            text = f"Roll back if {cand} traffic{scope} answers any harmful request {base} refuses"
        elif m == 0:
            text = f"Roll back if {cand} traffic{scope} refuses harmful requests measurably less often than {base}"
        else:
            text = (f"Roll back if {cand} traffic{scope} refuses harmful requests more than {_points_word(m)} "
                    f"less often than {base}")
        if floor is not None:
            text += f", or refuses fewer than {_pct(floor)} of known-bad requests"
        return text + "."
    if name in ("judge_pass_rate", "pairwise_net_loss"):
        scope = _scope_text(str(rule.get("scope", "overall")))
        if name == "judge_pass_rate":
            size = "drops measurably" if m == 0 else f"drops more than {_points_word(m)}"
            what = f"the judge pass rate of {cand} answers {size} below {base}'s"
        else:
            what = (f"{cand} answers evidently lose more pairwise comparisons than they win"
                    + ("" if m == 0 else f" by more than {_points_word(m)}"))
        return (f"Re-judge a sample of live answers{scope} offline with the same judge and criteria (live "
                f"traffic is not judged); roll back if {what} ({_code(name)}).")
    metric = catalogue.RULES.get(name)
    rule_def = metric.rule if metric is not None else None
    if metric is not None and rule_def is not None and rule_def.kind == "delta":
        if not metric.higher_is_better:
            size = "rises measurably above" if m == 0 else f"rises more than {_points_word(m)} above"
        else:
            size = "drops measurably below" if m == 0 else f"drops more than {_points_word(m)} below"
        text = f"Roll back if {rule_def.live_subject} {where} {size} {base}'s"
        if floor is not None:
            text += f", or falls below {_pct(floor)}"
        if ceiling is not None:
            text += f", or rises above {_pct(ceiling)}"
        return text + "."
    if rule_def is not None and rule_def.kind == "ratio":
        ratio_at = fail_at if fail_at is not None else margin
        pct = f"{(float(ratio_at) - 1) * 100:g}%" if ratio_at is not None else "the margin"
        return f"Roll back if {rule_def.live_subject} {where} is more than {pct} above {base}'s."
    if name.startswith("label_") and name.removeprefix("label_") in VERSION_LABELS:
        label = name.removeprefix("label_")
        f = findings.get(label) or {}
        fp = str(f.get("candidate_fingerprint") or "")
        what = f"fingerprint {_code(fp[:12])}" if fp else "configuration"
        value = f.get("candidate_label")
        seg = _code(f"{label}={value}") if value is not None else f"this {label}"
        return (
            f"Roll back and re-gate if traffic labelled {seg} is served by a {label} other than the "
            f"one gated here ({what}): a hidden edit makes the live comparison meaningless."
        )
    if name == "critical_cohort":
        return (
            f"Hold the rollout{_scope_text(str(rule.get('scope', '')))}: it is a critical cohort "
            "but no case of the suite measures it."
        )
    trigger = str(rule.get("trigger") or name)
    return (
        f"Roll back if {trigger}{_scope_text(str(rule.get('scope', 'overall')))} ({_code(name)})."
    )


# ---------------------------------------------------------------------------- sections


def _section_change(
    findings: dict[str, dict[str, Any]],
    base: dict[str, str],
    cand: dict[str, str],
    change: str | None,
) -> list[str]:
    lines = [
        "## Change",
        "",
        _md(change) if change else TODO_CHANGE,
        "",
        "| Label | Baseline | Candidate | Config check |",
        "|---|---|---|---|",
    ]
    for label in VERSION_LABELS:
        f = findings.get(label)
        arrow = "→ " if base[label] != cand[label] else ""
        if f is None:
            check = "not audited"
        else:
            status = str(f.get("status"))
            fields = _md(", ".join(f.get("changed_fields") or []))
            check = {
                "hidden_edit": f"**hidden edit, bump the label**: {fields}",
                "bumped_without_change": "warning: label bumped, nothing it covers changed",
                "bumped": f"bumped: {fields}",
                "unchanged": "unchanged",
            }.get(status, status)
        lines.append(f"| {label} | {_code(base[label])} | {arrow}{_code(cand[label])} | {check} |")
    lines.append("")
    changed = [
        f for label in VERSION_LABELS if (f := findings.get(label)) and f.get("changed_fields")
    ]
    if not findings:
        lines.append("Config diff: not available (no label audit was passed).")
    elif not changed:
        lines.append("Config diff: no fingerprinted field differs between the two configs.")
    else:
        lines.append("Config diff:")
        lines.append("")
        for f in changed:
            lines.append(f"- {f['label']}: {_md(', '.join(f['changed_fields']))}")
        for f in changed:
            if f.get("diff"):
                lines += ["", *_block("diff", str(f["diff"]))]
    return lines


def _section_gain(
    expected: str | None, metrics: Sequence[dict[str, Any]], confidence: float | None
) -> list[str]:
    lines = [
        "## Expected gain",
        "",
        _md(expected) if expected else TODO_GAIN,
        "",
        "Measured offline (interval excludes no change):",
        "",
    ]
    found = _improvements(metrics, confidence)
    return lines + (found or ["- none: no metric improved with an interval that excludes zero"])


def _section_risk(metrics: Sequence[dict[str, Any]], confidence: float | None) -> list[str]:
    lines = ["## Primary regression risk", ""]
    adverse = _adverse(metrics)
    if not adverse:
        return [
            *lines,
            "No metric moved in the adverse direction offline; the residual risk is what the suite does not cover.",
        ]
    _, _, top = adverse[0]
    mv = _movement(top)
    sure = "the interval excludes no change" if mv and mv[1] else "the interval includes no change"
    lines.append(f"**{_describe(top, confidence)}** — {sure}.")
    if len(adverse) > 1:
        lines += ["", "Other adverse movements:", ""]
        lines += [f"- {_describe(m, confidence)}" for _, _, m in adverse[1:]]
    return lines


def _section_cohorts(canary: list[str], expanded: list[str], suite_cohorts: list[str]) -> list[str]:
    choices = _md(", ".join(suite_cohorts)) if suite_cohorts else "(the suite names no cohort)"
    lines = ["## Canary and expanded cohorts", ""]
    lines.append(
        f"- Canary: {_md(', '.join(canary))}"
        if canary
        else f"- TODO(owner): canary cohorts (suite cohorts: {choices})"
    )
    lines.append(
        f"- Expanded: {_md(', '.join(expanded))}"
        if expanded
        else f"- TODO(owner): expanded cohorts (suite cohorts: {choices})"
    )
    return lines


def _section_watch(metrics: Sequence[dict[str, Any]]) -> list[str]:
    by = {m.get("metric"): m for m in metrics}
    lines = [
        "## Metrics to watch",
        "",
        "Offline values, baseline → candidate:",
        "",
        "| Metric | Baseline (offline) | Candidate (offline) | Change |",
        "|---|---|---|---|",
    ]
    for key, label in _WATCH:
        m = by.get(key)
        if m is None:
            lines.append(f"| {label} | n/a | n/a | not computed |")
            continue
        lines.append(
            f"| {label} | {_side_value(m, 'baseline')} | {_side_value(m, 'candidate')} | {_change(m)} |"
        )
    for key, label in _JUDGED:
        m = by.get(key)
        if m is not None:
            corrected = " (corrected for the judge's error rates)" if (m.get("judge") or {}).get("corrected") else ""
            lines.append(f"| {label} | {_side_value(m, 'baseline')} | {_side_value(m, 'candidate')} | "
                         f"{_change(m)}{corrected} |")
    return lines


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
    lines.append(
        "Every enabled gate rule, restated for live traffic (offline outcome in brackets):"
    )
    lines.append("")
    for r in rules:
        status = _STATUS_WORDS.get(str(r.get("status")), str(r.get("status")))
        lines.append(f"- {_trigger_sentence(r, c, b, findings)} [offline: {status}]")
    if not rules:
        lines.append("- none: the verdict lists no rule")
    return lines


def _section_monitoring(base: dict[str, str], cand: dict[str, str]) -> list[str]:
    return [
        "## Monitoring query",
        "",
        "Candidate segment:",
        "",
        *_block("sql", sql_where(cand)),
        "",
        *_block("json", json_log_filter(cand)),
        "",
        "Control segment (baseline):",
        "",
        *_block("sql", sql_where(base)),
        "",
        *_block("json", json_log_filter(base)),
    ]


def render_rollout_note(
    summary: dict[str, Any],
    findings: list[dict[str, Any]],
    baseline: VariantConfig,
    candidate: VariantConfig,
) -> str:
    """The rollout note of a compare run, as deterministic markdown.

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
    lines.append(
        f"**Gate verdict: {status}, exit code {code}{f' ({meaning})' if meaning else ''}**"
    )
    lines.append("")
    lines += [f"- {_md(reason)}" for reason in verdict.get("reasons") or []]
    lines.append("")
    facts = [
        f"suite {_code(str(run.get('suite', '?')))}",
        f"{run.get('n_cases', '?')} cases",
        f"{run.get('samples', '?')} sample(s) per case",
    ]
    if confidence:
        facts.append(f"{_num(confidence * 100, 0)}% intervals")
    if summary.get("created"):
        facts.append(f"run {summary['created']}")
    if run.get("fingerprint"):
        facts.append(f"inputs {_code(str(run['fingerprint']))}")
    lines += ["Offline evidence: " + ", ".join(facts) + ".", ""]

    sections = [
        _section_change(by_label, base, cand, rollout.change if rollout else None),
        _section_gain(rollout.expected_gain if rollout else None, metrics, confidence),
        _section_risk(metrics, confidence),
        _section_cohorts(
            list(rollout.canary_cohorts) if rollout else [],
            list(rollout.expanded_cohorts) if rollout else [],
            sorted((summary.get("slices") or {}).get("cohort") or {}),
        ),
        _section_watch(metrics),
        _section_triggers(list(verdict.get("rules") or []), base, cand, by_label),
        ["## Owner", "", (_md(rollout.owner) if rollout and rollout.owner else TODO_OWNER)],
        [
            "## Dashboard / query",
            "",
            (_md(rollout.dashboard) if rollout and rollout.dashboard else TODO_DASHBOARD),
        ],
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
