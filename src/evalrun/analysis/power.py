"""Power under the intervals the gate actually uses: MDEs, cases needed, "can it PASS at all".

Every number here answers a question about a *future* run of the same suite with the same
interval construction (:mod:`evalrun.analysis.inference`), at 80 % power unless told otherwise:

* the smallest regression a FAIL test detects (at the family-wise level it is tested at);
* how many paired cases would let an undecided rule resolve (PASS or FAIL);
* the fewest cases with which an equally good candidate could PASS at all (the best case:
  no case changes outcome), and before any call, the smallest drop a suite could detect at
  best (only the regressing cases change).

Rates extrapolate through the pseudo-count interval itself (its width does not shrink like
1/sqrt(n) when few cases disagree); ratios on the log scale with se ∝ 1/sqrt(n).
"""

from __future__ import annotations

import math

from evalrun.analysis.inference import augmented_moments

__all__ = [
    "POWER",
    "bound_cases_to_pass",
    "cases_to_pass",
    "fail_mde",
    "rate_cases_needed",
    "rate_drop_detectable",
    "scaled_cases_needed",
    "z_one_sided",
]

POWER = 0.8
"""The power every MDE and "cases needed" is computed for."""

MAX_CASES = 10_000_000


def z_one_sided(level: float) -> float:
    """z_{1−level}: the critical value of a one-sided test at ``level``."""
    from scipy.special import ndtri

    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return float(ndtri(1.0 - level))


def _z_power(power: float) -> float:
    from scipy.special import ndtri

    return float(ndtri(power))


def fail_mde(se: float, threshold: float, level: float, *, power: float = POWER) -> float:
    """Smallest true change (from no change, in the bad direction) a FAIL test detects.

    The test FAILs when the estimate lies beyond ``threshold`` by z_level·se (``threshold``
    is the distance from "no change" to the FAIL threshold in the bad direction, ≥ 0: 0 for
    "any evident regression", 0.02 for a 2-point margin, log 1.1 for a ×1.10 ratio margin).
    With the estimate ~ N(true, se²) it FAILs with probability ``power`` when the true change
    is threshold + (z_level + z_power)·se.
    """
    return threshold + (z_one_sided(level) + _z_power(power)) * se


def scaled_cases_needed(n: int, se: float, distance: float, level: float, *, power: float = POWER) -> int | None:
    """Cases for a test at ``level`` to resolve with ``power`` when se scales as 1/sqrt(n).

    ``distance`` is the true gap between the estimate and the threshold the test is against
    (> 0); the answer is n·((z_level + z_power)·se / distance)², rounded up. None when more
    cases cannot help (distance ≤ 0) or there is nothing to scale from.
    """
    if n <= 0 or not distance > 0.0 or not math.isfinite(se) or se < 0.0:
        return None
    needed = n * ((z_one_sided(level) + _z_power(power)) * se / distance) ** 2
    if not math.isfinite(needed) or needed > MAX_CASES:
        return None
    return max(1, math.ceil(round(needed, 9)))


def rate_cases_needed(
    n: int, sum_d: float, sum_d2: float, threshold: float, level: float, *, beyond: bool, higher_is_better: bool,
    power: float = POWER,
) -> int | None:
    """Cases for a paired-rate test at ``level`` to reach ``power`` with this suite's data.

    Assumes the per-case mean and mean square of the differences stay as observed
    (Σd/n, Σd²/n) and recomputes the pseudo-count interval at each candidate size, so the
    answer is right when few cases disagree (where 1/sqrt(n) scaling is far off).
    ``beyond=True`` asks for a FAIL (estimate beyond ``threshold``), ``False`` for a PASS
    (estimate on the safe side). None when the estimate is on the wrong side of the
    threshold (more cases cannot help) or more than ten million cases would be needed.
    """
    if n <= 0:
        return None
    z = z_one_sided(level) + _z_power(power)
    m1, m2 = sum_d / n, sum_d2 / n
    sign = 1.0 if higher_is_better else -1.0

    def resolves(size: int) -> bool:
        centre, se = augmented_moments(size, m1 * size, m2 * size)
        gap = sign * (centre - threshold)  # > 0: on the safe side of the threshold
        return (-gap if beyond else gap) >= z * se

    limit = MAX_CASES
    if not resolves(limit):
        return None
    lo, hi = 0, 1
    while not resolves(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if resolves(mid) else (mid, hi)
    return hi


def cases_to_pass(margin_distance: float, confidence_z: float) -> int | None:
    """Fewest paired cases with which an equally good candidate can PASS a rate margin at all.

    The best case is that no case changes outcome: the pseudo-count interval is then
    0 ± z/(n + 2), and PASS needs its end strictly inside the margin, |margin| > z/(n + 2).
    (With 12 cases a 1-point margin can never PASS; it takes 163.) None for a margin of 0,
    which an equal candidate can never clear.
    """
    if not margin_distance > 0.0:
        return None
    return max(1, math.floor(confidence_z / margin_distance - 2.0) + 1)


def bound_cases_to_pass(bound: float, confidence_z: float, *, floor: bool) -> int | None:
    """Fewest cases that can show a rate is above a floor (or below a ceiling) at all.

    Best case: every case passes (floor) or none is flagged (ceiling); the Wilson interval's
    inner end is then n/(n + z²) (or z²/(n + z²)), which must clear the bound.
    """
    z2 = confidence_z * confidence_z
    target = bound if floor else 1.0 - bound
    if target >= 1.0:
        return None
    if target <= 0.0:
        return 1
    return max(1, math.floor(z2 * target / (1.0 - target)) + 1)


def rate_drop_detectable(n: int, threshold: float, level: float, *, power: float = POWER) -> float | None:
    """Before any call: the smallest change a paired-rate FAIL test on n cases can detect.

    The best case for detection is that only the regressing cases change (a drop of Δ moves
    Δ·n cases one way and none the other). ``threshold`` ≥ 0 is the FAIL threshold's distance
    from no change. Returns the smallest Δ in (0, 1] detected with ``power``, or None when
    even Δ = 1 is not (too few cases for this level).
    """
    if n <= 0:
        return None
    z = z_one_sided(level) + _z_power(power)

    def detected(delta: float) -> bool:
        centre, se = augmented_moments(n, -delta * n, delta * n)
        return (-threshold - centre) >= z * se

    if not detected(1.0):
        return None
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if detected(mid) else (mid, hi)
    return hi
