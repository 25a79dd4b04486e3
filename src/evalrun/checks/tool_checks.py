"""The ``tool_call`` check: the model's tool calls are declared, parse, and fit their schemas.

The declared tools arrive per call (they belong to the variant, not the case), so compiled
argument validators are cached: by the identity of the tools list (one lookup per call in
the common case where the runner passes the same list every time) and, behind that, by the
schema's canonical JSON, so a schema is checked and compiled once per process.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypeAlias

from evalrun.checks.json_checks import SchemaProblem, compile_schema, loads_strict, schema_errors
from evalrun.checks.registry import (
    BuildContext,
    CheckFn,
    CheckInput,
    CheckParams,
    parse_params,
    register_check,
)
from evalrun.records import CheckOutcome

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

# A tool's compiled parameters validator; None = declared without parameters; str = why
# the declared schema is unusable (a config problem, reported per call, never a crash).
_Spec: TypeAlias = "Validator | str | None"

_CACHE_LIMIT = 256
_BY_LIST: dict[int, tuple[list[dict[str, Any]], dict[str, _Spec]]] = {}
_BY_SCHEMA: dict[str, Validator | str] = {}


def _compile_cached(parameters: Any) -> Validator | str:
    try:
        key = json.dumps(parameters, sort_keys=True)
    except (TypeError, ValueError) as exc:
        return f"parameters are not JSON: {exc}"
    spec = _BY_SCHEMA.get(key)
    if spec is None:
        try:
            spec = compile_schema(parameters)
        except SchemaProblem as exc:
            spec = str(exc)
        if len(_BY_SCHEMA) >= _CACHE_LIMIT:
            _BY_SCHEMA.clear()
        _BY_SCHEMA[key] = spec
    return spec


def declared_tools(tools: list[dict[str, Any]]) -> dict[str, _Spec]:
    """Map each declared tool name to its (cached) argument validator."""
    cached = _BY_LIST.get(id(tools))
    # Holding the list in the cache keeps its id from being reused by another object.
    if cached is not None and cached[0] is tools:
        return cached[1]
    specs: dict[str, _Spec] = {}
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            continue
        params = fn.get("parameters")
        specs[fn["name"]] = None if params is None else _compile_cached(params)
    if len(_BY_LIST) >= _CACHE_LIMIT:
        _BY_LIST.clear()
    _BY_LIST[id(tools)] = (tools, specs)
    return specs


class _ToolCallParams(CheckParams):
    name: str | None = None
    required: bool = True


@register_check("tool_call", feeds=("tool",))
def _tool_call_factory(params: dict[str, Any], ctx: BuildContext) -> CheckFn:
    p = parse_params(_ToolCallParams, params, "tool_call", ctx)
    expected_name, required = p.name, p.required

    def check(inp: CheckInput) -> CheckOutcome:
        calls = inp.call.tool_calls
        called = [tc.name for tc in calls]
        problems: list[str] = []
        if not calls and required:
            problems.append("no tool call")
        specs = declared_tools(inp.tools) if calls else {}
        for tc in calls:
            if tc.name not in specs:
                problems.append(f"{tc.name!r} is not a declared tool")
                continue
            raw = tc.arguments
            # Some providers send "" for a tool without arguments; that means {}.
            if not raw or not raw.strip():
                raw = "{}"
            try:
                args = loads_strict(raw)
            except (ValueError, RecursionError) as exc:
                problems.append(f"arguments of {tc.name!r} are not JSON: {exc}")
                continue
            spec = specs[tc.name]
            if isinstance(spec, str):
                problems.append(f"declared parameters of {tc.name!r} are unusable: {spec}")
            elif spec is not None:
                problems.extend(f"arguments of {tc.name!r}: {e}" for e in schema_errors(spec, args))
        if expected_name is not None and calls and expected_name not in called:
            problems.append(f"expected a call to {expected_name!r}, got {called}")
        tool_valid = not problems
        detail = (
            "; ".join(problems)
            if problems
            else (
                f"valid call(s): {', '.join(called)}" if called else "no tool call (not required)"
            )
        )
        return CheckOutcome(
            "tool_call",
            tool_valid,
            detail,
            {"tool_valid": tool_valid, "called": called, "problems": problems},
        )

    return check
