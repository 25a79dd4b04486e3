"""Calibration files: the format, one-line errors, the bundled set, and scoring a judge on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalrun.errors import ExitCode, UserInputError
from evalrun.judging import (
    BUNDLED_CALIBRATION,
    CalibrationFileError,
    JudgeError,
    PairOutcome,
    RubricVerdict,
    load_calibration,
    score_pairwise_calibration,
    score_rubric_calibration,
)


def _write(tmp_path: Path, text: str, name: str = "cal.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD_YAML = """
defaults:
  criteria: answers correctly
items:
  - id: r1
    input: What is 2+2?
    output: "4"
    human: pass
  - id: r2
    input: What is 2+2?
    output: "5"
    human: FAIL
    note: wrong sum
    cohort: maths
    tags: [hand-written]
  - id: p1
    input: Capital of France?
    output_a: Paris
    output_b: Lyon
    human: A
    criteria: which is correct
"""


def test_yaml_with_defaults_holds_both_kinds_of_item(tmp_path: Path) -> None:
    cal = load_calibration(_write(tmp_path, GOOD_YAML))
    assert len(cal) == 3
    assert [i.id for i in cal.rubric] == ["r1", "r2"]
    assert cal.rubric[0].criteria == "answers correctly" and cal.rubric[0].human_passed
    assert cal.rubric[1].human == "fail" and cal.rubric[1].note == "wrong sum" and cal.rubric[1].tags == ["hand-written"]
    assert cal.pairwise[0].criteria == "which is correct"
    assert cal.pairwise[0].human_preferred == "baseline"


def test_jsonl_and_a_plain_yaml_list_are_accepted(tmp_path: Path) -> None:
    lines = [
        {"id": "a", "input": "q", "output": "", "criteria": "c", "human": "fail"},
        {"id": "b", "input": "q", "output_a": "x", "output_b": "y", "criteria": "c", "human": "tie"},
    ]
    cal = load_calibration(_write(tmp_path, "\n".join(json.dumps(x) for x in lines) + "\n\n", "cal.jsonl"))
    assert (len(cal.rubric), len(cal.pairwise)) == (1, 1)
    assert cal.rubric[0].output == ""  # an empty answer is a valid thing to grade
    cal = load_calibration(_write(tmp_path, "- {id: a, input: q, output: o, criteria: c, human: pass}\n"))
    assert cal.rubric[0].id == "a"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- {id: a, input: q, output: o, criteria: c, human: maybe}", "item a: field human: must be pass or fail"),
        ("- {id: a, input: q, output_a: o, output_b: p, criteria: c, human: pass}",
         "item a: field human: must be a, b or tie"),
        ("- {id: a, input: q, output: o, human: pass}",
         "item a: field criteria: is required (on the item, or as defaults.criteria for the whole file)"),
        ("- {id: a, input: q, output: o, criteria: c, human: pass, verdict: pass}", "item a: field verdict: unknown key"),
        ("- {id: a, input: q, criteria: c, human: pass}", "item a: needs output (a rubric item) or output_a"),
        ("- {id: a, input: q, output: o, output_a: x, output_b: y, criteria: c, human: pass}", "not both"),
        ("- {id: a, input: q, output_a: o, criteria: c, human: a}", "item a: field output_b: is required"),
        ("- {id: a, input: q, output: o, criteria: c, human: pass}\n- {id: a, input: q, output: o, criteria: c, human: fail}",
         "item a: field id: duplicate id"),
        ("- {input: q, output: o, criteria: c, human: pass}", "item #0: field id: is required"),
        ("- {id: 'has space', input: q, output: o, criteria: c, human: pass}", "field id: String should match pattern"),
        ("- {id: a, input: q, output: 4, criteria: c, human: pass}", "item a: field output: Input should be a valid string"),
        ("- just a string", "item #0: an item must be a mapping, found str"),
        ("items: []", "the calibration file has no items"),
        ("", "the calibration file has no items"),
        ("itmes: []", "unknown top-level key 'itmes'"),
        ("defaults: {human: pass}\nitems: []", "field defaults: key 'human' cannot have a default"),
        ("items: {a: 1}", "expected a list of items"),
        ("- {id: a, input: q\n", "YAML syntax error at line 2"),
    ],
)
def test_mistakes_are_one_line_errors_naming_file_item_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(CalibrationFileError) as info:
        load_calibration(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path) + ": ")
    assert expected in message
    assert isinstance(info.value, UserInputError) and info.value.exit_code == ExitCode.CONFIG_ERROR


def test_missing_file_and_bad_jsonl_line(tmp_path: Path) -> None:
    with pytest.raises(CalibrationFileError, match="calibration file not found"):
        load_calibration(tmp_path / "nope.yaml")
    path = _write(tmp_path, '{"id": "a"}\n{broken\n', "cal.jsonl")
    with pytest.raises(CalibrationFileError, match="line 2: invalid JSON"):
        load_calibration(path)


def test_bundled_shop_assistant_set_is_balanced_and_honestly_tagged() -> None:
    cal = load_calibration(BUNDLED_CALIBRATION)
    assert len(cal.rubric) == 40
    assert sum(i.human_passed for i in cal.rubric) == 20
    assert len(cal.pairwise) == 12
    assert {i.human for i in cal.pairwise} == {"a", "b", "tie"}
    for item in (*cal.rubric, *cal.pairwise):
        assert item.note, item.id  # every label says why
        assert item.tags and item.tags[0] in {"smollm2-baseline", "smollm2-candidate", "hand-written",
                                              "smollm2-baseline-vs-candidate"}
    real = [i for i in cal.rubric if i.tags[0].startswith("smollm2")]
    assert len(real) == 30  # mostly the embedded model's real answers to the shipped cases
    cases = {c for f in Path(__file__).parents[1].joinpath("cases").glob("*.yaml") for c in [f.read_text()]}
    assert all(any(i.input in text for text in cases) for i in cal.rubric)  # every input is a shipped case


def test_scoring_a_rubric_judge_counts_errors_apart(tmp_path: Path) -> None:
    cal = load_calibration(_write(tmp_path, GOOD_YAML))
    verdicts = {
        "r1": [RubricVerdict(True, None, ""), RubricVerdict(False, None, ""), JudgeError("invalid", "x")],
        "r2": [JudgeError("unparseable", "x")],
    }
    scored = score_rubric_calibration(cal.rubric, verdicts)
    assert scored.error_ids == ("r2",) and scored.errors == 1
    assert scored.judge_pass == {"r1": 0.5}
    assert scored.agreement.n == 1 and scored.agreement.true_pass == 0.5


def test_scoring_a_pairwise_judge_uses_the_sign_of_its_mean(tmp_path: Path) -> None:
    cal = load_calibration(_write(tmp_path, GOOD_YAML))
    win, loss = PairOutcome("win", "consistent", None, ("", "")), PairOutcome("loss", "consistent", None, ("", ""))
    scored = score_pairwise_calibration(cal.pairwise, {"p1": [loss, loss, win]})
    assert scored.judge_preferred == {"p1": "baseline"}
    assert scored.agreement.accuracy.value == 1.0
    scored = score_pairwise_calibration(cal.pairwise, {"p1": [JudgeError("invalid", "x")]})
    assert scored.error_ids == ("p1",)
