"""Proportion intervals the judge statistics share: Wilson, Agresti–Coull moments, Newcombe.

Self-contained (numpy/scipy only) so the judging package does not depend on where the
run's own statistics modules live. Successes may be fractional: with K judge samples per
item an item contributes its share of passing samples, and treating the n items as n
Bernoulli trials is conservative (a share's variance is at most p(1 − p)).
"""

from __future__ import annotations

import math


def check_confidence(confidence: float) -> None:
    """Raise ``ValueError`` unless 0 < confidence < 1."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def z_two_sided(confidence: float) -> float:
    """Standard-normal quantile of a two-sided interval: Φ⁻¹(1/2 + confidence/2)."""
    check_confidence(confidence)
    from scipy.special import ndtri

    return float(ndtri(0.5 + 0.5 * confidence))


def norm_cdf(x: float) -> float:
    """Standard-normal distribution function Φ(x)."""
    from scipy.special import ndtr

    return float(ndtr(x))


def wilson(successes: float, n: float, confidence: float) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``n`` (n > 0; successes may be fractional).

    Newcombe's closed form; the ends are exactly 0 / 1 when successes is 0 / n.
    """
    if n <= 0 or not 0.0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes}, {n}")
    z = z_two_sided(confidence)
    p = successes / n
    denom = 2.0 * (n + z * z)
    centre = (2.0 * n * p + z * z) / denom
    half = z / denom * math.sqrt(max(0.0, 4.0 * n * p * (1.0 - p) + z * z))
    low = 0.0 if successes <= 0.0 else max(0.0, centre - half)
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return low, high


def adjusted(successes: float, n: float, pseudo: float) -> tuple[float, float]:
    """Agresti–Coull style (estimate, variance of the estimate) after adding pseudo-trials.

    ``pseudo`` trials are added, half of them successes: p̃ = (x + pseudo/2)/(n + pseudo),
    var = p̃(1 − p̃)/(n + pseudo). With pseudo = z² this is Agresti–Coull; with 2 it is
    "add one success and one failure". The variance is never 0, so a perfect calibration
    sample of 20 items is not treated as certainty.
    """
    big_n = n + pseudo
    p = (successes + pseudo / 2.0) / big_n
    return p, p * (1.0 - p) / big_n


def newcombe_difference(
    successes1: float, n1: float, successes2: float, n2: float, confidence: float
) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10) for p1 − p2 of independent samples.

    L = d − sqrt((p1 − l1)² + (u2 − p2)²), U = d + sqrt((u1 − p1)² + (p2 − l2)²), with
    (l, u) the Wilson intervals of each proportion. Good coverage at small n.
    """
    p1, p2 = successes1 / n1, successes2 / n2
    l1, u1 = wilson(successes1, n1, confidence)
    l2, u2 = wilson(successes2, n2, confidence)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return max(-1.0, low), min(1.0, high)
