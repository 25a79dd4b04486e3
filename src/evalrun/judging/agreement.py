"""How well a judge agrees with human labels: accuracy, Cohen's κ, sensitivity, specificity.

The human label is the reference. For rubric judges "positive" means *pass*:
sensitivity Se = P(judge passes | human passed), specificity Sp = P(judge fails | human
failed), and Youden's J = Se + Sp − 1 is the judge's informedness (0: guessing, 1:
perfect) — the quantity the Rogan–Gladen correction divides by, so the one a gate should
require a minimum of. κ is shown because teams know it, but it depends on the share of
passing items in the calibration set; J does not.

Intervals (all two-sided at ``confidence``; 0.90 is the gate's 1 − 2α):

* accuracy, Se, Sp — Wilson score intervals;
* J — Newcombe's hybrid score interval for a difference of independent proportions
  (Se − (1 − Sp));
* κ — the equal-tailed interval of κ under the Jeffreys posterior of the table's cell
  probabilities (Dirichlet with ½ added to every cell), from 4,000 seeded draws. The plain
  Wald interval with the Fleiss–Cohen–Everitt variance (:func:`kappa_variance`, the one
  statsmodels reports) covers only 0.74–0.90 at n = 40 for a nominal 0.90 and collapses
  to [1, 1] on a perfect table; this one covered 0.875–0.914 over the configurations in
  ``benchmarks/judge_coverage.py``, so it is approximate at small n — which is one reason
  the gate's minimum is on J, not κ.

A judge sampled K times per item gives per-item *shares* of passing samples; the tables
are then fractional and every interval treats the n items as n trials (conservative).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from evalrun.judging._proportion import check_confidence, newcombe_difference, wilson
from evalrun.judging.correction import ErrorRates

__all__ = [
    "BinaryAgreement",
    "CategoricalAgreement",
    "Estimate",
    "binary_agreement",
    "categorical_agreement",
    "cohen_kappa",
    "kappa_variance",
]


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True)
class Estimate:
    """A value with its interval (all None when there is nothing to estimate) and its denominator."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        return {k: (_finite(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}


_NONE = Estimate(None, None, None, 0)


def _wilson_estimate(successes: float, n: float, confidence: float) -> Estimate:
    if n <= 0:
        return _NONE
    low, high = wilson(successes, n, confidence)
    return Estimate(successes / n, low, high, n)


KAPPA_DRAWS = 4000
"""Posterior draws behind a κ interval (seeded: the same table always gives the same interval)."""


def cohen_kappa(table: Sequence[Sequence[float]], *, confidence: float = 0.90, seed: int = 0) -> Estimate:
    """Cohen's κ of a k×k agreement table (rows: human, columns: judge) with its interval.

    κ = (p_o − p_e)/(1 − p_e). None when p_e = 1 (both raters used one category only: κ is
    undefined). The interval is described in the module docstring; it always contains the
    estimate and lies in [−1, 1].
    """
    check_confidence(confidence)
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] != t.shape[1] or t.shape[0] < 2:
        raise ValueError("the table must be square, at least 2×2")
    if np.any(t < 0) or not np.all(np.isfinite(t)):
        raise ValueError("table cells must be finite and non-negative")
    n = float(t.sum())
    if n <= 0:
        return _NONE
    kappa, _ = kappa_variance(t)
    if kappa is None:
        return Estimate(None, None, None, n)
    k = t.shape[0]
    rng = np.random.default_rng(seed)
    draws = rng.dirichlet(t.ravel() + 0.5, size=KAPPA_DRAWS).reshape(-1, k, k)
    rows, cols = draws.sum(axis=2), draws.sum(axis=1)
    p_o = np.trace(draws, axis1=1, axis2=2)
    p_e = np.sum(rows * cols, axis=1)
    kappas = (p_o - p_e) / (1.0 - p_e)
    tail = (1.0 - confidence) / 2.0
    low, high = (float(x) for x in np.quantile(kappas, [tail, 1.0 - tail]))
    return Estimate(kappa, max(-1.0, min(low, kappa)), min(1.0, max(high, kappa)), n)


def kappa_variance(t: np.ndarray[Any, np.dtype[np.float64]]) -> tuple[float | None, float | None]:
    """κ and its Fleiss–Cohen–Everitt (1969) large-sample variance (the one statsmodels uses).

    (None, None) when κ is undefined (p_e = 1).
    """
    n = float(t.sum())
    p = t / n
    rows, cols = p.sum(axis=1), p.sum(axis=0)
    p_o = float(np.trace(p))
    p_e = float(np.sum(rows * cols))
    if p_e >= 1.0 - 1e-12:
        return None, None
    kappa = (p_o - p_e) / (1.0 - p_e)
    a = float(np.sum(np.diag(p) * (1.0 - (rows + cols) * (1.0 - kappa)) ** 2))
    off = p * (cols[:, None] + rows[None, :]) ** 2
    np.fill_diagonal(off, 0.0)
    b = (1.0 - kappa) ** 2 * float(off.sum())
    c = (kappa - p_e * (1.0 - kappa)) ** 2
    return kappa, max(0.0, a + b - c) / ((1.0 - p_e) ** 2 * n)


@dataclass(frozen=True)
class BinaryAgreement:
    """A pass/fail judge against human pass/fail labels.

    ``table`` holds (judge pass & human pass, judge fail & human pass, judge pass & human
    fail, judge fail & human fail): ``true_pass``, ``false_fail``, ``false_pass``,
    ``true_fail`` (fractional with K judge samples per item).
    """

    n: int
    human_pass: int
    human_fail: int
    true_pass: float
    false_fail: float
    false_pass: float
    true_fail: float
    accuracy: Estimate
    kappa: Estimate
    sensitivity: Estimate
    specificity: Estimate
    youden: Estimate
    judge_pass_rate: float | None
    human_pass_rate: float | None
    confidence: float

    def error_rates(self) -> ErrorRates | None:
        """The counts the correction needs; None without both a human pass and a human fail."""
        if self.human_pass < 1 or self.human_fail < 1:
            return None
        return ErrorRates(self.true_pass, self.human_pass, self.true_fail, self.human_fail)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (nested estimates as dicts)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            out[key] = {k: (_finite(v) if isinstance(v, float) else v) for k, v in value.items()} \
                if isinstance(value, dict) else (_finite(value) if isinstance(value, float) else value)
        return out


def binary_agreement(
    human: Sequence[bool], judge: Sequence[float], *, confidence: float = 0.90
) -> BinaryAgreement:
    """Agreement of a pass/fail judge with human labels, item by item.

    Args:
        human: per item, True when the human passed it.
        judge: per item (same order), the judge's verdict (True/1 = pass) or the share of
            K judge samples that passed. Items where every judge call failed must be left
            out by the caller (and counted as judge errors).
        confidence: two-sided confidence of every interval.
    """
    check_confidence(confidence)
    if len(human) != len(judge):
        raise ValueError(f"human and judge must be paired by item, got {len(human)} and {len(judge)}")
    h = np.asarray(human, dtype=bool).reshape(-1)
    j = np.asarray(judge, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(j)) or np.any((j < 0.0) | (j > 1.0)):
        raise ValueError("judge verdicts must be 0/1 or shares in [0, 1]")
    n = int(h.size)
    n_pos, n_neg = int(np.count_nonzero(h)), int(np.count_nonzero(~h))
    tp = float(np.sum(j[h]))
    fp = float(np.sum(j[~h]))
    fn, tn = n_pos - tp, n_neg - fp
    if n_pos > 0 and n_neg > 0:
        low, high = newcombe_difference(tp, n_pos, fp, n_neg, confidence)
        youden = Estimate(tp / n_pos - fp / n_neg, low, high, n)
    else:
        youden = _NONE
    return BinaryAgreement(
        n=n,
        human_pass=n_pos,
        human_fail=n_neg,
        true_pass=tp,
        false_fail=fn,
        false_pass=fp,
        true_fail=tn,
        accuracy=_wilson_estimate(tp + tn, n, confidence),
        kappa=cohen_kappa([[tp, fn], [fp, tn]], confidence=confidence) if n else _NONE,
        sensitivity=_wilson_estimate(tp, n_pos, confidence),
        specificity=_wilson_estimate(tn, n_neg, confidence),
        youden=youden,
        judge_pass_rate=(tp + fp) / n if n else None,
        human_pass_rate=n_pos / n if n else None,
        confidence=confidence,
    )


@dataclass(frozen=True)
class CategoricalAgreement:
    """A judge choosing one of several categories (pairwise: baseline / candidate / tie) against humans.

    ``table[i][k]`` counts items the human put in ``categories[i]`` and the judge in
    ``categories[k]``.
    """

    n: int
    categories: tuple[str, ...]
    table: tuple[tuple[float, ...], ...]
    accuracy: Estimate
    kappa: Estimate
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        return {
            "n": self.n,
            "categories": list(self.categories),
            "table": [list(row) for row in self.table],
            "accuracy": self.accuracy.to_dict(),
            "kappa": self.kappa.to_dict(),
            "confidence": self.confidence,
        }


def categorical_agreement(
    human: Sequence[str],
    judge: Sequence[str],
    *,
    categories: Sequence[str] = ("baseline", "candidate", "tie"),
    confidence: float = 0.90,
) -> CategoricalAgreement:
    """Accuracy (Wilson) and Cohen's κ of a categorical judge against human labels."""
    check_confidence(confidence)
    if len(human) != len(judge):
        raise ValueError(f"human and judge must be paired by item, got {len(human)} and {len(judge)}")
    cats = tuple(categories)
    index = {c: i for i, c in enumerate(cats)}
    unknown = sorted({str(x) for x in [*human, *judge] if x not in index})
    if unknown:
        raise ValueError(f"labels {unknown} are not among the categories {list(cats)}")
    table = np.zeros((len(cats), len(cats)))
    for h, j in zip(human, judge, strict=True):
        table[index[h], index[j]] += 1.0
    n = len(human)
    agree = float(np.trace(table))
    return CategoricalAgreement(
        n=n,
        categories=cats,
        table=tuple(tuple(float(x) for x in row) for row in table),
        accuracy=_wilson_estimate(agree, n, confidence),
        kappa=cohen_kappa(table.tolist(), confidence=confidence) if n else _NONE,
        confidence=confidence,
    )
