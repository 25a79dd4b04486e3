"""evalrun.analysis.inference against independent implementations (scipy, statsmodels) and its own promises."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint
from statsmodels.stats.weightstats import DescrStatsW

from evalrun.analysis import inference
from evalrun.analysis.stats import decide, paired_binary, wilson_interval

CONF = 0.90
FAST = settings(max_examples=80, deadline=None)
bool_pairs = st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=150)


# ------------------------------------------------------------------ paired rate difference


@given(pairs=bool_pairs, conf=st.sampled_from([0.8, 0.9, 0.95]))
@FAST
def test_one_sample_per_case_is_exactly_agresti_min(pairs: list[tuple[bool, bool]], conf: float) -> None:
    b = [float(x) for x, _ in pairs]
    c = [float(y) for _, y in pairs]
    ours = inference.paired_rate_diff(b, c, conf)
    am = paired_binary([x for x, _ in pairs], [y for _, y in pairs], conf)
    assert ours.delta == pytest.approx(am.delta, abs=1e-15)
    assert ours.ci_low == pytest.approx(am.ci_low, abs=1e-12)
    assert ours.ci_high == pytest.approx(am.ci_high, abs=1e-12)


def test_pseudo_cases_match_statsmodels_weighted_mean() -> None:
    """The interval is the z-interval of the per-case differences plus the pseudo-cases."""
    rng = np.random.default_rng(4)
    b = rng.integers(0, 4, 40) / 3  # K = 3 shares
    c = np.clip(b + rng.integers(-1, 2, 40) / 3, 0, 1)
    ours = inference.paired_rate_diff(list(b), list(c), CONF)
    data = np.concatenate([c - b, [1.0, -1.0, 0.0]])
    weights = np.concatenate([np.ones(40), [0.5, 0.5, 1.0]])
    ds = DescrStatsW(data, weights=weights, ddof=0)
    assert ours.centre == pytest.approx(ds.mean, rel=1e-12)
    # Agresti–Min's variance divides by N (= n + 2), statsmodels' std_mean by N - 1.
    assert ours.se == pytest.approx(ds.std / math.sqrt(ds.sum_weights), rel=1e-12)
    assert ours.se == pytest.approx(ds.std_mean * math.sqrt((ds.sum_weights - 1) / ds.sum_weights), rel=1e-12)


def test_case_level_standard_error_is_the_cluster_robust_one() -> None:
    """Without the pseudo-cases, the per-case spread is statsmodels' cluster-robust (CR0) SE of
    the side effect in a call-level regression clustered by case: samples are not independent."""
    import statsmodels.api as sm

    rng = np.random.default_rng(9)
    n, k = 60, 4
    p_case = rng.beta(2, 1, n)
    y_b = (rng.random((n, k)) < p_case[:, None]).astype(float)
    y_c = (rng.random((n, k)) < np.clip(p_case - 0.1, 0, 1)[:, None]).astype(float)
    ours = inference.paired_rate_diff(list(y_b.mean(1)), list(y_c.mean(1)), CONF)
    y = np.concatenate([y_b.ravel(), y_c.ravel()])
    side = np.concatenate([np.zeros(n * k), np.ones(n * k)])
    groups = np.concatenate([np.repeat(np.arange(n), k)] * 2)
    fit = sm.OLS(y, sm.add_constant(side)).fit(cov_type="cluster", cov_kwds={"groups": groups, "use_correction": False})
    assert ours.delta == pytest.approx(fit.params[1], rel=1e-12)
    m1, m2 = ours.sum_d / n, ours.sum_d2 / n
    assert math.sqrt((m2 - m1 * m1) / n) == pytest.approx(fit.bse[1], rel=1e-9)


def test_identical_samples_never_give_a_zero_width_interval() -> None:
    # 2 cases, 3 samples each, every call passes on both sides (the issue's [0, 0] example).
    d = inference.paired_rate_diff([1.0, 1.0], [1.0, 1.0], CONF)
    assert d.ci_low is not None and d.ci_high is not None
    assert d.ci_low < -0.3 and d.ci_high > 0.3
    assert decide(d.ci_low, d.ci_high, -0.03, True) == "inconclusive"


# ------------------------------------------------------------------ one side's rate


@given(n=st.integers(1, 400), data=st.data(), conf=st.sampled_from([0.8, 0.9, 0.95]))
@FAST
def test_one_sample_rate_is_wilson(n: int, data: st.DataObject, conf: float) -> None:
    k = data.draw(st.integers(0, n))
    est = inference.clustered_rate([1.0] * k + [0.0] * (n - k), n, conf)
    lo, hi = proportion_confint(k, n, alpha=1 - conf, method="wilson")
    ref = wilson_interval(k, n, conf)
    assert ref is not None and est.ci_low is not None and est.ci_high is not None
    assert est.n_eff == n
    assert est.ci_low == pytest.approx(lo, abs=1e-12) and est.ci_high == pytest.approx(hi, abs=1e-12)
    assert (est.ci_low, est.ci_high) == (pytest.approx(ref[0], abs=1e-12), pytest.approx(ref[1], abs=1e-12))


def test_effective_sample_size_follows_the_within_case_agreement() -> None:
    # K = 4 samples that always agree within a case carry one case's worth of information...
    agree = inference.clustered_rate([1.0] * 30 + [0.0] * 10, 160, CONF)
    assert agree.n_eff == pytest.approx(40)
    # ...samples that vary as if independent approach the number of calls (capped there).
    rng = np.random.default_rng(1)
    shares = rng.binomial(4, 0.5, 400) / 4
    spread = inference.clustered_rate(list(shares), 1600, CONF)
    assert 1300 < spread.n_eff <= 1600
    # All cases equal at an interior share: no sign of clustering, the calls count.
    assert inference.clustered_rate([0.5] * 10, 40, CONF).n_eff == 40


@given(n=st.integers(5, 300), data=st.data(), floor=st.sampled_from([0.5, 0.8, 0.9, 0.99]))
@FAST
def test_floor_p_value_inverts_the_wilson_interval(n: int, data: st.DataObject, floor: float) -> None:
    k = data.draw(st.integers(0, n))
    p = inference.bound_p_value(k / n, n, floor, floor=True)
    _, hi = inference.wilson_from_rate(k / n, n, CONF)
    if abs(hi - floor) > 1e-9:
        assert (p < 0.05) == (hi < floor)
    lo, _ = inference.wilson_from_rate(k / n, n, CONF)
    ceiling = 1 - floor
    pc = inference.bound_p_value(k / n, n, ceiling, floor=False)
    if abs(lo - ceiling) > 1e-9:
        assert (pc < 0.05) == (lo > ceiling)


# ------------------------------------------------------------------ ratio of means


def test_ratio_of_means_delta_method_by_hand() -> None:
    rng = np.random.default_rng(12)
    b = rng.lognormal(0, 0.7, 150)
    c = b * rng.lognormal(0.15, 0.3, 150)
    r = inference.ratio_of_means(list(b), list(c), CONF)
    mb, mc = b.mean(), c.mean()
    cov = np.cov(np.vstack([b, c]), ddof=1) / len(b)
    var_log = cov[1, 1] / mc**2 + cov[0, 0] / mb**2 - 2 * cov[0, 1] / (mb * mc)
    t = scipy.stats.t.ppf(0.95, len(b) - 1)
    assert r.ratio == pytest.approx(mc / mb, rel=1e-12)
    assert r.se_log == pytest.approx(math.sqrt(var_log), rel=1e-9)
    assert r.ci_low == pytest.approx(mc / mb * math.exp(-t * math.sqrt(var_log)), rel=1e-9)
    assert r.ci_high == pytest.approx(mc / mb * math.exp(t * math.sqrt(var_log)), rel=1e-9)


def test_ratio_of_means_agrees_with_a_scipy_paired_bootstrap() -> None:
    rng = np.random.default_rng(3)
    b = rng.lognormal(0, 0.6, 400)
    c = b * rng.lognormal(0.1, 0.4, 400)
    r = inference.ratio_of_means(list(b), list(c), CONF)
    boot = scipy.stats.bootstrap((b, c), lambda x, y: np.mean(y) / np.mean(x), paired=True, vectorized=False,
                                 confidence_level=CONF, n_resamples=2000, method="bca", random_state=1)
    assert r.ci_low == pytest.approx(boot.confidence_interval.low, rel=0.01)
    assert r.ci_high == pytest.approx(boot.confidence_interval.high, rel=0.01)


def test_ratio_of_means_is_the_bill_not_a_geometric_mean() -> None:
    # 90 cheap cases get 20 % cheaper, 10 expensive ones twice as dear: the geometric mean of
    # per-case ratios says "12 % cheaper", the bill (ratio of means) says +45 %.
    b = [1.0] * 90 + [10.0] * 10
    c = [0.8] * 90 + [20.35] * 10
    r = inference.ratio_of_means(b, c, CONF)
    geo = math.exp(float(np.mean(np.log(np.array(c) / np.array(b)))))
    assert geo == pytest.approx(0.878, abs=0.001)
    assert r.ratio == pytest.approx(1.45, rel=1e-12)
    assert r.ci_low is not None and r.ci_low > 1.2


def test_ratio_of_means_edges() -> None:
    assert inference.ratio_of_means([], [], CONF).ratio is None
    zero_base = inference.ratio_of_means([0.0, 0.0], [1.0, 2.0], CONF)
    assert zero_base.ratio is None
    free = inference.ratio_of_means([1.0, 2.0], [0.0, 0.0], CONF)
    assert free.ratio == 0.0 and free.ci_low is None
    mixed = inference.ratio_of_means([1.0, None, 2.0, -1.0, 0.0], [2.0, 1.0, 4.0, 1.0, 0.0], CONF)
    assert (mixed.n, mixed.n_excluded) == (3, 2) and mixed.ratio == pytest.approx(2.0)


def test_ratio_of_means_interval_covers_at_the_nominal_rate() -> None:
    rng = np.random.default_rng(21)
    n, reps, true = 200, 600, 1.2
    hits = 0
    for _ in range(reps):
        case = rng.lognormal(0, 0.5, n)
        b = case * rng.lognormal(0, 0.3, n)
        c = true * case * rng.lognormal(0, 0.3, n)
        r = inference.ratio_of_means(list(b), list(c), CONF)
        assert r.ci_low is not None and r.ci_high is not None
        hits += r.ci_low <= true <= r.ci_high
    assert abs(hits / reps - CONF) < 0.04  # ~3.3 simulation standard errors


# ------------------------------------------------------------------ quantiles, resampling cases


def test_replicates_equal_explicit_case_resampling() -> None:
    rng = np.random.default_rng(3)
    n, k = 37, 3
    cases = np.repeat(np.arange(n), k)
    keep = rng.random(n * k) < 0.85  # some calls failed: unequal cluster sizes
    bv, bc = rng.lognormal(0, 0.5, n * k)[keep], cases[keep]
    cv, cc = rng.lognormal(0, 0.5, n * k), cases
    rb, rc = inference._replicates(bv, bc, cv, cc, n, [0.5, 0.95], 40, 7)
    g = np.random.Generator(np.random.PCG64(7))
    idx = g.integers(0, n, size=(40, n))
    for j in range(40):
        drawn_b = np.concatenate([bv[bc == i] for i in idx[j]])
        drawn_c = np.concatenate([cv[cc == i] for i in idx[j]])
        for q_i, q in enumerate([0.5, 0.95]):
            assert rb[q_i, j] == pytest.approx(np.quantile(drawn_b, q), rel=1e-12)
            assert rc[q_i, j] == pytest.approx(np.quantile(drawn_c, q), rel=1e-12)


def test_quantile_ratio_is_of_the_per_call_quantiles_shown() -> None:
    rng = np.random.default_rng(8)
    n, k = 100, 3
    cases = list(np.repeat(np.arange(n), k))
    b = rng.lognormal(0, 0.4, n * k)
    c = 1.5 * rng.lognormal(0, 0.4, n * k)
    out = inference.quantile_ratio_bootstrap(list(b), cases, list(c), cases, n, [0.5, 0.95], CONF, 400, 1)
    for q in (0.5, 0.95):
        r = out[q]
        assert r.base == pytest.approx(float(np.quantile(b, q)))
        assert r.ratio == pytest.approx(float(np.quantile(c, q) / np.quantile(b, q)))
        assert r.ci_low is not None and r.ci_high is not None and r.ci_low < r.ratio < r.ci_high
    again = inference.quantile_ratio_bootstrap(list(b), cases, list(c), cases, n, [0.5], CONF, 400, 1)
    assert again[0.5] == out[0.5]


def test_quantile_ratio_edges() -> None:
    one = inference.quantile_ratio_bootstrap([1.0], [0], [2.0], [0], 1, [0.5], CONF, 100, 0)
    assert one[0.5].ratio == 2.0 and one[0.5].ci_low is None
    none = inference.quantile_ratio_bootstrap([], [], [1.0, 2.0], [0, 1], 2, [0.5], CONF, 100, 0)
    assert none[0.5].ratio is None
    with pytest.raises(ValueError):
        inference.quantile_ratio_bootstrap([1.0], [0, 1], [1.0], [0], 2, [0.5], CONF, 100, 0)


# ------------------------------------------------------------------ p-values and Holm


@given(centre=st.floats(-0.5, 0.5), se=st.floats(0.001, 0.3), threshold=st.floats(-0.2, 0.2))
@FAST
def test_threshold_p_value_agrees_with_the_shown_interval(centre: float, se: float, threshold: float) -> None:
    z = scipy.stats.norm.ppf(0.95)
    lo, hi = centre - z * se, centre + z * se
    p_low = inference.threshold_p_value(centre, se, threshold, higher_is_better=True)
    p_high = inference.threshold_p_value(centre, se, threshold, higher_is_better=False)
    assert p_low is not None and p_high is not None
    if abs(hi - threshold) > 1e-9:
        assert (p_low < 0.05) == (hi < threshold)
    if abs(lo - threshold) > 1e-9:
        assert (p_high < 0.05) == (lo > threshold)
    assert p_low + p_high == pytest.approx(1.0)


@pytest.mark.slow
def test_holm_matches_statsmodels() -> None:
    rng = np.random.default_rng(5)
    for m in [1, 2, 3, 7, 20, 40] * 2:  # statsmodels takes ~0.1 s a call
        p = rng.random(m) ** rng.uniform(0.2, 5)
        if m > 2:
            p[1] = p[0]  # ties
        _, ref, _, _ = multipletests(p, alpha=0.05, method="holm")
        assert inference.holm(list(p)) == pytest.approx(list(ref), abs=1e-12)


def test_holm_rejects_input_it_cannot_read() -> None:
    assert inference.holm([]) == []
    with pytest.raises(ValueError):
        inference.holm([0.1, float("nan")])
