"""Reference implementations the production code replaced, kept to test against.

``bootstrap_quantile_delta`` / ``bootstrap_quantile_ratio``: the textbook paired bootstrap
(one draw of case indices per replicate, percentile interval) that
``evalrun.analysis.inference.quantile_ratio_bootstrap`` (cases as clusters, counts instead
of gathers) superseded. Tests pin the statistics' properties on these and compare.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evalrun.analysis.stats import (
    FloatArray,
    _check_confidence,
    _check_q,
    _check_same_length,
    _finite_array,
    _Result,
    finite_or_none,
)

# Upper bound on the number of elements in one bootstrap chunk (replicates x cases).
_MAX_CHUNK_ELEMENTS = 2_500_000


# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapDelta(_Result):
    """Paired-bootstrap percentile interval for quantile(cand) - quantile(base)."""

    q: float
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    n_boot: int
    seed: int
    confidence: float


@dataclass(frozen=True)
class BootstrapRatio(_Result):
    """Paired-bootstrap percentile interval for quantile(cand) / quantile(base)."""

    q: float
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    n_boot: int
    seed: int
    confidence: float


def _bootstrap_quantiles(
    b: FloatArray,
    c: FloatArray,
    q: float,
    n_boot: int,
    seed: int,
    max_chunk_elements: int = _MAX_CHUNK_ELEMENTS,
) -> tuple[FloatArray, FloatArray]:
    """Replicate quantiles (base, cand) from a paired bootstrap over case indices.

    Each replicate draws one vector of n case indices and applies it to both sides, which
    keeps the pairing (and so the between-side correlation) intact. Replicates are drawn in
    chunks of at most ``max_chunk_elements`` indices to bound memory; the generator's stream
    is consumed in the same order whatever the chunk size, so the result does not depend
    on it.
    """
    n = int(b.size)
    rng = np.random.Generator(np.random.PCG64(seed))
    rows = max(1, max_chunk_elements // n)
    qb = np.empty(n_boot, dtype=np.float64)
    qc = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        qb[start:stop] = np.quantile(b[idx], q, axis=1)
        qc[start:stop] = np.quantile(c[idx], q, axis=1)
    return qb, qc


def _bootstrap_inputs(
    base: Sequence[float],
    cand: Sequence[float],
    q: float,
    confidence: float,
    n_boot: int,
) -> tuple[FloatArray, FloatArray]:
    _check_confidence(confidence)
    _check_q(q)
    _check_same_length(base, cand)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    return _finite_array("base", base), _finite_array("cand", cand)


def _percentile_bounds(
    replicates: FloatArray, confidence: float
) -> tuple[float | None, float | None]:
    """Percentile interval: the (1-c)/2 and (1+c)/2 quantiles of the replicates (NaN dropped)."""
    finite = replicates[~np.isnan(replicates)]
    if finite.size == 0:
        return None, None
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return finite_or_none(float(low)), finite_or_none(float(high))


def bootstrap_quantile_delta(
    base: Sequence[float],
    cand: Sequence[float],
    q: float,
    confidence: float,
    n_boot: int = 2000,
    seed: int = 0,
) -> BootstrapDelta:
    """Paired-bootstrap percentile interval for quantile(cand, q) - quantile(base, q).

    The point estimate uses the full sample (numpy's linear quantile). Resampling draws case
    indices with replacement, once per replicate, shared by both sides. The generator is
    ``numpy.random.Generator(PCG64(seed))``, so equal inputs and seed give equal results.
    With n < 2 there is nothing to resample and the interval is None.
    """
    b, c = _bootstrap_inputs(base, cand, q, confidence, n_boot)
    n = int(b.size)
    if n == 0:
        return BootstrapDelta(q, None, None, None, 0, n_boot, seed, confidence)
    delta = float(np.quantile(c, q)) - float(np.quantile(b, q))
    if n < 2:
        return BootstrapDelta(q, delta, None, None, n, n_boot, seed, confidence)
    qb, qc = _bootstrap_quantiles(b, c, q, n_boot, seed)
    low, high = _percentile_bounds(qc - qb, confidence)
    return BootstrapDelta(q, delta, low, high, n, n_boot, seed, confidence)


def bootstrap_quantile_ratio(
    base: Sequence[float],
    cand: Sequence[float],
    q: float,
    confidence: float,
    n_boot: int = 2000,
    seed: int = 0,
) -> BootstrapRatio:
    """Paired-bootstrap percentile interval for quantile(cand, q) / quantile(base, q).

    Same resampling as :func:`bootstrap_quantile_delta` (same seed, same indices). The
    percentile interval is taken on log(ratio) and exponentiated: percentile intervals
    respect monotone transforms, and on the log scale swapping the sides gives exactly the
    inverted interval. The ratio is None (and so is the interval) when the base quantile is
    <= 0 or the candidate quantile is < 0, where a ratio is meaningless. Replicates whose
    base quantile is 0 give an infinite ratio (an unbounded upper end becomes None); 0/0
    replicates are undefined and dropped.
    """
    b, c = _bootstrap_inputs(base, cand, q, confidence, n_boot)
    n = int(b.size)
    if n == 0:
        return BootstrapRatio(q, None, None, None, 0, n_boot, seed, confidence)
    qb_hat, qc_hat = float(np.quantile(b, q)), float(np.quantile(c, q))
    if qb_hat <= 0.0 or qc_hat < 0.0:
        return BootstrapRatio(q, None, None, None, n, n_boot, seed, confidence)
    ratio = qc_hat / qb_hat
    if n < 2:
        return BootstrapRatio(q, ratio, None, None, n, n_boot, seed, confidence)
    qb, qc = _bootstrap_quantiles(b, c, q, n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratios = np.log(qc) - np.log(qb)
        low, high = _percentile_bounds(log_ratios, confidence)
    ci_low = None if low is None else finite_or_none(math.exp(low))
    ci_high = None if high is None else finite_or_none(math.exp(high))
    return BootstrapRatio(q, ratio, ci_low, ci_high, n, n_boot, seed, confidence)


