"""When a judge may decide a rule, and the reason a reviewer reads when it may not."""

from __future__ import annotations

import json

import pytest

from evalrun.judging import (
    BinaryAgreement,
    PairOutcome,
    ReliabilityPolicy,
    binary_agreement,
    categorical_agreement,
    combine_orders,
    pairwise_reliability,
    parse_pairwise_answer,
    position_bias,
    rubric_reliability,
)


def _agreement(tp: int, fn: int, fp: int, tn: int) -> BinaryAgreement:
    return binary_agreement([True] * (tp + fn) + [False] * (fp + tn),
                            [1.0] * tp + [0.0] * fn + [1.0] * fp + [0.0] * tn)


def test_a_good_judge_on_40_items_may_decide() -> None:
    result = rubric_reliability(_agreement(19, 1, 1, 19))
    assert (result.status, result.may_pass, result.may_fail, result.reason) == ("reliable", True, True, "")


def test_a_judge_near_chance_is_inconclusive_with_the_numbers_in_the_reason() -> None:
    result = rubric_reliability(_agreement(17, 3, 14, 6))  # passes nearly everything
    assert result.status == "unreliable" and not result.may_pass and not result.may_fail
    assert "too unreliable" in result.reason
    assert "Youden's J (sensitivity + specificity − 1) is 0.15" in result.reason
    assert "sensitivity 85%, specificity 30%" in result.reason
    assert "must reach 0.5" in result.reason


def test_a_decent_judge_on_too_few_items_is_not_trusted_yet() -> None:
    result = rubric_reliability(_agreement(8, 0, 0, 8))
    assert not result.may_pass and not result.may_fail
    assert "8 human-passed and 8 human-failed" in result.reason
    assert "at least 10" in result.reason
    lenient = rubric_reliability(_agreement(8, 0, 0, 8), policy=ReliabilityPolicy(min_items_per_class=5))
    assert lenient.may_pass


def test_the_minimum_is_on_the_lower_bound_not_the_estimate() -> None:
    agreement = _agreement(14, 6, 2, 18)  # J = 0.7 + 0.9 − 1 = 0.6 measured ...
    assert agreement.youden.value == pytest.approx(0.6)
    assert agreement.youden.ci_low is not None and agreement.youden.ci_low < 0.5  # ... but on 20 + 20 items it may be lower
    assert not rubric_reliability(agreement).may_pass
    assert rubric_reliability(agreement, policy=ReliabilityPolicy(min_youden=0.3)).may_pass


def test_optional_kappa_minimum() -> None:
    agreement = _agreement(19, 1, 1, 19)
    assert not rubric_reliability(agreement, policy=ReliabilityPolicy(min_kappa=0.95)).may_pass


def test_judge_errors_above_the_tolerance_make_a_judge_unreliable() -> None:
    good = _agreement(19, 1, 1, 19)
    result = rubric_reliability(good, calibration_errors=6)
    assert not result.may_pass and "no usable answer to 6 of 46 calibration items" in result.reason
    result = rubric_reliability(good, run_errors=20, run_calls=100)
    assert not result.may_fail and "20 of 100 judge calls of this run (20%" in result.reason
    assert rubric_reliability(good, run_errors=5, run_calls=100).may_pass


@pytest.mark.parametrize(("mode", "may_fail"), [("fail_only", True), ("inconclusive", False)])
def test_an_uncalibrated_judge_may_fail_but_never_pass(mode: str, may_fail: bool) -> None:
    result = rubric_reliability(None, policy=ReliabilityPolicy(uncalibrated=mode))
    assert result.status == "uncalibrated"
    assert not result.may_pass and result.may_fail is may_fail
    assert "not calibrated" in result.reason


def _pair(first: str, second: str) -> PairOutcome:
    pair = combine_orders(parse_pairwise_answer(json.dumps({"winner": first}), order="baseline_first"),
                          parse_pairwise_answer(json.dumps({"winner": second}), order="candidate_first"))
    assert isinstance(pair, PairOutcome)
    return pair


def test_a_position_biased_pairwise_judge_may_not_pass() -> None:
    bias = position_bias([_pair("A", "A")] * 12 + [_pair("B", "A")] * 8)
    human = ["baseline", "candidate", "tie"] * 10
    agreement = categorical_agreement(human, human)  # agrees with humans, yet follows position in the run
    result = pairwise_reliability(agreement, bias)
    assert not result.may_pass and result.may_fail
    assert "disagreed on 12 of 20 pairs (60%" in result.reason


def test_pairwise_kappa_minimum_and_uncalibrated_pairwise() -> None:
    human = ["baseline", "candidate", "tie"] * 10
    judge = ["candidate", "candidate", "candidate"] * 10
    result = pairwise_reliability(categorical_agreement(human, judge), None)
    assert not result.may_pass and not result.may_fail and "κ with the human preferences" in result.reason
    consistent = position_bias([_pair("B", "A")] * 20)
    assert pairwise_reliability(categorical_agreement(human, human), consistent).may_pass
    assert pairwise_reliability(None, consistent).may_fail
    assert not pairwise_reliability(None, consistent).may_pass


def test_policy_values_are_checked() -> None:
    with pytest.raises(ValueError, match="min_youden"):
        ReliabilityPolicy(min_youden=1.5)
