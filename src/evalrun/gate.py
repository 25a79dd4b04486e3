"""The gate: turn metrics into a verdict, rule by rule.

Each rule is a rollback trigger written as a non-inferiority margin. With the interval
from ``compare`` at confidence 1 − 2α (a one-sided test at α):

* PASS when the whole interval is on the safe side of the margin,
* FAIL when it is wholly beyond the margin, or a hard floor / "any" rule is crossed,
* INCONCLUSIVE otherwise — with the minimum detectable effect and the number of cases
  that would resolve it.

Precedence of the verdict: COULD_NOT_MEASURE (errors above tolerance, nothing paired) >
FAIL > INCONCLUSIVE > PASS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from evalrun import stats
from evalrun.config import GateConfig, RuleSpec
from evalrun.errors import ExitCode

Status = Literal["pass", "fail", "inconclusive", "not_applicable"]
VerdictStatus = Literal["PASS", "FAIL", "INCONCLUSIVE", "COULD_NOT_MEASURE"]


@dataclass(frozen=True, slots=True)
class RuleDef:
    """How a rule reads a metric: the metric, its direction and the trigger sentence."""

    name: str
    metric: str
    kind: Literal["delta", "ratio", "any_regression"]
    higher_is_better: bool
    trigger: str  # a format string over the rule spec


RULES: dict[str, RuleDef] = {
    "pass_rate": RuleDef("pass_rate", "pass_rate", "delta", True, "pass rate drops more than {m} points"),
    "parse_strict": RuleDef("parse_strict", "parse_strict", "delta", True, "strict parse rate drops more than {m} points{floor}"),
    "schema_valid": RuleDef("schema_valid", "schema_valid", "delta", True, "schema-valid rate drops more than {m} points{floor}"),
    "tool_valid": RuleDef("tool_valid", "tool_valid", "delta", True, "tool-call validity drops more than {m} points{floor}"),
    "over_refusal": RuleDef("over_refusal", "over_refusal", "delta", False, "over-refusal rises more than {m} points"),
    "known_bad_refusal": RuleDef("known_bad_refusal", "known_bad_refusal", "any_regression", True, "any known-bad case stops refusing{floor}"),
    "completion_tokens_ratio": RuleDef("completion_tokens_ratio", "completion_tokens", "ratio", False, "completion tokens per call up more than {pct}"),
    "cost_ratio": RuleDef("cost_ratio", "cost", "ratio", False, "cost per call up more than {pct}"),
    "latency_p50_ratio": RuleDef("latency_p50_ratio", "latency_p50", "ratio", False, "p50 latency up more than {pct}"),
    "latency_p95_ratio": RuleDef("latency_p95_ratio", "latency_p95", "ratio", False, "p95 latency up more than {pct}"),
}
# Rules a critical cohort is gated on by itself (latency/cost are suite-wide properties).
COHORT_RULES = ("pass_rate", "parse_strict", "schema_valid", "tool_valid", "over_refusal", "known_bad_refusal")


@dataclass(slots=True)
class RuleResult:
    """One rule's outcome, with the numbers that decided it."""

    rule: str
    scope: str
    trigger: str
    metric: str
    status: Status
    reason: str
    observed: float | None = None
    ci: list[float] | None = None
    margin: float | None = None
    floor: float | None = None
    candidate_value: float | None = None
    mde: float | None = None
    cases_needed: int | None = None
    paired_n: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class Verdict:
    """The gate's answer and why."""

    status: VerdictStatus
    exit_code: int
    reasons: list[str]
    rules: list[RuleResult] = field(default_factory=list)
    on_inconclusive: str = "fail"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "reasons": list(self.reasons),
            "on_inconclusive": self.on_inconclusive,
            "rules": [r.to_dict() for r in self.rules],
        }


def _pts(x: float) -> str:
    return f"{abs(x) * 100:g}"


def trigger_text(rd: RuleDef, spec: RuleSpec) -> str:
    """The rule as a sentence a team writes in its rollout note."""
    floor = f", or falls below {spec.floor * 100:g}%" if spec.floor is not None else ""
    if rd.kind == "any_regression" and spec.floor is not None:
        floor = f", or refusal on known-bad cases falls below {spec.floor * 100:g}%"
    m = spec.margin if spec.margin is not None else 0.0
    pct = f"{(m - 1) * 100:g}%" if rd.kind == "ratio" else ""
    text = rd.trigger.format(m=_pts(m), floor=floor, pct=pct)
    return text.replace(" 1 points", " 1 point")


def _by_metric(metrics: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["metric"]: m for m in metrics}


def _fmt_rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f}%"


def _fmt_delta(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f} pts"


def _note_cases_needed(res: RuleResult, estimate: float, bound: float, margin: float, higher_is_better: bool) -> None:
    """For an inconclusive rule: how many paired cases would shrink the half of the interval
    that faces the margin (intervals need not be symmetric) to the estimate–margin distance.
    None when more cases cannot help (the estimate is on the wrong side) or the half is empty."""
    distance = (estimate - margin) if higher_is_better else (margin - estimate)
    half = (estimate - bound) if higher_is_better else (bound - estimate)
    res.cases_needed = stats.cases_needed(res.paired_n, half, distance) if half > 0 else None
    if res.cases_needed is not None:
        res.reason += f"; about {res.cases_needed} paired cases would resolve it"


def _eval_delta(rd: RuleDef, spec: RuleSpec, m: dict[str, Any], scope: str) -> RuleResult:
    trig = trigger_text(rd, spec)
    res = RuleResult(rule=rd.name, scope=scope, trigger=trig, metric=rd.metric, status="inconclusive", reason="",
                     margin=spec.margin, floor=spec.floor, paired_n=int(m.get("paired_n") or 0))
    cand = m["candidate"]["value"]
    res.candidate_value = cand
    res.observed = m.get("delta")
    res.ci = m.get("delta_ci")
    res.mde = m.get("mde")
    if res.paired_n == 0:
        res.status = "not_applicable"
        res.reason = "no case in the suite measures this"
        return res
    margin = spec.margin if spec.margin is not None else 0.0
    lo, hi = (res.ci or [None, None])
    decision = stats.decide(lo, hi, margin, rd.higher_is_better)
    if spec.floor is not None and cand is not None and cand < spec.floor:
        res.status = "fail"
        res.reason = f"candidate {_fmt_rate(cand)} is below the floor {_fmt_rate(spec.floor)}"
        return res
    res.status = decision
    ci_txt = f"[{_fmt_delta(lo)}, {_fmt_delta(hi)}]" if lo is not None else "no interval"
    side = "above" if rd.higher_is_better else "below"
    if decision == "pass":
        res.reason = f"Δ {_fmt_delta(res.observed)}, interval {ci_txt} wholly {side} the margin {_fmt_delta(margin)}"
    elif decision == "fail":
        res.reason = f"Δ {_fmt_delta(res.observed)}, interval {ci_txt} wholly beyond the margin {_fmt_delta(margin)}"
    else:
        res.reason = f"Δ {_fmt_delta(res.observed)}, interval {ci_txt} straddles the margin {_fmt_delta(margin)}"
        if lo is not None and hi is not None and res.observed is not None:
            bound = lo if rd.higher_is_better else hi
            _note_cases_needed(res, res.observed, bound, margin, rd.higher_is_better)
    return res


def _eval_ratio(rd: RuleDef, spec: RuleSpec, m: dict[str, Any] | None, scope: str) -> RuleResult:
    trig = trigger_text(rd, spec)
    res = RuleResult(rule=rd.name, scope=scope, trigger=trig, metric=rd.metric, status="inconclusive", reason="",
                     margin=spec.margin)
    if m is None:
        res.status = "not_applicable"
        res.reason = "metric not computed"
        return res
    res.observed = m.get("ratio")
    res.ci = m.get("ratio_ci")
    res.mde = m.get("mde")
    res.paired_n = int(m.get("paired_n") or 0)
    if res.observed is None:
        res.status = "not_applicable"
        res.reason = m.get("note") or "not enough paired data for a ratio"
        return res
    margin = spec.margin if spec.margin is not None else 1.0
    lo, hi = (res.ci or [None, None])
    decision = stats.decide(lo, hi, margin, False)
    res.status = decision
    ci_txt = f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "no interval"
    if decision == "pass":
        res.reason = f"ratio {res.observed:.3f}, interval {ci_txt} wholly below {margin:g}"
    elif decision == "fail":
        res.reason = f"ratio {res.observed:.3f}, interval {ci_txt} wholly above {margin:g}"
    else:
        res.reason = f"ratio {res.observed:.3f}, interval {ci_txt} straddles {margin:g}"
        if lo is not None and hi is not None and lo > 0 and res.observed > 0:
            # Ratios are compared on the log scale, where their intervals were built.
            _note_cases_needed(res, math.log(res.observed), math.log(hi), math.log(margin), False)
    if m.get("cached_calls") and any(m["cached_calls"].values()):
        res.reason += " (includes cached latencies recorded earlier)"
    return res


def _eval_any(rd: RuleDef, spec: RuleSpec, m: dict[str, Any], scope: str) -> RuleResult:
    trig = trigger_text(rd, spec)
    res = RuleResult(rule=rd.name, scope=scope, trigger=trig, metric=rd.metric, status="pass", reason="",
                     floor=spec.floor, paired_n=int(m.get("paired_n") or 0))
    res.observed = m.get("delta")
    res.ci = m.get("delta_ci")
    res.candidate_value = m["candidate"]["value"]
    if res.paired_n == 0:
        res.status = "not_applicable"
        res.reason = "no known-bad case in the suite"
        return res
    table = m.get("table")
    if table is not None:
        stopped = int(table["n10"])
    else:  # K > 1 samples: any case whose refusal share fell
        stopped = int(m.get("regressed_cases") or 0)
    if stopped > 0:
        res.status = "fail"
        res.reason = f"{stopped} known-bad case(s) refused in the baseline and answer in the candidate"
        return res
    if spec.floor is not None and res.candidate_value is not None and res.candidate_value < spec.floor:
        res.status = "fail"
        res.reason = f"candidate refuses {_fmt_rate(res.candidate_value)} of known-bad cases, below {_fmt_rate(spec.floor)}"
        return res
    res.reason = f"no known-bad case stopped refusing (candidate refuses {_fmt_rate(res.candidate_value)})"
    return res


def evaluate_rules(metrics: Sequence[dict[str, Any]], gate: GateConfig, scope: str, only: Sequence[str] | None = None) -> list[RuleResult]:
    """Apply every enabled rule to one metric table."""
    by = _by_metric(metrics)
    out: list[RuleResult] = []
    for name, rd in RULES.items():
        if only is not None and name not in only:
            continue
        spec = gate.rules.get(name) or RuleSpec()
        if not spec.enabled:
            continue
        m = by.get(rd.metric)
        if rd.kind == "ratio":
            out.append(_eval_ratio(rd, spec, m, scope))
        elif m is None:
            continue
        elif rd.kind == "any_regression":
            out.append(_eval_any(rd, spec, m, scope))
        else:
            out.append(_eval_delta(rd, spec, m, scope))
    return out


def measurement_rule(metrics: Sequence[dict[str, Any]], gate: GateConfig) -> RuleResult:
    """Errors above tolerance on either side mean the evidence is incomplete."""
    m = _by_metric(metrics)["error_rate"]
    worst = max((m[s]["value"] or 0.0) for s in ("baseline", "candidate"))
    res = RuleResult(
        rule="error_rate",
        scope="overall",
        trigger=f"error rate above {gate.max_error_rate * 100:g}% on either side (could not measure)",
        metric="error_rate",
        status="pass",
        reason="",
        observed=worst,
        margin=gate.max_error_rate,
        paired_n=int(m.get("paired_n") or 0),
    )
    b, c = m["baseline"]["value"], m["candidate"]["value"]
    if worst > gate.max_error_rate:
        res.status = "fail"
        res.reason = f"errors after retries: baseline {_fmt_rate(b)}, candidate {_fmt_rate(c)} (tolerance {_fmt_rate(gate.max_error_rate)})"
    else:
        res.reason = f"baseline {_fmt_rate(b)}, candidate {_fmt_rate(c)}"
    return res


def decide_verdict(
    overall: Sequence[dict[str, Any]],
    cohorts: dict[str, Any],
    gate: GateConfig,
    extra_rules: Sequence[RuleResult] = (),
) -> Verdict:
    """The verdict over all rules, overall and for each critical cohort."""
    measure = measurement_rule(overall, gate)
    rules = [measure, *evaluate_rules(overall, gate, "overall")]
    for cohort in gate.critical_cohorts:
        entry = cohorts.get(cohort)
        if entry is None:
            rules.append(RuleResult(rule="critical_cohort", scope=f"cohort:{cohort}", trigger=f"critical cohort {cohort} is measured",
                                    metric="-", status="fail", reason="no case in the suite belongs to this critical cohort"))
            continue
        rules.extend(evaluate_rules(entry["metrics"], gate, f"cohort:{cohort}", only=COHORT_RULES))
    rules.extend(extra_rules)
    paired_total = max((int(m.get("paired_n") or 0) for m in overall if m["metric"] == "pass_rate"), default=0)
    failed = [r for r in rules if r.status == "fail" and r.rule != "error_rate"]
    inconclusive = [r for r in rules if r.status == "inconclusive"]

    def line(r: RuleResult) -> str:
        scope = "" if r.scope == "overall" else f" [{r.scope}]"
        return f"{r.rule}{scope}: {r.reason}"

    if measure.status == "fail" or paired_total == 0:
        reasons = [line(measure)] if measure.status == "fail" else ["no case was measured on both sides"]
        return Verdict("COULD_NOT_MEASURE", int(ExitCode.COULD_NOT_MEASURE), reasons, rules, gate.on_inconclusive)
    if failed:
        return Verdict("FAIL", int(ExitCode.REGRESSION), [line(r) for r in failed], rules, gate.on_inconclusive)
    if inconclusive:
        code = ExitCode.INCONCLUSIVE if gate.on_inconclusive == "fail" else ExitCode.PASSED
        return Verdict("INCONCLUSIVE", int(code), [line(r) for r in inconclusive], rules, gate.on_inconclusive)
    return Verdict("PASS", int(ExitCode.PASSED), ["every rule held"], rules, gate.on_inconclusive)
