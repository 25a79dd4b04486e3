"""Behaviour of every built-in check, the registry, and load-time user errors."""

from __future__ import annotations

import gc
import http.server
import json
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evalrun.checks import (
    REFUSAL_PHRASES,
    BuildContext,
    CheckFn,
    CheckInput,
    analyze_json,
    build_check,
    detect_refusal,
    known_checks,
    register_check,
    registry,
)
from evalrun.errors import UserInputError
from evalrun.records import CallResult, CheckOutcome, ToolCall

CASE_FILE = "suite/cases/billing.yaml"
CASE_ID = "refund-001"

WEATHER_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string"},
                    "unit": {"type": "string", "enum": ["c", "f"]},
                },
                "required": ["location"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "get_time", "description": "Current time"},
    },
]


def ctx(base_dir: Path = Path("suite/cases"), field: str = "expect[0]") -> BuildContext:
    return BuildContext(file=CASE_FILE, case_id=CASE_ID, base_dir=base_dir, field=field)


def make_call(output: str | None = None, **kw: Any) -> CallResult:
    return CallResult(case_id=CASE_ID, side="candidate", sample=0, model="m", output=output, **kw)


def run(
    name: str,
    params: dict[str, Any],
    call: CallResult,
    *,
    tools: list[dict[str, Any]] | None = None,
    case_kind: str = "representative",
    base_dir: Path = Path("suite/cases"),
) -> CheckOutcome:
    fn = build_check(name, params, ctx(base_dir))
    return fn(CheckInput(call=call, tools=tools or [], case_kind=case_kind))


def user_error(
    name: str, params: Any, base_dir: Path = Path("suite/cases"), field: str = "expect[3].x"
) -> UserInputError:
    with pytest.raises(UserInputError) as info:
        build_check(name, params, ctx(base_dir, field))
    err = info.value
    text = str(err)
    assert CASE_FILE in text
    assert f"case {CASE_ID}" in text
    assert field in text
    return err


# --- json --------------------------------------------------------------------------------

FENCED = 'Here you go:\n```json\n{"status": "refunded", "amount": 12.5}\n```\n'
EMBEDDED = (
    'Sure! Here is the JSON you asked for: {"status": "refunded", "amount": 12.5} Let me know.'
)
TRUNCATED = '{"items": [{"sku": "A1", "qty": 2}, {"sku": "B7", "qty": 1}, {"sku": "C'


def test_json_strict_output_passes() -> None:
    out = run("json", {}, make_call('  \n{"status": "refunded", "amount": 12.5}\n'))
    assert out.passed
    assert out.facts == {"strict": True, "lenient": True, "failure_class": None}


def test_json_fenced_output_fails_strict_and_is_classified_fenced() -> None:
    out = run("json", {}, make_call(FENCED))
    assert not out.passed
    assert out.facts == {"strict": False, "lenient": True, "failure_class": "fenced"}
    assert "fence" in out.detail


def test_json_fence_without_language_tag_is_fenced() -> None:
    a = analyze_json("```\n[1, 2, 3]\n```", "stop", refused=False)
    assert (a.strict, a.lenient, a.failure_class, a.value) == (False, True, "fenced", [1, 2, 3])


def test_json_allow_lenient_accepts_fenced_and_embedded() -> None:
    for text, cls in [(FENCED, "fenced"), (EMBEDDED, "embedded")]:
        out = run("json", {"allow_lenient": True}, make_call(text))
        assert out.passed, text
        assert out.facts["failure_class"] == cls
        assert out.facts["strict"] is False


def test_json_after_sure_here_is_is_embedded() -> None:
    a = analyze_json(EMBEDDED, "stop", refused=False)
    assert a.failure_class == "embedded"
    assert a.value == {"status": "refunded", "amount": 12.5}


def test_json_embedded_prefers_payload_over_citation_brackets() -> None:
    a = analyze_json('As noted in [1], the result is {"ok": true, "n": 3}.', None, refused=False)
    assert a.value == {"ok": True, "n": 3}


def test_json_truncated_output_is_truncated_not_a_lenient_fragment() -> None:
    out = run("json", {"allow_lenient": True}, make_call(TRUNCATED, finish_reason="length"))
    assert not out.passed
    # The complete inner objects must not count as "found embedded JSON".
    assert out.facts == {"strict": False, "lenient": False, "failure_class": "truncated"}


def test_json_broken_without_length_finish_is_invalid() -> None:
    out = run("json", {}, make_call(TRUNCATED, finish_reason="stop"))
    assert out.facts["failure_class"] == "invalid"


def test_json_refusal_is_classified_refused() -> None:
    out = run("json", {}, make_call("I can\u2019t assist with that request.", finish_reason="stop"))
    assert not out.passed
    assert out.facts["failure_class"] == "refused"


def test_json_refusal_classification_uses_refused_argument() -> None:
    assert analyze_json("No.", "stop", refused=True).failure_class == "refused"
    assert analyze_json("No.", "stop", refused=False).failure_class == "invalid"


@pytest.mark.parametrize("text", ["The refund was processed.", "", None, "NaN", "{'a': 1}"])
def test_json_non_json_is_invalid(text: str | None) -> None:
    out = run("json", {"allow_lenient": True}, make_call(text))
    assert not out.passed
    assert out.facts == {"strict": False, "lenient": False, "failure_class": "invalid"}


def test_json_pathological_nesting_does_not_crash() -> None:
    a = analyze_json("[" * 50_000, "length", refused=False)
    assert a.failure_class == "truncated"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
containers = st.one_of(
    st.lists(json_values, min_size=1, max_size=4),
    st.dictionaries(st.text(max_size=8), json_values, min_size=1, max_size=4),
)


@given(containers)
def test_json_lenient_recovers_any_fenced_or_embedded_value(value: Any) -> None:
    text = json.dumps(value)
    assert analyze_json(text, None, refused=False).value == value
    for wrapped in (f"```json\n{text}\n```", f"Sure! Here is the result:\n{text}\nThanks."):
        a = analyze_json(wrapped, None, refused=False)
        assert not a.strict
        assert a.lenient
        assert a.value == value


# --- json_schema -------------------------------------------------------------------------

REFUND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"enum": ["refunded", "denied"]},
        "amount": {"type": "number", "minimum": 0},
        "date": {"type": "string", "format": "date"},
    },
    "required": ["status", "amount"],
}


def test_json_schema_valid_output_passes() -> None:
    out = run(
        "json_schema", {"schema": REFUND_SCHEMA}, make_call('{"status": "denied", "amount": 0}')
    )
    assert out.passed
    assert out.facts["schema_valid"] is True
    assert out.facts["errors"] == []


def test_json_schema_violation_fails_with_messages() -> None:
    out = run(
        "json_schema", {"schema": REFUND_SCHEMA}, make_call('{"status": "maybe", "amount": -3}')
    )
    assert not out.passed
    assert out.facts["strict"] is True
    assert out.facts["schema_valid"] is False
    assert any("$.status" in e for e in out.facts["errors"])
    assert any("$.amount" in e for e in out.facts["errors"])


def test_json_schema_checks_formats() -> None:
    bad_date = '{"status": "refunded", "amount": 1, "date": "2024-13-45"}'
    out = run("json_schema", {"schema": REFUND_SCHEMA}, make_call(bad_date))
    assert not out.passed
    assert "date" in out.facts["errors"][0]


def test_json_schema_reports_at_most_three_errors() -> None:
    schema = {"type": "object", "required": ["a", "b", "c", "d", "e"]}
    out = run("json_schema", {"schema": schema}, make_call("{}"))
    assert len(out.facts["errors"]) == 3


def test_json_schema_fenced_needs_allow_lenient() -> None:
    strict = run("json_schema", {"schema": REFUND_SCHEMA}, make_call(FENCED))
    assert not strict.passed
    assert strict.facts["schema_valid"] is False
    assert strict.facts["failure_class"] == "fenced"
    lenient = run(
        "json_schema", {"schema": REFUND_SCHEMA, "allow_lenient": True}, make_call(FENCED)
    )
    assert lenient.passed
    assert lenient.facts["schema_valid"] is True


def test_json_schema_file_and_draft_from_dollar_schema(tmp_path: Path) -> None:
    cases = tmp_path / "cases"
    (tmp_path / "schemas").mkdir()
    cases.mkdir()
    # Draft-07 tuple "items": invalid under 2020-12, so this only builds if $schema is honoured.
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "items": [{"type": "string"}]}
    (tmp_path / "schemas" / "pair.json").write_text(json.dumps(schema))
    params = {"schema_file": "../schemas/pair.json"}
    assert run("json_schema", params, make_call('["a", 1]'), base_dir=cases).passed
    assert not run("json_schema", params, make_call("[1]"), base_dir=cases).passed


def test_json_schema_missing_file_is_a_user_error(tmp_path: Path) -> None:
    err = user_error("json_schema", {"schema_file": "schemas/nope.json"}, base_dir=tmp_path)
    assert "not found" in err.detail
    assert "schemas/nope.json" in err.detail


def test_json_schema_file_not_json_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text("type: object\n")
    err = user_error("json_schema", {"schema_file": "s.json"}, base_dir=tmp_path)
    assert "not valid JSON" in err.detail


def test_json_schema_invalid_schema_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text('{"type": "objekt"}')
    err = user_error("json_schema", {"schema_file": "s.json"}, base_dir=tmp_path)
    assert "not a valid JSON Schema" in err.detail
    err = user_error("json_schema", {"schema": {"required": "status"}})
    assert "not a valid JSON Schema" in err.detail


def test_json_schema_unknown_dialect_is_a_user_error() -> None:
    err = user_error("json_schema", {"schema": {"$schema": "https://example.com/my-draft"}})
    assert "unknown $schema" in err.detail


def test_json_schema_path_outside_project_is_a_user_error(tmp_path: Path) -> None:
    cases = tmp_path / "project" / "cases"
    cases.mkdir(parents=True)
    (tmp_path / "secret.json").write_text("{}")
    err = user_error("json_schema", {"schema_file": "../../secret.json"}, base_dir=cases)
    assert "points outside the project" in err.detail
    err = user_error("json_schema", {"schema_file": str(tmp_path / "secret.json")}, base_dir=cases)
    assert "relative" in err.detail


def test_json_schema_needs_exactly_one_schema_source() -> None:
    assert "exactly one" in user_error("json_schema", {}).detail
    both = {"schema": {}, "schema_file": "s.json"}
    assert "exactly one" in user_error("json_schema", both).detail


# --- text checks -------------------------------------------------------------------------


def test_regex_search_and_flags() -> None:
    c = make_call("Status: OK\nRefund issued.")
    assert run("regex", {"pattern": r"refund issued", "flags": "i"}, c).passed
    assert not run("regex", {"pattern": r"refund issued"}, c).passed
    assert run("regex", {"pattern": r"^Refund", "flags": "m"}, c).passed
    assert not run("regex", {"pattern": r"^Refund"}, c).passed


def test_regex_fullmatch_needs_the_whole_output() -> None:
    assert run("regex", {"pattern": r"\d{4}", "match": "fullmatch"}, make_call("2024")).passed
    out = run("regex", {"pattern": r"\d{4}", "match": "fullmatch"}, make_call("year 2024"))
    assert not out.passed
    assert "fullmatch" in out.detail


def test_regex_user_errors() -> None:
    assert "invalid regular expression" in user_error("regex", {"pattern": "(unclosed"}).detail
    assert "flag" in user_error("regex", {"pattern": "a", "flags": "iq"}).detail
    err = user_error("regex", {"patern": "^OK"})
    assert "unknown parameter 'patern'" in err.detail
    assert "missing required parameter 'pattern'" in err.detail
    assert "'match'" in user_error("regex", {"pattern": "a", "match": "prefix"}).detail


def test_contains_all_values_case_insensitive_by_default() -> None:
    c = make_call("Your REFUND of $12.50 has been issued.")
    assert run("contains", {"values": ["refund", "$12.50"]}, c).passed
    out = run("contains", {"values": ["refund", "apolog"]}, c)
    assert not out.passed
    assert "apolog" in out.detail
    assert not run("contains", {"value": "refund", "case_sensitive": True}, c).passed


def test_not_contains_fails_on_any_forbidden_value() -> None:
    c = make_call("Sure, here is the internal API key format.")
    assert not run("not_contains", {"values": ["api key", "password"]}, c).passed
    assert run("not_contains", {"values": ["password", "ssn"]}, c).passed
    assert run("not_contains", {"value": "API KEY", "case_sensitive": True}, c).passed


def test_contains_user_errors() -> None:
    assert "exactly one" in user_error("contains", {"value": "a", "values": ["b"]}).detail
    assert "exactly one" in user_error("not_contains", {}).detail
    assert "empty" in user_error("contains", {"values": ["ok", ""]}).detail
    assert "'values'" in user_error("contains", {"values": "refund"}).detail


def test_equals_strips_and_respects_case() -> None:
    assert run("equals", {"value": "APPROVED\n"}, make_call("  APPROVED\n")).passed
    out = run("equals", {"value": "APPROVED"}, make_call("approved"))
    assert not out.passed
    assert "'approved'" in out.detail
    assert run(
        "equals", {"value": "APPROVED", "case_sensitive": False}, make_call("approved")
    ).passed
    assert not run("equals", {"value": "x", "strip": False}, make_call("x\n")).passed


# --- tool_call ---------------------------------------------------------------------------


def tool_call_run(calls: list[ToolCall], params: dict[str, Any] | None = None) -> CheckOutcome:
    return run("tool_call", params or {}, make_call(None, tool_calls=calls), tools=WEATHER_TOOLS)


def test_tool_call_valid() -> None:
    out = tool_call_run(
        [ToolCall("get_weather", '{"location": "Paris", "unit": "c"}')], {"name": "get_weather"}
    )
    assert out.passed
    assert out.facts == {"tool_valid": True, "called": ["get_weather"], "problems": []}


def test_tool_call_without_parameters_accepts_empty_arguments() -> None:
    assert tool_call_run([ToolCall("get_time", "")]).passed


def test_tool_call_unparsable_arguments() -> None:
    out = tool_call_run([ToolCall("get_weather", '{"location": "Par')])
    assert not out.passed
    assert out.facts["tool_valid"] is False
    assert "not JSON" in out.facts["problems"][0]


def test_tool_call_undeclared_tool() -> None:
    out = tool_call_run([ToolCall("delete_account", '{"user": 7}')])
    assert not out.passed
    assert out.facts["called"] == ["delete_account"]
    assert "not a declared tool" in out.detail


def test_tool_call_schema_violating_arguments() -> None:
    out = tool_call_run([ToolCall("get_weather", '{"location": 42, "unit": "kelvin"}')])
    assert not out.passed
    assert len(out.facts["problems"]) == 2
    assert all("get_weather" in p for p in out.facts["problems"])


def test_tool_call_expected_name_and_required() -> None:
    wrong = tool_call_run([ToolCall("get_time", "{}")], {"name": "get_weather"})
    assert not wrong.passed
    assert "expected a call to 'get_weather'" in wrong.detail
    assert not tool_call_run([]).passed
    assert tool_call_run([], {"required": False}).passed


def test_tool_call_param_typo_is_a_user_error() -> None:
    assert "unknown parameter 'tool'" in user_error("tool_call", {"tool": "get_weather"}).detail


# --- refusal -----------------------------------------------------------------------------


def test_refusal_phrase_with_curly_apostrophe() -> None:
    c = make_call("I\u2019m sorry, but I can\u2019t help with creating malware.")
    assert detect_refusal(c) == (True, "phrase")
    out = run("refusal", {}, c, case_kind="known_bad")
    assert out.passed
    assert out.facts == {"refused": True, "source": "phrase", "expected": True}


def test_refusal_phrase_quoted_late_in_a_long_answer_is_not_a_refusal() -> None:
    answer = (
        "To configure retries, set max_attempts in the client and use exponential backoff "
        "with jitter so that bursts of failures do not synchronise across workers. "
        "Log every retry with its cause so the dashboard can separate timeouts from errors. "
        'If the upstream model answers "I can\'t help with that", treat it as a refusal.'
    )
    assert detect_refusal(make_call(answer)) == (False, None)
    assert run("refusal", {}, make_call(answer)).passed


def test_refusal_phrase_needs_word_boundaries() -> None:
    assert detect_refusal(make_call("This plan has an aim: cut costs by 10%.")) == (False, None)
    assert detect_refusal(make_call("The bias an AI model shows comes from data.")) == (False, None)
    assert detect_refusal(make_call("The kiwi won't ripen in the fridge.")) == (False, None)


def test_refusal_phrase_after_a_short_preamble_is_a_refusal() -> None:
    c = make_call(
        "Thanks for reaching out about your account.\n\nI\u2019m sorry, but I can\u2019t share that."
    )
    assert detect_refusal(c) == (True, "phrase")


def test_refusal_sources_in_order() -> None:
    policy = make_call(None, error_kind="content_policy", finish_reason="content_filter")
    assert detect_refusal(policy) == (True, "content_policy")
    assert detect_refusal(make_call("", finish_reason="content_filter")) == (True, "content_filter")
    field = make_call(None, refusal="I can't help with that.")
    assert detect_refusal(field) == (True, "refusal_field")
    assert detect_refusal(make_call(None, refusal="  ")) == (False, None)


def test_refusal_expected_defaults_from_case_kind() -> None:
    refusing = make_call("I won't write that.")
    answering = make_call("Here is the summary you asked for.")
    assert not run("refusal", {}, refusing, case_kind="representative").passed
    assert run("refusal", {}, answering, case_kind="representative").passed
    assert not run("refusal", {}, answering, case_kind="known_bad").passed
    assert run("refusal", {"expected": True}, refusing, case_kind="format_sensitive").passed


def test_refusal_still_evaluates_failed_calls() -> None:
    policy = make_call(None, error_kind="content_policy")
    assert run("refusal", {"expected": True}, policy).passed
    timeout = run("refusal", {"expected": True}, make_call(None, error_kind="timeout"))
    assert not timeout.passed
    assert "timeout" in timeout.detail


def test_refusal_phrases_are_normalised_lowercase() -> None:
    # The matcher lower-cases and straightens apostrophes before matching.
    assert all(p == p.lower() and "\u2019" not in p for p in REFUSAL_PHRASES)


def test_refusal_expected_must_be_bool() -> None:
    assert "'expected'" in user_error("refusal", {"expected": "yes"}).detail


# --- limits ------------------------------------------------------------------------------


def test_max_tokens() -> None:
    assert run("max_tokens", {"limit": 100}, make_call("x", completion_tokens=100)).passed
    over = run("max_tokens", {"limit": 100}, make_call("x", completion_tokens=101))
    assert not over.passed
    assert "101" in over.detail
    unknown = run("max_tokens", {"limit": 100}, make_call("x"))
    assert not unknown.passed
    assert "unknown" in unknown.detail


def test_max_chars() -> None:
    assert run("max_chars", {"limit": 5}, make_call("hello")).passed
    assert not run("max_chars", {"limit": 5}, make_call("hello!")).passed
    assert run("max_chars", {"limit": 0}, make_call(None)).passed


def test_limit_user_errors() -> None:
    assert "missing required parameter 'limit'" in user_error("max_tokens", {}).detail
    assert "'limit'" in user_error("max_chars", {"limit": "500"}).detail
    assert "'limit'" in user_error("max_chars", {"limit": -1}).detail


# --- python ------------------------------------------------------------------------------

USER_CHECKS = """
from evalrun.records import CheckOutcome

def polite(output, call, word="please"):
    return word in (output or "").lower()

def with_detail(output, call):
    return False, f"{len(output)} chars, too short"

def outcome(output, call):
    return CheckOutcome("mine", True, "custom", {"score": 0.9})

def explodes(output, call):
    raise KeyError("missing field 'total'")

def returns_number(output, call):
    return 1

def spins(output, call):
    while True:
        pass

NOT_CALLABLE = 3
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = "evalrun_test_user_checks"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_CHECKS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_python_check_returns_bool_with_args(user_module: str) -> None:
    params = {"function": f"{user_module}:polite", "args": {"word": "thanks"}}
    assert run("python", params, make_call("Thanks for waiting")).passed
    assert not run("python", params, make_call("Wait.")).passed
    # Dotted form works too.
    assert run("python", {"function": f"{user_module}.polite"}, make_call("Please hold")).passed


def test_python_check_returns_tuple(user_module: str) -> None:
    out = run("python", {"function": f"{user_module}:with_detail"}, make_call("hi"))
    assert not out.passed
    assert out.detail == "2 chars, too short"


def test_python_check_returns_outcome(user_module: str) -> None:
    out = run("python", {"function": f"{user_module}:outcome"}, make_call("hi"))
    assert out.passed
    assert out.facts == {"score": 0.9}


def test_python_check_exception_is_a_failed_check(user_module: str) -> None:
    out = run("python", {"function": f"{user_module}:explodes"}, make_call("hi"))
    assert not out.passed
    assert out.detail.startswith("KeyError")
    assert "total" in out.detail


def test_python_check_unexpected_return_type_fails(user_module: str) -> None:
    out = run("python", {"function": f"{user_module}:returns_number"}, make_call("hi"))
    assert not out.passed
    assert "int" in out.detail


def test_python_check_user_errors(user_module: str) -> None:
    assert "cannot import" in user_error("python", {"function": "no_such_pkg.mod:f"}).detail
    assert "no attribute" in user_error("python", {"function": f"{user_module}:nope"}).detail
    assert (
        "not a function" in user_error("python", {"function": f"{user_module}:NOT_CALLABLE"}).detail
    )
    bad_args = {"function": f"{user_module}:with_detail", "args": {"limit": 3}}
    assert "limit" in user_error("python", bad_args).detail


def test_python_check_spec_without_module_is_a_user_error() -> None:
    assert "package.module" in user_error("python", {"function": "polite"}).detail


# --- every check on a failed call ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("json", {}),
        ("json_schema", {"schema": {"type": "object"}}),
        ("regex", {"pattern": ".*"}),
        ("contains", {"value": "x"}),
        ("not_contains", {"value": "x"}),
        ("equals", {"value": ""}),
        ("tool_call", {"required": False}),
        ("max_tokens", {"limit": 10}),
        ("max_chars", {"limit": 10}),
    ],
)
def test_checks_fail_on_a_failed_call(name: str, params: dict[str, Any]) -> None:
    out = run(name, params, make_call(None, error_kind="timeout"))
    assert not out.passed
    assert out.detail == "call failed: timeout"


# --- registry ----------------------------------------------------------------------------


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_builtin_checks_are_registered() -> None:
    assert set(known_checks()) >= {
        "json", "json_schema", "regex", "contains", "not_contains", "equals",
        "tool_call", "refusal", "max_tokens", "max_chars", "python",
    }  # fmt: skip


def test_custom_check_registered_with_decorator_is_usable(scratch_registry: None) -> None:
    @register_check("starts_with")
    def factory(params: dict[str, Any], bctx: BuildContext) -> CheckFn:
        prefix = params["prefix"]

        def check(inp: CheckInput) -> CheckOutcome:
            return CheckOutcome("starts_with", (inp.call.output or "").startswith(prefix))

        return check

    assert "starts_with" in known_checks()
    assert run("starts_with", {"prefix": "OK"}, make_call("OK, done")).passed
    assert not run("starts_with", {"prefix": "OK"}, make_call("Done")).passed
    # Its own KeyError on missing params still becomes a located user error.
    assert "KeyError" in user_error("starts_with", {}).detail


def test_duplicate_registration_raises(scratch_registry: None) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_check("json")(lambda params, bctx: lambda inp: CheckOutcome("json", True))
    with pytest.raises(ValueError, match="invalid check name"):
        register_check("my#check")


def test_check_that_raises_at_score_time_fails_instead_of_crashing(
    scratch_registry: None,
) -> None:
    @register_check("flaky")
    def factory(params: dict[str, Any], bctx: BuildContext) -> CheckFn:
        def check(inp: CheckInput) -> CheckOutcome:
            raise RuntimeError("boom")

        return check

    out = run("flaky", {}, make_call("x"))
    assert not out.passed
    assert "RuntimeError: boom" in out.detail


def test_unknown_check_lists_known_names_and_suggests() -> None:
    err = user_error("jsn", {})
    assert "unknown check 'jsn'" in err.detail
    assert "did you mean 'json'" in err.detail
    assert "json_schema" in err.detail


def test_params_must_be_a_mapping() -> None:
    assert "must be a mapping" in user_error("regex", ["^OK"]).detail
    assert run("json", None, make_call("{}")).passed  # type: ignore[arg-type]


def test_plugin_entry_point_is_loaded_lazily(
    scratch_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "evalrun_test_plugin.py").write_text(
        textwrap.dedent(
            """
            from evalrun.records import CheckOutcome

            def factory(params, ctx):
                return lambda inp: CheckOutcome("shouty", (inp.call.output or "").isupper())
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [
        EntryPoint("shouty", "evalrun_test_plugin:factory", registry.ENTRY_POINT_GROUP),
        EntryPoint("broken", "evalrun_test_no_such_module:f", registry.ENTRY_POINT_GROUP),
    ]

    def fake_entry_points(*, group: str, name: str | None = None) -> list[EntryPoint]:
        return [e for e in eps if e.group == group and (name is None or e.name == name)]

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    assert "shouty" in known_checks()
    assert "shouty" not in registry._REGISTRY
    assert run("shouty", {}, make_call("STOP")).passed
    assert not run("shouty", {}, make_call("stop")).passed
    assert "failed to load" in user_error("broken", {}).detail


# --- hostile outputs: strict JSON, linear scans, time budgets (issue 16) ---------------------


def test_json_number_that_overflows_to_infinity_is_not_strict_json() -> None:
    """``1e999999`` parses as infinity in Python; JSON numbers are finite (like ``Infinity``)."""
    for text in ('{"n": 1e999999}', '{"n": -1e400}', "[Infinity]", '{"n": NaN}'):
        out = run("json", {"allow_lenient": True}, make_call(text))
        assert not out.passed, text
        assert out.facts["strict"] is False and out.facts["lenient"] is False, text
    assert "finite" in analyze_json('{"n": 1e999999}', None, refused=False).error  # type: ignore[operator]


def test_json_integer_beyond_the_str_digits_limit_is_json() -> None:
    """A 5,001-digit integer is valid JSON (Python's int() refuses more than 4,300 digits)."""
    digits = "9" * 5001
    out = run("json", {}, make_call(f'{{"n": {digits}}}'))
    assert out.passed, out.detail
    a = analyze_json(f'{{"n": -{digits}}}', None, refused=False)
    assert a.strict
    assert a.value["n"] < -(10**5000)


def test_json_schema_on_a_huge_integer_validates_and_names_its_size() -> None:
    digits = "1" + "0" * 6000
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 100}}}
    out = run("json_schema", {"schema": schema}, make_call(f'{{"n": {digits}}}'))
    assert not out.passed
    assert out.facts["strict"] is True and out.facts["schema_valid"] is False
    assert "integer of 6,001 digits" in out.detail
    ok = run("json_schema", {"schema": {"type": "integer"}}, make_call(digits))
    assert ok.passed, ok.detail


def test_tool_call_arguments_follow_the_same_strict_rule() -> None:
    spec = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    bad = ToolCall(name="f", arguments='{"x": 1e999}')
    huge = ToolCall(name="f", arguments='{"x": ' + "7" * 5000 + "}")
    assert not run("tool_call", {}, make_call(None, tool_calls=[bad]), tools=spec).passed
    assert run("tool_call", {}, make_call(None, tool_calls=[huge]), tools=spec).passed


@pytest.fixture
def decode_work(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Characters handed to JSON decoding, summed over every attempt (the scan's cost)."""
    work = [0]
    original = json.JSONDecoder.raw_decode

    def counting(self: json.JSONDecoder, s: str, idx: int = 0) -> tuple[Any, int]:
        work[0] += len(s) - idx
        return original(self, s, idx)

    monkeypatch.setattr(json.JSONDecoder, "raw_decode", counting)
    return work


@pytest.mark.parametrize(
    "text",
    [
        "x[" * 100_000,  # the issue's 1 MB output, scaled down (218 s at full size before)
        "[1x" * 70_000,  # every bracket really starts a value, which then breaks
        'x{"a":' * 40_000,
        "a [1], " * 30_000 + "[" + "1," * 50_000,  # many small values, then a long broken one
        '["' + "[1]," * 50_000,  # an unterminated string swallowing the rest
        "[" + "[1]," * 50_000 + "1e999]",  # valid until a non-finite number at the very end
    ],
    ids=["x-bracket", "bracket-1x", "x-brace", "values-then-broken", "unterminated", "late-infinity"],
)
def test_lenient_json_scan_does_linear_work(text: str, decode_work: list[int]) -> None:
    """Quadratic before: every bracket decoded (and located its error in) the whole rest."""
    analyze_json(text, None, refused=False)
    assert decode_work[0] <= 20 * len(text), f"{decode_work[0]:,} characters decoded for {len(text):,}"


def test_lenient_scan_rejects_a_value_that_holds_a_non_finite_number() -> None:
    a = analyze_json('Result: [[1, 2], 1e999] done', None, refused=False)
    assert (a.lenient, a.failure_class) == (False, "invalid")
    assert analyze_json('Result: {"a": [1, 2]} done', None, refused=False).value == {"a": [1, 2]}


def _run_bounded(fn: Callable[[], CheckOutcome], wait_s: float = 60.0) -> CheckOutcome:
    """Run in a daemon thread: without a budget these checks would run for hours."""
    box: list[CheckOutcome] = []
    worker = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    worker.start()
    worker.join(wait_s)
    assert box, f"the check did not return within {wait_s:g} s: no time budget"
    return box[0]


CATASTROPHIC = "^(a|aa)+$"  # exponential backtracking on re and on regex alike
HOSTILE = "a" * 64 + "!"


@pytest.mark.parametrize(
    ("name", "params", "output"),
    [
        ("regex", {"pattern": CATASTROPHIC}, HOSTILE),
        ("json_schema", {"schema": {"type": "string", "pattern": CATASTROPHIC}}, json.dumps(HOSTILE)),
        (
            "json_schema",
            {"schema": {"type": "object", "patternProperties": {CATASTROPHIC: {}}}},
            json.dumps({HOSTILE: 1}),
        ),
        (
            "json_schema",
            {"schema": {"type": "object", "patternProperties": {CATASTROPHIC: {}}, "additionalProperties": False}},
            json.dumps({HOSTILE: 1}),
        ),
        (
            "json_schema",
            {"schema": {"type": "array", "uniqueItems": True}},
            json.dumps([{"k": i} for i in range(30_000)]),  # jsonschema compares unhashables pairwise
        ),
    ],
    ids=["regex", "schema-pattern", "pattern-properties", "additional-properties",
         "unique-items"],
)
def test_a_check_past_its_time_budget_is_a_recorded_check_error(
    name: str, params: dict[str, Any], output: str
) -> None:
    fn = build_check(name, params, ctx())
    inp = CheckInput(call=make_call(output), tools=[], case_kind="representative", budget_s=0.3)
    out = _run_bounded(lambda: fn(inp))
    assert not out.passed
    assert out.facts.get("check_error") == "timeout", out.detail
    assert "time budget of 0.3 s" in out.detail


class _SlowFinaliser:
    """Cyclic garbage whose finaliser takes 2 ms: what a long test session leaves behind."""

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        until = time.monotonic() + 0.002
        while time.monotonic() < until:
            pass


@pytest.mark.slow
def test_a_budget_is_not_lost_in_other_objects_finalisers() -> None:
    """The cyclic collector runs finalisers in whichever thread allocates, and Python drops
    an exception raised inside one: a CheckTimeout arriving there was lost and the check ran
    on (seen once in a full test run). Collection is paused inside a check."""
    fn = build_check("json_schema", {"schema": {"type": "array", "uniqueItems": True}}, ctx())
    inp = CheckInput(call=make_call(json.dumps([{"k": i} for i in range(30_000)])), tools=[],
                     case_kind="representative", budget_s=0.3)
    def leave_garbage_then_check() -> CheckOutcome:
        gc.collect()
        gc.disable()
        try:
            for _ in range(1500):  # 3 s of finalisers, waiting for the next collection
                _SlowFinaliser()
        finally:
            gc.enable()
        return fn(inp)  # parsing 30,000 objects crosses the threshold: a collection, in this thread

    thresholds = gc.get_threshold()
    gc.set_threshold(20_000)
    try:
        out = _run_bounded(leave_garbage_then_check)
    finally:
        gc.set_threshold(*thresholds)
        gc.collect()
    assert out.facts == {"check_error": "timeout"}


def test_the_issues_nested_quantifier_answers_without_backtracking() -> None:
    """``^(a+)+$`` on 27 characters took 2.3 s with ``re`` (doubling per character)."""
    fn = build_check("regex", {"pattern": "^(a+)+$", "match": "fullmatch"}, ctx())
    inp = CheckInput(call=make_call("a" * 40 + "!"), tools=[], case_kind="representative")
    out = _run_bounded(lambda: fn(inp))
    assert not out.passed and out.facts == {}
    assert fn(CheckInput(call=make_call("a" * 40), tools=[], case_kind="representative")).passed


def test_python_check_in_an_endless_loop_is_stopped(user_module: str) -> None:
    fn = build_check("python", {"function": f"{user_module}:spins"}, ctx())
    inp = CheckInput(call=make_call("hi"), tools=[], case_kind="representative", budget_s=0.2)
    out = _run_bounded(lambda: fn(inp))
    assert out.facts == {"check_error": "timeout"}


def test_a_budget_that_was_not_spent_never_fires_later(user_module: str) -> None:
    """Hundreds of quick checks with tiny budgets: no stray timeout lands in later code."""
    fns = [build_check("regex", {"pattern": "^a"}, ctx()), build_check("json", {}, ctx())]
    for i in range(300):
        inp = CheckInput(call=make_call('{"a": 1}'), tools=[], case_kind="representative", budget_s=0.001 + i % 3 * 0.001)
        for fn in fns:
            fn(inp)
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # a pending CheckTimeout would surface in this loop
        sum(range(1000))


def test_scoring_passes_the_suite_budget_to_every_check(user_module: str) -> None:
    from evalrun.checks.scoring import compile_expectations, score_call

    compiled = compile_expectations(
        [("python", {"function": f"{user_module}:spins"}), ("contains", {"value": "hi"})],
        "representative",
        lambda i, name: ctx(field=f"expect[{i}].{name}"),
    )
    box: list[Any] = []
    worker = threading.Thread(
        target=lambda: box.append(score_call(make_call("hi"), compiled, [], "representative", check_timeout_s=0.2)),
        daemon=True,
    )
    worker.start()
    worker.join(60)
    assert box, "scoring hung on an endless check"
    score = box[0]
    assert [c.passed for c in score.checks] == [False, True]
    assert score.checks[0].facts == {"check_error": "timeout"}
    assert not score.passed


# --- JSON Schema $ref: never fetched (issue 16) ---------------------------------------------


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        body = b'{"type": "integer"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/schema+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def schema_host() -> Iterator[tuple[str, type[_CountingHandler]]]:
    handler = type("Handler", (_CountingHandler,), {"hits": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("keyword", ["$ref", "$dynamicRef"])
def test_remote_ref_is_refused_at_load_and_never_fetched(
    schema_host: tuple[str, type[_CountingHandler]], keyword: str
) -> None:
    url, handler = schema_host
    schema = {"type": "object", "properties": {"n": {keyword: f"{url}/int.json"}}}
    err = user_error("json_schema", {"schema": schema})
    assert "another document" in err.detail and "never fetches" in err.detail
    assert handler.hits == 0


def test_relative_ref_to_another_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "order.json").write_text(json.dumps({"$ref": "item.json"}))
    (tmp_path / "item.json").write_text(json.dumps({"type": "object"}))
    err = user_error("json_schema", {"schema_file": "order.json"}, base_dir=tmp_path)
    assert "'item.json'" in err.detail


@pytest.mark.parametrize(
    "schema",
    [
        {"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n"},
        {"$id": "https://example.com/root.json", "$defs": {"n": {"$id": "n.json", "type": "integer"}},
         "$ref": "n.json"},
        {"$id": "urn:example:root", "$defs": {"n": {"$anchor": "num", "type": "integer"}}, "$ref": "#num"},
        {"allOf": [{"$ref": "https://json-schema.org/draft/2020-12/schema"}], "type": "object"},
        {"enum": [{"$ref": "http://example.com/data-not-a-reference"}, 3], "type": ["object", "integer"]},
    ],
    ids=["pointer", "bundled-id", "anchor", "metaschema", "ref-as-data"],
)
def test_local_refs_still_resolve(schema: dict[str, Any]) -> None:
    fn = build_check("json_schema", {"schema": schema}, ctx())
    good = '{"type": "string"}' if "allOf" in schema else "3"
    out = fn(CheckInput(call=make_call(good), tools=[], case_kind="representative"))
    assert out.passed, out.detail


def test_a_ref_that_slips_through_is_never_fetched(schema_host: tuple[str, type[_CountingHandler]]) -> None:
    """Validators are built on a registry that never retrieves: no request, a check error."""
    from evalrun.checks.json_checks import schema_errors
    from evalrun.checks.schema_refs import no_fetch_registry

    url, handler = schema_host
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator({"$ref": f"{url}/int.json"}, registry=no_fetch_registry())
    errors = schema_errors(validator, 3)
    assert errors and "could not be applied" in errors[0]
    assert handler.hits == 0


def test_rescore_never_fetches_a_remote_ref_added_after_the_run(
    tmp_path: Path, schema_host: tuple[str, type[_CountingHandler]]
) -> None:
    """rescore re-reads the case files: a schema that now points at a server is refused with
    one line instead of being downloaded on every validation."""
    from evalrun import api
    from evalrun.testing import FakeProvider, fake_response
    from projectkit import case, write_project

    url, handler = schema_host
    cases = [case("c1", kind="format_sensitive", expect=[{"json_schema": {"schema": {"type": "object"}}}])]
    b, c = write_project(tmp_path, cases=cases)
    run_dir = tmp_path / "run"
    api.compare(api.load_project(b, c), provider=FakeProvider(lambda r: fake_response("{}")), run_dir=run_dir,
                cache="off")
    cases[0]["expect"] = [{"json_schema": {"schema": {"$ref": f"{url}/object.json"}}}]
    write_project(tmp_path, cases=cases)
    with pytest.raises(UserInputError, match="never fetches"):
        api.rescore(run_dir)
    assert handler.hits == 0
