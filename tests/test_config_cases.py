"""Loading user files: valid projects load; every mistake is one clear line naming where."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from evalrun.api import load_project
from evalrun.errors import UserInputError
from projectkit import case, variant, write_project


def test_valid_project_loads_sorted_cases(tmp_path: Path) -> None:
    b, c = write_project(tmp_path, cases=[case("zeta"), case("alpha", kind="known_bad"), case("mid", kind="format_sensitive", expect=["json"])])
    project = load_project(b, c)
    assert [x.id for x in project.cases] == ["alpha", "mid", "zeta"]
    # known_bad without an explicit refusal check gets an implicit one
    assert project.cases[0].compiled.should_refuse is True


def test_shipped_example_validates() -> None:
    root = Path(__file__).resolve().parents[1]
    project = load_project(root / "evals/baseline.yaml", root / "evals/candidate.yaml")
    kinds = {c.kind for c in project.cases}
    assert kinds == {"representative", "known_bad", "format_sensitive"}
    assert len(project.cases) >= 30
    assert len({c.cohort for c in project.cases}) >= 3


def _err(tmp_path: Path, **kw: object) -> UserInputError:
    b, c = write_project(tmp_path, **kw)  # type: ignore[arg-type]
    with pytest.raises(UserInputError) as info:
        load_project(b, c)
    return info.value


def test_missing_version_label_names_field(tmp_path: Path) -> None:
    v = variant("candidate")
    del v["versions"]["policy_version"]
    err = _err(tmp_path, candidate=v)
    assert err.field == "versions.policy_version"
    assert "candidate.yaml" in str(err) and "required" in str(err)


def test_unknown_key_in_variant(tmp_path: Path) -> None:
    err = _err(tmp_path, baseline=variant("baseline", temprature=0.2))
    assert err.field == "temprature" and "unknown key" in str(err)


def test_wrong_type(tmp_path: Path) -> None:
    err = _err(tmp_path, baseline=variant("baseline", params={"max_tokens": "many"}))
    assert err.field == "params.max_tokens"


def test_api_key_literal_is_refused(tmp_path: Path) -> None:
    err = _err(tmp_path, baseline=variant("baseline", api_key_env="sk-live-123 456"))
    assert err.field == "api_key_env"


def test_suite_mismatch_is_clear(tmp_path: Path) -> None:
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "other.yaml").write_text(yaml.safe_dump({"cases": ["../cases"]}))
    err = _err(tmp_path, candidate=variant("candidate", suite="other.yaml"))
    assert "same suite" in str(err)


def test_duplicate_case_id(tmp_path: Path) -> None:
    err = _err(tmp_path, cases=[case("dup"), case("dup")])
    assert err.case_id == "dup" and err.field == "id"


def test_bad_kind_names_case(tmp_path: Path) -> None:
    err = _err(tmp_path, cases=[case("x1", kind="sometimes")])
    assert err.case_id == "x1" and err.field == "kind"


def test_missing_template_variable_names_case_and_variable(tmp_path: Path) -> None:
    err = _err(tmp_path, cases=[{"id": "novars", "kind": "representative", "cohort": "c"}])
    assert err.case_id == "novars"
    assert "question" in str(err)


def test_template_syntax_error(tmp_path: Path) -> None:
    err = _err(tmp_path, baseline=variant("baseline", prompt={"user": "{{ question "}))
    assert err.field == "prompt.user" and "syntax" in str(err)


def test_case_value_with_template_syntax_is_data(tmp_path: Path) -> None:
    b, c = write_project(tmp_path, cases=[case("t1", vars={"question": "{{ 7*7 }} {% if true %}x{% endif %}"})])
    project = load_project(b, c)
    msgs = project.renderers["baseline"].render(project.cases[0])
    assert msgs[-1]["content"] == "{{ 7*7 }} {% if true %}x{% endif %}"


def test_invalid_regex_named(tmp_path: Path) -> None:
    err = _err(tmp_path, cases=[case("r1", expect=[{"regex": {"pattern": "(unclosed"}}])])
    assert err.case_id == "r1" and err.field is not None and "regex" in err.field


def test_unknown_check(tmp_path: Path) -> None:
    err = _err(tmp_path, cases=[case("u1", expect=["jsn"])])
    assert err.case_id == "u1" and "jsn" in str(err)


def test_schema_file_missing(tmp_path: Path) -> None:
    err = _err(tmp_path, cases=[case("s1", expect=[{"json_schema": {"schema_file": "nope.json"}}])])
    assert err.case_id == "s1"


def test_path_outside_project_refused(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    err = _err(proj, baseline=variant("baseline", prompt={"system_file": "../../../../etc/passwd"}))
    assert "outside the project" in str(err)


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    b, c = write_project(tmp_path)
    b.write_text("name: [unclosed\n")
    with pytest.raises(UserInputError) as info:
        load_project(b, c)
    assert "line" in str(info.value) and "baseline.yaml" in str(info.value)


def test_non_utf8_case_file(tmp_path: Path) -> None:
    b, c = write_project(tmp_path)
    (tmp_path / "cases" / "cases.yaml").write_bytes(b"- id: x\n  cohort: \xff\xfe\n")
    with pytest.raises(UserInputError) as info:
        load_project(b, c)
    assert "UTF-8" in str(info.value)


def test_empty_suite(tmp_path: Path) -> None:
    err = _err(tmp_path, cases=[])
    assert "no cases" in str(err)


def test_jsonl_cases(tmp_path: Path) -> None:
    b, c = write_project(tmp_path)
    (tmp_path / "cases" / "more.jsonl").write_text(
        '{"id": "j1", "kind": "format_sensitive", "cohort": "x", "vars": {"question": "q"}, "expect": ["json"]}\n'
    )
    project = load_project(b, c)
    assert "j1" in {x.id for x in project.cases}


def test_full_message_list_case(tmp_path: Path) -> None:
    b, c = write_project(tmp_path, cases=[{"id": "m1", "kind": "representative", "cohort": "c",
                                           "messages": [{"role": "user", "content": "hi {{ not_a_var }}"},
                                                        {"role": "assistant", "content": "hello"},
                                                        {"role": "user", "content": "bye"}]}])
    project = load_project(b, c)
    msgs = project.renderers["candidate"].render(project.cases[0])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[1]["content"] == "hi {{ not_a_var }}"
