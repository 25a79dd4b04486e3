"""The confidence sequences: closed forms, coverage in seeded simulation, and the targets.

Each simulation draws a stage look by look (the engine's sufficient statistics, exactly)
and runs the real verdict function. More repetitions: benchmarks/bench_watch_sim.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from evalrun.watch.from_run import default_stages, default_triggers
from evalrun.watch.plan import Plan, validate_plan
from evalrun.watch.sequential import (
    Moments,
    beta_binomial_cs,
    beta_prior,
    difference_cs,
    normal_mixture_radius,
    optimal_mixture_ratio,
    rate_ratio_cs,
    ratio_cs,
)
from evalrun.watch.simulate import (
    Scenario,
    first_continue,
    first_rollback,
    simulated_verdict,
    with_candidate,
)

LABELS = {"model_version": "m", "prompt_version": "p1", "retrieval_version": "r", "policy_version": "v"}

STAGE1_TRIGGERS: list[dict[str, Any]] = default_triggers()
"""What `evalrun plan` writes from a run gated by Stage 1's default rules, from the code path
itself (``triggers_from_rules`` over ``catalogue.default_rules()``), so it cannot drift."""


def plan_with(triggers: list[dict[str, Any]], **stage: Any) -> Plan:
    data = {
        "source": {"kind": "evalrun", "path": "x.jsonl"},
        "labels": {"baseline": LABELS, "candidate": {"prompt_version": "p2"}},
        "triggers": triggers,
        "stages": [{"name": "canary", "owner": "o", "traffic_share": 0.05, "min_samples": 1000, **stage}],
    }
    return validate_plan(data, Path("rollout.yaml"))


def stage1_plan(triggers: list[dict[str, Any]] | None = None) -> Plan:
    """The plan `evalrun plan` writes from a default-gated run: its triggers and its stages."""
    data = {
        "source": {"kind": "evalrun", "path": "x.jsonl"},
        "labels": {"baseline": LABELS, "candidate": {"prompt_version": "p2"}},
        "triggers": STAGE1_TRIGGERS if triggers is None else triggers,
        "stages": default_stages("o"),
    }
    return validate_plan(data, Path("rollout.yaml"))


def test_optimal_mixture_ratio_minimises_the_width() -> None:
    for alpha in (0.05, 0.01, 0.001):
        x = optimal_mixture_ratio(alpha)
        width = lambda r, a=alpha: (1 + 1 / r) * (2 * math.log(1 / a) + math.log1p(r))  # noqa: E731
        best = minimize_scalar(width, bounds=(1e-3, 1e4), method="bounded").x
        assert x == pytest.approx(best, rel=1e-3)


def test_normal_mixture_matches_the_mixture_sprt_boundary() -> None:
    """With V = σ²/t the radius is drconfseq's std_conjmix_margin at rho² = x/n_opt."""
    alpha, n_opt, sigma = 0.05, 500.0, 2.0
    rho2 = optimal_mixture_ratio(alpha) / n_opt
    for t in (10, 100, 500, 5000):
        reference = sigma * math.sqrt(2 * (t * rho2 + 1) / (t * t * rho2) * math.log(math.sqrt(t * rho2 + 1) / alpha))
        assert normal_mixture_radius(sigma**2 / t, alpha, t, n_opt) == pytest.approx(reference, rel=1e-9)


@pytest.mark.slow
def test_beta_binomial_sequence_covers_the_rate_at_every_look() -> None:
    """Over 400 seeded paths of 2,000 draws, the CS misses p at some look in <= alpha of them."""
    rng = np.random.default_rng(0)
    alpha, p = 0.05, 0.02
    a, b = beta_prior(p, 500, alpha)
    misses = 0
    for _ in range(400):
        k = np.cumsum(rng.random(2000) < p)
        for n in range(50, 2001, 50):
            cs = beta_binomial_cs(float(k[n - 1]), float(n), alpha=alpha, a=a, b=b)
            if not cs.low <= p <= cs.high:
                misses += 1
                break
    assert misses / 400 <= alpha


def test_beta_binomial_interval_is_ordered_and_narrows() -> None:
    a, b = beta_prior(0.5, 100, 0.05)
    widths = []
    for n in (10, 100, 1000, 10000):
        cs = beta_binomial_cs(0.3 * n, n, alpha=0.05, a=a, b=b)
        assert 0 <= cs.low <= 0.3 <= cs.high <= 1
        widths.append(cs.high - cs.low)
    assert widths == sorted(widths, reverse=True)
    assert beta_binomial_cs(0, 50, alpha=0.05, a=a, b=b).low == 0.0
    assert beta_binomial_cs(50, 50, alpha=0.05, a=a, b=b).high == 1.0


def test_difference_of_identical_arms_is_centred_on_zero() -> None:
    m = Moments(1000, 300, 300)
    cs = difference_cs(m, m, alpha=0.05, n_opt=500, binary=True)
    assert cs.estimate == 0 and cs.low == -cs.high < 0


def test_ratio_sequence_contains_the_ratio_of_means() -> None:
    rng = np.random.default_rng(1)
    c = rng.gamma(4, 30 * 1.3, 4000)
    b = rng.gamma(4, 30, 20000)
    cs = ratio_cs(Moments(c.size, c.sum(), (c**2).sum()), Moments(b.size, b.sum(), (b**2).sum()),
                  alpha=0.05, n_opt=1000)
    assert cs.low < c.mean() / b.mean() < cs.high
    assert cs.low > 1.2 and cs.high < 1.4


def test_rate_ratio_sequence_covers_the_true_ratio() -> None:
    rng = np.random.default_rng(2)
    misses = 0
    for _ in range(100):
        xc, xb = np.full(60, 100.0), np.full(60, 1900.0)
        ec, eb = rng.poisson(xc * 0.02), rng.poisson(xb * 0.01)
        looks = rate_ratio_cs(ec.astype(float), eb.astype(float), xc, xb, alpha=0.05)
        if any(not (lk.low <= 2.0 <= lk.high) for lk in looks):
            misses += 1
    assert misses <= 5
    assert looks[-1].low > 1.0  # a doubling is visible after 6,000 candidate units


def test_the_stage1_triggers_carry_both_boundaries_of_every_default_rate_rule() -> None:
    by_key = {(t["metric"], t["kind"]): t for t in STAGE1_TRIGGERS}
    for rule in ("pass_rate", "parse_strict", "schema_valid", "tool_valid", "over_refusal"):
        assert by_key[(rule, "vs_baseline")] == {"metric": rule, "kind": "vs_baseline", "margin": 0.03, "fail_margin": 0.0}
    assert by_key[("known_bad_refusal", "vs_baseline")]["fail_margin"] == 0.0
    assert by_key[("error_rate", "ratio")] == {"metric": "error_rate", "kind": "ratio", "max_increase": 1.0,
                                               "fail_margin": 0.0}
    assert by_key[("error_rate", "absolute")]["severity"] == "hold"
    assert by_key[("cost_ratio", "ratio")] == {"metric": "cost_ratio", "kind": "ratio", "max_increase": 0.1}


@pytest.mark.slow
@pytest.mark.parametrize("cohorts", [("canary",), ("north", "south", "east", "west")], ids=["pooled", "4-cohorts"])
def test_aa_with_a_look_every_100_requests_rarely_rolls_back(cohorts: tuple[str, ...]) -> None:
    """Target: A/A, a look every 100 candidate requests up to 100 looks, false rollback <= 5 %,
    under the plan from the default rules, whose rate triggers roll back on *any* evident
    regression (fail_margin 0: the truth sits exactly on the harm boundary)."""
    plan = stage1_plan()
    sc = Scenario(looks=100, per_look=100, cohorts=cohorts)
    reps = 60 if len(cohorts) == 1 else 30  # per-cohort sequences cost 4x the time
    rollbacks = sum(simulated_verdict(plan, "canary", sc, seed)[0].status == "rollback" for seed in range(reps))
    assert rollbacks / reps <= 0.05


@pytest.mark.slow
def test_an_equal_candidate_can_continue_within_the_default_canary() -> None:
    """A plan that always holds is useless: within the default canary's 24 h (96 looks of 100
    candidate requests), an A/A candidate reaches continue in a good share of runs, and with
    300 requests a look in nearly all (the known-bad refusal trigger, 1 % of traffic, is the
    slowest to show safe)."""
    plan = stage1_plan()
    quiet = [simulated_verdict(plan, "canary", Scenario(looks=96, per_look=100), seed) for seed in range(30)]
    busy = [simulated_verdict(plan, "canary", Scenario(looks=96, per_look=300), seed) for seed in range(20)]
    assert sum(v.status == "continue" for v, _ in quiet) / 30 >= 0.3
    assert sum(v.status == "continue" for v, _ in busy) / 20 >= 0.9
    firsts = [first_continue(v, d) for v, d in busy]
    assert all(f is not None and f >= 500 for f in firsts)  # never before min_samples
    assert all((first_continue(v, d) is not None) == (v.status == "continue") for v, d in quiet)


@pytest.mark.slow
def test_parse_failures_1_to_3_percent_roll_back_before_5000_candidate_requests() -> None:
    """Target: >= 80 % of runs roll back before 5,000 candidate requests (every request expects
    JSON), by the parse_strict trigger itself, under the plan from the default rules."""
    plan = stage1_plan()
    sc = with_candidate(Scenario(looks=50, per_look=100), parse_ok=0.97, json_share=1.0)
    firsts = [first_rollback(*simulated_verdict(plan, "canary", sc, seed), metric="parse_strict") for seed in range(40)]
    within = sum(1 for f in firsts if f is not None and f < 5000)
    assert within / 40 >= 0.8


def test_the_pass_margin_alone_never_rolls_back_what_stage1_fails() -> None:
    """The defect this replaced: with the 3-point PASS margin as its only boundary, a 2-point
    rise in parse failures is inside the margin and never rolls back; with Stage 1's FAIL
    boundary as well it does, and the stage holds (not continues) meanwhile."""
    parse = {"metric": "parse_strict", "kind": "vs_baseline", "margin": 0.03}
    sc = with_candidate(Scenario(looks=40, per_look=100), parse_ok=0.97, json_share=1.0)
    one = [simulated_verdict(plan_with([parse]), "canary", sc, seed)[0] for seed in range(10)]
    two = [simulated_verdict(plan_with([{**parse, "fail_margin": 0.0}]), "canary", sc, seed)[0] for seed in range(10)]
    assert not any(v.status == "rollback" for v in one)
    assert all(v.status == "rollback" for v in two)
    assert "(harm: < +0.00 pts; safe: ≥ -3.00 pts;" in two[0].reasons[0]
    assert "drops measurably vs baseline (safe: within 3 pts)" in two[0].reasons[0]


def test_three_way_status_between_the_two_boundaries() -> None:
    """Harm needs the sequence wholly beyond the FAIL boundary; safe, wholly within the PASS
    margin (it may still straddle zero: Stage 1 passes without proof of no change); a
    sequence across the PASS margin and not beyond the FAIL boundary holds."""
    parse = {"metric": "parse_strict", "kind": "vs_baseline", "margin": 0.03, "fail_margin": 0.0}
    early = simulated_verdict(plan_with([parse], min_samples=50), "canary", Scenario(looks=1, per_look=100), 0)[0]
    assert early.triggers[0].status == "inconclusive" and early.status == "hold"
    assert early.triggers[0].bounds.low < -0.03 and early.triggers[0].bounds.high > 0
    later = simulated_verdict(plan_with([parse], min_samples=100), "canary", Scenario(looks=60, per_look=200), 0)[0]
    r = later.triggers[0]
    assert r.status == "safe" and later.status == "continue"
    assert r.boundary == 0.0 and r.safe_boundary == pytest.approx(-0.03)
    assert r.bounds.low >= -0.03 and r.bounds.low < 0 < r.bounds.high  # safe, though not shown harmless


def test_cost_up_30_percent_rolls_back_before_2000_candidate_requests() -> None:
    plan = stage1_plan()
    sc = with_candidate(Scenario(looks=20, per_look=100), cost_scale=1.3)
    firsts = [first_rollback(*simulated_verdict(plan, "canary", sc, seed)) for seed in range(40)]
    assert sum(1 for f in firsts if f is not None and f < 2000) / 40 >= 0.8


def test_a_broken_traffic_split_holds_the_stage() -> None:
    plan = plan_with([{"metric": "cost_ratio", "kind": "ratio", "max_increase": 0.1}])
    sc = Scenario(looks=40, per_look=100, share=0.08)  # the plan expects 5 %
    verdict, _ = simulated_verdict(plan, "canary", sc, 0)
    assert verdict.status == "hold"
    assert verdict.srm["mismatch"] is True
    assert any("sample-ratio mismatch" in r for r in verdict.reasons)


def test_hold_severity_trigger_holds_instead_of_rolling_back() -> None:
    plan = plan_with([{"metric": "cost_ratio", "kind": "ratio", "max_increase": 0.1, "severity": "hold"}])
    verdict, _ = simulated_verdict(plan, "canary", with_candidate(Scenario(looks=20), cost_scale=1.5), 0)
    assert verdict.status == "hold"
    assert verdict.triggers[0].status == "harm"


def test_continue_needs_min_duration_as_well_as_safe_sequences() -> None:
    triggers = [{"metric": "cost_ratio", "kind": "ratio", "max_increase": 0.2}]
    fast = plan_with(triggers)
    slow = plan_with(triggers, min_duration="2d")
    sc = Scenario(looks=60, per_look=200)
    assert simulated_verdict(fast, "canary", sc, 0)[0].status == "continue"
    held, _ = simulated_verdict(slow, "canary", sc, 0)
    assert held.status == "hold"
    assert any("min_duration" in r for r in held.reasons)


def test_max_duration_reached_without_a_decision_asks_a_human() -> None:
    plan = plan_with([{"metric": "pass_rate", "kind": "vs_baseline", "margin": 0.001}], max_duration="1h")
    verdict, _ = simulated_verdict(plan, "canary", Scenario(looks=10), 0)
    assert verdict.status == "hold"
    assert verdict.reasons[0].startswith("max_duration 1h00m reached")


def test_alpha_is_split_across_the_stage_triggers() -> None:
    plan = plan_with(STAGE1_TRIGGERS)
    verdict, _ = simulated_verdict(plan, "canary", Scenario(looks=3), 0)
    assert all(r.alpha == pytest.approx(0.05 / len(STAGE1_TRIGGERS)) for r in verdict.triggers)
