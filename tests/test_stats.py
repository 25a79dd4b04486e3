"""Tests for evalrun.analysis.stats: known answers (scipy, hand-computed), properties, simulations."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.reference_stats import (
    BootstrapDelta,
    _bootstrap_quantiles,
    bootstrap_quantile_delta,
    bootstrap_quantile_ratio,
)

from evalrun.analysis.stats import (
    PairedBinary,
    benjamini_hochberg,
    confidence_for_alpha,
    decide,
    flaky,
    min_cases_for_quantile_ci,
    order_statistic_ranks,
    paired_binary,
    pass_at_k,
    pass_hat_k,
    quantile_ci,
    wilson_interval,
)

CONF = 0.90  # two-sided 90 % == one-sided test at alpha = 0.05
PASS_RATE_MARGIN = -0.02  # default pass-rate delta margin (higher is better)
RATIO_MARGIN = 1.15  # default latency/cost ratio margin (lower is better)

FAST = settings(max_examples=60, deadline=None)

bools = st.lists(st.booleans(), min_size=0, max_size=120)
bool_pairs = st.lists(st.tuples(st.booleans(), st.booleans()), min_size=0, max_size=120)
unit_floats = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
positive_floats = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False)
confidences = st.sampled_from([0.8, 0.9, 0.95, 0.99])


def _approx(x: float | None, rel: float = 1e-9, abs_: float = 1e-12) -> Any:
    return None if x is None else pytest.approx(x, rel=rel, abs=abs_)


def _contains(low: float | None, high: float | None, value: float) -> bool:
    assert low is not None and high is not None
    return low - 1e-12 <= value <= high + 1e-12


# ------------------------------------------------------------------ known answers


@given(n=st.integers(1, 500), data=st.data(), conf=confidences)
@FAST
def test_wilson_matches_scipy(n: int, data: st.DataObject, conf: float) -> None:
    k = data.draw(st.integers(0, n))
    ci = scipy.stats.binomtest(k, n).proportion_ci(method="wilson", confidence_level=conf)
    got = wilson_interval(k, n, conf)
    assert got is not None
    assert got[0] == pytest.approx(ci.low, abs=1e-12)
    assert got[1] == pytest.approx(ci.high, abs=1e-12)
    assert 0.0 <= got[0] <= k / n <= got[1] <= 1.0


def test_wilson_empty_and_invalid() -> None:
    assert wilson_interval(0, 0, CONF) is None
    with pytest.raises(ValueError):
        wilson_interval(5, 3, CONF)
    with pytest.raises(ValueError):
        wilson_interval(1, 3, 1.0)


@given(pairs=bool_pairs)
@FAST
def test_mcnemar_matches_scipy_binomtest(pairs: list[tuple[bool, bool]]) -> None:
    base = [b for b, _ in pairs]
    cand = [c for _, c in pairs]
    r = paired_binary(base, cand, CONF)
    assert r.n11 + r.n10 + r.n01 + r.n00 == r.n == len(pairs)
    if r.n10 + r.n01 == 0:
        assert r.p_value == 1.0
    else:
        expected = scipy.stats.binomtest(r.n10, r.n10 + r.n01, 0.5).pvalue
        assert r.p_value == pytest.approx(expected, rel=1e-12)


def test_agresti_min_hand_computed() -> None:
    # 50 cases: 30 both pass, 5 baseline-only, 12 candidate-only, 3 both fail.
    base = [True] * 30 + [True] * 5 + [False] * 12 + [False] * 3
    cand = [True] * 30 + [False] * 5 + [True] * 12 + [False] * 3
    r = paired_binary(base, cand, CONF)
    assert (r.n, r.n11, r.n10, r.n01, r.n00) == (50, 30, 5, 12, 3)
    assert r.p_base == pytest.approx(0.70)
    assert r.p_cand == pytest.approx(0.84)
    assert r.delta == pytest.approx(0.14)
    # D~ = 7/52 = 0.1346154; SE = sqrt(18 - 49/52)/52 = 0.0794249; z(0.95) = 1.6448536
    assert r.ci_low == pytest.approx(0.1346154 - 1.6448536 * 0.0794249, abs=1e-6)
    assert r.ci_high == pytest.approx(0.1346154 + 1.6448536 * 0.0794249, abs=1e-6)
    assert r.ci_low == pytest.approx(0.0039730, abs=1e-6)
    assert r.ci_high == pytest.approx(0.2652578, abs=1e-6)
    assert r.p_value == pytest.approx(scipy.stats.binomtest(5, 17, 0.5).pvalue)


def test_agresti_min_is_clipped() -> None:
    r = paired_binary([False] * 3, [True] * 3, 0.99)
    assert r.ci_high == 1.0
    assert r.ci_low is not None and -1.0 <= r.ci_low <= 1.0


def test_paired_binary_empty() -> None:
    r = paired_binary([], [], CONF)
    assert r == PairedBinary(0, 0, 0, 0, 0, None, None, None, None, None, 1.0, CONF)
    assert decide(r.ci_low, r.ci_high, PASS_RATE_MARGIN, True) == "inconclusive"
    with pytest.raises(ValueError):
        paired_binary([True], [True, False], CONF)


# ------------------------------------------------------------------ self-comparison


@given(x=bools, conf=confidences)
@FAST
def test_binary_self_comparison(x: list[bool], conf: float) -> None:
    r = paired_binary(x, x, conf)
    assert r.p_value == 1.0
    assert decide(r.ci_low, r.ci_high, PASS_RATE_MARGIN, True) != "fail"
    if x:
        assert r.delta == 0.0
        assert _contains(r.ci_low, r.ci_high, 0.0)


@given(x=st.lists(positive_floats, min_size=2, max_size=40), q=st.sampled_from([0.5, 0.95]))
@FAST
def test_bootstrap_self_comparison(x: list[float], q: float) -> None:
    d = bootstrap_quantile_delta(x, x, q, CONF, n_boot=100)
    assert (d.delta, d.ci_low, d.ci_high) == (0.0, 0.0, 0.0)
    assert decide(d.ci_low, d.ci_high, 0.0, False) != "fail"
    r = bootstrap_quantile_ratio(x, x, q, CONF, n_boot=100)
    assert (r.ratio, r.ci_low, r.ci_high) == (1.0, 1.0, 1.0)
    assert decide(r.ci_low, r.ci_high, RATIO_MARGIN, False) == "pass"


# ------------------------------------------------------------------ swapping sides


def _mirrored(
    a_low: float | None, a_high: float | None, b_low: float | None, b_high: float | None
) -> None:
    assert a_low is not None and a_high is not None
    assert b_low == _approx(-a_high) and b_high == _approx(-a_low)


def _inverted(
    a_low: float | None, a_high: float | None, b_low: float | None, b_high: float | None
) -> None:
    assert a_low is not None and a_high is not None
    assert b_low == _approx(1.0 / a_high) and b_high == _approx(1.0 / a_low)


@given(pairs=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=120))
@FAST
def test_binary_swap_negates(pairs: list[tuple[bool, bool]]) -> None:
    base = [b for b, _ in pairs]
    cand = [c for _, c in pairs]
    fwd, rev = paired_binary(base, cand, CONF), paired_binary(cand, base, CONF)
    assert rev.delta == _approx(-(fwd.delta or 0.0))
    assert (rev.n10, rev.n01, rev.p_base, rev.p_cand) == (fwd.n01, fwd.n10, fwd.p_cand, fwd.p_base)
    assert rev.p_value == pytest.approx(fwd.p_value)
    _mirrored(fwd.ci_low, fwd.ci_high, rev.ci_low, rev.ci_high)


@given(
    pairs=st.lists(st.tuples(positive_floats, positive_floats), min_size=2, max_size=40),
    q=st.sampled_from([0.5, 0.9, 0.95]),
    seed=st.integers(0, 2**32 - 1),
)
@FAST
def test_bootstrap_swap_negates_and_inverts(
    pairs: list[tuple[float, float]], q: float, seed: int
) -> None:
    base = [b for b, _ in pairs]
    cand = [c for _, c in pairs]
    fwd = bootstrap_quantile_delta(base, cand, q, CONF, n_boot=200, seed=seed)
    rev = bootstrap_quantile_delta(cand, base, q, CONF, n_boot=200, seed=seed)
    assert rev.delta == _approx(-(fwd.delta or 0.0))
    _mirrored(fwd.ci_low, fwd.ci_high, rev.ci_low, rev.ci_high)
    rfwd = bootstrap_quantile_ratio(base, cand, q, CONF, n_boot=200, seed=seed)
    rrev = bootstrap_quantile_ratio(cand, base, q, CONF, n_boot=200, seed=seed)
    assert rfwd.ratio is not None
    assert rrev.ratio == _approx(1.0 / rfwd.ratio)
    _inverted(rfwd.ci_low, rfwd.ci_high, rrev.ci_low, rrev.ci_high)


# ------------------------------------------------------------------ Benjamini-Hochberg


@given(p=st.lists(unit_floats, max_size=50))
@FAST
def test_bh_properties(p: list[float]) -> None:
    q = benjamini_hochberg(p)
    assert len(q) == len(p)
    for pi, qi in zip(p, q, strict=True):
        assert pi <= qi <= 1.0
    for i in range(len(p)):
        for j in range(len(p)):
            if p[i] < p[j]:
                assert q[i] <= q[j]
            if p[i] == p[j]:
                assert q[i] == q[j]


def test_bh_known_values() -> None:
    # m = 4: sorted 0.01, 0.03, 0.04, 0.2 -> 0.04, 0.04*4/3 (min with 0.04*4/3), 0.0533, 0.2
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.2])
    assert q == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2])
    assert benjamini_hochberg([]) == []
    assert benjamini_hochberg([0.9, 0.95]) == pytest.approx([0.95, 0.95])
    with pytest.raises(ValueError):
        benjamini_hochberg([1.5])


# ------------------------------------------------------------------ quantiles


def test_quantile_ci_enough_threshold() -> None:
    rng = np.random.default_rng(1)
    small = quantile_ci(list(rng.exponential(1.0, 20)), 0.95, CONF)
    assert small.enough is False and small.ci_low is None and small.ci_high is None
    assert small.value is not None and small.n == 20
    big_values = rng.exponential(1.0, 200)
    big = quantile_ci(list(big_values), 0.95, CONF)
    assert big.enough is True
    assert big.value == pytest.approx(float(np.quantile(big_values, 0.95)))
    assert big.value is not None and big.ci_low is not None and big.ci_high is not None
    assert big.ci_low <= big.value <= big.ci_high
    # The threshold is computed: [X_(1), X_(n)] covers p95 with prob 1 - 0.95^n - 0.05^n.
    n_min = min_cases_for_quantile_ci(0.95, CONF)
    assert n_min == 45
    assert order_statistic_ranks(n_min - 1, 0.95, CONF) is None
    assert order_statistic_ranks(n_min, 0.95, CONF) is not None
    empty = quantile_ci([], 0.5, CONF)
    assert empty.value is None and empty.enough is False


@given(n=st.integers(1, 400), q=st.floats(0.01, 0.99), conf=confidences)
@FAST
def test_order_statistic_ranks_cover(n: int, q: float, conf: float) -> None:
    ranks = order_statistic_ranks(n, q, conf)
    widest = 1.0 - q**n - (1.0 - q) ** n  # coverage of [X_(1), X_(n)]
    if ranks is None:
        assert widest < conf + 1e-12
        return
    low, up = ranks
    assert 1 <= low < up <= n
    coverage = scipy.stats.binom.cdf(up - 1, n, q) - scipy.stats.binom.cdf(low - 1, n, q)
    assert coverage >= conf - 1e-9


# ------------------------------------------------------------------ bootstrap


def test_bootstrap_reproducible_and_seed_dependent() -> None:
    rng = np.random.default_rng(11)
    base = rng.lognormal(0.0, 0.5, 300)
    cand = base * rng.lognormal(0.05, 0.2, 300)
    a = bootstrap_quantile_delta(list(base), list(cand), 0.95, CONF, n_boot=500, seed=42)
    b = bootstrap_quantile_delta(list(base), list(cand), 0.95, CONF, n_boot=500, seed=42)
    c = bootstrap_quantile_delta(list(base), list(cand), 0.95, CONF, n_boot=500, seed=43)
    assert a == b
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    assert a.delta == c.delta  # the point estimate does not depend on the seed
    ra = bootstrap_quantile_ratio(list(base), list(cand), 0.95, CONF, n_boot=500, seed=42)
    rb = bootstrap_quantile_ratio(list(base), list(cand), 0.95, CONF, n_boot=500, seed=42)
    rc = bootstrap_quantile_ratio(list(base), list(cand), 0.95, CONF, n_boot=500, seed=43)
    assert ra == rb and (ra.ci_low, ra.ci_high) != (rc.ci_low, rc.ci_high)


def test_bootstrap_chunking_does_not_change_result() -> None:
    rng = np.random.default_rng(5)
    base, cand = rng.exponential(1.0, 97), rng.exponential(1.2, 97)
    whole = _bootstrap_quantiles(base, cand, 0.9, 300, 9, max_chunk_elements=10**9)
    chunked = _bootstrap_quantiles(base, cand, 0.9, 300, 9, max_chunk_elements=97 * 7)
    np.testing.assert_array_equal(whole[0], chunked[0])
    np.testing.assert_array_equal(whole[1], chunked[1])


@pytest.mark.slow
def test_bootstrap_large_suite_detects_shift() -> None:
    # n = 10,000 x 2000 replicates exercises the chunked path at full size.
    rng = np.random.default_rng(2)
    base = rng.lognormal(0.0, 0.5, 10_000)
    cand = base * 1.3 * rng.lognormal(0.0, 0.05, 10_000)
    r = bootstrap_quantile_ratio(list(base), list(cand), 0.95, CONF)
    assert r.n == 10_000 and r.n_boot == 2000 and r.seed == 0
    assert r.ci_low is not None and r.ci_high is not None
    assert 1.2 < r.ci_low <= r.ratio <= r.ci_high < 1.4  # type: ignore[operator]
    assert decide(r.ci_low, r.ci_high, RATIO_MARGIN, False) == "fail"


def test_bootstrap_degenerate_inputs() -> None:
    assert bootstrap_quantile_delta([], [], 0.5, CONF) == BootstrapDelta(
        0.5, None, None, None, 0, 2000, 0, CONF
    )
    one = bootstrap_quantile_delta([1.0], [3.0], 0.5, CONF)
    assert one.delta == 2.0 and one.ci_low is None
    zero_base = bootstrap_quantile_ratio([0.0, 0.0, 0.0], [1.0, 2.0, 3.0], 0.5, CONF)
    assert zero_base.ratio is None and zero_base.ci_low is None and zero_base.ci_high is None
    with pytest.raises(ValueError):
        bootstrap_quantile_delta([1.0, 2.0], [1.0, 2.0], 0.5, CONF, n_boot=0)


# ------------------------------------------------------------------ simulations


def _correlated_suites(
    rng: np.random.Generator, suites: int, n: int, p: float, shared: float
) -> tuple[np.ndarray, np.ndarray]:
    """Both sides Bernoulli(p); with prob `shared` a case has one outcome for both sides."""
    same = rng.random((suites, n)) < shared
    common = rng.random((suites, n)) < p
    base = np.where(same, common, rng.random((suites, n)) < p)
    cand = np.where(same, common, rng.random((suites, n)) < p)
    return base, cand


def test_simulation_no_difference_rarely_fails() -> None:
    rng = np.random.default_rng(20240601)
    base, cand = _correlated_suites(rng, suites=1000, n=300, p=0.9, shared=0.85)
    results = [paired_binary(list(b), list(c), CONF) for b, c in zip(base, cand, strict=True)]
    fail_at_margin = np.mean(
        [decide(r.ci_low, r.ci_high, PASS_RATE_MARGIN, True) == "fail" for r in results]
    )
    assert fail_at_margin <= 0.08
    # Boundary case: true delta equals the margin (0), so "fail" is a type-I error at alpha.
    fail_at_zero = np.mean([decide(r.ci_low, r.ci_high, 0.0, True) == "fail" for r in results])
    assert fail_at_zero <= 0.08


def test_simulation_true_drop_fails() -> None:
    rng = np.random.default_rng(777)
    suites, n = 500, 300
    # Joint cell probabilities: both pass .83, base-only .12, cand-only .02, both fail .03
    # -> baseline 0.95, candidate 0.85 (a 10-point parse-rate drop).
    cells = rng.choice(4, size=(suites, n), p=[0.83, 0.12, 0.02, 0.03])
    base = (cells == 0) | (cells == 1)
    cand = (cells == 0) | (cells == 2)
    fails = 0
    for b, c in zip(base, cand, strict=True):
        r = paired_binary(list(b), list(c), CONF)
        fails += decide(r.ci_low, r.ci_high, -0.01, True) == "fail"
    assert fails / suites >= 0.80


def test_simulation_wilson_coverage() -> None:
    rng = np.random.default_rng(99)
    n, p, reps = 50, 0.3, 4000
    intervals = {k: wilson_interval(k, n, CONF) for k in range(n + 1)}
    ks = rng.binomial(n, p, reps)
    covered = np.mean([intervals[int(k)][0] <= p <= intervals[int(k)][1] for k in ks])  # type: ignore[index]
    assert abs(covered - CONF) <= 0.03


def test_simulation_quantile_ci_coverage() -> None:
    rng = np.random.default_rng(123)
    n, reps = 100, 2000
    true_median = math.log(2.0)  # median of Exponential(1)
    samples = rng.exponential(1.0, (reps, n))
    hits = 0
    for row in samples:
        est = quantile_ci(list(row), 0.5, CONF)
        assert est.enough
        hits += _contains(est.ci_low, est.ci_high, true_median)
    coverage = hits / reps
    ranks = order_statistic_ranks(n, 0.5, CONF)
    assert ranks is not None
    exact = scipy.stats.binom.cdf(ranks[1] - 1, n, 0.5) - scipy.stats.binom.cdf(
        ranks[0] - 1, n, 0.5
    )
    assert CONF <= exact <= CONF + 0.03  # conservative, but close to nominal
    assert abs(coverage - exact) <= 0.025  # ~3.7 simulation standard errors


# ------------------------------------------------------------------ decisions and power


@pytest.mark.parametrize(
    ("low", "high", "margin", "higher", "expected"),
    [
        (-0.01, 0.03, -0.02, True, "pass"),
        (-0.06, -0.03, -0.02, True, "fail"),
        (-0.04, 0.01, -0.02, True, "inconclusive"),
        (-0.02, 0.01, -0.02, True, "inconclusive"),  # touching the margin is not a pass
        (0.95, 1.10, 1.15, False, "pass"),
        (1.20, 1.40, 1.15, False, "fail"),
        (1.05, 1.25, 1.15, False, "inconclusive"),
        (-0.01, 0.01, 0.02, False, "pass"),  # over-refusal delta, margin +0.02
        (0.03, 0.05, 0.02, False, "fail"),
        (None, 0.5, 0.0, True, "inconclusive"),
        (0.1, None, 0.0, False, "inconclusive"),
        (None, None, 1.15, False, "inconclusive"),
    ],
)
def test_decide(
    low: float | None, high: float | None, margin: float, higher: bool, expected: str
) -> None:
    assert decide(low, high, margin, higher) == expected


def test_confidence_for_alpha() -> None:
    assert confidence_for_alpha(0.05) == pytest.approx(0.90)
    with pytest.raises(ValueError):
        confidence_for_alpha(0.6)


# ------------------------------------------------------------------ per-case summaries, JSON


def test_per_case_summaries() -> None:
    assert flaky([True, False, True]) is True
    assert flaky([True, True]) is False
    assert flaky([False]) is False
    assert flaky([]) is False
    assert pass_at_k([False, True]) is True
    assert pass_at_k([False, False]) is False
    assert pass_hat_k([True, True]) is True
    assert pass_hat_k([True, False]) is False
    with pytest.raises(ValueError):
        pass_at_k([])
    with pytest.raises(ValueError):
        pass_hat_k([])


def test_to_dict_is_json_safe() -> None:
    rng = np.random.default_rng(0)
    x = list(rng.exponential(1.0, 30))
    results = [
        paired_binary([], [], CONF),
        paired_binary([True, False], [True, True], CONF),
        quantile_ci(x, 0.95, CONF),
        quantile_ci(x, 0.5, CONF),
        bootstrap_quantile_delta(x, x[::-1], 0.5, CONF, n_boot=50),
        bootstrap_quantile_ratio([0.0] * 5 + [1.0], [1.0] * 6, 0.5, CONF, n_boot=50),
        bootstrap_quantile_ratio([0.0] * 5 + [1.0], [1.0] * 6, 0.9, CONF, n_boot=50),
    ]
    for r in results:
        d = r.to_dict()
        json.dumps(d, allow_nan=False)
        for v in d.values():
            assert v is None or isinstance(v, bool | int | float)
            assert not (isinstance(v, float) and not math.isfinite(v))
