"""Loading user files: valid projects load; every mistake is one clear line naming where."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from evalrun.errors import UserInputError
from evalrun.project.loader import load_project
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
    # no case defines it: the fix is in the template or in every case, so the config is named
    assert err.file is not None and err.file.endswith("baseline.yaml") and err.field == "prompt.user"
    assert "'question' is undefined (rendering case novars)" in str(err)


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


# --- keys pasted into api_key_env (issue 16) ------------------------------------------------

PASTED_KEYS = [
    "gsk_8Xq2LmN4pR7sT1vW3yZ5aB6cD9eF0gH2jK4lM6nP8qR1sT3uV5wX7",  # Groq
    "hf_QwErTyUiOpAsDfGhJkLzXcVbNm0123456789",  # Hugging Face
    "ghp_16C7e42F292c6912E7710c838347Ae178B4a",  # GitHub
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEF",
    "AKIAIOSFODNN7EXAMPLE",  # AWS access key id
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",  # Stripe
    "sk-proj-EvalrunFakeLiteral0123456789abcdef",  # OpenAI (not even a name)
    "a8f5f167f44f4964e6c998dee827110c",  # 32 hex characters
    "Zx9vQ2mL7pR4tY8wK3nB6hJ1",  # high-entropy mixed case
]


@pytest.mark.parametrize("key", PASTED_KEYS, ids=lambda k: k[:6])
@pytest.mark.parametrize("where", ["variant", "router"])
def test_a_key_pasted_into_api_key_env_is_refused_and_never_echoed(tmp_path: Path, key: str, where: str) -> None:
    if where == "variant":
        baseline = variant("baseline", api_key_env=key)
        field = "api_key_env"
    else:
        baseline = variant("baseline", router={"deployments": [{"model": "openai/x", "api_key_env": key}]})
        field = "router.deployments.0.api_key_env"
    err = _err(tmp_path, baseline=baseline)
    assert err.field == field
    assert key not in str(err) and key[:12] not in str(err)
    assert "NAME" in str(err)


@pytest.mark.parametrize(
    "name",
    ["OPENAI_API_KEY", "GROQ_API_KEY", "HF_TOKEN", "hf_token", "gsk_key", "AZURE_OPENAI_API_KEY_EASTUS2",
     "KEY_FOR_MODEL_GPT4O20240806", "MYCOMPANYINTERNALGATEWAYKEY2024", "MyCompanyInternalGatewayKey",
     "ANTHROPIC_API_KEY_TEAM_PLATFORM_PROD_2024", "EVALRUN_FAULTS_TEST_KEY"],
)
def test_ordinary_variable_names_are_accepted(tmp_path: Path, name: str) -> None:
    b, c = write_project(tmp_path, baseline=variant("baseline", api_key_env=name))
    assert load_project(b, c).variant("baseline").config.api_key_env == name


# --- case files: patterns and folders stay inside the project (issue 16) --------------------


def _suite_err(tmp_path: Path, cases: list[str]) -> UserInputError:
    b, c = write_project(tmp_path / "p", suite={"cases": cases})
    with pytest.raises(UserInputError) as info:
        load_project(b, c)
    return info.value


@pytest.mark.parametrize("pattern", ["/**", "/**/*.yaml", "../../../../../**", "../../*/cases/*.yaml", "/etc/*"])
def test_a_pattern_outside_the_project_is_refused_before_any_walk(
    tmp_path: Path, pattern: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    listed: list[str] = []
    real_scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p=".": listed.append(str(p)) or real_scandir(p))
    err = _suite_err(tmp_path, [pattern])
    assert err.field == "cases[0]" and "outside the project" in err.detail
    assert listed == [], f"walked {listed[:3]} before refusing"


def test_dotdot_after_a_wildcard_is_refused(tmp_path: Path) -> None:
    err = _suite_err(tmp_path, ["../cases/*/../../../*.yaml"])
    assert "'..' after a wildcard" in err.detail


def _linked_project(tmp_path: Path) -> tuple[Path, Path, Path]:
    b, c = write_project(tmp_path / "p", cases=[case("inside")], suite={"cases": ["../cases/**/*.yaml"]})
    cases = tmp_path / "p" / "cases"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "more.yaml").write_text(yaml.safe_dump([case("from-outside")]), encoding="utf-8")
    (cases / "out").symlink_to(outside, target_is_directory=True)
    # Loops: a link to the project, to the folder itself, and two folders pointing at each other.
    (cases / "up").symlink_to(tmp_path / "p", target_is_directory=True)
    (cases / "self").symlink_to(cases, target_is_directory=True)
    (cases / "a").mkdir()
    (cases / "b").mkdir()
    (cases / "a" / "to-b").symlink_to(cases / "b", target_is_directory=True)
    (cases / "b" / "to-a").symlink_to(cases / "a", target_is_directory=True)
    return b, c, outside


@pytest.mark.parametrize("entry", ["../cases/**/*.yaml", "../cases/**", "../cases", "../**/cases.yaml"])
def test_walks_never_follow_links_to_folders(tmp_path: Path, entry: str) -> None:
    """Symlink loops under ** ran for minutes; links out of the project were walked."""
    b, c, _ = _linked_project(tmp_path)
    suite = b.parent / "suite.yaml"
    suite.write_text(suite.read_text(encoding="utf-8").replace("../cases/**/*.yaml", entry), encoding="utf-8")
    project = load_project(b, c)
    assert [x.id for x in project.cases] == ["inside"]


def test_a_linked_case_file_inside_the_project_still_loads(tmp_path: Path) -> None:
    b, c = write_project(tmp_path / "p", cases=[case("one")], suite={"cases": ["../cases/*.yaml"]})
    shared = tmp_path / "p" / "shared"
    shared.mkdir()
    (shared / "two.yaml").write_text(yaml.safe_dump([case("two")]), encoding="utf-8")
    (tmp_path / "p" / "cases" / "two.yaml").symlink_to(shared / "two.yaml")
    assert [x.id for x in load_project(b, c).cases] == ["one", "two"]


def test_a_pattern_that_walks_too_much_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evalrun.project import pathglob

    monkeypatch.setattr(pathglob, "MAX_ENTRIES", 5)
    b, c = write_project(tmp_path / "p", suite={"cases": ["../cases/**/*.yaml"]})
    for i in range(10):
        (tmp_path / "p" / "cases" / f"d{i}").mkdir()
    with pytest.raises(UserInputError, match="walks more than 5 entries"):
        load_project(b, c)


def test_hidden_folders_are_skipped_like_glob_does(tmp_path: Path) -> None:
    b, c = write_project(tmp_path / "p", cases=[case("shown")], suite={"cases": ["../cases/**/*.yaml"]})
    hidden = tmp_path / "p" / "cases" / ".old"
    hidden.mkdir()
    (hidden / "stale.yaml").write_text(yaml.safe_dump([case("stale")]), encoding="utf-8")
    assert [x.id for x in load_project(b, c).cases] == ["shown"]


# --- long and multi-line ids in messages (issue 16) -----------------------------------------


def test_a_10000_character_case_id_is_clipped_in_the_message(tmp_path: Path) -> None:
    err = _err(tmp_path, cases=[case("x" * 10_000)])
    line = str(err)
    assert len(line) < 400, len(line)
    assert "…" in line and "field id" in line


def test_a_case_id_with_a_newline_stays_on_one_line(tmp_path: Path) -> None:
    err = _err(tmp_path, cases=[case("two\nlines")])
    assert "\n" not in str(err) and "two\\nlines" in str(err)
