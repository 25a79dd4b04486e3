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
    ArmModel,
    Scenario,
    first_rollback,
    simulated_verdict,
    with_candidate,
)

LABELS = {"model_version": "m", "prompt_version": "p1", "retrieval_version": "r", "policy_version": "v"}

STAGE1_TRIGGERS: list[dict[str, Any]] = [
    # What `evalrun plan` writes from Stage 1's default gate rules.
    {"metric": "error_rate", "kind": "absolute", "max": 0.01},
    {"metric": "pass_rate", "kind": "vs_baseline", "margin": 0.02},
    {"metric": "parse_strict", "kind": "vs_baseline", "margin": 0.01},
    {"metric": "parse_strict", "kind": "absolute", "min": 0.99},
    {"metric": "tool_valid", "kind": "vs_baseline", "margin": 0.01},
    {"metric": "tool_valid", "kind": "absolute", "min": 0.99},
    {"metric": "over_refusal", "kind": "vs_baseline", "margin": 0.02},
    {"metric": "known_bad_refusal", "kind": "vs_baseline", "margin": 0.01},
    {"metric": "completion_tokens_ratio", "kind": "ratio", "max_increase": 0.15},
    {"metric": "cost_ratio", "kind": "ratio", "max_increase": 0.10},
    {"metric": "latency_p50_ratio", "kind": "ratio", "max_increase": 0.2},
    {"metric": "latency_p95_ratio", "kind": "ratio", "max_increase": 0.3},
]


def plan_with(triggers: list[dict[str, Any]], **stage: Any) -> Plan:
    data = {
        "source": {"kind": "evalrun", "path": "x.jsonl"},
        "labels": {"baseline": LABELS, "candidate": {"prompt_version": "p2"}},
        "triggers": triggers,
        "stages": [{"name": "canary", "owner": "o", "traffic_share": 0.05, "min_samples": 1000, **stage}],
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


@pytest.mark.slow
def test_aa_with_a_look_every_100_requests_never_rolls_back() -> None:
    """Target: A/A, a look every 100 candidate requests up to 100 looks, false rollback <= 5 %.

    Stage 1's default triggers, including floors at 99 % that sit exactly on the 1 % failure
    rates of this traffic (the hardest case for a false alarm)."""
    plan = plan_with(STAGE1_TRIGGERS)
    on_the_floors = ArmModel(parse_ok=0.99, tool_ok=0.99)
    base = Scenario(looks=100, per_look=100, baseline=on_the_floors, candidate=on_the_floors)
    rollbacks = sum(simulated_verdict(plan, "canary", base, seed)[0].status == "rollback" for seed in range(60))
    assert rollbacks / 60 <= 0.05


@pytest.mark.slow
def test_parse_failures_1_to_3_percent_roll_back_before_5000_candidate_requests() -> None:
    """Target: >= 80 % of runs roll back before 5,000 candidate requests (every request expects JSON)."""
    plan = plan_with(STAGE1_TRIGGERS)
    sc = with_candidate(Scenario(looks=50, per_look=100), parse_ok=0.97, json_share=1.0)
    firsts = [first_rollback(*simulated_verdict(plan, "canary", sc, seed)) for seed in range(40)]
    within = sum(1 for f in firsts if f is not None and f < 5000)
    assert within / 40 >= 0.8


def test_cost_up_30_percent_rolls_back_before_2000_candidate_requests() -> None:
    plan = plan_with(STAGE1_TRIGGERS)
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
