"""The gate's error rates, measured by seeded simulation through compare + gate.

A few dozen simulated runs per scenario (``evalrun.analysis.simulate``: within-case correlation 0.5,
the default rules), enough to catch a gate that cries wolf or waves regressions through;
``benchmarks/bench_gate.py`` runs the full grid with hundreds of repetitions.
"""

from __future__ import annotations

import pytest

from evalrun.analysis.simulate import Scenario, verdict_rates

BOOT = 200  # latency resamples per simulated run: precision is not the point here


@pytest.mark.parametrize(
    "scenario",
    [
        Scenario(n=100, pass_rate=(0.5, 0.5), parse_rate=(0.5, 0.5)),
        Scenario(n=30, samples=3, pass_rate=(0.9, 0.9), parse_rate=(0.9, 0.9)),
        Scenario(n=300, pass_rate=(0.99, 0.99), parse_rate=(0.99, 0.99)),
        Scenario(n=300, critical_cohorts=("cohort0", "cohort1")),
    ],
    ids=["rate0.5-n100", "rate0.9-n30-K3", "rate0.99-n300", "two-critical-cohorts"],
)
@pytest.mark.slow
def test_an_unchanged_candidate_rarely_fails(scenario: Scenario) -> None:
    rates = verdict_rates(scenario, reps=20, seed=11, bootstrap_samples=BOOT)
    assert rates["fail"] <= 1 / 20


@pytest.mark.slow
def test_a_ten_point_parse_drop_fails() -> None:
    rates = verdict_rates(Scenario(n=300, parse_rate=(0.95, 0.85)), reps=30, seed=12, bootstrap_samples=BOOT,
                          rules=("parse_strict",))
    assert rates["fail"] >= 0.7
    assert rates["pass"] == 0.0


@pytest.mark.parametrize(("scenario", "rule"), [
    (Scenario(n=300, cost_ratio=1.2), "cost_ratio"),
    (Scenario(n=300, latency_ratio=1.5), "latency_p50_ratio"),
], ids=["cost+20%", "latency-x1.5"])
def test_a_spend_or_latency_regression_fails(scenario: Scenario, rule: str) -> None:
    rates = verdict_rates(scenario, reps=12, seed=13, bootstrap_samples=BOOT, rules=(rule,))
    assert rates[f"fail:{rule}"] >= 0.8


def test_a_pure_improvement_never_fails() -> None:
    better = Scenario(n=300, pass_rate=(0.9, 0.95), parse_rate=(0.9, 0.97), over_refusal=(0.05, 0.03),
                      known_bad_refusal=(0.9, 0.97), cost_ratio=0.9, latency_ratio=0.9)
    rates = verdict_rates(better, reps=20, seed=14, bootstrap_samples=BOOT)
    assert rates["fail"] == 0.0
    assert rates["pass"] >= 0.7
