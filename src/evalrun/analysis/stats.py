"""Statistical primitives: proportions, quantiles and their intervals, decisions, BH.

Everything here is side-effect free and depends only on numpy and scipy. The cluster-aware
estimators the gate decides on build on these in :mod:`evalrun.analysis.inference`; power
calculations live in :mod:`evalrun.analysis.power`.

Conventions used throughout:

* A gate is a one-sided non-inferiority test at level ``alpha`` (default 0.05). A one-sided
  test at ``alpha`` is equivalent to checking one end of a two-sided interval at confidence
  ``1 - 2*alpha``, so every interval used for gating is a two-sided 90 % interval by default
  (see :func:`confidence_for_alpha`). Every estimator takes ``confidence`` explicitly.
* Outcomes are paired by case index: ``base[i]`` and ``cand[i]`` are the same test case.
* Deltas are always ``candidate - baseline`` and ratios ``candidate / baseline``.
* Results are frozen dataclasses whose ``to_dict()`` is JSON-safe: non-finite floats become
  ``None`` (JSON has no NaN or infinity).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "Decision",
    "PairedBinary",
    "QuantileEstimate",
    "benjamini_hochberg",
    "binom_test_two_sided",
    "confidence_for_alpha",
    "decide",
    "finite_or_none",
    "flaky",
    "json_safe",
    "min_cases_for_quantile_ci",
    "order_statistic_ranks",
    "paired_binary",
    "pass_at_k",
    "pass_hat_k",
    "quantile_ci",
    "wilson_interval",
]

Decision = Literal["pass", "fail", "inconclusive"]

FloatArray = npt.NDArray[np.float64]



# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """Convert numpy scalars to Python ones and non-finite floats to None."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


def finite_or_none(value: float | None) -> float | None:
    """Return ``value`` as a Python float, or None when it is None, NaN or infinite."""
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


class _Result:
    """Mixin giving frozen result dataclasses a JSON-safe ``to_dict``."""

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-safe dict (floats, ints, bools, None; never NaN/inf)."""
        return {f.name: json_safe(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def _check_q(q: float) -> None:
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q!r}")


def _check_same_length(base: Sequence[Any], cand: Sequence[Any]) -> None:
    if len(base) != len(cand):
        raise ValueError(
            f"base and cand must be paired by case (same length), got {len(base)} and {len(cand)}"
        )


def _finite_array(name: str, values: Sequence[float]) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _z_two_sided(confidence: float) -> float:
    """Standard-normal quantile for a two-sided interval: z = Phi^-1(1/2 + confidence/2)."""
    from scipy.special import ndtri

    return float(ndtri(0.5 + 0.5 * confidence))


def _t_two_sided(confidence: float, df: int) -> float:
    """Student-t quantile for a two-sided interval: t_{df}^-1(1/2 + confidence/2)."""
    from scipy.special import stdtrit

    # What scipy.stats.t.ppf computes (its _ppf), without importing scipy.stats (~45 MB, 0.4 s).
    return float(stdtrit(df, 0.5 + 0.5 * confidence))


# The binomial distribution as scipy.stats.binom evaluates it (the same special functions,
# the same support rules and clipping; tests/test_stats_binom.py checks them bit for bit),
# so a run never imports scipy.stats: ~45 MB of memory and ~0.4 s of start-up.


def _binom_pmf(k: float, n: int, p: float) -> float:
    from scipy.special import _ufuncs

    if k < 0 or k > n or k != math.floor(k):
        return 0.0
    return float(np.clip(_ufuncs._binom_pmf(k, n, p), 0, 1))


def _binom_cdf(k: float, n: int, p: float) -> float:
    from scipy.special import _ufuncs

    if k >= n:
        return 1.0
    if k < 0:
        return 0.0
    return float(np.clip(_ufuncs._binom_cdf(math.floor(k), n, p), 0, 1))


def _binom_sf(k: float, n: int, p: float) -> float:
    from scipy.special import _ufuncs

    if k < 0:
        return 1.0
    if k >= n:
        return 0.0
    return float(np.clip(_ufuncs._binom_sf(math.floor(k), n, p), 0, 1))


def _binom_search(a: Callable[[float], float], d: float, lo: float, hi: float) -> float:
    """scipy's ``_binary_search_for_binom_tst``: i in [lo, hi] with a(i) <= d < a(i+1)."""
    while lo < hi:
        mid = lo + (hi - lo) // 2
        midval = a(mid)
        if midval < d:
            lo = mid + 1
        elif midval > d:
            hi = mid - 1
        else:
            return mid
    return lo if a(lo) <= d else lo - 1


def binom_test_two_sided(k: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial test p-value, as ``scipy.stats.binomtest(k, n, p).pvalue``."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    d = _binom_pmf(k, n, p)
    rerr = 1 + 1e-7
    if k == p * n:
        return 1.0
    if k < p * n:
        ix = _binom_search(lambda x: -_binom_pmf(x, n, p), -d * rerr, math.ceil(p * n), n)
        y = n - ix + int(d * rerr == _binom_pmf(ix, n, p))
        pval = _binom_cdf(k, n, p) + _binom_sf(n - y, n, p)
    else:
        ix = _binom_search(lambda x: _binom_pmf(x, n, p), d * rerr, 0, math.floor(p * n))
        y = ix + 1
        pval = _binom_cdf(y - 1, n, p) + _binom_sf(k - 1, n, p)
    return min(1.0, pval)


def confidence_for_alpha(alpha: float) -> float:
    """Two-sided confidence whose one end is a one-sided test at level ``alpha``: 1 - 2*alpha.

    The gate's non-inferiority test at alpha = 0.05 therefore uses 90 % intervals.
    """
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")
    return 1.0 - 2.0 * alpha


# --------------------------------------------------------------------------------------------
# proportions
# --------------------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, confidence: float) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion; None when ``n == 0``.

    Uses Newcombe's (1998) closed form: centre = (2np + z^2) / (2(n + z^2)),
    half-width = z * sqrt(4np(1-p) + z^2) / (2(n + z^2)). The bounds are exactly 0 when
    ``successes == 0`` and exactly 1 when ``successes == n`` (the limits of the formula),
    which avoids rounding just outside [0, 1].
    """
    _check_confidence(confidence)
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return None
    z = _z_two_sided(confidence)
    p = successes / n
    denom = 2.0 * (n + z * z)
    centre = (2.0 * n * p + z * z) / denom
    half = z / denom * math.sqrt(4.0 * n * p * (1.0 - p) + z * z)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


@dataclass(frozen=True)
class PairedBinary(_Result):
    """Paired comparison of pass/fail outcomes (one sample per case).

    ``n10`` counts cases the baseline passed and the candidate failed; ``n01`` the reverse.
    ``delta = p_cand - p_base``. ``ci_low``/``ci_high`` is the Agresti-Min interval for the
    paired difference; ``p_value`` is the exact two-sided McNemar test.
    """

    n: int
    n11: int
    n10: int
    n01: int
    n00: int
    p_base: float | None
    p_cand: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float
    confidence: float


def paired_binary(base: Sequence[bool], cand: Sequence[bool], confidence: float) -> PairedBinary:
    """Compare paired binary outcomes: Agresti-Min interval and exact McNemar p-value.

    Interval (Agresti & Min 2005, add 1/2 to each cell of the 2x2 table):
    D = (n01 - n10) / (n + 2),
    SE = sqrt((n10 + n01 + 1) - (n01 - n10)^2 / (n + 2)) / (n + 2),
    D +/- z * SE, clipped to [-1, 1]. Unlike the Wald interval it keeps a positive width when
    there are no discordant pairs, so a run compared with itself is never "certain".

    p-value: exact McNemar, i.e. a two-sided binomial test of n10 out of n10 + n01 discordant
    pairs against 1/2; 1.0 when there are no discordant pairs. With ``n == 0`` all rates and
    the interval are None and the p-value is 1.0.
    """
    _check_confidence(confidence)
    _check_same_length(base, cand)
    b = np.asarray(base, dtype=bool).reshape(-1)
    c = np.asarray(cand, dtype=bool).reshape(-1)
    n = int(b.size)
    n11 = int(np.count_nonzero(b & c))
    n10 = int(np.count_nonzero(b & ~c))
    n01 = int(np.count_nonzero(~b & c))
    n00 = n - n11 - n10 - n01
    if n == 0:
        return PairedBinary(0, 0, 0, 0, 0, None, None, None, None, None, 1.0, confidence)

    discordant = n10 + n01
    if discordant == 0:
        p_value = 1.0
    else:
        p_value = min(1.0, binom_test_two_sided(n10, discordant, 0.5))

    z = _z_two_sided(confidence)
    m = n + 2
    d_tilde = (n01 - n10) / m
    se = math.sqrt(max(0.0, (discordant + 1) - (n01 - n10) ** 2 / m)) / m
    ci_low = max(-1.0, d_tilde - z * se)
    ci_high = min(1.0, d_tilde + z * se)
    return PairedBinary(
        n=n,
        n11=n11,
        n10=n10,
        n01=n01,
        n00=n00,
        p_base=(n11 + n10) / n,
        p_cand=(n11 + n01) / n,
        # (n01 - n10)/n == p_cand - p_base, computed so that swapping sides negates it exactly.
        delta=(n01 - n10) / n,
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=p_value,
        confidence=confidence,
    )


# --------------------------------------------------------------------------------------------
# quantiles
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantileEstimate(_Result):
    """Sample quantile with a distribution-free order-statistic interval.

    ``enough`` is False when the sample is too small for an interval at this confidence to
    exist; ``ci_low``/``ci_high`` are then None while ``value`` is still reported.
    """

    q: float
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    enough: bool
    confidence: float


def order_statistic_ranks(n: int, q: float, confidence: float) -> tuple[int, int] | None:
    """1-based ranks (l, u) such that [X_(l), X_(u)] covers the q-quantile with prob >= confidence.

    With B ~ Binomial(n, q) the number of observations below the true quantile of a
    continuous distribution, P(X_(l) <= x_q < X_(u)) = P(l <= B <= u - 1)
    = 1 - P(B <= l - 1) - P(B >= u). The construction is equal-tailed: each tail gets at most
    (1 - confidence)/2, with l as large and u as small as possible. When one tail cannot
    get that small even at the extreme rank (l = 1 or u = n; e.g. p95 with a small n), that
    rank is used and its unavoidable tail mass is taken out of the other tail's budget.
    Returns None when no ranks within 1..n work, i.e. when even [X_(1), X_(n)] has
    coverage 1 - q^n - (1-q)^n below ``confidence`` (always for q = 0 or 1, n < 2).
    """
    _check_confidence(confidence)
    _check_q(q)
    if n < 2 or q <= 0.0 or q >= 1.0:
        return None
    from scipy.special import _ufuncs

    alpha = 1.0 - confidence
    j = np.arange(n).astype(np.float64)  # 0..n-1: inside binom's support, as binom.cdf/sf evaluate it
    cdf = np.clip(np.asarray(_ufuncs._binom_cdf(j, n, q), dtype=np.float64), 0, 1)  # P(B <= j): lower tail of rank j+1
    sf = np.clip(np.asarray(_ufuncs._binom_sf(j, n, q), dtype=np.float64), 0, 1)  # P(B > j): upper tail of rank j+1
    min_lower = float(cdf[0])  # l = 1
    min_upper = float(sf[n - 1])  # u = n
    if min_lower + min_upper > alpha:
        return None
    if min_upper > alpha / 2:
        lower_budget, upper_budget = alpha - min_upper, min_upper
    elif min_lower > alpha / 2:
        lower_budget, upper_budget = min_lower, alpha - min_lower
    else:
        lower_budget = upper_budget = alpha / 2
    # Largest l with P(B <= l-1) <= budget (cdf is non-decreasing).
    low = int(np.searchsorted(cdf, lower_budget, side="right"))
    # Smallest u with P(B >= u) <= budget (sf is non-increasing, so search its negation).
    up = int(np.searchsorted(-sf, -upper_budget, side="left")) + 1
    low, up = max(low, 1), min(up, n)
    if low >= up:
        return None
    return (low, up)


def min_cases_for_quantile_ci(q: float, confidence: float, limit: int = 1_000_000) -> int | None:
    """Smallest n for which :func:`order_statistic_ranks` gives an interval (None if > limit).

    The widest possible interval [X_(1), X_(n)] has coverage 1 - q^n - (1-q)^n, which
    increases with n, so the answer is the first n where that reaches ``confidence``
    (45 for p95 at 90 %).
    """
    _check_confidence(confidence)
    _check_q(q)
    if q <= 0.0 or q >= 1.0:
        return None
    for n in range(2, limit + 1):
        if 1.0 - q**n - (1.0 - q) ** n >= confidence and order_statistic_ranks(n, q, confidence):
            return n
    return None


def quantile_ci(values: Sequence[float], q: float, confidence: float) -> QuantileEstimate:
    """Sample q-quantile (numpy's default linear method) with an order-statistic interval.

    The interval [X_(l), X_(u)] is distribution-free (see :func:`order_statistic_ranks`):
    it needs only continuity and independence. When the sample is too small for such ranks
    to exist, ``enough`` is False and the bounds are None; with no values ``value`` is None.
    """
    _check_confidence(confidence)
    _check_q(q)
    x = np.sort(_finite_array("values", values))
    n = int(x.size)
    if n == 0:
        return QuantileEstimate(q, None, None, None, 0, False, confidence)
    value = float(np.quantile(x, q))
    ranks = order_statistic_ranks(n, q, confidence)
    if ranks is None:
        return QuantileEstimate(q, value, None, None, n, False, confidence)
    low, up = ranks
    return QuantileEstimate(q, value, float(x[low - 1]), float(x[up - 1]), n, True, confidence)


# --------------------------------------------------------------------------------------------
# decisions and multiplicity
# --------------------------------------------------------------------------------------------


def decide(
    ci_low: float | None, ci_high: float | None, margin: float, higher_is_better: bool
) -> Decision:
    """Non-inferiority decision from a two-sided interval and a margin.

    The interval should be two-sided at confidence 1 - 2*alpha, so each check below is a
    one-sided test at level alpha.

    * ``higher_is_better`` (e.g. pass-rate delta, margin -0.02): "pass" when
      ``ci_low > margin`` (the candidate is demonstrably no worse than the margin), "fail"
      when ``ci_high < margin`` (demonstrably worse), otherwise "inconclusive".
    * lower is better (e.g. latency ratio with margin 1.15, over-refusal delta with margin
      +0.02): "pass" when ``ci_high < margin``, "fail" when ``ci_low > margin``, otherwise
      "inconclusive".

    A missing bound (None, NaN) means the interval is not available: "inconclusive".
    Touching the margin exactly is "inconclusive".
    """
    if ci_low is None or ci_high is None or math.isnan(ci_low) or math.isnan(ci_high):
        return "inconclusive"
    if higher_is_better:
        if ci_low > margin:
            return "pass"
        if ci_high < margin:
            return "fail"
        return "inconclusive"
    if ci_high < margin:
        return "pass"
    if ci_low > margin:
        return "fail"
    return "inconclusive"


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values), returned in the input order.

    With p_(1) <= ... <= p_(m) sorted, q_(i) = min_{j >= i} m * p_(j) / j, capped at 1
    (Benjamini & Hochberg 1995). The running minimum makes q monotone in p, so ties get equal
    q-values and the order of the p-values is preserved.
    """
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    if p.size == 0:
        return []
    if np.any(np.isnan(p)) or np.any((p < 0.0) | (p > 1.0)):
        raise ValueError("p-values must be in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    q_sorted = np.minimum.accumulate(ranked[::-1])[::-1]
    # q >= p holds mathematically (m/j >= 1); enforce it against 1-ulp rounding.
    q_sorted = np.clip(np.maximum(q_sorted, p[order]), 0.0, 1.0)
    q = np.empty(m, dtype=np.float64)
    q[order] = q_sorted
    return [float(v) for v in q]


# --------------------------------------------------------------------------------------------
# per-case summaries of K samples
# --------------------------------------------------------------------------------------------


def flaky(outcomes: Sequence[bool]) -> bool:
    """True when the K samples of one case disagree (not all equal); False for 0 or 1 sample."""
    return len({bool(o) for o in outcomes}) > 1


def pass_at_k(outcomes: Sequence[bool]) -> bool:
    """pass@k for one case: True when any of the K samples passed.

    Raises ValueError for an empty sequence (a case with no samples has no outcome).
    """
    if len(outcomes) == 0:
        raise ValueError("pass_at_k needs at least one outcome")
    return any(bool(o) for o in outcomes)


def pass_hat_k(outcomes: Sequence[bool]) -> bool:
    """pass^k for one case: True when all K samples passed (consistency).

    Raises ValueError for an empty sequence rather than returning the vacuous True.
    """
    if len(outcomes) == 0:
        raise ValueError("pass_hat_k needs at least one outcome")
    return all(bool(o) for o in outcomes)
