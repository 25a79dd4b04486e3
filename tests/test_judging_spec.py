"""Judge check specifications: what a user may write, and the one-line errors when they slip."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalrun.errors import UserInputError
from evalrun.judging import (
    JudgeSettings,
    PairwiseCheck,
    RubricCheck,
    SimilarCheck,
    parse_judge_check,
    resolve_criteria,
    resolve_judge,
)


def _parse(name: str, params: object) -> object:
    return parse_judge_check(name, params, file="cases/a.yaml", case_id="c1", field="expect[0]." + name)


def test_issue_example_rubric_is_valid() -> None:
    check = _parse("rubric", {"criteria": "answers the question asked, correctly"})
    assert isinstance(check, RubricCheck)
    assert check.criteria == "answers the question asked, correctly"
    assert check.scale is None and check.pass_threshold is None


def test_scaled_rubric_with_threshold_override_and_samples() -> None:
    check = _parse("rubric", {"criteria": "helpful", "scale": 5, "pass_threshold": 4, "samples": 3,
                              "judge": {"model": "openai/gpt-4o-mini", "params": {"temperature": 0.7}}})
    assert isinstance(check, RubricCheck)
    assert (check.scale, check.pass_threshold, check.samples) == (5, 4, 3)
    assert check.judge is not None and check.judge.model == "openai/gpt-4o-mini"


def test_pairwise_and_similar_are_valid() -> None:
    assert isinstance(_parse("pairwise", {"criteria": "more helpful"}), PairwiseCheck)
    similar = _parse("similar", {"reference": "Paris is the capital of France.", "threshold": 0.8})
    assert isinstance(similar, SimilarCheck) and similar.threshold == 0.8
    assert _parse("similar", {"reference": "x", "threshold": 1}).threshold == 1.0  # type: ignore[attr-defined]
    assert _parse("similar", {"reference": "x"}).threshold == 0.75  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "params", "field", "words"),
    [
        ("rubric", {}, "expect[0].rubric", "exactly one of criteria or criteria_file"),
        ("rubric", {"criteria": "a", "criteria_file": "b.txt"}, "expect[0].rubric", "exactly one of"),
        ("rubric", {"criteria": "a", "scale": 5}, "expect[0].rubric", "needs pass_threshold"),
        ("rubric", {"criteria": "a", "pass_threshold": 3}, "expect[0].rubric", "needs a scale"),
        ("rubric", {"criteria": "a", "scale": 5, "pass_threshold": 6}, "expect[0].rubric", "above the scale"),
        ("rubric", {"criteria": "a", "scale": 1, "pass_threshold": 1}, "expect[0].rubric.scale", "greater than or equal to 2"),
        ("rubric", {"criteria": "a", "samples": 0}, "expect[0].rubric.samples", "greater than or equal to 1"),
        ("rubric", {"criteria": "a", "samples": "3"}, "expect[0].rubric.samples", "valid integer"),
        ("rubric", {"criteria": "a", "critera": "b"}, "expect[0].rubric.critera", "unknown key"),
        ("rubric", {"criteria": "a", "judge": {"modle": "x"}}, "expect[0].rubric.judge.modle", "unknown key"),
        ("rubric", {"criteria": "a", "judge": {"api_key_env": "sk-123"}}, "expect[0].rubric.judge.api_key_env",
         "should match pattern"),
        ("rubric", {"criteria": "   "}, "expect[0].rubric", "criteria is empty"),
        ("pairwise", {"criteria": "a", "both_orders": False}, "expect[0].pairwise.both_orders", "unknown key"),
        ("similar", {}, "expect[0].similar.reference", "is required"),
        ("similar", {"reference": "x", "threshold": 2}, "expect[0].similar.threshold", "less than or equal to 1"),
        ("similar", {"reference": "x", "threshold": float("nan")}, "expect[0].similar.threshold", "finite number"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_invalid_params_are_one_line_errors_naming_the_field(name: str, params: dict[str, object], field: str,
                                                             words: str) -> None:
    with pytest.raises(UserInputError) as info:
        _parse(name, params)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cases/a.yaml: case c1: field " + field + ": ")
    assert words in message


def test_params_must_be_a_mapping_and_the_name_known() -> None:
    with pytest.raises(UserInputError, match="must be a mapping, found list"):
        _parse("rubric", ["a"])
    with pytest.raises(UserInputError, match="'llm_rubric' is not a judge check"):
        _parse("llm_rubric", {})


def test_criteria_file_is_read_relative_to_the_case_file(tmp_path: Path) -> None:
    (tmp_path / "crit").mkdir()
    (tmp_path / "crit" / "helpful.txt").write_text("  Answers the question.\n", encoding="utf-8")
    check = _parse("rubric", {"criteria_file": "crit/helpful.txt", "scale": 3, "pass_threshold": 2})
    assert isinstance(check, RubricCheck)
    resolved = resolve_criteria(check, base_dir=tmp_path, root=tmp_path)
    assert resolved.criteria == "Answers the question."
    assert resolved.criteria_file is None
    assert isinstance(resolved, RubricCheck) and resolved.scale == 3


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        ("missing", "not found"),
        ("empty", "is empty"),
        ("outside", "outside the project folder"),
        ("binary", "not UTF-8"),
    ],
)
def test_criteria_file_problems_name_the_field(tmp_path: Path, setup: str, words: str) -> None:
    project = tmp_path / "project"
    project.mkdir()
    name = "c.txt"
    if setup == "empty":
        (project / name).write_text("  \n", encoding="utf-8")
    elif setup == "outside":
        (tmp_path / name).write_text("x", encoding="utf-8")
        name = "../c.txt"
    elif setup == "binary":
        (project / name).write_bytes(b"\xff\xfe\x00bad")
    check = _parse("rubric", {"criteria_file": name})
    assert isinstance(check, RubricCheck)
    with pytest.raises(UserInputError) as info:
        resolve_criteria(check, base_dir=project, root=project, file="cases/a.yaml", case_id="c1",
                         field="expect[0].rubric")
    assert words in str(info.value)
    assert "field expect[0].rubric.criteria_file" in str(info.value)


def test_check_override_wins_over_suite_judge_and_params_merge() -> None:
    settings = JudgeSettings(model="local/smollm2", params={"temperature": 0, "max_tokens": 64}, samples=1)
    plain = _parse("rubric", {"criteria": "x"})
    assert isinstance(plain, RubricCheck)
    judge = resolve_judge(settings, plain)
    assert (judge.model, judge.samples, judge.params) == ("local/smollm2", 1, {"temperature": 0, "max_tokens": 64})
    custom = _parse("rubric", {"criteria": "x", "samples": 5,
                               "judge": {"model": "openai/gpt-4o-mini", "api_key_env": "JUDGE_KEY",
                                         "params": {"temperature": 0.8}}})
    assert isinstance(custom, RubricCheck)
    judge = resolve_judge(settings, custom)
    assert judge.model == "openai/gpt-4o-mini" and judge.api_key_env == "JUDGE_KEY"
    assert judge.samples == 5
    assert judge.params == {"temperature": 0.8, "max_tokens": 64}


def test_judge_settings_defaults_are_the_careful_ones() -> None:
    settings = JudgeSettings(model="local/smollm2")
    assert settings.params == {"temperature": 0, "max_tokens": 256}
    assert settings.uncalibrated == "fail_only"
    policy = settings.policy()
    assert (policy.min_youden, policy.uncalibrated) == (0.5, "fail_only")
    settings.params["x"] = 1
    assert JudgeSettings(model="m").params == {"temperature": 0, "max_tokens": 256}  # no shared default


def test_sampling_at_temperature_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="samples: 3 at temperature 0 asks the same judge the same question"):
        JudgeSettings(model="m", samples=3)
    settings = JudgeSettings(model="m", samples=3, params={"temperature": 0.7})
    assert settings.samples == 3
    check = _parse("rubric", {"criteria": "x", "samples": 5})
    assert isinstance(check, RubricCheck)
    with pytest.raises(UserInputError) as info:
        resolve_judge(JudgeSettings(model="m"), check, file="cases/a.yaml", case_id="c1", field="expect[0].rubric")
    assert "field expect[0].rubric.samples: samples: 5 at temperature 0" in str(info.value)
    with pytest.raises(ValueError, match="extra"):
        JudgeSettings.model_validate({"model": "x", "calibraton": "c.yaml"})
