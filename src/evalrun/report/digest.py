"""What a reviewer reads first: the verdict's story, shared by report.html and summary.md.

``digest`` turns the typed summary (and the result rows, for outputs) into four short
things: the rules that did not pass, each in words with its flip counts; the rules that
passed, in one line; the worst regressed examples with both outputs and the failing check;
and the cohorts that got worse, by direction whether or not the change is significant
(significance is a separate field). Every number is formatted from the ``Summary`` with
``report.fmt``, so the first screen and the full tables cannot disagree.

Strings here are plain text (control characters stripped, capped): each renderer escapes
them for its own format.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from evalrun import catalogue
from evalrun.analysis.summary_model import (
    MetricResult,
    QuantileMetric,
    RateMetric,
    RatioMetric,
    RuleResult,
    Summary,
)
from evalrun.report import fmt
from evalrun.report.sanitize import strip_control, truncate

__all__ = [
    "MAX_EXAMPLES",
    "CohortChange",
    "CohortWorse",
    "Digest",
    "Example",
    "RuleLine",
    "SideOutput",
    "case_anchor",
    "digest",
    "direction",
    "is_significant",
    "rule_name",
]

MAX_EXAMPLES = 3
"""Regressed examples on the first screen and in the PR comment."""
EXAMPLE_CHARS = 280
"""Characters of each output shown in an example (the case card has the rest)."""
MAX_COHORTS = 4
"""Degraded cohorts named on the first screen (the slice table has them all)."""

_DECIDING = ("fail", "inconclusive")
_METRIC_NAMES = frozenset(m.name for m in catalogue.METRICS)
_VERDICT_ORDER = {"fail": 0, "inconclusive": 1}


@dataclass(frozen=True, slots=True)
class RuleLine:
    """One gate rule in words: what moved, how far, how many cases flipped, what decides it."""

    rule: str
    scope: str
    status: str
    title: str
    """"Over-refusal" or "Over-refusal in cohort fashion"."""
    baseline: str
    candidate: str
    change: str
    """The change with its interval, in the metric's units ("" when the rule reads none)."""
    allowed: str
    """The margin / bound the rule holds the change to."""
    worse: int | None
    """Cases that moved the wrong way on this rule's metric (None: not counted)."""
    better: int | None
    evidence: str
    """FAIL: the Holm-adjusted p; INCONCLUSIVE: the cases that would settle it; else ""."""
    reason: str
    """The gate's own reason (used when the rule reads no metric)."""


@dataclass(frozen=True, slots=True)
class SideOutput:
    """One side's output of a case (the first sample), capped."""

    text: str | None
    cut: int
    passed: bool | None
    failed_checks: tuple[str, ...]
    """``check: detail`` of every failed check."""
    error: str | None


@dataclass(frozen=True, slots=True)
class Example:
    """A regressed case: both outputs side by side and why the candidate failed."""

    case_id: str
    href: str
    kind: str
    cohort: str
    baseline: SideOutput
    candidate: SideOutput
    rules: tuple[str, ...]
    """The undecided / failing rules this case counts against."""


@dataclass(frozen=True, slots=True)
class CohortChange:
    """One metric of one cohort that moved the wrong way."""

    metric: str
    label: str
    baseline: str
    candidate: str
    change: str
    significant: bool
    """The interval excludes no change."""
    evidence: str
    """"p 0.012" (critical cohorts), "q 0.21" (exploratory) or ""."""
    size: float
    """How far it moved the wrong way, in points (rates) or percent (ratios): sort key."""


@dataclass(frozen=True, slots=True)
class CohortWorse:
    """A cohort with at least one metric that moved the wrong way."""

    cohort: str
    href: str
    n_cases: int
    critical: bool
    changes: tuple[CohortChange, ...]


@dataclass(frozen=True, slots=True)
class Digest:
    """The first screen: undecided and failing rules, what passed, examples, cohorts."""

    deciding: tuple[RuleLine, ...]
    passed: tuple[str, ...]
    """Short names of the passed metric rules, with their change ("strict parse +75.0 pts")."""
    labels_ok: bool | None
    """Every label rule passed (None: the verdict has no label rule)."""
    not_applicable: tuple[str, ...]
    regressions: int
    improvements: int
    examples: tuple[Example, ...]
    cohorts: tuple[CohortWorse, ...]
    cohorts_hidden: int


def case_anchor(case_id: Any) -> str:
    """The fragment of a case card in report.html (``#case-`` + the percent-encoded id)."""
    return "#case-" + quote(str(case_id), safe="")


def _text(value: Any, limit: int = 300) -> str:
    text, cut = truncate(strip_control("" if value is None else str(value)), limit)
    return text + "…" if cut else text


def _metric_for(summary: Summary, rule: RuleResult) -> MetricResult | None:
    if not rule.metric:
        return None
    if rule.scope == "overall":
        return summary.metric(rule.metric)
    if rule.scope.startswith("cohort:"):
        entry = (summary.slices.get("cohort") or {}).get(rule.scope.removeprefix("cohort:"))
        if entry is not None:
            return next((m for m in entry.metrics if m.metric == rule.metric), None)
    return None


def _flip_counts(m: MetricResult | None) -> tuple[int | None, int | None]:
    """(cases worse, cases better) on a rate metric; better is None without a 2×2 table."""
    if not isinstance(m, RateMetric) or not m.paired_n:
        return None, None
    if m.table is not None:
        # n10: baseline 1, candidate 0. For a higher-is-better rate that is a case lost.
        lost, gained = m.table.n10, m.table.n01
        return (lost, gained) if m.higher_is_better else (gained, lost)
    return m.regressed_cases, None


def rule_name(rule: RuleResult) -> str:
    """A rule's short name in words ("over-refusal", "latency p50"); the rule id otherwise."""
    metric = catalogue.RULES.get(rule.rule)
    if metric is None and rule.metric in _METRIC_NAMES:
        metric = catalogue.by_name(rule.metric)
    return metric.short if metric is not None and metric.short else rule.rule


def _title(rule: RuleResult, m: MetricResult | None) -> str:
    if rule.rule.startswith("label_"):
        return f"Label {_text(rule.rule.removeprefix('label_'), 100)}"
    name = rule_name(rule)
    name = name[:1].upper() + name[1:]
    if rule.scope.startswith("cohort:"):
        return f"{name} in cohort {_text(rule.scope.removeprefix('cohort:'), 100)}"
    return name if rule.scope == "overall" else f"{name} ({_text(rule.scope, 100)})"


def _evidence(rule: RuleResult) -> str:
    if rule.status == "fail":
        adj = fmt.finite(rule.p_adjusted)
        return f"Holm-adjusted p {fmt.p_value(adj)}" if adj is not None else ""
    if rule.status == "inconclusive":
        return fmt.rule_settle(rule)
    return ""


def _rule_line(summary: Summary, rule: RuleResult) -> RuleLine:
    m = _metric_for(summary, rule)
    worse, better = _flip_counts(m)
    has_values = m is not None and fmt.finite(rule.observed) is not None
    return RuleLine(
        rule=_text(rule.rule, 100),
        scope=_text(rule.scope, 100),
        status=rule.status,
        title=_title(rule, m),
        baseline=fmt.metric_side(m, "baseline", with_ci=False) if has_values and m is not None else "",
        candidate=fmt.metric_side(m, "candidate", with_ci=False) if has_values and m is not None else "",
        change=fmt.rule_observed(rule) if has_values else "",
        allowed="" if fmt.rule_margin(rule) == "—" else fmt.rule_margin(rule),
        worse=worse,
        better=better,
        evidence=_evidence(rule),
        reason=_text(rule.reason, 400),
    )


def _passed_text(summary: Summary, rule: RuleResult) -> str:
    m = _metric_for(summary, rule)
    name = rule_name(rule)
    if rule.scope != "overall":
        name += f" [{_text(rule.scope, 60)}]"
    if rule.rule == "error_rate":
        return f"{name} {fmt.pct(rule.observed)}" if fmt.finite(rule.observed) is not None else name
    if m is None or fmt.finite(rule.observed) is None:
        return name
    return f"{name} {fmt.rule_observed(rule).split(' [')[0]}"


def _not_measured(summary: Summary, rule: RuleResult) -> str:
    """A not-applicable rule's name, with "(unpriced)" when a side's cost is unknown."""
    name = rule_name(rule) if rule.scope == "overall" else f"{rule_name(rule)} [{_text(rule.scope, 60)}]"
    m = _metric_for(summary, rule)
    if isinstance(m, RatioMetric) and any("unpriced" in v for v in (m.cost_status or {}).values()):
        name += " (unpriced)"
    return name


def _is_label_rule(rule: RuleResult) -> bool:
    return rule.rule.startswith("label_")


# --------------------------------------------------------------------------- examples


def _bad_on(metric: str, score: Mapping[str, Any]) -> bool:
    """Whether a candidate call counts against ``metric`` (which rule the example shows)."""
    if metric == "over_refusal":
        return bool(score.get("refused")) and not score.get("should_refuse")
    if metric == "known_bad_refusal":
        return bool(score.get("should_refuse")) and not score.get("refused")
    if metric in ("parse_strict", "schema_valid", "tool_valid"):
        return score.get(metric) is False
    if metric == "pass_rate":
        return score.get("passed") is False
    return False


def _side_output(row: Mapping[str, Any] | None, limit: int) -> SideOutput:
    if row is None:
        return SideOutput(None, 0, None, (), "no call recorded")
    score = row.get("score") or {}
    output = row.get("output")
    text, cut = (truncate(strip_control(output), limit) if isinstance(output, str) else (None, 0))
    failed = tuple(
        _text(f"{c.get('check')}: {c.get('detail') or 'failed'}", 240)
        for c in score.get("checks") or [] if not c.get("passed")
    )
    error = None
    if row.get("error_kind") is not None:
        error = _text(f"{row.get('error_kind')}: {row.get('error_message') or ''}".rstrip(": "), 240)
    passed = score.get("passed")
    return SideOutput(text, cut, passed if isinstance(passed, bool) else None, failed, error)


def _examples(summary: Summary, rows: Iterable[Mapping[str, Any]], deciding: Sequence[RuleResult],
              limit: int, chars: int) -> tuple[Example, ...]:
    regressions = summary.flips.regressions
    if not regressions or limit <= 0:
        return ()
    wanted = {f.case_id for f in regressions}
    # The first sample where the candidate failed (else sample 0), per case and side.
    calls: dict[str, dict[int, dict[str, Mapping[str, Any]]]] = {}
    for r in rows:
        cid = str(r.get("case_id"))
        if cid in wanted:
            calls.setdefault(cid, {}).setdefault(int(r.get("sample") or 0), {})[str(r.get("side"))] = r
    metrics = [(r.metric, r.status) for r in deciding if r.scope == "overall" and r.metric]
    ranked = []
    for f in regressions:
        samples = calls.get(f.case_id) or {}
        failed = [s for _, s in sorted(samples.items())
                  if ((s.get("candidate") or {}).get("score") or {}).get("passed") is False]
        pick: Mapping[str, Mapping[str, Any]] = failed[0] if failed else (samples[min(samples)] if samples else {})
        cand_score = (pick.get("candidate") or {}).get("score") or {}
        hits = tuple(_short(name, name) for name, _ in metrics if _bad_on(name, cand_score))
        weight = sum(2 if status == "fail" else 1 for name, status in metrics if _bad_on(name, cand_score))
        drop = (fmt.finite(f.baseline) or 0.0) - (fmt.finite(f.candidate) or 0.0)
        ranked.append((-weight, -drop, f.case_id, f, pick, hits))
    ranked.sort(key=lambda t: (t[0], t[1], t[2]))
    out = []
    for _, _, _, f, pick, hits in ranked[:limit]:
        out.append(Example(
            case_id=_text(f.case_id, 200),
            href=case_anchor(f.case_id),
            kind=_text(f.kind, 100),
            cohort=_text(f.cohort, 100),
            baseline=_side_output(pick.get("baseline"), chars),
            candidate=_side_output(pick.get("candidate"), chars),
            rules=hits,
        ))
    return tuple(out)


# --------------------------------------------------------------------------- cohorts


def _worse_size(m: MetricResult) -> tuple[float, bool] | None:
    """(how far the point estimate moved the wrong way, interval excludes no change)."""
    if isinstance(m, RateMetric):
        d = fmt.finite(m.delta)
        if d is None or not m.paired_n:
            return None
        size = -d if m.higher_is_better else d
        lo, hi = fmt.finite((m.delta_ci or [None, None])[0]), fmt.finite((m.delta_ci or [None, None])[1])
        sig = lo is not None and hi is not None and (lo > 0 or hi < 0)
        return size * 100, sig
    if isinstance(m, RatioMetric | QuantileMetric):
        r = fmt.finite(m.ratio)
        if r is None:
            return None
        ci = m.ratio_ci or [None, None]
        lo, hi = fmt.finite(ci[0]), fmt.finite(ci[1])
        sig = lo is not None and hi is not None and (lo > 1 or hi < 1)
        return (r - 1) * 100, sig  # every ratio metric is lower-is-better
    return None


def direction(m: MetricResult | None) -> str:
    """"worse" / "better" by the point estimate (significant or not), "" when unchanged."""
    if m is None:
        return ""
    moved = _worse_size(m)
    if moved is None or round(moved[0], 6) == 0:
        return ""
    return "worse" if moved[0] > 0 else "better"


def is_significant(m: MetricResult | None, level: float) -> bool:
    """Whether a change is significant at ``level`` (1 − the run's confidence).

    An exploratory slice (one with a Benjamini–Hochberg q-value) is significant when
    q ≤ level; anything else (overall metrics, critical cohorts) when its interval excludes
    no change. So a "significant" beside a cohort never contradicts the q next to it.
    """
    if m is None:
        return False
    q = fmt.finite(getattr(m, "q_value", None))
    if q is not None:
        return q <= level
    moved = _worse_size(m)
    return bool(moved and moved[1])


def _cohorts(summary: Summary, metrics: Sequence[str]) -> list[CohortWorse]:
    level = 1.0 - float(summary.run.confidence)
    found = []
    for name, entry in sorted((summary.slices.get("cohort") or {}).items()):
        changes = []
        for m in entry.metrics:
            if m.metric not in metrics or not isinstance(m, RateMetric):
                continue
            moved = _worse_size(m)
            if moved is None or moved[0] <= 0 or round(moved[0], 6) == 0:
                continue
            if entry.critical:
                evidence = f"p {fmt.p_value(m.p_value)}" if m.p_value is not None else ""
            else:
                evidence = f"q {fmt.p_value(m.q_value)}" if m.q_value is not None else ""
            changes.append(CohortChange(
                metric=m.metric,
                label=_short(m.metric, m.label),
                baseline=fmt.metric_side(m, "baseline", with_ci=False),
                candidate=fmt.metric_side(m, "candidate", with_ci=False),
                change=fmt.metric_change(m),
                significant=is_significant(m, level),
                evidence=evidence,
                size=moved[0],
            ))
        if changes:
            changes.sort(key=lambda c: (-c.size, c.metric))
            found.append(CohortWorse(_text(name, 100), "#slices", entry.n_cases, entry.critical, tuple(changes)))
    found.sort(key=lambda c: (not any(x.significant for x in c.changes), -c.changes[0].size, c.cohort))
    return found


def _short(metric: str, label: str) -> str:
    m = catalogue.by_name(metric) if metric in _METRIC_NAMES else None
    return m.short if m is not None and m.short else label


# --------------------------------------------------------------------------- the digest


def digest(summary: Summary, rows: Iterable[Mapping[str, Any]] = (), *, max_examples: int = MAX_EXAMPLES,
           example_chars: int = EXAMPLE_CHARS, max_cohorts: int = MAX_COHORTS) -> Digest:
    """The first screen of ``summary`` (``rows``: results.jsonl's rows, for the examples' outputs)."""
    rules = summary.verdict.rules
    deciding = sorted((r for r in rules if r.status in _DECIDING),
                      key=lambda r: (_VERDICT_ORDER[r.status], r.scope != "overall"))
    labels = [r for r in rules if _is_label_rule(r)]
    passed = tuple(_passed_text(summary, r) for r in rules if r.status == "pass" and not _is_label_rule(r))
    na_rules = [r for r in rules if r.status == "not_applicable"]
    na = [_not_measured(summary, r) for r in na_rules if r.scope == "overall"]
    scoped = len(na_rules) - len(na)
    if scoped:
        na.append(f"{scoped} cohort rule{'s' if scoped != 1 else ''}")
    slice_metrics = tuple(m.name for m in catalogue.METRICS if m.slice_label and m.kind == "rate")
    cohorts = _cohorts(summary, slice_metrics)
    return Digest(
        deciding=tuple(_rule_line(summary, r) for r in deciding),
        passed=passed,
        labels_ok=all(r.status == "pass" for r in labels) if labels else None,
        not_applicable=tuple(na),
        regressions=len(summary.flips.regressions),
        improvements=len(summary.flips.improvements),
        examples=_examples(summary, rows, deciding, max_examples, example_chars),
        cohorts=tuple(cohorts[:max_cohorts]),
        cohorts_hidden=max(0, len(cohorts) - max_cohorts),
    )
