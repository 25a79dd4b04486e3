"""When a judge is too unreliable for a gate rule to decide anything.

The gate keeps PASS / FAIL / INCONCLUSIVE; this module says, for one judge, whether its
rules *may* PASS and whether they *may* FAIL, with the reason a reviewer reads:

* **calibrated and reliable** — both allowed;
* **unreliable** (too few calibration items of either kind, too many judge errors,
  or the lower bound of its agreement below the policy's minimum) — neither: the rule is
  INCONCLUSIVE with the reason;
* **uncalibrated** — by default a rule may FAIL but not PASS. A judge better than chance
  only shrinks a true change (Δ_obs = J·Δ_true with 0 < J ≤ 1), so an observed drop beyond
  a margin is evidence of a true drop beyond it; but "no visible drop" from an unmeasured
  judge is not evidence of no drop (a judge that passes everything shows none).
* **pairwise, position-inconsistent** — every order-inconsistent pair counts as a tie, so a
  judge that mostly follows position pulls the net preference to 0 with a narrow interval:
  above ``max_inconsistency`` the pairwise rule may FAIL (consistent losses are still
  losses) but not PASS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # annotations only: a project validating its judge: block never loads numpy
    from evalrun.judging.agreement import BinaryAgreement, CategoricalAgreement, Estimate
    from evalrun.judging.preference import PositionBias

__all__ = ["Reliability", "ReliabilityPolicy", "pairwise_reliability", "rubric_reliability"]


@dataclass(frozen=True)
class ReliabilityPolicy:
    """Minimum evidence a judge must show before its rules decide (defaults shown).

    Attributes:
        min_youden: rubric judges: the lower bound of Youden's J = Se + Sp − 1 (at the
            agreement's confidence) must reach this. 0.5 means "at least halfway from
            guessing to perfect", in the worst case the calibration sample allows.
        min_kappa: rubric judges, optional: the lower bound of Cohen's κ must reach this.
        min_pairwise_kappa: pairwise judges with human pairwise labels: the lower bound of κ
            (baseline / candidate / tie) must reach this.
        min_items_per_class: fewest human-passed and fewest human-failed calibration items
            (Se and Sp are each estimated from one class only).
        max_judge_error_rate: judge calls that gave no usable answer, on the calibration
            items or in the run, above this share make the judge unreliable (errors that
            fall more on one side would bias the comparison).
        max_inconsistency: pairwise: above this share of order-inconsistent pairs the
            pairwise rule may not PASS.
        uncalibrated: ``fail_only`` (default: FAIL on evidence, never PASS) or
            ``inconclusive`` (an uncalibrated judge decides nothing).
    """

    min_youden: float = 0.5
    min_kappa: float | None = None
    min_pairwise_kappa: float = 0.4
    min_items_per_class: int = 10
    max_judge_error_rate: float = 0.10
    max_inconsistency: float = 0.25
    uncalibrated: Literal["fail_only", "inconclusive"] = "fail_only"

    def __post_init__(self) -> None:
        for name in ("min_youden", "min_pairwise_kappa", "max_judge_error_rate", "max_inconsistency"):
            value = getattr(self, name)
            if not -1.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [-1, 1], got {value!r}")
        if self.min_items_per_class < 1:
            raise ValueError("min_items_per_class must be at least 1")


@dataclass(frozen=True)
class Reliability:
    """Whether one judge's rules may PASS / FAIL, and why not (``reasons``, in order)."""

    status: Literal["reliable", "unreliable", "uncalibrated"]
    may_pass: bool
    may_fail: bool
    reasons: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        """The reasons as one sentence (empty when reliable)."""
        return "; ".join(self.reasons)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.0f}%"


def _bound(est: Estimate) -> str:
    if est.value is None:
        return "n/a"
    return f"{est.value:.2f} [{est.ci_low:.2f}, {est.ci_high:.2f}]"


def _error_reasons(errors: int, calls: int, where: str, policy: ReliabilityPolicy) -> list[str]:
    if calls <= 0:
        return []
    rate = errors / calls
    if rate > policy.max_judge_error_rate:
        return [f"the judge gave no usable answer to {errors} of {calls} {where} "
                f"({_pct(rate)}, more than the {_pct(policy.max_judge_error_rate)} allowed)"]
    return []


def _uncalibrated(policy: ReliabilityPolicy, extra: list[str]) -> Reliability:
    if extra:
        return Reliability("unreliable", False, False, tuple(extra))
    if policy.uncalibrated == "inconclusive":
        return Reliability("uncalibrated", False, False, (
            "the judge is not calibrated (no human-labelled examples), and the policy lets an "
            "uncalibrated judge decide nothing",))
    return Reliability("uncalibrated", False, True, (
        "the judge is not calibrated (no human-labelled examples): it can show a regression "
        "but not its absence",))


def rubric_reliability(
    agreement: BinaryAgreement | None,
    *,
    calibration_errors: int = 0,
    run_errors: int = 0,
    run_calls: int = 0,
    policy: ReliabilityPolicy | None = None,
) -> Reliability:
    """Whether a rubric judge may decide its rules.

    Args:
        agreement: the judge against the human labels (usable items only); None when the
            suite has no rubric calibration items.
        calibration_errors: calibration items the judge gave no usable answer to.
        run_errors: judge calls of the run that ended as judge errors (after retries).
        run_calls: judge calls of the run.
        policy: thresholds; the defaults of :class:`ReliabilityPolicy` when None.
    """
    policy = policy or ReliabilityPolicy()
    reasons = _error_reasons(run_errors, run_calls, "judge calls of this run", policy)
    if agreement is None:
        return _uncalibrated(policy, reasons)
    reasons += _error_reasons(calibration_errors, agreement.n + calibration_errors,
                              "calibration items", policy)
    few = policy.min_items_per_class
    if agreement.human_pass < few or agreement.human_fail < few:
        reasons.append(
            f"the calibration set has {agreement.human_pass} human-passed and {agreement.human_fail} "
            f"human-failed items; each kind needs at least {few} to measure the judge's error rates")
    else:
        j = agreement.youden
        if j.ci_low is None or j.ci_low < policy.min_youden:
            reasons.append(
                f"the judge is too unreliable: Youden's J (sensitivity + specificity − 1) is {_bound(j)} "
                f"on {agreement.n} calibration items (sensitivity {_pct(agreement.sensitivity.value)}, "
                f"specificity {_pct(agreement.specificity.value)}); its lower bound must reach "
                f"{policy.min_youden:g}")
        if policy.min_kappa is not None:
            k = agreement.kappa
            if k.ci_low is None or k.ci_low < policy.min_kappa:
                reasons.append(f"Cohen's κ with the human labels is {_bound(k)}; its lower bound must "
                               f"reach {policy.min_kappa:g}")
    if reasons:
        return Reliability("unreliable", False, False, tuple(reasons))
    return Reliability("reliable", True, True)


def pairwise_reliability(
    agreement: CategoricalAgreement | None,
    bias: PositionBias | None,
    *,
    calibration_errors: int = 0,
    run_errors: int = 0,
    run_calls: int = 0,
    policy: ReliabilityPolicy | None = None,
) -> Reliability:
    """Whether a pairwise judge may decide the ``pairwise_net_loss`` rule.

    Args:
        agreement: the judge against human pairwise preferences; None without any.
        bias: the run's position bias (None when no pair was usable).
        calibration_errors: pairwise calibration items the judge gave no usable answer to.
        run_errors: pairs of the run lost to judge errors (after retries).
        run_calls: pairs the run asked for (each pair is two judge calls, both orders).
        policy: thresholds; the defaults of :class:`ReliabilityPolicy` when None.
    """
    policy = policy or ReliabilityPolicy()
    reasons = _error_reasons(run_errors, run_calls, "pairs of this run", policy)
    biased: list[str] = []
    if bias is not None and bias.rate is not None and bias.rate > policy.max_inconsistency:
        biased.append(
            f"the judge's two orders disagreed on {bias.inconsistent} of {bias.pairs} pairs "
            f"({_pct(bias.rate)}, more than {_pct(policy.max_inconsistency)}): position decides too many "
            "of its answers, and each such pair counts as a tie, so no difference is not evidence")
    if agreement is None:
        base = _uncalibrated(policy, reasons)
        if biased and base.may_fail:
            return Reliability(base.status, False, True, (*base.reasons, *biased))
        return base
    reasons += _error_reasons(calibration_errors, agreement.n + calibration_errors,
                              "pairwise calibration items", policy)
    k = agreement.kappa
    if k.ci_low is None or k.ci_low < policy.min_pairwise_kappa:
        reasons.append(
            f"the judge is too unreliable: Cohen's κ with the human preferences is {_bound(k)} on "
            f"{agreement.n} calibration pairs; its lower bound must reach {policy.min_pairwise_kappa:g}")
    if reasons:
        return Reliability("unreliable", False, False, tuple(reasons))
    if biased:
        return Reliability("reliable", False, True, tuple(biased))
    return Reliability("reliable", True, True)
