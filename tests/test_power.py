"""evalrun.analysis.power: every MDE and "cases needed" holds up when the experiment is actually run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evalrun.analysis import inference, power
from evalrun.analysis.stats import decide

CONF = 0.90
Z = power.z_one_sided(0.05)


def _pass_at(n: int, margin: float) -> bool:
    """Does a flawless candidate (no case changes) pass a rate margin with n cases?"""
    d = inference.paired_rate_diff([1.0] * n, [1.0] * n, CONF)
    return decide(d.ci_low, d.ci_high, margin, True) == "pass"


@pytest.mark.parametrize(("margin", "expected"), [(0.01, 163), (0.03, 53), (0.10, 15)])
def test_cases_to_pass_is_exactly_where_a_flawless_candidate_starts_passing(margin: float, expected: int) -> None:
    n = power.cases_to_pass(margin, Z)
    assert n == expected
    assert _pass_at(n, -margin) and not _pass_at(n - 1, -margin)


def test_cases_to_pass_for_a_floor_is_where_a_perfect_candidate_clears_it() -> None:
    n = power.bound_cases_to_pass(0.99, Z, floor=True)
    assert n == 268
    for size, clears in ((n, True), (n - 1, False)):
        lo, _ = inference.wilson_from_rate(1.0, size, CONF)
        assert (lo > 0.99) == clears
    assert power.cases_to_pass(0.0, Z) is None


def _simulate_resolution(p10: float, p01: float, n: int, threshold: float, level: float, *, beyond: bool,
                         reps: int, rng: np.random.Generator) -> float:
    """Share of simulated n-case suites (cells drawn with these discordance rates) that resolve."""
    hits = 0
    for _ in range(reps):
        cells = rng.choice(3, size=n, p=[p10, p01, 1 - p10 - p01])
        b = (cells == 0).astype(float)
        c = (cells == 1).astype(float)
        d = inference.paired_rate_diff(list(b), list(c), CONF)
        p = inference.threshold_p_value(d.centre, d.se, threshold, higher_is_better=True)
        assert p is not None
        hits += (p < level) if beyond else (1 - p < 0.05)
    return hits / reps


def test_rate_cases_needed_gives_80_percent_power_to_fail() -> None:
    """From a pilot's moments, the suggested size FAILs a real 8-point drop ~80 % of the time."""
    rng = np.random.default_rng(17)
    p10, p01 = 0.10, 0.02  # an 8-point drop with churn
    pilot_n = 60
    n = power.rate_cases_needed(pilot_n, sum_d=(p01 - p10) * pilot_n, sum_d2=(p01 + p10) * pilot_n, threshold=0.0,
                                level=0.01, beyond=True, higher_is_better=True)
    assert n is not None and 150 < n < 400
    rate = _simulate_resolution(p10, p01, n, 0.0, 0.01, beyond=True, reps=1500, rng=rng)
    assert 0.76 <= rate <= 0.86


def test_rate_cases_needed_gives_80_percent_power_to_pass() -> None:
    """An equally good candidate with churn: the suggested size PASSes a 3-point margin ~80 %."""
    rng = np.random.default_rng(18)
    p10 = p01 = 0.02
    n = power.rate_cases_needed(100, sum_d=0.0, sum_d2=4.0, threshold=-0.03, level=0.05, beyond=False,
                                higher_is_better=True)
    assert n is not None
    rate = _simulate_resolution(p10, p01, n, -0.03, 0.05, beyond=False, reps=1500, rng=rng)
    assert 0.76 <= rate <= 0.86


def test_no_discordance_needs_the_pseudo_count_answer_not_sqrt_scaling() -> None:
    """With no case disagreeing, the interval shrinks like 1/n: the answer is ~z/|m|, not 10x more."""
    n = power.rate_cases_needed(40, sum_d=0.0, sum_d2=0.0, threshold=-0.03, level=0.05, beyond=False,
                                higher_is_better=True)
    z = Z + power.z_one_sided(0.2)
    assert n == math.ceil(z / 0.03 - 2)
    assert power.rate_cases_needed(40, sum_d=-8.0, sum_d2=8.0, threshold=-0.03, level=0.05, beyond=False,
                                   higher_is_better=True) is None  # estimate beyond the margin: never passes


def test_fail_mde_is_the_regression_detected_80_percent_of_the_time() -> None:
    rng = np.random.default_rng(2)
    se, level = 0.02, 0.005
    mde = power.fail_mde(se, 0.0, level)
    estimates = rng.normal(-mde, se, 20000)
    detected = np.mean(estimates < -power.z_one_sided(level) * se)
    assert detected == pytest.approx(0.80, abs=0.01)


def test_scaled_cases_needed_for_ratios() -> None:
    # se 0.05 at n = 100 -> se 0.05 * sqrt(100 / N); distance 0.1 at level 0.05: N = 100 (2.486*0.05/0.1)^2.
    n = power.scaled_cases_needed(100, 0.05, 0.1, 0.05)
    assert n == math.ceil(100 * ((Z + power.z_one_sided(0.2)) * 0.05 / 0.1) ** 2)
    assert power.scaled_cases_needed(100, 0.05, 0.0, 0.05) is None


def test_rate_drop_detectable_before_any_call() -> None:
    """The best case (only regressing cases change) for 120 parse cases at the family level."""
    level = 0.05 / 9
    drop = power.rate_drop_detectable(120, 0.0, level)
    assert drop is not None and 0.03 < drop < 0.10
    # At that drop with nothing else changing, a FAIL happens with 80 % power; a bit less, less.
    rng = np.random.default_rng(4)
    rate = _simulate_resolution(drop, 0.0, 120, 0.0, level, beyond=True, reps=1500, rng=rng)
    assert rate >= 0.74
    assert power.rate_drop_detectable(3, 0.0, level) is None  # three cases can detect nothing at this level
