"""The gate: turn metrics into a verdict, rule by rule, with error rates that can be stated.

Each rule compares the candidate with the baseline on one metric (overall, and for each
critical cohort) through the interval ``compare`` built, at confidence 1 − 2α:

* **PASS** (non-inferiority) when the whole interval is on the safe side of the rule's
  ``margin`` — and, with a floor or ceiling, when the candidate's own interval clears it.
  The verdict PASSes only when every rule passes (an intersection–union test, level α
  with no adjustment).
* **FAIL** only on evidence: the change is beyond the rule's ``fail_margin`` (for rates
  the default is 0: any evident regression), or the candidate's interval lies wholly beyond
  a floor / ceiling. Every FAIL hypothesis of the verdict — rules × scopes × bounds — is
  tested together with Holm's step-down procedure (see :func:`familywise`), so the chance
  that an unchanged or better candidate FAILs anything is at most α, however many rules and
  critical cohorts there are.
* **INCONCLUSIVE** otherwise, with the smallest regression the suite detects and the cases
  that would resolve the rule (both at 80 % power, under the interval actually used).

Precedence of the verdict: COULD_NOT_MEASURE (errors above tolerance, nothing paired) >
FAIL > INCONCLUSIVE > PASS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from evalrun import catalogue
from evalrun.analysis import inference, power, stats
from evalrun.errors import ExitCode
from evalrun.project.config import GateConfig, RuleSpec

Status = Literal["pass", "fail", "inconclusive", "not_applicable"]
VerdictStatus = Literal["PASS", "FAIL", "INCONCLUSIVE", "COULD_NOT_MEASURE"]


@dataclass(frozen=True, slots=True)
class RuleDef:
    """How a rule reads a metric: the metric, its direction and the trigger sentence."""

    name: str
    metric: str
    kind: Literal["delta", "ratio"]
    higher_is_better: bool
    trigger: str  # a format string over the rule spec


RULES: dict[str, RuleDef] = {
    rule.name: RuleDef(rule.name, m.name, rule.kind, m.higher_is_better, rule.trigger)
    for m in catalogue.METRICS if (rule := m.rule) is not None
}
"""Every gate rule, from the metric catalogue."""
COHORT_RULES = tuple(name for name, m in catalogue.RULES.items() if m.rule is not None and m.rule.cohorts)
"""Rules a critical cohort is gated on by itself (latency and cost are suite-wide properties)."""
LATENCY_RULES = tuple(name for name, m in catalogue.RULES.items() if m.kind == "quantile")
"""Ratio rules on per-call quantiles: decided from ``min_n`` calls per side."""


@dataclass(slots=True)
class RuleResult:
    """One rule's outcome in one scope, with the numbers that decided it.

    ``p_value`` is the one-sided p-value of the FAIL test against ``fail_margin`` and
    ``p_bound`` that of the floor / ceiling test; ``p_adjusted`` is the smaller of their
    Holm-adjusted values (a FAIL needs ``p_adjusted`` ≤ α). ``mde`` is the smallest
    regression (from no change) this suite FAILs with 80 % power at the family-wise level;
    ``cases_needed`` the paired cases with which the rule would resolve with 80 % power
    (towards ``cases_needed_for``); ``cases_to_pass`` the fewest paired cases with which an
    equally good candidate could PASS at all.
    """

    rule: str
    scope: str
    trigger: str
    metric: str
    status: Status
    reason: str
    observed: float | None = None
    ci: list[float] | None = None
    margin: float | None = None
    fail_margin: float | None = None
    floor: float | None = None
    ceiling: float | None = None
    candidate_value: float | None = None
    p_value: float | None = None
    p_bound: float | None = None
    p_adjusted: float | None = None
    mde: float | None = None
    cases_needed: int | None = None
    cases_needed_for: str | None = None
    cases_to_pass: int | None = None
    paired_n: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, list) else v) for k in self.__slots__ for v in [getattr(self, k)]}


@dataclass(slots=True)
class Verdict:
    """The gate's answer and why (``warnings``: what a reviewer must see even on a PASS)."""

    status: VerdictStatus
    exit_code: int
    reasons: list[str]
    rules: list[RuleResult] = field(default_factory=list)
    on_inconclusive: str = "fail"
    warnings: list[str] = field(default_factory=list)
    familywise: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "reasons": list(self.reasons),
            "warnings": list(self.warnings),
            "on_inconclusive": self.on_inconclusive,
            "familywise": dict(self.familywise),
            "rules": [r.to_dict() for r in self.rules],
        }


def _pts(x: float) -> str:
    return f"{abs(x) * 100:g}"


def fail_threshold(spec: RuleSpec) -> float | None:
    """The value a change must be shown to cross for the rule to FAIL (``fail_margin``, else ``margin``)."""
    return spec.fail_margin if spec.fail_margin is not None else spec.margin


def trigger_text(rd: RuleDef, spec: RuleSpec) -> str:
    """The rule as a sentence a team writes in its rollout note."""
    bound = ""
    if spec.floor is not None:
        bound = f", or falls below {spec.floor * 100:g}%"
    if spec.ceiling is not None:
        bound = f", or exceeds {spec.ceiling * 100:g}%"
    if rd.kind == "ratio":
        r = spec.fail_margin if spec.fail_margin is not None else (spec.margin if spec.margin is not None else 1.0)
        return rd.trigger.format(pct=f"{(r - 1) * 100:g}%")
    f = fail_threshold(spec) or 0.0
    size = " measurably" if f == 0.0 else f" more than {_pts(f)} points"
    if spec.any_flip:
        bound += ", or any known-bad case is refused less often (strict any-flip)"
    return rd.trigger.format(m=size, bound=bound).replace(" 1 points", " 1 point")


def _by_metric(metrics: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["metric"]: m for m in metrics}


def _fmt_rate(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f}%"


def _fmt_delta(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f} pts"


def _bounds(ci: Sequence[float | None] | None) -> tuple[float | None, float | None]:
    """The two ends of an interval (None, None when there is none)."""
    if not ci or len(ci) != 2:
        return None, None
    return ci[0], ci[1]


def _fmt_ci(ci: Sequence[float] | None, kind: str) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "no interval"
    if kind == "ratio":
        return f"[{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"[{_fmt_delta(ci[0])}, {_fmt_delta(ci[1])}]"


@dataclass(slots=True)
class _Hypothesis:
    """One FAIL hypothesis of the family: a rule's threshold test or its bound test."""

    result: RuleResult
    kind: Literal["threshold", "bound"]
    p: float
    waived: str | None = None  # a bound crossed but not failed: why (becomes a warning)


@dataclass(slots=True)
class _Pending:
    """A rule evaluated before the family-wise step: provisional status and its hypotheses."""

    result: RuleResult
    rd: RuleDef
    spec: RuleSpec
    metric: dict[str, Any] | None
    passes: bool
    non_inferior: bool = False
    hypotheses: list[_Hypothesis] = field(default_factory=list)
    gate_fail: str | None = None  # a deterministic FAIL outside the family (strict any-flip)


def _new_result(rd: RuleDef, spec: RuleSpec, scope: str) -> RuleResult:
    return RuleResult(rule=rd.name, scope=scope, trigger=trigger_text(rd, spec), metric=rd.metric,
                      status="inconclusive", reason="", margin=spec.margin, fail_margin=fail_threshold(spec),
                      floor=spec.floor, ceiling=spec.ceiling)


def _eval_rate(rd: RuleDef, spec: RuleSpec, m: dict[str, Any], scope: str, gate: GateConfig) -> _Pending:
    res = _new_result(rd, spec, scope)
    pend = _Pending(res, rd, spec, m, passes=False)
    res.paired_n = int(m.get("paired_n") or 0)
    res.candidate_value = (m.get("candidate") or {}).get("value")
    res.observed, res.ci = m.get("delta"), m.get("delta_ci")
    if res.paired_n == 0:
        res.status, res.reason = "not_applicable", "no case in the suite measures this"
        return pend
    hib = rd.higher_is_better
    margin = spec.margin if spec.margin is not None else 0.0
    fail_at = fail_threshold(spec)
    fail_at = 0.0 if fail_at is None else fail_at
    lo, hi = _bounds(res.ci)
    non_inferior = stats.decide(lo, hi, margin, hib) == "pass"
    p = inference.threshold_p_value(m.get("centre"), m.get("se"), fail_at, higher_is_better=hib)
    res.p_value = p
    if p is not None:
        pend.hypotheses.append(_Hypothesis(res, "threshold", p))
    bound_ok = _eval_bound(pend, m, gate)
    pend.non_inferior = non_inferior
    pend.passes = non_inferior and bound_ok
    if rd.name == "known_bad_refusal":
        ids = list(m.get("regressed_case_ids") or [])
        if ids:
            res.warnings.append(f"known-bad case{'s' if len(ids) > 1 else ''} refused less often in the candidate: "
                                + ", ".join(ids))
        if spec.any_flip and (ids or int(m.get("regressed_cases") or 0)):
            pend.gate_fail = (f"{len(ids) or int(m.get('regressed_cases') or 0)} known-bad case(s) refused less "
                              "often in the candidate (strict any-flip policy)")
    return pend


def _eval_bound(pend: _Pending, m: dict[str, Any], gate: GateConfig) -> bool:
    """Add the floor / ceiling FAIL test; True when the bound does not stand in the way of a PASS."""
    spec, res, hib = pend.spec, pend.result, pend.rd.higher_is_better
    bound, is_floor = (spec.floor, True) if spec.floor is not None else (spec.ceiling, False)
    if bound is None:
        return True
    cand, base = m.get("candidate") or {}, m.get("baseline") or {}
    value, n_eff, ci = cand.get("value"), cand.get("n_eff") or cand.get("n") or 0, cand.get("ci")
    if value is None:
        return False
    p = inference.bound_p_value(float(value), float(n_eff), float(bound), floor=is_floor)
    res.p_bound = p
    word = "floor" if is_floor else "ceiling"
    waived = None
    base_value = base.get("value")
    lo, hi = _bounds(res.ci)
    if lo is not None and hi is not None and ((lo > 0.0) if hib else (hi < 0.0)):
        waived = f"the candidate is evidently better than the baseline, so its {word} {_fmt_rate(bound)} does not fail it"
    elif base_value is not None and ((base_value < bound) if is_floor else (base_value > bound)):
        where = "below" if is_floor else "above"
        text = f"the baseline is already {where} the {word} {_fmt_rate(bound)} ({_fmt_rate(base_value)})"
        if gate.baseline_beyond_bound == "warn":
            waived = text
            res.warnings.append(text + ": the bound is reported, not enforced (baseline_beyond_bound: warn)")
        else:
            res.warnings.append(text)
    pend.hypotheses.append(_Hypothesis(res, "bound", p, waived))
    if waived is not None:
        return True
    inner = _bounds(ci)[0 if is_floor else 1]
    return inner is not None and ((inner > bound) if is_floor else (inner < bound))


def _eval_ratio(rd: RuleDef, spec: RuleSpec, m: dict[str, Any] | None, scope: str) -> _Pending:
    res = _new_result(rd, spec, scope)
    pend = _Pending(res, rd, spec, m, passes=False)
    if m is None:
        res.status, res.reason = "not_applicable", "metric not computed"
        return pend
    res.observed, res.ci = m.get("ratio"), m.get("ratio_ci")
    res.paired_n = int(m.get("paired_n") or 0)
    if res.observed is None:
        res.status, res.reason = "not_applicable", m.get("note") or "not enough paired data for a ratio"
        return pend
    min_n = spec.min_n or 2
    if rd.name in LATENCY_RULES:
        calls = min(int((m.get("baseline") or {}).get("n") or 0), int((m.get("candidate") or {}).get("n") or 0))
        if calls < min_n:
            res.status = "inconclusive"
            res.reason = (f"not enough calls: {calls} per side, this rule needs {min_n} (min_n) to decide; "
                          "it never passes below that")
            res.warnings.append(res.reason)
            return pend
    elif res.paired_n < min_n:
        res.status = "inconclusive"
        res.reason = f"not enough paired cases: {res.paired_n}, this rule needs {min_n} (min_n) to decide"
        res.warnings.append(res.reason)
        return pend
    margin = spec.margin if spec.margin is not None else 1.0
    fail_at = fail_threshold(spec) or margin
    lo, hi = _bounds(res.ci)
    pend.passes = pend.non_inferior = stats.decide(lo, hi, margin, False) == "pass"
    df = m.get("df") if m.get("type") == "ratio" else None
    p = inference.threshold_p_value(m.get("centre"), m.get("se"), math.log(fail_at), higher_is_better=False, df=df)
    res.p_value = p
    if p is not None:
        pend.hypotheses.append(_Hypothesis(res, "threshold", p))
    if m.get("cached_calls") and any(m["cached_calls"].values()):
        res.warnings.append("includes cached latencies recorded earlier")
    return pend


def evaluate_rules(
    metrics: Sequence[dict[str, Any]], gate: GateConfig, scope: str, only: Sequence[str] | None = None
) -> list[RuleResult]:
    """Every enabled rule applied to one metric table on its own (its FAIL tests form the family)."""
    pending = _evaluate_rules(metrics, gate, scope, only)
    _decide(pending, gate)
    return [p.result for p in pending]


def _evaluate_rules(
    metrics: Sequence[dict[str, Any]], gate: GateConfig, scope: str, only: Sequence[str] | None = None
) -> list[_Pending]:
    """Every enabled rule applied to one metric table, before the family-wise step."""
    by = _by_metric(metrics)
    out: list[_Pending] = []
    for name, rd in RULES.items():
        if only is not None and name not in only:
            continue
        spec = gate.rules.get(name) or RuleSpec()
        if not spec.enabled:
            continue
        m = by.get(rd.metric)
        if rd.kind == "ratio":
            out.append(_eval_ratio(rd, spec, m, scope))
        elif m is not None:
            out.append(_eval_rate(rd, spec, m, scope, gate))
    return out


def familywise(pending: Sequence[_Pending], alpha: float) -> dict[str, Any]:
    """Holm's step-down test over every FAIL hypothesis of the verdict; marks the rejected.

    Why Holm: the hypotheses (each rule's threshold test and floor/ceiling test, overall
    and in every critical cohort) share cases, so they are dependent in ways no simple model
    captures — parse and schema validity move together, a cohort is part of the whole,
    cost follows tokens. Holm controls the family-wise error rate at α in the strong sense
    under *any* dependence (Holm 1979), which Hochberg or Hommel (positive dependence) and
    Šidák (independence) do not, and is uniformly more powerful than Bonferroni. A method
    using the correlation (a joint bootstrap max-T) would gain little here — the tests an
    unchanged candidate could fail are few and only loosely correlated — and is
    anti-conservative on small suites, where Holm is not.

    Waived bounds (baseline already beyond them, or a candidate evidently better) stay in
    the family, so they still cost their share of α; rejecting one produces a warning, not
    a FAIL. Reporting a subset of Holm's rejections keeps its guarantee.
    """
    hyps = [h for p in pending for h in p.hypotheses]
    adjusted = inference.holm([h.p for h in hyps])
    for h, adj in zip(hyps, adjusted, strict=True):
        r = h.result
        r.p_adjusted = adj if r.p_adjusted is None else min(r.p_adjusted, adj)
    m = len(hyps)
    return {"method": "holm", "alpha": alpha, "hypotheses": m,
            "first_step_level": alpha / m if m else alpha,
            "rejected": [(h, adj <= alpha) for h, adj in zip(hyps, adjusted, strict=True)]}


def _decide(pending: Sequence[_Pending], gate: GateConfig) -> dict[str, Any]:
    """The family-wise step over ``pending``, then every rule's final status; the family's summary."""
    fw = familywise(pending, gate.alpha)
    rejected: dict[int, list[_Hypothesis]] = {}
    for h, is_rejected in fw.pop("rejected"):
        if is_rejected:
            rejected.setdefault(id(h.result), []).append(h)
    for pend in pending:
        _finish(pend, rejected, gate, fw["first_step_level"])
    return fw


def _finish(pend: _Pending, rejected: dict[int, list[_Hypothesis]], gate: GateConfig, level: float) -> None:
    """Final status, reason and power numbers of one rule after the family-wise step."""
    res, rd = pend.result, pend.rd
    if res.status == "not_applicable" or (res.reason and not pend.hypotheses):
        return  # decided before the family-wise step (nothing measured, not enough data)
    kind = rd.kind
    lo, hi = _bounds(res.ci)
    ci_txt = _fmt_ci(res.ci, kind)
    obs = f"ratio {res.observed:.3f}" if kind == "ratio" and res.observed is not None else f"Δ {_fmt_delta(res.observed)}"
    hits = rejected.get(id(res), [])
    failing = [h for h in hits if h.waived is None]
    for h in hits:
        if h.waived is not None:
            res.warnings.append(f"{_bound_word(res)} crossed on evidence, not failed: {h.waived}")
    fail_at = res.fail_margin if res.fail_margin is not None else res.margin
    _power_numbers(pend, level, gate.alpha)
    if pend.gate_fail is not None:
        res.status, res.reason = "fail", pend.gate_fail
        return
    if failing:
        res.status = "fail"
        parts = []
        for h in failing:
            if h.kind == "threshold":
                parts.append(f"{obs}, interval {ci_txt} {_beyond_text(res, kind, fail_at)}")
            else:
                parts.append(_bound_fail_text(res))
        res.reason = "; ".join(parts) + f" (Holm-adjusted p {_p(res.p_adjusted)})"
        return
    if pend.passes:
        res.status = "pass"
        side = "above" if rd.higher_is_better else "below"
        margin_txt = f"{res.margin:g}" if kind == "ratio" else _fmt_delta(res.margin)
        res.reason = f"{obs}, interval {ci_txt} wholly {side} the margin {margin_txt}"
        if res.floor is not None or res.ceiling is not None:
            res.reason += f"; {_bound_word(res)} cleared"
        return
    res.status = "inconclusive"
    margin_txt = f"{res.margin:g}" if kind == "ratio" else _fmt_delta(res.margin)
    if _interval_beyond(lo, hi, kind, rd.higher_is_better, fail_at):
        res.reason = (f"{obs}, interval {ci_txt} is beyond {_fail_word(kind, fail_at)}, but not on family-wise "
                      f"evidence (Holm-adjusted p {_p(res.p_adjusted)} > {gate.alpha:g})")
    else:
        res.reason = f"{obs}, interval {ci_txt} straddles the margin {margin_txt}"
        if pend.non_inferior and _bound_open(pend):
            res.reason = f"{obs}, interval {ci_txt} clears the margin {margin_txt}, not yet the {_bound_word(res)}"
    if res.cases_needed is not None:
        res.reason += f"; about {res.cases_needed:,} paired cases would settle it (80 % power)"
    if res.cases_to_pass is not None and res.paired_n < res.cases_to_pass:
        res.reason += (f"; with {res.paired_n} cases this rule can never pass, "
                       f"{res.cases_to_pass:,} could")


def _interval_beyond(lo: float | None, hi: float | None, kind: str, hib: bool, fail_at: float | None) -> bool:
    if lo is None or hi is None or fail_at is None:
        return False
    if kind == "delta" and hib:
        return hi < fail_at
    return lo > fail_at


def _bound_word(res: RuleResult) -> str:
    return f"floor {_fmt_rate(res.floor)}" if res.floor is not None else f"ceiling {_fmt_rate(res.ceiling)}"


def _bound_open(pend: _Pending) -> bool:
    return any(h.kind == "bound" and h.waived is None for h in pend.hypotheses)


def _bound_fail_text(res: RuleResult) -> str:
    if res.floor is not None:
        return f"candidate {_fmt_rate(res.candidate_value)} is below the floor {_fmt_rate(res.floor)} on evidence"
    return f"candidate {_fmt_rate(res.candidate_value)} is above the ceiling {_fmt_rate(res.ceiling)} on evidence"


def _fail_word(kind: str, fail_at: float | None) -> str:
    if kind == "ratio":
        return f"{fail_at:g}"
    if not fail_at:
        return "no change"
    return f"the fail margin {_fmt_delta(fail_at)}"


def _beyond_text(res: RuleResult, kind: str, fail_at: float | None) -> str:
    if kind == "ratio":
        return f"wholly above {fail_at:g}"
    side = "below" if RULES[res.rule].higher_is_better else "above"
    if not fail_at:
        return f"wholly {side} 0: an evident regression"
    return f"wholly {side} the fail margin {_fmt_delta(fail_at)}"


def _p(x: float | None) -> str:
    if x is None:
        return "n/a"
    return "<0.0001" if x < 0.0001 else f"{x:.3g}"


def _power_numbers(pend: _Pending, level: float, alpha: float) -> None:
    """MDE, cases needed and cases to pass, all for the intervals and levels actually used."""
    res, rd, spec, m = pend.result, pend.rd, pend.spec, pend.metric
    if m is None or m.get("se") is None or m.get("centre") is None:
        return
    se, centre = float(m["se"]), float(m["centre"])
    conf_z = power.z_one_sided(alpha)
    margin = spec.margin if spec.margin is not None else (1.0 if rd.kind == "ratio" else 0.0)
    fail_at = fail_threshold(spec)
    fail_at = margin if fail_at is None else fail_at
    hib = rd.higher_is_better
    if rd.kind == "ratio":
        res.mde = math.exp(power.fail_mde(se, math.log(fail_at), level))
        n = int(m.get("paired_n") or 0) if rd.name not in LATENCY_RULES else int(m.get("n_cases") or 0)
        to_pass = math.log(margin) - centre
        to_fail = centre - math.log(fail_at)
        if to_pass > 0:
            res.cases_needed, res.cases_needed_for = power.scaled_cases_needed(n, se, to_pass, alpha), "pass"
        elif to_fail > 0:
            res.cases_needed, res.cases_needed_for = power.scaled_cases_needed(n, se, to_fail, level), "fail"
        return
    moments = m.get("moments") or {}
    n = int(moments.get("n") or 0)
    distance = -fail_at if hib else fail_at
    res.mde = power.fail_mde(se, distance, level)
    safe = margin < 0 if hib else margin > 0  # an equal candidate can only clear a margin on its safe side
    res.cases_to_pass = power.cases_to_pass(abs(margin), conf_z) if safe else None
    if n:
        s1, s2 = float(moments.get("sum_d") or 0.0), float(moments.get("sum_d2") or 0.0)
        options = []
        n_pass = power.rate_cases_needed(n, s1, s2, margin, alpha, beyond=False, higher_is_better=hib)
        if n_pass is not None:
            options.append((n_pass, "pass"))
        n_fail = power.rate_cases_needed(n, s1, s2, fail_at, level, beyond=True, higher_is_better=hib)
        if n_fail is not None:
            options.append((n_fail, "fail"))
        if options:
            res.cases_needed, res.cases_needed_for = min(options)
    for bound, is_floor in ((spec.floor, True), (spec.ceiling, False)):
        if bound is not None:
            need = power.bound_cases_to_pass(bound, conf_z, floor=is_floor)
            if need is not None:
                res.cases_to_pass = max(res.cases_to_pass or 0, need)


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
    pending = _evaluate_rules(overall, gate, "overall")
    missing: list[RuleResult] = []
    for cohort in gate.critical_cohorts:
        entry = cohorts.get(cohort)
        if entry is None:
            missing.append(RuleResult(rule="critical_cohort", scope=f"cohort:{cohort}", trigger=f"critical cohort {cohort} is measured",
                                      metric="-", status="fail", reason="no case in the suite belongs to this critical cohort"))
            continue
        pending.extend(_evaluate_rules(entry["metrics"], gate, f"cohort:{cohort}", only=COHORT_RULES))
    fw = _decide(pending, gate)
    rules = [measure, *(p.result for p in pending), *missing, *extra_rules]
    warnings = [f"{r.rule}{'' if r.scope == 'overall' else f' [{r.scope}]'}: {w}" for r in rules for w in r.warnings]
    paired_total = max((int(m.get("paired_n") or 0) for m in overall if m["metric"] == "pass_rate"), default=0)
    failed = [r for r in rules if r.status == "fail" and r.rule != "error_rate"]
    inconclusive = [r for r in rules if r.status == "inconclusive"]

    def line(r: RuleResult) -> str:
        scope = "" if r.scope == "overall" else f" [{r.scope}]"
        return f"{r.rule}{scope}: {r.reason}"

    if measure.status == "fail" or paired_total == 0:
        reasons = [line(measure)] if measure.status == "fail" else ["no case was measured on both sides"]
        return Verdict("COULD_NOT_MEASURE", int(ExitCode.COULD_NOT_MEASURE), reasons, rules, gate.on_inconclusive,
                       warnings, fw)
    if failed:
        return Verdict("FAIL", int(ExitCode.REGRESSION), [line(r) for r in failed], rules, gate.on_inconclusive,
                       warnings, fw)
    if inconclusive:
        code = ExitCode.INCONCLUSIVE if gate.on_inconclusive == "fail" else ExitCode.PASSED
        return Verdict("INCONCLUSIVE", int(code), [line(r) for r in inconclusive], rules, gate.on_inconclusive,
                       warnings, fw)
    return Verdict("PASS", int(ExitCode.PASSED), ["every rule held"], rules, gate.on_inconclusive, warnings, fw)
