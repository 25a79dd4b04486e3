"""Judge-graded rates corrected for the judge's measured error rates.

A judge that passes a good answer with probability Se (sensitivity) and fails a bad one
with probability Sp (specificity) reports, on outputs whose true pass rate is p, the
apparent rate q = Se·p + (1 − Sp)(1 − p). Rogan & Gladen (1978) invert it:

    p = (q + Sp − 1) / (Se + Sp − 1),

with J = Se + Sp − 1 (Youden's index) the judge's informedness: J = 1 for a perfect judge,
0 for one that guesses. Se and Sp are measured on a human-labelled calibration sample, so
every interval here carries two sources of uncertainty: the cases the judge graded and the
calibration items it was measured on (independent samples).

* :func:`corrected_rate` — one side's corrected pass rate, with the interval of Lang &
  Reiczigel (2014): an adjusted Wald interval (add z²/2 successes to the case sample, one
  success and one failure to each calibration class) with their bias shift. The textbook
  Rogan–Gladen Wald interval it replaces covers as little as 69 % for a nominal 90 %.
* :func:`corrected_difference` — the *paired* difference of the judge pass rate between
  baseline and candidate, graded by the same judge: Δ_true = Δ_obs / J. Δ_obs comes from the
  paired per-case judge pass shares (Agresti–Min pseudo-counts, cases as clusters), J from
  the calibration sample; the interval is Fieller's for the ratio, which is exactly the set
  of margins the one-sided test of :meth:`CorrectedDifference.p_value` does not reject.

Both assume the judge's errors do not depend on which variant wrote the output
(non-differential misclassification); a candidate that learns to please the judge breaks
that assumption, which no correction can see. Coverage is measured by simulation in
``tests/test_judging_correction.py`` and ``benchmarks/judge_coverage.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from evalrun.judging._proportion import adjusted, check_confidence, norm_cdf, wilson, z_two_sided

__all__ = [
    "CorrectedDifference",
    "CorrectedRate",
    "ErrorRates",
    "corrected_difference",
    "corrected_rate",
    "rogan_gladen",
]

_CALIBRATION_PSEUDO = 2.0  # add one success and one failure to Se and Sp (Lang & Reiczigel)
_METHOD = "lang_reiczigel"


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True)
class ErrorRates:
    """The judge's error rates as measured on calibration items (counts, not rates).

    ``judge_pass_on_pass`` is how many of the ``human_pass`` items the judge passed (a sum
    of per-item shares when the judge was sampled K times); ``judge_fail_on_fail`` how many
    of the ``human_fail`` items it failed. Build it with
    :meth:`evalrun.judging.agreement.BinaryAgreement.error_rates` or directly.
    """

    judge_pass_on_pass: float
    human_pass: int
    judge_fail_on_fail: float
    human_fail: int

    def __post_init__(self) -> None:
        if self.human_pass < 1 or self.human_fail < 1:
            raise ValueError(
                "error rates need at least one human-passed and one human-failed calibration item, "
                f"got {self.human_pass} and {self.human_fail}"
            )
        if not 0.0 <= self.judge_pass_on_pass <= self.human_pass:
            raise ValueError("judge_pass_on_pass must lie in [0, human_pass]")
        if not 0.0 <= self.judge_fail_on_fail <= self.human_fail:
            raise ValueError("judge_fail_on_fail must lie in [0, human_fail]")

    @property
    def sensitivity(self) -> float:
        """P(judge passes | the human passed), as measured."""
        return self.judge_pass_on_pass / self.human_pass

    @property
    def specificity(self) -> float:
        """P(judge fails | the human failed), as measured."""
        return self.judge_fail_on_fail / self.human_fail

    @property
    def youden(self) -> float:
        """J = Se + Sp − 1, as measured (0: the judge is guessing)."""
        return self.sensitivity + self.specificity - 1.0

    def adjusted(self) -> tuple[float, float, float, float]:
        """(Se~, var Se~, Sp~, var Sp~) after one pseudo-success and one pseudo-failure each."""
        se, v_se = adjusted(self.judge_pass_on_pass, self.human_pass, _CALIBRATION_PSEUDO)
        sp, v_sp = adjusted(self.judge_fail_on_fail, self.human_fail, _CALIBRATION_PSEUDO)
        return se, v_se, sp, v_sp


def rogan_gladen(apparent: float, sensitivity: float, specificity: float) -> float | None:
    """The Rogan–Gladen corrected rate (q + Sp − 1)/(Se + Sp − 1), clipped to [0, 1].

    None when Se + Sp ≤ 1: a judge no better than chance carries no information to correct.
    """
    j = sensitivity + specificity - 1.0
    if j <= 0.0:
        return None
    return min(1.0, max(0.0, (apparent + specificity - 1.0) / j))


@dataclass(frozen=True)
class CorrectedRate:
    """One side's judge pass rate, corrected for the judge's error rates.

    ``observed`` is the apparent (judge-graded) rate over ``n`` cases; ``estimate`` the
    Rogan–Gladen correction of it (None when the measured J ≤ 0); ``ci_low``/``ci_high``
    the interval at ``confidence``, clipped to [0, 1]. ``bounded`` is False when the data
    cannot bound the rate at all — the calibration's J (after pseudo-counts) is not
    significantly above 0 — and the interval is then [0, 1].
    """

    n: int
    observed: float | None
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    sensitivity: float
    specificity: float
    youden: float
    bounded: bool
    method: str
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (non-finite floats become None)."""
        return {k: (_finite(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _shares(values: Sequence[float], name: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)) or np.any((arr < 0.0) | (arr > 1.0)):
        raise ValueError(f"{name} must be per-case judge pass shares in [0, 1]")
    return arr


def corrected_rate(
    judge_pass: Sequence[float],
    rates: ErrorRates | None,
    *,
    confidence: float = 0.90,
) -> CorrectedRate:
    """Correct one side's judge pass rate for the judge's measured error rates.

    Args:
        judge_pass: per case, the judge's pass verdict (0/1) or the share of K judge samples
            that passed; the case is the unit.
        rates: the judge's calibration counts; None for an uncalibrated judge (the apparent
            rate with its Wilson interval, method ``uncorrected``).
        confidence: two-sided confidence of the interval (0.90 is the gate's 1 − 2α).

    The interval (method ``lang_reiczigel``): with q̃ = (x + z²/2)/(n + z²), S̃e and S̃p after
    one pseudo-success and one pseudo-failure, J̃ = S̃e + S̃p − 1 and p̃ = (q̃ + S̃p − 1)/J̃,
    sd = sqrt(var q̃ + p̃² var S̃e + (1 − p̃)² var S̃p)/J̃ and the shift
    d = 2z²(p̃ var S̃e − (1 − p̃) var S̃p): p̃ + d ± z·sd, clipped to [0, 1] and widened to
    contain the point estimate.
    """
    check_confidence(confidence)
    q_cases = _shares(judge_pass, "judge_pass")
    n = int(q_cases.size)
    if rates is None:
        return _uncorrected_rate(q_cases, confidence)
    se_raw, sp_raw = rates.sensitivity, rates.specificity
    if n == 0:
        return CorrectedRate(0, None, None, None, None, se_raw, sp_raw, rates.youden, False, _METHOD, confidence)
    x = float(np.sum(q_cases))
    q = x / n
    estimate = rogan_gladen(q, se_raw, sp_raw)
    z = z_two_sided(confidence)
    se_adj, v_se, sp_adj, v_sp = rates.adjusted()
    if se_adj + sp_adj - 1.0 <= z * math.sqrt(v_se + v_sp):
        # J is not significantly above 0: the judge cannot bound the true rate at all.
        return CorrectedRate(n, q, estimate, 0.0, 1.0, se_raw, sp_raw, rates.youden, False, _METHOD, confidence)
    low, high = _lang_reiczigel(x, n, rates, z)
    if estimate is not None:
        # The point estimate and an adjusted interval can disagree by a hair at the edges.
        low, high = min(low, estimate), max(high, estimate)
    return CorrectedRate(n, q, estimate, low, high, se_raw, sp_raw, rates.youden, True, _METHOD, confidence)


def _uncorrected_rate(q_cases: np.ndarray[Any, np.dtype[np.float64]], confidence: float) -> CorrectedRate:
    n = int(q_cases.size)
    if n == 0:
        return CorrectedRate(0, None, None, None, None, 1.0, 1.0, 1.0, False, "uncorrected", confidence)
    x = float(np.sum(q_cases))
    low, high = wilson(x, n, confidence)
    return CorrectedRate(n, x / n, x / n, low, high, 1.0, 1.0, 1.0, True, "uncorrected", confidence)


def _clip01(low: float, high: float) -> tuple[float, float]:
    return min(1.0, max(0.0, low)), min(1.0, max(0.0, high))


def _lang_reiczigel(x: float, n: int, rates: ErrorRates, z: float) -> tuple[float, float]:
    q, v_q = adjusted(x, n, z * z)
    se, v_se, sp, v_sp = rates.adjusted()
    j = se + sp - 1.0
    p = (q + sp - 1.0) / j
    sd = math.sqrt(v_q + p * p * v_se + (1.0 - p) ** 2 * v_sp) / j
    shift = 2.0 * z * z * (p * v_se - (1.0 - p) * v_sp)
    return _clip01(p + shift - z * sd, p + shift + z * sd)


def _fieller(
    num: float, den: float, v_num: float, v_den: float, cov: float, z: float
) -> tuple[float | None, float | None]:
    """Fieller's confidence set for num/den: {θ : (num − θ·den)² ≤ z²(v_num − 2θ·cov + θ²·v_den)}.

    A bounded interval exactly when den is significantly non-zero (den² > z²·v_den);
    otherwise (None, None): the data cannot bound the ratio.
    """
    a = den * den - z * z * v_den
    if a <= 0.0:
        return None, None
    b = -2.0 * (num * den - z * z * cov)
    c = num * num - z * z * v_num
    disc = b * b - 4.0 * a * c
    if disc < 0.0:  # cannot happen for a valid covariance; guard rounding
        disc = 0.0
    root = math.sqrt(disc)
    return (-b - root) / (2.0 * a), (-b + root) / (2.0 * a)


# --------------------------------------------------------------------------------------------
# the paired corrected difference (one judge grades both sides)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorrectedDifference:
    """Paired difference of the true pass rate, candidate − baseline, corrected for the judge.

    ``observed`` is the plain paired difference of judge pass shares over ``n`` cases;
    ``estimate`` = observed / J with the measured J (None when J ≤ 0). ``centre``/``se`` are
    the Agresti–Min centre and standard error of the observed difference and
    ``youden_adjusted``/``youden_var`` the calibration's J after pseudo-counts: together they
    define the interval and :meth:`p_value`. ``bounded`` is False when J is not significantly
    above 0 (then the interval is [−1, 1] and nothing can be shown about a margin).
    """

    n: int
    observed: float | None
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    centre: float | None
    se: float | None
    youden: float
    youden_adjusted: float
    youden_var: float
    bounded: bool
    method: str
    confidence: float

    def p_value(self, threshold: float, *, higher_is_better: bool = True) -> float | None:
        """One-sided p-value that the true change is beyond ``threshold`` (the bad side).

        H0 "not beyond": for a higher-is-better rate H0 is Δ_true ≥ threshold. Fieller's
        test of it, T = (centre − threshold·J̃)/sqrt(se² + threshold²·var J̃), p = Φ(T),
        inverts the interval: p < α exactly when the interval at confidence 1 − 2α lies
        wholly below the threshold (when ``bounded``). At threshold 0 it is the plain paired
        test of the judge pass rate (a true difference of 0 shows as 0 through any judge).
        None when there is no estimate.
        """
        if self.centre is None or self.se is None:
            return None
        if self.threshold_is_untestable(threshold):
            return 1.0
        sd = math.sqrt(self.se**2 + threshold * threshold * self.youden_var)
        gap = self.centre - threshold * self.youden_adjusted
        if not higher_is_better:
            gap = -gap
        if sd <= 0.0:
            return 0.0 if gap < 0.0 else 1.0
        return norm_cdf(gap / sd)

    def threshold_is_untestable(self, threshold: float) -> bool:
        """True when J̃ ≤ 0 and threshold ≠ 0: no margin other than 0 means anything then."""
        return self.youden_adjusted <= 0.0 and threshold != 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (non-finite floats become None)."""
        return {k: (_finite(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _agresti_min(d: np.ndarray[Any, np.dtype[np.float64]]) -> tuple[float, float]:
    """Centre and standard error of the paired difference with Agresti–Min pseudo-cases.

    Half a case at +1, half at −1 and one at 0 are added (N = n + 2): centre = Σd/N,
    se = sqrt(((Σd² + 1)/N − centre²)/N). For 0/1 outcomes this is exactly Agresti & Min
    (2005); for per-case shares it is the case-level (cluster) standard error.
    """
    big_n = d.size + 2.0
    centre = float(np.sum(d)) / big_n
    var = max(0.0, (float(np.sum(d * d)) + 1.0) / big_n - centre * centre)
    return centre, math.sqrt(var / big_n)


def corrected_difference(
    baseline: Sequence[float],
    candidate: Sequence[float],
    rates: ErrorRates | None,
    *,
    confidence: float = 0.90,
) -> CorrectedDifference:
    """The paired difference of the true pass rate, corrected for one judge grading both sides.

    Args:
        baseline: per case, the judge's pass share for the baseline output.
        candidate: per case (same order), the judge's pass share for the candidate output.
        rates: the judge's calibration counts; None for an uncalibrated judge: J is taken
            as exactly 1 and the result is the plain paired difference of judge pass rates
            (method ``uncorrected``). Its FAIL test stays valid — a judge with 0 < J ≤ 1
            only shrinks a true change, so an observed drop beyond a margin is a true drop
            beyond it — but its interval overstates what a PASS may claim.
        confidence: two-sided confidence of the interval (0.90 is the gate's 1 − 2α).

    The interval (method ``fieller``) is Fieller's for the ratio centre/J̃: every θ with
    (centre − θ·J̃)² ≤ z²(se² + θ²·var J̃), which :meth:`CorrectedDifference.p_value`
    inverts exactly.

    With the same judge on both sides, E[Δ_obs] = J·Δ_true, so Δ_true = Δ_obs / J: a noisy
    judge shrinks every real difference towards 0 and the correction widens the interval by
    1/J — which is exactly why an uncorrected judge rule passes regressions it cannot see.
    """
    check_confidence(confidence)
    b = _shares(baseline, "baseline")
    c = _shares(candidate, "candidate")
    if b.size != c.size:
        raise ValueError(f"baseline and candidate must be paired by case, got {b.size} and {c.size}")
    if rates is None:
        method_name = "uncorrected"
        youden, j_adj, v_j = 1.0, 1.0, 0.0
    else:
        method_name = "fieller"
        se_adj, v_se, sp_adj, v_sp = rates.adjusted()
        youden, j_adj, v_j = rates.youden, se_adj + sp_adj - 1.0, v_se + v_sp
    n = int(b.size)
    if n == 0:
        return CorrectedDifference(0, None, None, None, None, None, None, youden, j_adj, v_j,
                                   False, method_name, confidence)
    d = c - b
    observed = float(np.mean(d))
    estimate = None if youden <= 0.0 else min(1.0, max(-1.0, observed / youden))
    centre, se = _agresti_min(d)
    z = z_two_sided(confidence)
    low, high = _fieller(centre, j_adj, se * se, v_j, 0.0, z)
    bounded = low is not None and high is not None
    if low is None or high is None:
        low, high = -1.0, 1.0
    else:
        low, high = max(-1.0, low), min(1.0, high)
    return CorrectedDifference(n, observed, estimate, low, high, centre, se, youden, j_adj, v_j,
                               bounded, method_name, confidence)
