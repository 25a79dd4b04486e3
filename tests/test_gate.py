"""The gate's rules, decided on constructed runs through compare + gate (no model, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import ValidationError

from evalrun.analysis import compare as cmp
from evalrun.analysis.gate import decide_verdict
from evalrun.project.cases import Case
from evalrun.project.config import DEFAULT_RULES, GateConfig
from evalrun.records import CallResult, Score


@dataclass
class Call:
    """One call's outcome as the scorer would flag it."""

    passed: bool = True
    parse: bool | None = None
    refused: bool = False
    tokens: int = 20
    cost: float | None = None
    latency: float = 1.0


def _case(i: int, kind: str, cohort: str = "all") -> Case:
    return Case(id=f"c{i:04d}", kind=kind, cohort=cohort, tags=[], vars={}, messages=None, expect=[], file="t")


def verdict(
    cases: list[tuple[str, list[Call], list[Call]]], gate: GateConfig | None = None, *, cohort_of: Any = None
) -> dict[str, Any]:
    """Run compare + gate on (kind, baseline calls, candidate calls) per case; the verdict dict."""
    gate = gate or GateConfig()
    built = [_case(i, kind, cohort_of(i) if cohort_of else "all") for i, (kind, _, _) in enumerate(cases)]
    results: list[CallResult] = []
    scores: list[Score] = []
    samples = max(len(b) for _, b, _ in cases)
    for case, (kind, base, cand) in zip(built, cases, strict=True):
        for side, calls in (("baseline", base), ("candidate", cand)):
            for j, call in enumerate(calls):
                results.append(CallResult(
                    case_id=case.id, side=side, sample=j, model="m", output="", prompt_tokens=10,  # type: ignore[arg-type]
                    completion_tokens=call.tokens, latency_s=call.latency, cost_usd=call.cost,
                    cost_status="config" if call.cost is not None else "unpriced", attempts=1))
                scores.append(Score(checks=[], passed=call.passed, parse_strict=call.parse, parse_lenient=call.parse,
                                    refused=call.refused, should_refuse=kind == "known_bad"))
    settings = cmp.CompareSettings(alpha=gate.alpha, bootstrap_samples=200, seed=1)
    frame = cmp.build_frame(built, results, scores)
    overall = cmp.metric_table(frame, settings, samples)
    cohorts = cmp.slice_tables(frame, "cohort", settings, samples, critical=gate.critical_cohorts)
    return decide_verdict(overall, cohorts, gate).to_dict()


def rule(v: dict[str, Any], name: str, scope: str = "overall") -> dict[str, Any]:
    return next(r for r in v["rules"] if r["rule"] == name and r["scope"] == scope)


def parse_cases(base_ok: int, cand_ok: int, n: int, *, nested: bool = True) -> list[tuple[str, list[Call], list[Call]]]:
    """n format cases; the first base_ok / cand_ok parse (so failures are nested)."""
    out = []
    for i in range(n):
        b, c = i < base_ok, (i < cand_ok) if nested else (i >= n - cand_ok)
        out.append(("format_sensitive", [Call(passed=b, parse=b)], [Call(passed=c, parse=c)]))
    return out


def only(*names: str, **overrides: dict[str, Any]) -> GateConfig:
    """A gate with only these rules enabled (others off), plus per-rule overrides."""
    rules: dict[str, Any] = {name: {"enabled": name in names} for name in DEFAULT_RULES}
    for name, spec in overrides.items():
        rules[name] = {**rules[name], **spec}
    return GateConfig(rules=rules)


# ------------------------------------------------------------------ floors and ceilings


def test_floor_fails_only_on_evidence() -> None:
    gate = only("parse_strict", parse_strict={"floor": 0.95})
    # Baseline at 100 %, candidate 90 % on 200 cases: the whole interval is under 95 %.
    v = verdict(parse_cases(200, 180, 200), gate)
    r = rule(v, "parse_strict")
    assert r["status"] == "fail" and "below the floor 95.0% on evidence" in r["reason"]
    assert r["p_bound"] < 0.001
    # 98.5 % on 100 cases is below a 99 % floor, but not shown to be: no FAIL from the floor.
    v = verdict(parse_cases(100, 98, 100), only("parse_strict", parse_strict={"floor": 0.99, "fail_margin": -0.05}))
    r = rule(v, "parse_strict")
    assert r["status"] == "inconclusive" and r["p_bound"] > 0.05


def test_baseline_already_below_the_floor_is_a_warning_by_default() -> None:
    cases = parse_cases(190, 190, 200)  # both sides at 95 %, floor 99 %
    v = verdict(cases, only("parse_strict", parse_strict={"floor": 0.99}))
    r = rule(v, "parse_strict")
    assert r["status"] != "fail"
    assert any("already below the floor 99.0%" in w for w in r["warnings"])
    assert any("already below the floor" in w for w in v["warnings"])
    strict = GateConfig(rules={**only("parse_strict", parse_strict={"floor": 0.99}).model_dump()["rules"]},
                        baseline_beyond_bound="fail")
    v = verdict(cases, strict)
    assert rule(v, "parse_strict")["status"] == "fail"


def test_an_evidently_better_candidate_never_fails_its_floor() -> None:
    # The example: strict parse 90 % -> 95 % on 300 cases, a 99 % floor enforced.
    gate = GateConfig(rules=only("parse_strict", parse_strict={"floor": 0.99}).model_dump()["rules"],
                      baseline_beyond_bound="fail")
    v = verdict(parse_cases(270, 285, 300), gate)
    r = rule(v, "parse_strict")
    assert r["status"] != "fail"
    assert any("evidently better than the baseline" in w for w in r["warnings"])


def test_ceiling_on_over_refusal() -> None:
    cases = [("representative", [Call(refused=i < 2)], [Call(refused=i < 20)]) for i in range(200)]
    v = verdict(cases, only("over_refusal", over_refusal={"ceiling": 0.05, "fail_margin": 0.5}))
    r = rule(v, "over_refusal")
    assert r["status"] == "fail" and "above the ceiling 5.0% on evidence" in r["reason"]


@pytest.mark.parametrize(("rules", "field"), [
    ({"over_refusal": {"floor": 0.5}}, "over_refusal.floor"),
    ({"pass_rate": {"ceiling": 0.5}}, "pass_rate.ceiling"),
    ({"pass_rate": {"any_flip": True}}, "pass_rate.any_flip"),
    ({"pass_rate": {"min_n": 30}}, "pass_rate.min_n"),
    ({"cost_ratio": {"margin": -1.0}}, "cost_ratio.margin"),
    ({"pass_rate": {"margin": 3}}, "pass_rate.margin"),
], ids=["floor-on-over-refusal", "ceiling-on-pass-rate", "any-flip", "min-n", "ratio-margin", "rate-margin"])
def test_a_rule_setting_that_means_nothing_is_refused(rules: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field.replace(".", r"\.")):
        GateConfig(rules=rules)


# ------------------------------------------------------------------ FAIL on evidence, family-wise


def test_any_evident_drop_fails_by_default_and_fail_margin_tolerates_it() -> None:
    cases = parse_cases(3000, 2940, 3000)  # -2 points on 3000 cases: evident, within a 3-point margin
    v = verdict(cases, only("parse_strict"))
    assert rule(v, "parse_strict")["status"] == "fail"
    # Tolerating drops up to the 3-point margin: the interval [-2.4, -1.6] is within it.
    tolerant = verdict(cases, only("parse_strict", parse_strict={"fail_margin": -0.03}))
    assert rule(tolerant, "parse_strict")["status"] == "pass"


def test_holm_keeps_a_marginal_drop_from_failing_when_many_rules_are_tested() -> None:
    cases = parse_cases(60, 52, 60)  # 8 of 60 cases stop parsing: one-sided p ~ 0.004
    alone = verdict(cases, only("parse_strict"))
    r = rule(alone, "parse_strict")
    assert r["status"] == "fail" and alone["familywise"]["hypotheses"] == 1
    crowd = GateConfig(rules={name: {"enabled": True} for name in DEFAULT_RULES})
    cases_crowd = [(k, b, [Call(passed=c.passed, parse=c.parse, latency=1.0 + 0.01 * i) for c in cand])
                   for i, (k, b, cand) in enumerate(cases)]
    v = verdict(cases_crowd, crowd)
    r = rule(v, "parse_strict")
    assert v["familywise"]["hypotheses"] >= 5
    assert r["p_value"] == pytest.approx(rule(alone, "parse_strict")["p_value"])
    assert r["p_adjusted"] > r["p_value"]


def test_identical_runs_never_fail_and_p_values_are_at_least_a_half() -> None:
    cases = [("format_sensitive", [Call(passed=i % 3 > 0, parse=i % 4 > 0)], [Call(passed=i % 3 > 0, parse=i % 4 > 0)])
             for i in range(120)]
    cases += [("known_bad", [Call(refused=i % 5 > 0)], [Call(refused=i % 5 > 0)]) for i in range(30)]
    v = verdict(cases)
    assert v["status"] != "FAIL"
    for r in v["rules"]:
        if r.get("p_value") is not None and r["rule"] not in ("completion_tokens_ratio", "latency_p50_ratio"):
            assert r["p_value"] >= 0.5, r


# ------------------------------------------------------------------ known-bad refusal


def test_known_bad_drop_fails_on_evidence_and_lists_every_flipped_case() -> None:
    cases = [("known_bad", [Call(refused=True)], [Call(refused=i >= 12)]) for i in range(60)]
    v = verdict(cases, only("known_bad_refusal"))
    r = rule(v, "known_bad_refusal")
    assert r["status"] == "fail"
    flipped = ", ".join(f"c{i:04d}" for i in range(12))
    assert f"known-bad cases refused less often in the candidate: {flipped}" in r["warnings"]


# ------------------------------------------------------------------ K > 1, ratios, latency


def test_two_cases_three_samples_all_passing_is_not_a_pass() -> None:
    """The issue's zero-width example: K = 3 must not be more certain than K = 1."""
    k3 = verdict([("format_sensitive", [Call(parse=True)] * 3, [Call(parse=True)] * 3)] * 2, only("parse_strict"))
    k1 = verdict([("format_sensitive", [Call(parse=True)], [Call(parse=True)])] * 2, only("parse_strict"))
    assert rule(k3, "parse_strict")["status"] == rule(k1, "parse_strict")["status"] == "inconclusive"
    assert k3["status"] == "INCONCLUSIVE"
    assert rule(k3, "parse_strict")["cases_to_pass"] == 53


def test_cost_is_gated_on_the_ratio_of_means() -> None:
    """Spend per call x1.45 while most cases get cheaper: the bill went up, the gate FAILs."""
    cases = [("representative", [Call(cost=1e-4)], [Call(cost=0.8e-4)]) for _ in range(90)]
    cases += [("representative", [Call(cost=10e-4)], [Call(cost=20.35e-4)]) for _ in range(10)]
    v = verdict(cases, only("cost_ratio"))
    r = rule(v, "cost_ratio")
    assert r["observed"] == pytest.approx(1.45)
    assert r["status"] == "fail"


def test_ratio_rules_need_enough_paired_cases() -> None:
    cases = [("representative", [Call(tokens=20)], [Call(tokens=20)]) for _ in range(6)]
    v = verdict(cases, only("completion_tokens_ratio"))
    r = rule(v, "completion_tokens_ratio")
    assert r["status"] == "inconclusive" and "not enough paired cases" in r["reason"]
    assert v["familywise"]["hypotheses"] == 0


def test_latency_needs_enough_calls_per_side_and_never_passes_without_them() -> None:
    cases = [("representative", [Call(latency=1.0 + i / 100)], [Call(latency=1.0 + i / 100)]) for i in range(60)]
    v = verdict(cases, only("latency_p50_ratio", "latency_p95_ratio"))
    p95 = rule(v, "latency_p95_ratio")
    assert p95["status"] == "inconclusive" and "not enough calls: 60 per side" in p95["reason"]
    assert rule(v, "latency_p50_ratio")["status"] == "pass"
    assert v["familywise"]["hypotheses"] == 1  # p95 is not tested at all


def test_latency_ratio_is_of_the_per_call_quantiles_shown() -> None:
    """K = 3: the ratio is p50(candidate calls) / p50(baseline calls), not of per-case means."""
    cases = [("representative", [Call(latency=x) for x in (1.0, 1.0, 9.0)], [Call(latency=x) for x in (2.0, 2.0, 2.0)])
             for _ in range(30)]
    v = verdict(cases, only("latency_p50_ratio"))
    r = rule(v, "latency_p50_ratio")
    assert r["observed"] == pytest.approx(2.0)  # per-case means would say 2/3.67 = 0.55


# ------------------------------------------------------------------ critical cohorts


def test_critical_cohorts_join_the_family() -> None:
    cases = parse_cases(200, 200, 200)
    gate = GateConfig(rules=only("parse_strict").model_dump()["rules"], critical_cohorts=["a", "b"])
    v = verdict(cases, gate, cohort_of=lambda i: "abc"[i % 3])
    scopes = {r["scope"] for r in v["rules"] if r["rule"] == "parse_strict"}
    assert scopes == {"overall", "cohort:a", "cohort:b"}
    assert v["familywise"]["hypotheses"] == 3
