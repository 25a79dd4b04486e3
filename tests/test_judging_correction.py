"""Rogan–Gladen corrected rates and the paired corrected difference, proven by seeded simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evalrun.analysis.inference import paired_rate_diff
from evalrun.judging import ErrorRates, corrected_difference, corrected_rate, rogan_gladen
from evalrun.judging._proportion import z_two_sided


def test_rogan_gladen_formula_and_clipping() -> None:
    assert rogan_gladen(0.5, 0.9, 0.8) == pytest.approx((0.5 + 0.8 - 1) / 0.7)
    assert rogan_gladen(0.05, 0.9, 0.8) == 0.0  # below the false-pass floor: clipped
    assert rogan_gladen(0.95, 0.9, 0.8) == 1.0
    assert rogan_gladen(0.5, 0.5, 0.5) is None  # a guessing judge carries nothing to correct
    assert rogan_gladen(0.5, 1.0, 1.0) == 0.5  # a perfect judge changes nothing


def test_error_rates_refuse_impossible_counts() -> None:
    with pytest.raises(ValueError, match="at least one human-passed and one human-failed"):
        ErrorRates(3, 3, 0, 0)
    with pytest.raises(ValueError, match="judge_pass_on_pass"):
        ErrorRates(4, 3, 1, 2)


def test_lang_reiczigel_interval_by_hand() -> None:
    """The default interval is exactly Lang & Reiczigel (2014): adjusted counts, delta SE, bias shift."""
    rates = ErrorRates(judge_pass_on_pass=18, human_pass=20, judge_fail_on_fail=15, human_fail=20)
    shares = [1.0] * 40 + [0.0] * 24
    result = corrected_rate(shares, rates, confidence=0.90)
    z = z_two_sided(0.90)
    q = (40 + z * z / 2) / (64 + z * z)
    se, sp = 19 / 22, 16 / 22
    p = (q + sp - 1) / (se + sp - 1)
    sd = math.sqrt(q * (1 - q) / (64 + z * z) + p * p * se * (1 - se) / 22 + (1 - p) ** 2 * sp * (1 - sp) / 22)
    sd /= se + sp - 1
    shift = 2 * z * z * (p * se * (1 - se) / 22 - (1 - p) * sp * (1 - sp) / 22)
    assert result.observed == pytest.approx(40 / 64)
    assert result.estimate == pytest.approx((40 / 64 + 0.75 - 1) / 0.65)
    assert result.ci_low == pytest.approx(p + shift - z * sd)
    assert result.ci_high == pytest.approx(p + shift + z * sd)
    assert result.bounded and result.method == "lang_reiczigel"


def test_a_guessing_judge_bounds_nothing() -> None:
    rates = ErrorRates(10, 20, 10, 20)  # Se = Sp = 0.5
    rate = corrected_rate([1.0, 0.0] * 20, rates)
    assert rate.estimate is None and not rate.bounded and (rate.ci_low, rate.ci_high) == (0.0, 1.0)
    diff = corrected_difference([1.0] * 40, [0.0] * 40, rates)
    assert not diff.bounded and (diff.ci_low, diff.ci_high) == (-1.0, 1.0)
    assert diff.estimate is None
    assert diff.p_value(-0.05) == 1.0  # no margin other than 0 can be tested through a guessing judge


def test_uncalibrated_difference_is_exactly_the_runs_paired_interval() -> None:
    """Without calibration (J taken as 1) the interval is evalrun's own Agresti–Min one."""
    rng = np.random.default_rng(7)
    base = rng.integers(0, 2, 50).astype(float)
    cand = rng.integers(0, 2, 50).astype(float)
    ours = corrected_difference(base, cand, None, confidence=0.90)
    reference = paired_rate_diff(list(base), list(cand), 0.90)
    assert ours.method == "uncorrected"
    assert (ours.ci_low, ours.ci_high) == pytest.approx((reference.ci_low, reference.ci_high))
    assert ours.centre == pytest.approx(reference.centre) and ours.se == pytest.approx(reference.se)
    assert ours.estimate == pytest.approx(reference.delta)
    rate = corrected_rate([1.0, 0.0, 1.0], None)
    assert rate.method == "uncorrected" and rate.estimate == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_p_value_inverts_the_fieller_interval(seed: int) -> None:
    """p < α exactly when the 1 − 2α interval is wholly beyond the threshold, at both ends."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 200))
    base = rng.binomial(1, 0.7, n).astype(float)
    cand = np.where(rng.random(n) < 0.8, base, rng.binomial(1, 0.6, n)).astype(float)
    rates = ErrorRates(int(rng.integers(15, 21)), 20, int(rng.integers(14, 21)), 20)
    diff = corrected_difference(base, cand, rates, confidence=0.90)
    assert diff.bounded
    assert diff.ci_low is not None and diff.ci_high is not None
    if diff.ci_high < 1.0:
        assert diff.p_value(diff.ci_high) == pytest.approx(0.05, abs=1e-9)
        assert diff.p_value(diff.ci_high + 0.01) < 0.05 < diff.p_value(diff.ci_high - 0.01)  # type: ignore[operator]
    if diff.ci_low > -1.0:
        assert diff.p_value(diff.ci_low, higher_is_better=False) == pytest.approx(0.05, abs=1e-9)


def _paired_truth(rng: np.random.Generator, n: int, p_base: float, delta: float, discordant: float) -> tuple[
        np.ndarray, np.ndarray]:
    p10, p01 = (discordant - delta) / 2, (discordant + delta) / 2
    p11 = p_base - p10
    cell = rng.choice(4, size=n, p=[p11, p10, p01, 1 - p11 - p10 - p01])
    return cell <= 1, (cell == 0) | (cell == 2)


def _judge(rng: np.random.Generator, truth: np.ndarray, se: float, sp: float, samples: int) -> np.ndarray:
    return rng.binomial(samples, np.where(truth, se, 1 - sp)) / samples


def test_corrected_rate_covers_where_the_plain_correction_does_not() -> None:
    """Lang–Reiczigel keeps ~90 % coverage; the textbook Rogan–Gladen Wald interval drops to ~67 %."""
    rng = np.random.default_rng(11)
    reps = 1500
    z = z_two_sided(0.90)
    for p, se, sp, n, cal in ((0.05, 0.8, 0.95, 300, 20), (0.6, 0.95, 0.75, 64, 20), (0.9, 0.9, 0.9, 300, 60)):
        hits = {"lang_reiczigel": 0, "delta": 0}
        for _ in range(reps):
            truth = rng.random(n) < p
            shares = _judge(rng, truth, se, sp, 1)
            rates = ErrorRates(rng.binomial(cal, se), cal, rng.binomial(cal, sp), cal)
            r = corrected_rate(shares, rates)
            hits["lang_reiczigel"] += r.ci_low <= p <= r.ci_high  # type: ignore[operator]
            q, s_e, s_p = float(np.mean(shares)), rates.sensitivity, rates.specificity  # textbook Wald
            j = s_e + s_p - 1
            est = (q + s_p - 1) / j
            sd = math.sqrt(q * (1 - q) / n + est**2 * s_e * (1 - s_e) / cal + (1 - est) ** 2 * s_p * (1 - s_p) / cal) / j
            hits["delta"] += est - z * sd <= p <= est + z * sd
        assert hits["lang_reiczigel"] / reps >= 0.875, (p, se, sp, n, cal, hits)  # MC s.e. 0.008
        if p == 0.05:
            assert hits["delta"] / reps <= 0.75  # the simulation can tell a bad interval from a good one


def test_corrected_difference_keeps_its_promises_by_simulation() -> None:
    """Same judge on both sides, K samples, calibration of 20 + 20 or 60 + 60 items.

    * coverage of Δ_true at the nominal 90 %;
    * a true regression of exactly the margin (10 points) PASSes non-inferiority ≤ 5 %;
    * an unchanged candidate FAILs (p < 0.05 at threshold 0) ≤ 5 %;
    * the uncorrected judge rule PASSes that same regression far more often.
    """
    rng = np.random.default_rng(12)
    reps, margin = 1200, 0.10
    for se, sp, n, cal, samples in ((0.75, 0.75, 300, 20, 3), (0.95, 0.75, 64, 60, 1), (0.9, 0.9, 300, 60, 1)):
        covered = ni_pass = naive_pass = aa_fail = 0
        for _ in range(reps):
            base, cand = _paired_truth(rng, n, 0.85, -margin, 0.2)
            jb, jc = _judge(rng, base, se, sp, samples), _judge(rng, cand, se, sp, samples)
            rates = ErrorRates(rng.binomial(cal, se), cal, rng.binomial(cal, sp), cal)
            diff = corrected_difference(jb, jc, rates)
            covered += diff.ci_low <= -margin <= diff.ci_high  # type: ignore[operator]
            ni_pass += diff.ci_low > -margin  # type: ignore[operator]
            naive = corrected_difference(jb, jc, None)
            naive_pass += naive.ci_low > -margin  # type: ignore[operator]
            b0, c0 = _paired_truth(rng, n, 0.85, 0.0, 0.2)
            p0 = corrected_difference(_judge(rng, b0, se, sp, samples), _judge(rng, c0, se, sp, samples),
                                      rates).p_value(0.0)
            aa_fail += p0 is not None and p0 < 0.05
        label = (se, sp, n, cal, samples)
        assert covered / reps >= 0.875, (label, covered)
        assert ni_pass / reps <= 0.068, (label, ni_pass)  # 0.05 + 3 MC s.e.
        assert aa_fail / reps <= 0.068, (label, aa_fail)
        if se == 0.75:
            assert naive_pass / reps >= 0.5, (label, naive_pass)  # measured 0.69: the trap the correction closes
