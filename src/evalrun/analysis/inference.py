"""The estimators the gate decides on, with cases as clusters, and the family-wise correction.

Every estimator here works on *cases*: a case sampled K times is one cluster, averaged
within itself before anything is compared (K samples are not K independent observations).
Each returns an estimate, a standard error on the scale its interval is built on, and that
interval, so the gate can test any threshold against the same evidence the report shows:

* :func:`paired_rate_diff` — a paired difference of rates (pass, parse, refusal...):
  Agresti–Min for K = 1, generalised to per-case means for K > 1;
* :func:`clustered_rate` — one side's rate, Wilson with a design-effect sample size;
* :func:`ratio_of_means` — cost or tokens per call, candidate / baseline, delta method;
* :func:`quantile_ratio_bootstrap` — per-call latency quantiles, resampling whole cases;
* :func:`threshold_p_value`, :func:`bound_p_value` — one-sided p-values for a FAIL;
* :func:`holm` — Holm's step-down adjustment across every FAIL hypothesis of a verdict.

Pure numpy/scipy, no I/O, deterministic (the bootstrap takes a seed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from evalrun.analysis.stats import (
    _check_confidence,
    _Result,
    _t_two_sided,
    _z_two_sided,
    finite_or_none,
)

__all__ = [
    "PairedDiff",
    "QuantileRatio",
    "RateEstimate",
    "RatioOfMeans",
    "bound_p_value",
    "clustered_rate",
    "holm",
    "paired_rate_diff",
    "quantile_ratio_bootstrap",
    "ratio_of_means",
    "threshold_p_value",
    "wilson_from_rate",
]

FloatArray = npt.NDArray[np.float64]

# Bootstrap chunk size (replicates x calls): bounds the working arrays (a few 8 MB ones);
# the random stream is consumed identically whatever the chunk size.
_MAX_CHUNK_ELEMENTS = 1 << 20


def _norm_cdf(x: float) -> float:
    from scipy.special import ndtr

    return float(ndtr(x))


def _t_cdf(x: float, df: int) -> float:
    from scipy.special import stdtr

    return float(stdtr(df, x))


# --------------------------------------------------------------------------------------------
# paired rate difference (Agresti–Min, per-case means)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedDiff(_Result):
    """Paired difference of per-case rates, candidate − baseline.

    ``delta`` is the plain mean difference over the ``n`` paired cases. The interval is
    ``centre ± z·se``: the mean and standard error after adding Agresti–Min's pseudo-cases
    (half a case at +1, half at −1, one at 0), so it never has zero width. ``sum_d`` and
    ``sum_d2`` (Σd, Σd² over the real cases) let power calculations extrapolate to other
    suite sizes with the same interval.
    """

    n: int
    delta: float | None
    centre: float | None
    se: float | None
    ci_low: float | None
    ci_high: float | None
    sum_d: float
    sum_d2: float
    confidence: float


def paired_rate_diff(base: Sequence[float], cand: Sequence[float], confidence: float) -> PairedDiff:
    """Paired rate difference with the clustered Agresti–Min interval.

    ``base[i]`` and ``cand[i]`` are case i's rates on each side (0/1 with one sample, the
    share of passing samples with K > 1). With d_i = cand_i − base_i, N = n + 2 and the
    pseudo-cases adding 0 to Σd and 1 to Σd²:

        centre = Σd / N,   var = (Σd² + 1) / N − centre²,   se = sqrt(var / N).

    For 0/1 outcomes this is exactly Agresti & Min (2005): centre = (n01 − n10)/(n + 2),
    se = sqrt((n10 + n01 + 1) − (n01 − n10)²/(n + 2)) / (n + 2). For per-case means it is
    the cluster-robust (case-level) standard error of the same pseudo-count estimator, so
    K samples of one case count as one cluster and identical data still get a non-zero
    width. The interval is clipped to [−1, 1].
    """
    _check_confidence(confidence)
    if len(base) != len(cand):
        raise ValueError(f"base and cand must be paired by case, got {len(base)} and {len(cand)}")
    b = np.asarray(base, dtype=np.float64).reshape(-1)
    c = np.asarray(cand, dtype=np.float64).reshape(-1)
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(c))):
        raise ValueError("rates must be finite")
    if np.any((b < 0) | (b > 1) | (c < 0) | (c > 1)):
        raise ValueError("rates must lie in [0, 1]")
    n = int(b.size)
    if n == 0:
        return PairedDiff(0, None, None, None, None, None, 0.0, 0.0, confidence)
    d = c - b
    s1, s2 = float(np.sum(d)), float(np.sum(d * d))
    centre, se = augmented_moments(n, s1, s2)
    z = _z_two_sided(confidence)
    return PairedDiff(
        n=n,
        delta=s1 / n,
        centre=centre,
        se=se,
        ci_low=max(-1.0, centre - z * se),
        ci_high=min(1.0, centre + z * se),
        sum_d=s1,
        sum_d2=s2,
        confidence=confidence,
    )


def augmented_moments(n: float, sum_d: float, sum_d2: float) -> tuple[float, float]:
    """Centre and standard error of :func:`paired_rate_diff` from n, Σd and Σd².

    Also used with a hypothetical n (and Σd, Σd² scaled to it) by the power calculations,
    which must use the very interval the gate uses.
    """
    big_n = n + 2.0
    centre = sum_d / big_n
    var = max(0.0, (sum_d2 + 1.0) / big_n - centre * centre)
    return centre, math.sqrt(var / big_n)


# --------------------------------------------------------------------------------------------
# one side's rate (Wilson with a design effect)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateEstimate(_Result):
    """One side's rate over cases with its Wilson interval.

    ``value`` is the mean of the per-case rates; ``n`` the number of cases, ``calls`` the
    calls behind them and ``n_eff`` the effective sample size the interval uses (n with
    one sample per case; between n and calls with K > 1, from the design effect).
    """

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    calls: int
    n_eff: float
    confidence: float


def wilson_from_rate(p: float, n_eff: float, confidence: float) -> tuple[float, float]:
    """Wilson score interval for a rate ``p`` observed on an effective sample of ``n_eff``.

    The same closed form as :func:`evalrun.analysis.stats.wilson_interval`, for a possibly
    non-integer n; the ends are exactly 0 / 1 at p = 0 / 1.
    """
    z = _z_two_sided(confidence)
    denom = 2.0 * (n_eff + z * z)
    centre = (2.0 * n_eff * p + z * z) / denom
    half = z / denom * math.sqrt(max(0.0, 4.0 * n_eff * p * (1.0 - p) + z * z))
    low = 0.0 if p <= 0.0 else max(0.0, centre - half)
    high = 1.0 if p >= 1.0 else min(1.0, centre + half)
    return low, high


def clustered_rate(rates: Sequence[float], calls: int, confidence: float) -> RateEstimate:
    """A side's rate over cases: mean of per-case rates, Wilson on the effective sample size.

    n_eff = n · p(1 − p) / v, with v the (population) variance of the per-case rates: with
    one sample per case v = p(1 − p) and n_eff = n, the plain Wilson interval; with K > 1
    samples that agree within a case (high intra-case correlation) n_eff stays near n, and
    with samples that vary independently it approaches the number of calls (the Kish design
    effect). When v = 0 the data cannot show the within-case spread: n_eff = n at p ∈ {0, 1}
    (conservative) and the number of calls otherwise. n_eff is kept in [n, calls].
    """
    _check_confidence(confidence)
    r = np.asarray(rates, dtype=np.float64).reshape(-1)
    n = int(r.size)
    calls = max(int(calls), n)
    if n == 0:
        return RateEstimate(None, None, None, 0, calls, 0.0, confidence)
    p = float(np.mean(r))
    if np.all(r == r[0]):
        p = float(r[0])  # np.mean of equal values can be off by an ulp
    v = float(np.mean((r - p) ** 2))
    if v > 0.0:
        n_eff = min(float(calls), max(float(n), n * p * (1.0 - p) / v))
    else:
        n_eff = float(n) if p in (0.0, 1.0) else float(calls)
    low, high = wilson_from_rate(p, n_eff, confidence)
    return RateEstimate(p, low, high, n, calls, n_eff, confidence)


def bound_p_value(rate: float, n_eff: float, bound: float, *, floor: bool) -> float:
    """One-sided score-test p-value that a rate is beyond a floor (below) or ceiling (above).

    Floor: H0 "true rate ≥ floor", z = (p − f) / sqrt(f(1 − f)/n_eff), p-value Φ(z).
    Ceiling: H0 "true rate ≤ ceiling", p-value 1 − Φ(z). This is the test the Wilson interval
    inverts, so p < α exactly when the interval at confidence 1 − 2α lies wholly beyond the
    bound. A floor of 0 (or a ceiling of 1) can never be crossed: p = 1.
    """
    if n_eff <= 0:
        return 1.0
    if floor:
        if bound <= 0.0:
            return 1.0
        if bound >= 1.0:
            return 0.0 if rate < 1.0 else 1.0
    else:
        if bound >= 1.0:
            return 1.0
        if bound <= 0.0:
            return 0.0 if rate > 0.0 else 1.0
    z = (rate - bound) / math.sqrt(bound * (1.0 - bound) / n_eff)
    return _norm_cdf(z) if floor else _norm_cdf(-z)


# --------------------------------------------------------------------------------------------
# ratio of means (cost, tokens per call)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RatioOfMeans(_Result):
    """mean(cand) / mean(base) over paired cases, with a delta-method interval.

    ``log_ratio`` and ``se_log`` are the interval's centre and standard error on the log
    scale (``df`` degrees of freedom for its t quantile); ``n_excluded`` counts cases
    dropped because a side was missing, negative or non-finite.
    """

    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    log_ratio: float | None
    se_log: float | None
    df: int
    n: int
    n_excluded: int
    mean_base: float | None
    mean_cand: float | None
    confidence: float


def ratio_of_means(
    base: Sequence[float | None], cand: Sequence[float | None], confidence: float
) -> RatioOfMeans:
    """Ratio of the mean per-case values (what a bill shows) with a paired interval.

    R = C / B with B, C the means over cases measured on both sides. By the delta method
    log R has standard error sd(u) / sqrt(n) with u_i = c_i / C − b_i / B, which carries the
    pairing (the covariance of the two means) into the interval; the interval is
    exp(log R ± t_{n−1} · se). Unlike a geometric mean of per-case ratios, cases with zero
    cost or tokens count, and a few expensive cases weigh as much as they cost.

    The ratio is None when B = 0; with C = 0 it is 0 with no interval; with n < 2 there is
    no interval. When every u_i is equal (the candidate exactly proportional case by case)
    the interval has zero width: the gate's minimum number of paired cases guards tiny n.
    """
    _check_confidence(confidence)
    if len(base) != len(cand):
        raise ValueError(f"base and cand must be paired by case, got {len(base)} and {len(cand)}")
    pairs: list[tuple[float, float]] = []
    excluded = 0
    for b, c in zip(base, cand, strict=True):
        if b is None or c is None:
            excluded += 1
            continue
        bf, cf = float(b), float(c)
        if not (math.isfinite(bf) and math.isfinite(cf)) or bf < 0.0 or cf < 0.0:
            excluded += 1
            continue
        pairs.append((bf, cf))
    n = len(pairs)
    if n == 0:
        return RatioOfMeans(None, None, None, None, None, 0, 0, excluded, None, None, confidence)
    arr = np.asarray(pairs, dtype=np.float64)
    b_arr, c_arr = arr[:, 0], arr[:, 1]
    mb, mc = float(np.mean(b_arr)), float(np.mean(c_arr))
    df = max(n - 1, 0)
    if mb <= 0.0:
        return RatioOfMeans(None, None, None, None, None, df, n, excluded, mb, mc, confidence)
    if mc <= 0.0:
        return RatioOfMeans(0.0, None, None, None, None, df, n, excluded, mb, mc, confidence)
    log_r = math.log(mc) - math.log(mb)
    if n < 2:
        return RatioOfMeans(math.exp(log_r), None, None, log_r, None, df, n, excluded, mb, mc, confidence)
    u = c_arr / mc - b_arr / mb
    se = float(np.std(u, ddof=1)) / math.sqrt(n)
    half = _t_two_sided(confidence, df) * se
    return RatioOfMeans(
        ratio=math.exp(log_r),
        ci_low=finite_or_none(math.exp(log_r - half)),
        ci_high=finite_or_none(math.exp(log_r + half)),
        log_ratio=log_r,
        se_log=se,
        df=df,
        n=n,
        n_excluded=excluded,
        mean_base=mb,
        mean_cand=mc,
        confidence=confidence,
    )


# --------------------------------------------------------------------------------------------
# per-call quantiles, whole cases resampled
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantileRatio(_Result):
    """quantile(cand calls) / quantile(base calls) with a case-resampling bootstrap.

    The point values are the per-call quantiles a report shows. ``log_ratio`` ± z·``se_log``
    (``se_log``: the bootstrap standard deviation of the log ratio) is the ratio interval;
    ``delta`` and ``delta_ci`` the same in seconds. ``n_base``/``n_cand`` count calls,
    ``n_cases`` the cases resampled.
    """

    q: float
    base: float | None
    cand: float | None
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    log_ratio: float | None
    se_log: float | None
    delta: float | None
    delta_ci_low: float | None
    delta_ci_high: float | None
    n_base: int
    n_cand: int
    n_cases: int
    n_boot: int
    seed: int
    confidence: float


def _sorted_quantiles(
    weights: npt.NDArray[np.int64], width: int, vals_sorted: FloatArray, qs: Sequence[float]
) -> FloatArray:
    """Per-replicate quantiles (rows: qs, columns: replicates) of one side's calls.

    ``weights[j, r]`` (r < ``width``) is how many copies of the r-th smallest call replicate
    j holds; columns past ``width`` must be zero. One running count over the whole
    (row-major) array finds every order statistic: replicate j's k-th smallest value sits at
    the first position of row j where the running count exceeds (the count before row j) + k.
    numpy's linear interpolation between the order statistics at (N − 1)q is applied to those
    (N: the replicate's number of calls).
    """
    rows, stride = weights.shape
    out = np.full((len(qs), rows), np.nan)
    if width == 0:
        return out
    running = np.cumsum(weights.ravel())
    ends = running[stride - 1 :: stride]
    offsets = np.concatenate(([0], ends[:-1]))
    totals = ends - offsets
    row_start = np.arange(rows, dtype=np.int64) * stride
    ok = totals > 0
    for k, q in enumerate(qs):
        h = (totals - 1) * float(q)
        lo = np.floor(h).astype(np.int64)
        hi = np.minimum(lo + 1, totals - 1)
        pos_lo = np.clip(np.searchsorted(running, offsets + lo, side="right") - row_start, 0, width - 1)
        pos_hi = np.clip(np.searchsorted(running, offsets + hi, side="right") - row_start, 0, width - 1)
        lo_v, hi_v = vals_sorted[pos_lo], vals_sorted[pos_hi]
        out[k] = np.where(ok, lo_v + (hi_v - lo_v) * (h - lo), np.nan)
    return out


def _side_quantiles(
    idx: npt.NDArray[np.int64], case_sorted: npt.NDArray[np.intp], vals_sorted: FloatArray, n_cases: int,
    qs: Sequence[float],
) -> FloatArray:
    """Replicate quantiles of one side for the drawn case indices ``idx`` (rows: replicates).

    With at most one call per case (one sample per case, the common case), each case maps
    to one sorted position and the copies are counted straight into sorted order; otherwise
    per-case counts are spread to their calls.
    """
    rows, width = idx.shape[0], case_sorted.size
    if width == 0:
        return np.full((len(qs), rows), np.nan)
    row_base = np.arange(rows, dtype=np.int64)[:, None]
    if np.bincount(case_sorted, minlength=n_cases).max() <= 1:
        slot = np.full(n_cases, width, dtype=np.int64)  # cases without a call: one extra slot
        slot[case_sorted] = np.arange(width)
        weights = np.bincount((slot[idx] + row_base * (width + 1)).ravel(), minlength=rows * (width + 1))
        weights = weights.reshape(rows, width + 1)
        weights[:, width] = 0
    else:
        counts = np.bincount((idx + row_base * n_cases).ravel(), minlength=rows * n_cases).reshape(rows, n_cases)
        weights = counts[:, case_sorted]
    return _sorted_quantiles(weights, width, vals_sorted, qs)


def quantile_ratio_bootstrap(
    base_values: Sequence[float],
    base_cases: Sequence[int],
    cand_values: Sequence[float],
    cand_cases: Sequence[int],
    n_cases: int,
    qs: Sequence[float],
    confidence: float,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[float, QuantileRatio]:
    """Ratio (and difference) of per-call quantiles, cand / base, resampling whole cases.

    ``*_values`` are call latencies, ``*_cases`` the index (0..n_cases−1) of each call's
    case. A replicate draws n_cases case indices with replacement and takes every call of
    each drawn case on both sides, so samples of one case stay together (the case is the
    cluster) and the pairing between sides is kept. The generator is PCG64(seed): equal
    inputs give equal results. The interval is normal on the log scale with the bootstrap
    standard error, the scale on which the gate's p-values are computed, so the shown
    interval and the decision agree. Replicates where a side drew no call, or whose base
    quantile is 0, are dropped. With fewer than 2 cases there is no interval.
    """
    _check_confidence(confidence)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    bv = np.asarray(base_values, dtype=np.float64).reshape(-1)
    cv = np.asarray(cand_values, dtype=np.float64).reshape(-1)
    bc = np.asarray(base_cases, dtype=np.intp).reshape(-1)
    cc = np.asarray(cand_cases, dtype=np.intp).reshape(-1)
    if bv.size != bc.size or cv.size != cc.size:
        raise ValueError("each call needs its case index")
    if not (np.all(np.isfinite(bv)) and np.all(np.isfinite(cv))):
        raise ValueError("latencies must be finite")
    for q in qs:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q!r}")
    z = _z_two_sided(confidence)
    point_b = {q: float(np.quantile(bv, q)) if bv.size else None for q in qs}
    point_c = {q: float(np.quantile(cv, q)) if cv.size else None for q in qs}
    reps: tuple[FloatArray, FloatArray] | None = None
    if n_cases >= 2 and bv.size and cv.size:
        reps = _replicates(bv, bc, cv, cc, n_cases, qs, n_boot, seed)
    out: dict[float, QuantileRatio] = {}
    for k, q in enumerate(qs):
        qb, qc = point_b[q], point_c[q]
        ratio = log_r = se = lo = hi = None
        delta = dlo = dhi = None
        if qb is not None and qc is not None:
            delta = qc - qb
            if qb > 0.0 and qc > 0.0:
                log_r = math.log(qc) - math.log(qb)
                ratio = math.exp(log_r)
            elif qb > 0.0:
                ratio = 0.0
        if reps is not None and delta is not None:
            rb, rc = reps[0][k], reps[1][k]
            both = np.isfinite(rb) & np.isfinite(rc)
            if np.count_nonzero(both) >= 2:
                d_sd = float(np.std(rc[both] - rb[both], ddof=1))
                dlo, dhi = delta - z * d_sd, delta + z * d_sd
            pos = both & (rb > 0.0) & (rc > 0.0)
            if log_r is not None and np.count_nonzero(pos) >= 2:
                se = float(np.std(np.log(rc[pos]) - np.log(rb[pos]), ddof=1))
                lo, hi = finite_or_none(math.exp(log_r - z * se)), finite_or_none(math.exp(log_r + z * se))
        out[q] = QuantileRatio(
            q, qb, qc, ratio, lo, hi, log_r, se, delta, dlo, dhi,
            int(bv.size), int(cv.size), int(n_cases), n_boot, seed, confidence,
        )
    return out


def _replicates(
    bv: FloatArray, bc: npt.NDArray[np.intp], cv: FloatArray, cc: npt.NDArray[np.intp],
    n_cases: int, qs: Sequence[float], n_boot: int, seed: int,
) -> tuple[FloatArray, FloatArray]:
    """Replicate quantiles of both sides from one stream of case draws (PCG64(seed)).

    The two sides of a chunk are counted on two threads (numpy releases the GIL in the
    gathers, cumulative sums and searches); the draws, and so the result, do not depend on it.
    """
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.Generator(np.random.PCG64(seed))
    width = max(bv.size, cv.size, n_cases)
    rows = max(1, _MAX_CHUNK_ELEMENTS // width)
    sides = []
    for v, c in ((bv, bc), (cv, cc)):
        order = np.argsort(v, kind="stable")
        sides.append((c[order], v[order]))
    out_b = np.empty((len(qs), n_boot))
    out_c = np.empty((len(qs), n_boot))
    with ThreadPoolExecutor(max_workers=2) as pool:
        for start in range(0, n_boot, rows):
            stop = min(n_boot, start + rows)
            idx = rng.integers(0, n_cases, size=(stop - start, n_cases))
            jobs = [pool.submit(_side_quantiles, idx, case_sorted, vals, n_cases, qs) for case_sorted, vals in sides]
            out_b[:, start:stop] = jobs[0].result()
            out_c[:, start:stop] = jobs[1].result()
    return out_b, out_c


# --------------------------------------------------------------------------------------------
# one-sided p-values and the family-wise correction
# --------------------------------------------------------------------------------------------


def threshold_p_value(
    centre: float | None, se: float | None, threshold: float, *, higher_is_better: bool, df: int | None = None
) -> float | None:
    """One-sided p-value that the true change is beyond ``threshold`` (the bad side).

    H0 is "the change is not beyond the threshold": for higher-is-better metrics
    H0: θ ≥ threshold, p = F((centre − threshold)/se); for lower-is-better H0: θ ≤ threshold,
    p = F((threshold − centre)/se), with F the normal CDF (or Student-t with ``df``). These
    are exactly the tests the shown intervals invert: p < α ⟺ the interval at confidence
    1 − 2α lies wholly beyond the threshold. With se = 0 the answer is 0 or 1. None when there
    is no estimate.
    """
    if centre is None or se is None or not math.isfinite(centre) or not math.isfinite(se):
        return None
    gap = (centre - threshold) if higher_is_better else (threshold - centre)
    if se <= 0.0:
        return 0.0 if gap < 0 else 1.0
    x = gap / se
    return _t_cdf(x, df) if df is not None and df >= 1 else _norm_cdf(x)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm (1979) step-down adjusted p-values, in the input order.

    With p_(1) ≤ … ≤ p_(m): adj_(j) = max_{k ≤ j} min(1, (m − k + 1) p_(k)). Rejecting every
    hypothesis with adj ≤ α controls the family-wise error rate at α in the strong sense,
    under any dependence between the tests.
    """
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    m = p.size
    if m == 0:
        return []
    if np.any(np.isnan(p)) or np.any((p < 0.0) | (p > 1.0)):
        raise ValueError("p-values must be in [0, 1]")
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, p[order] * (m - np.arange(m)))
    adj_sorted = np.maximum.accumulate(scaled)
    adj = np.empty(m)
    adj[order] = adj_sorted
    return [float(v) for v in adj]
