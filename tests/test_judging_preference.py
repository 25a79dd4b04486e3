"""Pairwise outcomes: case scores, the net preference interval, position bias, and their error rates."""

from __future__ import annotations

import json

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from evalrun.analysis.stats import paired_binary
from evalrun.judging import (
    JudgeError,
    PairOutcome,
    case_score,
    combine_orders,
    net_preference,
    parse_pairwise_answer,
    position_bias,
)


def _pair(first: str, second: str) -> PairOutcome:
    pair = combine_orders(parse_pairwise_answer(json.dumps({"winner": first}), order="baseline_first"),
                          parse_pairwise_answer(json.dumps({"winner": second}), order="candidate_first"))
    assert isinstance(pair, PairOutcome)
    return pair


WIN, LOSS, TIE, BIASED = ("B", "A"), ("A", "B"), ("tie", "tie"), ("A", "A")


def test_case_score_averages_samples_and_skips_judge_errors() -> None:
    error = JudgeError("unparseable", "no JSON")
    score = case_score([_pair(*WIN), _pair(*WIN), _pair(*LOSS), _pair(*BIASED), error])
    assert score is not None
    assert (score.wins, score.losses, score.ties) == pytest.approx((0.5, 0.25, 0.25))
    assert score.score == pytest.approx(0.25)
    assert (score.pairs, score.errors, score.inconsistent) == (4, 1, 1)
    assert case_score([error, error]) is None


def test_one_sample_per_case_is_exactly_agresti_min() -> None:
    """With one pair per case, wins/losses are the discordant pairs of a paired binary comparison."""
    outcomes = [1.0] * 9 + [-1.0] * 4 + [0.0] * 27
    net = net_preference(outcomes, confidence=0.90)
    assert (net.n, net.wins, net.losses, net.ties) == (40, 9, 4, 27)
    assert net.net == pytest.approx(5 / 40)
    base = [False] * 9 + [True] * 4 + [True] * 27
    cand = [True] * 9 + [False] * 4 + [True] * 27
    reference = paired_binary(base, cand, 0.90)
    assert (net.ci_low, net.ci_high) == pytest.approx((reference.ci_low, reference.ci_high))


def test_net_of_all_ties_is_zero_but_never_certain() -> None:
    net = net_preference([0.0] * 30)
    assert net.net == 0.0
    assert net.ci_low is not None and net.ci_high is not None
    assert net.ci_low < 0.0 < net.ci_high


def test_net_loss_p_value_inverts_the_interval() -> None:
    net = net_preference([1.0] * 5 + [-1.0] * 15 + [0.0] * 30, confidence=0.90)
    assert net.ci_high is not None
    assert net.p_value(net.ci_high) == pytest.approx(0.05)
    assert net.p_value(-0.10) is not None and net.p_value(-0.10) > 0.05  # type: ignore[operator]  # inside
    assert net.p_value(0.0) is not None and net.p_value(0.0) < 0.05  # type: ignore[operator]
    assert net_preference([]).p_value(0.0) is None


def test_case_scores_and_plain_scores_give_the_same_interval() -> None:
    cases = [case_score([_pair(*WIN), _pair(*TIE)]), case_score([_pair(*LOSS)]), case_score([_pair(*TIE)])]
    plain = net_preference([0.5, -1.0, 0.0])
    rich = net_preference([c for c in cases if c is not None])
    assert (rich.ci_low, rich.ci_high) == (plain.ci_low, plain.ci_high)
    assert (rich.wins, rich.ties, rich.losses) == pytest.approx((0.5, 1.5, 1.0))
    with pytest.raises(ValueError, match="not both"):
        net_preference([cases[0], 0.5])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        net_preference([1.5])


def test_position_bias_counts_and_wilson_interval() -> None:
    pairs = [_pair(*WIN)] * 12 + [_pair("B", "tie")] * 3 + [_pair(*BIASED)] * 4 + [_pair("B", "B")]
    bias = position_bias(pairs, confidence=0.90)
    assert (bias.pairs, bias.inconsistent, bias.partial, bias.contradictory) == (20, 8, 3, 5)
    assert (bias.prefers_first, bias.prefers_second) == (4, 1)
    low, high = proportion_confint(8, 20, alpha=0.10, method="wilson")
    assert (bias.ci_low, bias.ci_high) == pytest.approx((low, high))


def _simulate(rng: np.random.Generator, n: int, p_win: float, p_loss: float, first_bias: float,
              samples: int) -> tuple[float | None, float | None]:
    """A judge that, per order, picks position A with prob ``first_bias`` regardless of quality,
    else answers the case's true preference. Returns the FAIL p-value at 0 and the lower bound."""
    truth = rng.choice(3, size=n, p=[p_win, p_loss, 1 - p_win - p_loss])  # 0 win, 1 loss, 2 tie
    scores = []
    for t in truth:
        pairs = []
        for _ in range(samples):
            answers = []
            for order in ("baseline_first", "candidate_first"):
                if rng.random() < first_bias:
                    answers.append("A")
                elif t == 2:
                    answers.append("tie")
                else:
                    cand_is_a = order == "candidate_first"
                    answers.append("A" if (t == 0) == cand_is_a else "B")
            pairs.append(_pair(*answers))
        score = case_score(pairs)
        assert score is not None
        scores.append(score)
    net = net_preference(scores, confidence=0.90)
    return net.p_value(0.0), net.ci_low


def test_an_equally_good_candidate_rarely_fails_and_bias_only_dilutes() -> None:
    """A/A: FAIL (net evidently below 0) ≤ 5 %, with or without position bias; a real net loss is found."""
    rng = np.random.default_rng(3)
    for bias in (0.0, 0.4):
        fails = sum((p := _simulate(rng, 60, 0.2, 0.2, bias, 1)[0]) is not None and p < 0.05 for _ in range(1500))
        assert fails / 1500 <= 0.068, (bias, fails)
    found = sum((p := _simulate(rng, 60, 0.1, 0.4, 0.0, 1)[0]) is not None and p < 0.05 for _ in range(300))
    assert found / 300 >= 0.8
