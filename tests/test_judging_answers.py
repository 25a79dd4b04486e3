"""Reading judge answers: tolerant of wrapping, never mistaking a bad answer for a verdict."""

from __future__ import annotations

import json

import jsonschema
import pytest

from evalrun.judging import (
    JudgeError,
    PairwiseVerdict,
    RubricVerdict,
    answer_schema,
    combine_orders,
    parse_pairwise_answer,
    parse_rubric_answer,
    response_format,
)
from evalrun.judging.answers import MAX_REASON_CHARS


@pytest.mark.parametrize(
    ("text", "passed"),
    [
        ('{"verdict": "pass", "reason": "Correct."}', True),
        ('{"verdict": "fail", "reason": "Wrong city."}', False),
        ('{"Verdict": "PASS"}', True),
        ('  {"verdict": "Failed", "reason": "x"}  ', False),
        ('```json\n{"verdict": "pass", "reason": "ok"}\n```', True),
        ('Here is my grading:\n```\n{"verdict": "fail", "reason": "no"}\n```\nThanks!', False),
        ('I graded it. {"verdict": "pass", "reason": "ok"} Hope this helps.', True),
        ('{"verdict": "pass", "reason": "a"} {"verdict": "pass", "reason": "b"}', True),
    ],
)
def test_tolerated_wrappings_give_the_verdict(text: str, passed: bool) -> None:
    verdict = parse_rubric_answer(text)
    assert isinstance(verdict, RubricVerdict)
    assert verdict.passed is passed
    assert verdict.score is None


@pytest.mark.parametrize(
    ("text", "kind", "words"),
    [
        ("", "unparseable", "answered nothing"),
        (None, "unparseable", "answered nothing"),
        ("The answer is good, I would pass it.", "unparseable", "no JSON object"),
        ('{"score": 5}', "unparseable", "no JSON object with 'verdict'"),
        ('{"verdict": "maybe", "reason": "?"}', "invalid", 'verdict "maybe" is not "pass" or "fail"'),
        ('{"verdict": true}', "invalid", "verdict true is not"),
        ('{"verdict": null}', "invalid", "verdict null is not"),
        ('{"verdict": "pass"} and then {"verdict": "fail"}', "invalid", "several JSON answers that disagree"),
        ("[1, 2]", "unparseable", "no JSON object"),
        ('{"verdict": "pa', "unparseable", "no JSON object"),
    ],
)
def test_bad_answers_are_judge_errors_with_a_reason(text: str | None, kind: str, words: str) -> None:
    result = parse_rubric_answer(text)
    assert isinstance(result, JudgeError)
    assert result.kind == kind
    assert words in result.reason


def test_a_cut_off_answer_says_so() -> None:
    result = parse_rubric_answer('{"verdict": "pa', finish_reason="length")
    assert isinstance(result, JudgeError)
    assert "cut off at max_tokens" in result.reason


@pytest.mark.parametrize(
    ("text", "score", "passed"),
    [
        ('{"score": 4, "reason": "good"}', 4, True),
        ('{"score": 3}', 3, False),
        ('{"score": "5"}', 5, True),
        ('{"score": 1.0}', 1, False),
        ('{"score": 4, "verdict": "fail"}', 4, True),  # the score decides on a scaled rubric
    ],
)
def test_scaled_answers_pass_at_the_threshold(text: str, score: int, passed: bool) -> None:
    verdict = parse_rubric_answer(text, scale=5, pass_threshold=4)
    assert isinstance(verdict, RubricVerdict)
    assert (verdict.score, verdict.passed) == (score, passed)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"score": 6}', "score 6 is outside 1–5"),
        ('{"score": 0}', "score 0 is outside 1–5"),
        ('{"score": 4.5}', "score 4.5 is not a whole number"),
        ('{"score": "four"}', 'score "four" is not a whole number'),
        ('{"score": true}', "score true is not a whole number"),
        ('{"verdict": "pass"}', "no JSON object with 'score'"),
    ],
)
def test_out_of_range_scores_are_judge_errors(text: str, words: str) -> None:
    result = parse_rubric_answer(text, scale=5, pass_threshold=4)
    assert isinstance(result, JudgeError)
    assert words in result.reason


def test_reason_is_one_line_and_bounded_and_raw_kept_for_errors() -> None:
    long = "word " * 200
    verdict = parse_rubric_answer('{"verdict": "pass", "reason": "line one\\nline two ' + long + '"}')
    assert isinstance(verdict, RubricVerdict)
    assert "\n" not in verdict.reason and len(verdict.reason) <= MAX_REASON_CHARS
    error = parse_rubric_answer("no json here " * 100)
    assert isinstance(error, JudgeError)
    assert error.raw.startswith("no json here") and len(error.raw) <= 500


@pytest.mark.parametrize(
    ("choice", "order", "preferred"),
    [
        ("A", "baseline_first", "baseline"),
        ("B", "baseline_first", "candidate"),
        ("A", "candidate_first", "candidate"),
        ("B", "candidate_first", "baseline"),
        ("tie", "candidate_first", "tie"),
        ("TIE", "baseline_first", "tie"),
        ("b", "candidate_first", "baseline"),
    ],
)
def test_pairwise_answers_map_back_to_sides(choice: str, order: str, preferred: str) -> None:
    verdict = parse_pairwise_answer(json.dumps({"winner": choice, "reason": "r"}), order=order)  # type: ignore[arg-type]
    assert isinstance(verdict, PairwiseVerdict)
    assert verdict.preferred == preferred


@pytest.mark.parametrize("answer", ['{"winner": "response A"}', '{"winner": "C"}', '{"winner": 1}', "A"])
def test_pairwise_answers_other_than_a_b_tie_are_errors(answer: str) -> None:
    assert isinstance(parse_pairwise_answer(answer, order="baseline_first"), JudgeError)


def _pair(first: str, second: str) -> object:
    return combine_orders(parse_pairwise_answer(json.dumps({"winner": first}), order="baseline_first"),
                          parse_pairwise_answer(json.dumps({"winner": second}), order="candidate_first"))


@pytest.mark.parametrize(
    ("first", "second", "outcome", "agreement", "position"),
    [
        ("B", "A", "win", "consistent", None),  # candidate preferred in both orders
        ("A", "B", "loss", "consistent", None),  # baseline preferred in both orders
        ("tie", "tie", "tie", "consistent", None),
        ("B", "tie", "tie", "partial", None),
        ("tie", "B", "tie", "partial", None),
        ("A", "A", "tie", "contradictory", "first"),  # always the first position
        ("B", "B", "tie", "contradictory", "second"),
    ],
)
def test_both_orders_combine_conservatively(first: str, second: str, outcome: str, agreement: str,
                                            position: str | None) -> None:
    pair = _pair(first, second)
    assert not isinstance(pair, JudgeError)
    assert (pair.outcome, pair.agreement, pair.position) == (outcome, agreement, position)  # type: ignore[attr-defined]


def test_an_error_in_either_order_is_the_pairs_error() -> None:
    ok = parse_pairwise_answer('{"winner": "A"}', order="candidate_first")
    bad = parse_pairwise_answer("no idea", order="baseline_first")
    assert isinstance(combine_orders(bad, ok), JudgeError)
    with pytest.raises(ValueError, match="baseline_first verdict, then"):
        combine_orders(ok, ok)


def test_answer_schemas_accept_what_the_parser_accepts() -> None:
    jsonschema.validate({"verdict": "pass", "reason": "r"}, answer_schema("rubric"))
    jsonschema.validate({"score": 3, "reason": "r"}, answer_schema("rubric", scale=5))
    jsonschema.validate({"winner": "tie", "reason": "r"}, answer_schema("pairwise"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"score": 6, "reason": "r"}, answer_schema("rubric", scale=5))
    assert response_format(answer_schema("pairwise"))["json_schema"]["schema"]["required"] == ["reason", "winner"]
