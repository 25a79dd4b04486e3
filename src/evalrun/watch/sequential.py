"""Anytime-valid confidence sequences: the statistics `evalrun watch` decides with.

A confidence sequence (CS) is a sequence of intervals that covers the true value at *every*
look at once with probability at least 1 - alpha, so a rollout can be checked every minute
for a week without inflating the false-alarm rate (a fixed-sample test repeated at every
look, as Kayenta does, is not). Three constructions, each chosen for the data it fits:

* ``normal_mixture`` — the normal-mixture boundary (an inverted mixture SPRT; the
  asymptotic CS of Waudby-Smith et al.) on a linear contrast of means, for continuous
  metrics (tokens, cost, latency) and for differences of rates;
* ``beta_binomial_cs`` — the conjugate beta-binomial mixture, exact at every sample size,
  for one rate against an absolute limit (parse failures above 2 %) and for the
  sample-ratio check;
* ``rate_ratio_cs`` — a count-based test for rare events (errors, tool failures, parse
  failures at low rates): given the events seen in a time bucket, which arm each came
  from is binomial in the rate ratio (Poisson approximation), and a mixture over the
  ratio gives an exact-in-law martingale (Lindon & Malek's canary test in spirit).

All functions are pure (numpy/scipy in, floats out) and the mixtures are tuned to be
tightest at ``n_opt`` (the stage's minimum sample): the Lambert-W rule below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import brentq
from scipy.special import betaln, lambertw, logsumexp

INF = math.inf


@dataclass(frozen=True, slots=True)
class Bounds:
    """One look of a confidence sequence: the estimate and the interval around it."""

    estimate: float
    low: float
    high: float

    def intersect(self, other: Bounds) -> Bounds:
        """The running intersection (still a valid CS); keeps ``other``'s estimate."""
        return Bounds(other.estimate, max(self.low, other.low), min(self.high, other.high))


EVERYTHING = Bounds(math.nan, -INF, INF)
"""The CS before any data: every value is still possible."""


@lru_cache(maxsize=256)
def optimal_mixture_ratio(alpha: float) -> float:
    """τ²/V that minimises the normal-mixture width at the tuning time.

    Minimising ``(1 + 1/x)(2 ln(1/α) + ln(1 + x))`` over x gives
    ``x = -W₋₁(-α²/e) - 1`` (W₋₁: the lower branch of Lambert's W).
    """
    w = lambertw(-(alpha**2) / math.e, k=-1).real
    return float(-w - 1.0)


def normal_mixture_radius(variance: float, alpha: float, n: float, n_opt: float) -> float:
    """Half-width of the two-sided normal-mixture CS at one look.

    ``variance`` is the variance of the estimate at this look (e.g. s²/n), ``n`` the units
    seen so far, ``n_opt`` the sample size the mixture is tuned for. With the prior variance
    τ² fixed in units of the estimate's variance at ``n_opt``, ``r = τ²/V = x·n/n_opt`` and

        radius² = V · (1 + 1/r) · (2 ln(1/α) + ln(1 + r)),

    the mixture-SPRT boundary (Ville's inequality makes it valid at every look at once).
    """
    if n <= 0 or not math.isfinite(variance):
        return INF
    r = optimal_mixture_ratio(alpha) * n / max(n_opt, 1.0)
    return math.sqrt(max(variance, 0.0) * (1.0 + 1.0 / r) * (2.0 * math.log(1.0 / alpha) + math.log1p(r)))


def _mixture_factor(alpha: float, n: float, n_opt: float) -> float:
    """radius²/V for ``normal_mixture_radius`` (independent of V in this tuning)."""
    r = optimal_mixture_ratio(alpha) * n / max(n_opt, 1.0)
    return (1.0 + 1.0 / r) * (2.0 * math.log(1.0 / alpha) + math.log1p(r))


@dataclass(frozen=True, slots=True)
class Moments:
    """Sufficient statistics of one arm: count of values, Σx and Σx²."""

    n: float
    total: float
    squares: float

    @property
    def mean(self) -> float:
        """The sample mean (NaN without data)."""
        return self.total / self.n if self.n > 0 else math.nan

    def variance(self, *, binary: bool) -> float:
        """Per-unit variance; for 0/1 data shrunk towards ½ by one pseudo-success and one
        pseudo-failure, so a run of zeros never claims zero variance."""
        if self.n <= 0:
            return math.nan
        if binary:
            p = (self.total + 1.0) / (self.n + 2.0)
            return p * (1.0 - p)
        if self.n < 2:
            return math.inf
        mean = self.total / self.n
        return max(self.squares - self.n * mean * mean, 0.0) / (self.n - 1.0)


def mean_cs(arm: Moments, *, alpha: float, n_opt: float, binary: bool) -> Bounds:
    """Normal-mixture CS for one arm's mean."""
    if arm.n <= 0:
        return EVERYTHING
    radius = normal_mixture_radius(arm.variance(binary=binary) / arm.n, alpha, arm.n, n_opt)
    return Bounds(arm.mean, arm.mean - radius, arm.mean + radius)


def difference_cs(cand: Moments, base: Moments, *, alpha: float, n_opt: float, binary: bool) -> Bounds:
    """Normal-mixture CS for ``mean_cand - mean_base``."""
    if cand.n <= 0 or base.n <= 0:
        return EVERYTHING
    variance = cand.variance(binary=binary) / cand.n + base.variance(binary=binary) / base.n
    est = cand.mean - base.mean
    radius = normal_mixture_radius(variance, alpha, cand.n, n_opt)
    return Bounds(est, est - radius, est + radius)


def ratio_cs(cand: Moments, base: Moments, *, alpha: float, n_opt: float) -> Bounds:
    """Normal-mixture CS for ``mean_cand / mean_base`` (non-negative metrics).

    The set of k with ``|mean_c - k·mean_b| <= radius(V(k))``, ``V(k) = s²_c/n_c +
    k²·s²_b/n_b``: the linear contrast needs no delta method (Fieller's construction with a
    mixture boundary). Testing "up more than 10 %" is testing ``k = 1.1`` against this set.
    """
    if cand.n <= 0 or base.n <= 0:
        return EVERYTHING
    vc = cand.variance(binary=False) / cand.n
    vb = base.variance(binary=False) / base.n
    if not (math.isfinite(vc) and math.isfinite(vb)):
        return Bounds(_safe_ratio(cand.mean, base.mean), 0.0, INF)
    c = _mixture_factor(alpha, cand.n, n_opt)
    mc, mb = cand.mean, base.mean
    # (mc - k mb)² <= c (vc + k² vb)  <=>  a k² - 2 b k + d <= 0
    a = mb * mb - c * vb
    b = mc * mb
    d = mc * mc - c * vc
    est = _safe_ratio(mc, mb)
    if a <= 0:
        # The baseline mean is not yet distinguishable from zero: no finite upper bound.
        if a == 0:
            return Bounds(est, max(d / (2 * b), 0.0) if b > 0 else 0.0, INF)
        disc = b * b - a * d
        low = max((b + math.sqrt(disc)) / a, 0.0) if disc >= 0 else 0.0
        return Bounds(est, min(low, est) if math.isfinite(est) else 0.0, INF)
    disc = b * b - a * d
    if disc < 0:
        return Bounds(est, 0.0, INF)
    root = math.sqrt(disc)
    return Bounds(est, max((b - root) / a, 0.0), (b + root) / a)


def _safe_ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


# ---------------------------------------------------------------- exact binary sequences


def beta_prior(p0: float, n_opt: float, alpha: float) -> tuple[float, float]:
    """Beta(a, b) centred on ``p0`` with the spread the normal mixture would use at ``n_opt``.

    The normal rule puts the prior sd at ``sqrt(x · p0(1-p0) / n_opt)``; a Beta with mean
    p0 has sd ``sqrt(p0(1-p0)/(m+1))``, so m + 1 = n_opt / x. Floors keep a, b ≥ 0.5.
    """
    p0 = min(max(p0, 1e-4), 1 - 1e-4)
    m = max(n_opt / optimal_mixture_ratio(alpha) - 1.0, 2.0)
    return max(m * p0, 0.5), max(m * (1 - p0), 0.5)


def _log_mixture_ratio(p: float, k: float, n: float, a: float, b: float) -> float:
    """log of the beta-binomial mixture likelihood ratio against the point p."""
    return float(
        betaln(a + k, b + n - k) - betaln(a, b) - k * math.log(p) - (n - k) * math.log1p(-p)
    )


def beta_binomial_acceptance(p: float, n: int, *, alpha: float, a: float, b: float) -> tuple[int, int] | None:
    """The event counts ``k`` in ``n`` trials the Beta(a, b)-mixture test of rate ``p`` accepts
    (``M_n(p) < 1/α``): an interval ``(k_lo, k_hi)``, as ``M_n`` is log-convex in k; None if empty.

    Under rate p the count stays inside it at every n at once with probability 1 − α.
    """
    k = np.arange(n + 1, dtype=float)
    log_m = betaln(a + k, b + n - k) - betaln(a, b) - k * math.log(p) - (n - k) * math.log1p(-p)
    inside = np.flatnonzero(log_m < math.log(1.0 / alpha))
    if inside.size == 0:
        return None
    return int(inside[0]), int(inside[-1])


def beta_binomial_cs(k: float, n: float, *, alpha: float, a: float, b: float) -> Bounds:
    """Exact anytime-valid CS for a Bernoulli rate after ``k`` events in ``n`` trials.

    ``{p : M_n(p) < 1/α}`` where ``M_n(p)`` is the Beta(a, b)-mixture likelihood ratio
    against p: a nonnegative martingale under p, so Ville's inequality covers the true
    rate at every n at once. The set is an interval around k/n (its log is convex in p).
    """
    if n <= 0:
        return Bounds(math.nan, 0.0, 1.0)
    threshold = math.log(1.0 / alpha)
    p_hat = k / n
    eps = 1e-12

    def f(p: float) -> float:
        return _log_mixture_ratio(p, k, n, a, b) - threshold

    mid = min(max(p_hat, 2 * eps), 1 - 2 * eps)
    low = 0.0
    if k > 0 and f(eps) > 0 and f(mid) < 0:
        low = float(brentq(f, eps, mid, xtol=1e-10))
    high = 1.0
    if k < n and f(1 - eps) > 0 and f(mid) < 0:
        high = float(brentq(f, mid, 1 - eps, xtol=1e-10))
    return Bounds(p_hat, low, high)


# ------------------------------------------------------------- count-based, rare events

LOG_RATIO_GRID: NDArray[np.float64] = np.linspace(-6.0, 6.0, 1201)
"""log rate ratios the rare-event mixture integrates over (ratios e^-6 … e^6)."""


def _log_prior(sd: float) -> NDArray[np.float64]:
    w = -0.5 * (LOG_RATIO_GRID / sd) ** 2
    return np.asarray(w - logsumexp(w), dtype=float)


def rate_ratio_cs(
    cand_events: NDArray[np.float64],
    base_events: NDArray[np.float64],
    cand_exposure: NDArray[np.float64],
    base_exposure: NDArray[np.float64],
    *,
    alpha: float,
    prior_sd: float = 1.0,
) -> list[Bounds]:
    """Count-based CS for the ratio of event rates (candidate / baseline), one per look.

    The inputs are per time bucket, in time order. Given the ``N = e_c + e_b`` events of a
    bucket, the number from the candidate is Binomial(N, π(θ)) with
    ``π(θ) = x_c·θ / (x_c·θ + x_b)`` (x: exposures, θ: the rate ratio) — under the Poisson
    approximation that suits rare events, and whatever the traffic volume does. The product
    of those likelihoods, mixed over log θ ~ N(0, prior_sd²), divided by its value at θ, is
    a martingale under θ; the CS at each look is ``{θ : M(θ) < 1/α}``.
    """
    ec = np.asarray(cand_events, dtype=float)
    eb = np.asarray(base_events, dtype=float)
    xc = np.asarray(cand_exposure, dtype=float)
    xb = np.asarray(base_exposure, dtype=float)
    theta = np.exp(LOG_RATIO_GRID)[:, None]
    share = xc[None, :] * theta
    denom = share + xb[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_pi = np.where(share > 0, np.log(share) - np.log(denom), -np.inf)
        log_1m = np.where(xb[None, :] > 0, np.log(xb[None, :]) - np.log(denom), -np.inf)
        ll = np.nan_to_num(ec[None, :] * log_pi, nan=0.0) + np.nan_to_num(eb[None, :] * log_1m, nan=0.0)
    # Buckets where an arm had events but no exposure contribute nothing (no information).
    cum = np.cumsum(ll, axis=1)  # (grid, looks)
    log_prior = _log_prior(prior_sd)[:, None]
    log_mix = logsumexp(cum + log_prior, axis=0)  # (looks,)
    threshold = math.log(1.0 / alpha)
    out: list[Bounds] = []
    cum_ec, cum_eb = np.cumsum(ec), np.cumsum(eb)
    cum_xc, cum_xb = np.cumsum(xc), np.cumsum(xb)
    for j in range(cum.shape[1]):
        inside = (log_mix[j] - cum[:, j]) < threshold
        est = (
            (cum_ec[j] / cum_xc[j]) / (cum_eb[j] / cum_xb[j])
            if cum_xc[j] > 0 and cum_xb[j] > 0 and cum_eb[j] > 0
            else math.nan
        )
        if not inside.any():
            out.append(Bounds(est, math.nan, math.nan))
            continue
        idx = np.flatnonzero(inside)
        lo_i, hi_i = int(idx[0]), int(idx[-1])
        low = 0.0 if lo_i == 0 else math.exp(float(LOG_RATIO_GRID[lo_i - 1]))
        high = INF if hi_i == len(LOG_RATIO_GRID) - 1 else math.exp(float(LOG_RATIO_GRID[hi_i + 1]))
        out.append(Bounds(est, low, high))
    return out
