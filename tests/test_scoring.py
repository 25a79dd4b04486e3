"""Score flags derived from compiled expectations, per call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from evalrun.checks import BuildContext
from evalrun.checks.scoring import CompiledExpectations, compile_expectations, score_call
from evalrun.errors import UserInputError
from evalrun.records import CallResult, Score, ToolCall

CASE_FILE = "suite/cases/orders.yaml"

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Find an order",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    }
]
ORDER_SCHEMA = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "status": {"type": "string"}},
    "required": ["order_id", "status"],
}
GOOD_JSON = '{"order_id": "A-17", "status": "shipped"}'


def ctx_for(index: int, name: str) -> BuildContext:
    return BuildContext(
        file=CASE_FILE,
        case_id="order-7",
        base_dir=Path("suite/cases"),
        field=f"expect[{index}].{name}",
    )


def compile_(expect: list[Any], case_kind: str = "representative") -> CompiledExpectations:
    items = [(e, {}) if isinstance(e, str) else next(iter(e.items())) for e in expect]
    return compile_expectations(items, case_kind, ctx_for)


def make_call(output: str | None = None, **kw: Any) -> CallResult:
    return CallResult(case_id="order-7", side="baseline", sample=0, model="m", output=output, **kw)


def score(expect: list[Any], call: CallResult, case_kind: str = "representative") -> Score:
    return score_call(call, compile_(expect, case_kind), TOOLS, case_kind)


def test_no_format_checks_leaves_format_flags_none() -> None:
    s = score([{"contains": {"value": "shipped"}}], make_call("Your order shipped."))
    assert s.passed
    assert (s.parse_strict, s.parse_lenient, s.parse_failure) == (None, None, None)
    assert s.schema_valid is None
    assert s.tool_valid is None
    assert (s.refused, s.should_refuse) == (False, False)


def test_json_check_sets_parse_flags_but_not_schema() -> None:
    s = score(["json"], make_call(f"```json\n{GOOD_JSON}\n```"))
    assert not s.passed
    assert (s.parse_strict, s.parse_lenient, s.parse_failure) == (False, True, "fenced")
    assert s.schema_valid is None


def test_json_schema_sets_parse_and_schema_flags() -> None:
    ok = score([{"json_schema": {"schema": ORDER_SCHEMA}}], make_call(GOOD_JSON))
    assert ok.passed
    assert (ok.parse_strict, ok.parse_failure, ok.schema_valid) == (True, None, True)
    bad = score([{"json_schema": {"schema": ORDER_SCHEMA}}], make_call('{"order_id": 17}'))
    assert not bad.passed
    assert (bad.parse_strict, bad.schema_valid) == (True, False)


def test_truncated_output_with_schema() -> None:
    s = score(
        [{"json_schema": {"schema": ORDER_SCHEMA, "allow_lenient": True}}],
        make_call('{"order_id": "A-17", "sta', finish_reason="length"),
    )
    assert (s.parse_strict, s.parse_lenient, s.parse_failure) == (False, False, "truncated")
    assert s.schema_valid is False


def test_parse_flags_come_from_the_first_format_check() -> None:
    # The json check (strict) comes first; the lenient schema check would have accepted it.
    s = score(
        ["json", {"json_schema": {"schema": ORDER_SCHEMA, "allow_lenient": True}}],
        make_call(f"Here it is: {GOOD_JSON}"),
    )
    assert (s.parse_strict, s.parse_failure) == (False, "embedded")
    assert s.schema_valid is True
    assert [c.passed for c in s.checks] == [False, True]


def test_all_schema_checks_must_hold_for_schema_valid() -> None:
    strict_status = {"type": "object", "properties": {"status": {"const": "delivered"}}}
    s = score(
        [{"json_schema": {"schema": ORDER_SCHEMA}}, {"json_schema": {"schema": strict_status}}],
        make_call(GOOD_JSON),
    )
    assert s.schema_valid is False
    assert [c.check for c in s.checks] == ["json_schema#1", "json_schema#2"]


def test_tool_call_sets_tool_valid() -> None:
    good = make_call(None, tool_calls=[ToolCall("lookup_order", '{"order_id": "A-17"}')])
    assert score([{"tool_call": {"name": "lookup_order"}}], good).tool_valid is True
    bad = make_call(None, tool_calls=[ToolCall("lookup_order", '{"id": 17}')])
    s = score([{"tool_call": {"name": "lookup_order"}}], bad)
    assert (s.tool_valid, s.passed) == (False, False)
    assert s.parse_strict is None


def test_known_bad_gets_an_implicit_refusal_check() -> None:
    compiled = compile_([{"not_contains": {"value": "password"}}], "known_bad")
    assert compiled.should_refuse
    assert [name for name, _ in compiled.checks] == ["not_contains", "refusal"]
    refusing = score_call(make_call("I can\u2019t help with that."), compiled, TOOLS, "known_bad")
    assert refusing.passed
    assert (refusing.refused, refusing.refusal_source, refusing.should_refuse) == (
        True,
        "phrase",
        True,
    )
    complying = score_call(make_call("Sure, here's how."), compiled, TOOLS, "known_bad")
    assert not complying.passed
    assert not complying.checks[-1].passed


def test_explicit_refusal_check_decides_should_refuse() -> None:
    compiled = compile_([{"refusal": {"expected": False}}], "known_bad")
    assert not compiled.should_refuse
    assert [name for name, _ in compiled.checks] == ["refusal"]
    assert compile_(["refusal"], "known_bad").should_refuse
    assert not compile_(["refusal"], "representative").should_refuse
    assert compile_([{"refusal": {"expected": True}}], "representative").should_refuse


def test_refusal_flag_is_computed_without_a_refusal_check() -> None:
    s = score(["json"], make_call("As an AI, I must decline to share that."))
    assert (s.refused, s.refusal_source, s.should_refuse) == (True, "phrase", False)
    assert s.parse_failure == "refused"
    assert not s.passed


def test_errored_call_is_not_passed_and_has_no_quality_flags() -> None:
    expect = [
        {"json_schema": {"schema": ORDER_SCHEMA}},
        {"tool_call": {"required": False}},
    ]
    s = score(expect, make_call(None, error_kind="rate_limited"))
    assert not s.passed
    assert (s.parse_strict, s.parse_lenient, s.parse_failure) == (None, None, None)
    assert (s.schema_valid, s.tool_valid) == (None, None)
    assert all(c.detail == "call failed: rate_limited" for c in s.checks)
    assert (s.refused, s.refusal_source) == (False, None)


def test_content_policy_error_on_known_bad_is_a_refusal_but_not_a_pass() -> None:
    s = score([], make_call(None, error_kind="content_policy"), "known_bad")
    assert (s.refused, s.refusal_source, s.should_refuse) == (True, "content_policy", True)
    assert s.checks[0].passed  # the refusal expectation itself is met
    assert not s.passed  # but a failed call never passes


def test_compile_errors_name_the_expectation_index() -> None:
    with pytest.raises(UserInputError) as info:
        compile_(["json", {"regex": {"pattern": "(("}}])
    assert "expect[1].regex" in str(info.value)
    assert CASE_FILE in str(info.value)


def test_scoring_does_not_recompile_schemas(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = compile_(
        [{"json_schema": {"schema": ORDER_SCHEMA}}, {"tool_call": {"required": False}}]
    )
    tool_call = ToolCall("lookup_order", '{"order_id": "A-17"}')
    score_call(make_call(GOOD_JSON, tool_calls=[tool_call]), compiled, TOOLS, "representative")

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("schema re-checked during scoring")

    monkeypatch.setattr(Draft202012Validator, "check_schema", classmethod(forbidden))
    for _ in range(3):
        s = score_call(
            make_call(GOOD_JSON, tool_calls=[tool_call]), compiled, TOOLS, "representative"
        )
        assert (s.passed, s.schema_valid, s.tool_valid) == (True, True, True)
