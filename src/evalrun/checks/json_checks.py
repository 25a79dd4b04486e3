"""The ``json`` and ``json_schema`` checks, and the JSON analysis both share.

Strict means the whole (stripped) output is JSON. Lenient also accepts JSON inside a code
fence or embedded in prose. A strict miss is classified so the comparator can say *why*
format compliance moved: ``fenced``, ``embedded``, ``truncated``, ``refused`` or ``invalid``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from evalrun.checks.json_scan import find_embedded, find_fenced
from evalrun.checks.json_scan import loads_strict as loads_strict  # re-exported for tool_checks
from evalrun.checks.patterns import install_jsonschema_patterns
from evalrun.checks.refusal import RefusalDetector, detect_refusal
from evalrun.checks.registry import (
    BuildContext,
    CheckFn,
    CheckInput,
    CheckParams,
    parse_params,
    register_check,
    user_error,
)
from evalrun.checks.schema_refs import no_fetch_registry, remote_refs
from evalrun.records import CallResult, CheckOutcome, FailureClass

if TYPE_CHECKING:  # jsonschema (~30 ms to import) loads with the first schema check
    from jsonschema.protocols import Validator


# Anthropic-style "max_tokens" can pass through some gateways unmapped.
_TRUNCATION_REASONS = frozenset({"length", "max_tokens"})
_MAX_SCHEMA_ERRORS = 3
_MAX_MESSAGE = 300


@dataclass(frozen=True, slots=True)
class JsonAnalysis:
    """How an output parses as JSON.

    ``lenient`` is true whenever ``strict`` is. ``value`` is the parsed value (the strict
    one, else the lenient one), ``None`` when nothing parsed. ``error`` is the strict
    parser's message when strict parsing failed.
    """

    strict: bool
    lenient: bool
    failure_class: FailureClass | None
    value: Any = None
    error: str | None = None


def analyze_json(text: str | None, finish_reason: str | None, refused: bool) -> JsonAnalysis:
    """Parse ``text`` strictly, then leniently, and classify a strict miss."""
    return _analyze(text, finish_reason, lambda: refused)


def _analyze(
    text: str | None, finish_reason: str | None, is_refusal: Callable[[], bool]
) -> JsonAnalysis:
    error = "output is empty"
    if text is not None and text.strip():
        stripped = text.strip()
        try:
            return JsonAnalysis(True, True, None, loads_strict(stripped))
        except (ValueError, RecursionError) as exc:
            error = str(exc) or type(exc).__name__
        found = find_fenced(text)
        if found is not None:
            return JsonAnalysis(False, True, "fenced", found[0], error)
        found = find_embedded(text)
        if found is not None:
            return JsonAnalysis(False, True, "embedded", found[0], error)
    # A refusal is the root cause even when it was also cut off, so it is tested first.
    if is_refusal():
        return JsonAnalysis(False, False, "refused", None, error)
    if finish_reason in _TRUNCATION_REASONS:
        return JsonAnalysis(False, False, "truncated", None, error)
    return JsonAnalysis(False, False, "invalid", None, error)


def describe_json(analysis: JsonAnalysis) -> str:
    """A one-line human description of ``analysis`` for check details."""
    match analysis.failure_class:
        case None:
            return "output is strict JSON"
        case "fenced":
            return "JSON is wrapped in a code fence"
        case "embedded":
            return "JSON is embedded in surrounding prose"
        case "truncated":
            return "output was cut off (finish_reason length) and does not parse"
        case "refused":
            return "model refused instead of answering"
        case _:
            return f"output is not JSON ({analysis.error})"


def analyze_call(call: CallResult, detector: RefusalDetector | None = None) -> JsonAnalysis:
    """``analyze_json`` on a call; the (suite's) refusal detector only runs when nothing parses."""
    return _analyze(call.output, call.finish_reason, lambda: detect_refusal(call, detector)[0])


def _parse_facts(a: JsonAnalysis) -> dict[str, Any]:
    return {"strict": a.strict, "lenient": a.lenient, "failure_class": a.failure_class}


class _JsonParams(CheckParams):
    allow_lenient: bool = False


@register_check("json", feeds=("parse",))
def _json_factory(params: dict[str, Any], ctx: BuildContext) -> CheckFn:
    allow_lenient = parse_params(_JsonParams, params, "json", ctx).allow_lenient

    def check(inp: CheckInput) -> CheckOutcome:
        a = analyze_call(inp.call, inp.refusal)
        passed = a.strict or (allow_lenient and a.lenient)
        detail = describe_json(a)
        if passed and not a.strict:
            detail += " (accepted: allow_lenient)"
        return CheckOutcome("json", passed, detail, _parse_facts(a))

    return check


# --- JSON Schema -------------------------------------------------------------------------


class SchemaProblem(ValueError):
    """A schema cannot be used; the message says why."""


# Compiled validators by the schema's canonical JSON: a suite typically points many cases at
# one schema file, and checking a schema against its metaschema costs milliseconds.
_COMPILED: dict[str, Validator | SchemaProblem] = {}


def compile_schema(schema: Any) -> Validator:
    """A validator (with format checking) for ``schema``, after checking it is valid.

    The draft comes from ``$schema`` (default 2020-12). Raises ``SchemaProblem``. Equal
    schemas share one (immutable) validator.
    """
    try:
        key: str | None = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        key = None
    if key is not None and key in _COMPILED:
        known = _COMPILED[key]
        if isinstance(known, SchemaProblem):
            raise SchemaProblem(str(known))
        return known
    try:
        validator = _compile_schema(schema)
    except SchemaProblem as exc:
        if key is not None:
            _COMPILED[key] = exc
        raise
    if key is not None:
        _COMPILED[key] = validator
    return validator


def _compile_schema(schema: Any) -> Validator:
    from jsonschema import Draft202012Validator, FormatChecker
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    if not isinstance(schema, dict | bool):
        raise SchemaProblem(f"a JSON Schema must be an object, got {type(schema).__name__}")
    cls: type[Validator] = Draft202012Validator
    if isinstance(schema, dict) and "$schema" in schema:
        with warnings.catch_warnings():
            # jsonschema only warns (for now) on an unknown $schema and then validates with
            # the latest draft: a misspelt dialect URI should be an error, not a guess.
            warnings.simplefilter("error", DeprecationWarning)
            try:
                cls = validator_for(schema)
            except Exception:
                raise SchemaProblem(f"unknown $schema {schema['$schema']!r}") from None
    try:
        cls.check_schema(schema)  # type: ignore[arg-type]
    except SchemaError as exc:
        where = exc.json_path if exc.path else "schema"
        raise SchemaProblem(f"not a valid JSON Schema: {where}: {_clip(exc.message)}") from None
    for ref in remote_refs(schema):
        raise SchemaProblem(
            f"$ref {_clip(ref, 120)!r} points to another document; evalrun never fetches "
            "schemas (scoring must not reach the network): inline it, e.g. under $defs"
        )
    install_jsonschema_patterns()
    return cls(schema, format_checker=FormatChecker(), registry=no_fetch_registry())


def schema_errors(validator: Validator, value: Any, limit: int = _MAX_SCHEMA_ERRORS) -> list[str]:
    """Up to ``limit`` violation messages (``$.path: message``); empty means valid."""
    try:
        return [
            f"{err.json_path}: {_clip(err.message)}"
            for err in islice(validator.iter_errors(value), limit)
        ]
    except Exception as exc:  # e.g. an unresolvable $ref only shows up while validating
        return [f"schema could not be applied: {type(exc).__name__}: {_clip(str(exc))}"]


def _clip(message: str, limit: int = _MAX_MESSAGE) -> str:
    # Messages embed the offending instance, which can be a whole model output.
    return message if len(message) <= limit else message[: limit - 3] + "..."


def load_schema_file(path_text: str, ctx: BuildContext, check: str) -> Any:
    """Read the JSON schema file ``path_text`` (relative to ``ctx.base_dir``)."""
    path = Path(path_text)
    if path.is_absolute():
        raise user_error(
            ctx, f"check {check!r}: schema_file {path_text!r} must be relative to {ctx.base_dir}"
        )
    resolved = (ctx.base_dir / path).resolve()
    project = ctx.base_dir.resolve().parent
    if not resolved.is_relative_to(project):
        raise user_error(
            ctx, f"check {check!r}: schema_file {path_text!r} points outside the project"
        )
    try:
        text = resolved.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise user_error(
            ctx, f"check {check!r}: schema_file {path_text!r} not found (looked for {resolved})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise user_error(
            ctx, f"check {check!r}: cannot read schema_file {path_text!r}: {exc}"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise user_error(
            ctx, f"check {check!r}: schema_file {path_text!r} is not valid JSON: {exc}"
        ) from None


class _JsonSchemaParams(CheckParams):
    # Aliased: a field called "schema" would shadow a BaseModel attribute.
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    schema_file: str | None = None
    allow_lenient: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> _JsonSchemaParams:
        if (self.schema_ is None) == (self.schema_file is None):
            raise ValueError("give exactly one of 'schema' (inline) or 'schema_file'")
        return self


@register_check("json_schema", feeds=("parse", "schema"))
def _json_schema_factory(params: dict[str, Any], ctx: BuildContext) -> CheckFn:
    p = parse_params(_JsonSchemaParams, params, "json_schema", ctx)
    if p.schema_file is not None:
        schema = load_schema_file(p.schema_file, ctx, "json_schema")
        source = f"schema_file {p.schema_file!r}"
    else:
        schema = p.schema_
        source = "inline schema"
    try:
        validator = compile_schema(schema)
    except SchemaProblem as exc:
        raise user_error(ctx, f"check 'json_schema': {source}: {exc}") from None
    allow_lenient = p.allow_lenient

    def check(inp: CheckInput) -> CheckOutcome:
        a = analyze_call(inp.call, inp.refusal)
        facts = _parse_facts(a)
        if not (a.strict or (allow_lenient and a.lenient)):
            facts.update(schema_valid=False, errors=[])
            return CheckOutcome("json_schema", False, describe_json(a), facts)
        errors = schema_errors(validator, a.value)
        facts.update(schema_valid=not errors, errors=errors)
        if errors:
            return CheckOutcome(
                "json_schema", False, "schema violations: " + "; ".join(errors), facts
            )
        detail = "output matches the schema"
        if not a.strict:
            detail += f" ({describe_json(a)}; accepted: allow_lenient)"
        return CheckOutcome("json_schema", True, detail, facts)

    return check
