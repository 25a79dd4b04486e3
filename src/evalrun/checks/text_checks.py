"""Text checks on the output: ``regex``, ``contains``, ``not_contains``, ``equals``.

A call that returned no text (only tool calls) is checked as the empty string.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import regex
from pydantic import Field, model_validator

from evalrun.checks.patterns import FLAG_LETTERS, compile_pattern
from evalrun.checks.registry import (
    BuildContext,
    CheckFn,
    CheckInput,
    CheckParams,
    parse_params,
    register_check,
    user_error,
)
from evalrun.records import CheckOutcome


def _snippet(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


class _RegexParams(CheckParams):
    pattern: str
    flags: str = ""
    match: Literal["search", "fullmatch"] = "search"


@register_check("regex")
def _regex_factory(params: dict[str, Any], ctx: BuildContext) -> CheckFn:
    p = parse_params(_RegexParams, params, "regex", ctx)
    bad = sorted(set(p.flags) - set(FLAG_LETTERS))
    if bad:
        raise user_error(
            ctx,
            f"check 'regex': unknown flag(s) {''.join(bad)!r}; use letters from 'imsx'",
        )
    flags = 0
    for letter in p.flags:
        flags |= FLAG_LETTERS[letter]
    try:
        # Matching runs on the `regex` engine with the check's time budget (see patterns).
        compiled = compile_pattern(p.pattern, flags)
    except (re.error, regex.error) as exc:
        raise user_error(
            ctx, f"check 'regex': invalid regular expression {p.pattern!r}: {exc}"
        ) from None
    matcher = compiled.fullmatch if p.match == "fullmatch" else compiled.search
    shown = f"/{p.pattern}/{p.flags}"

    def check(inp: CheckInput) -> CheckOutcome:
        text = inp.call.output or ""
        m = matcher(text)
        if m is None:
            return CheckOutcome("regex", False, f"{shown} does not {p.match}-match the output")
        return CheckOutcome("regex", True, f"{shown} matched {_snippet(m.group(0))}")

    return check


class _ContainsParams(CheckParams):
    value: str | None = None
    values: list[str] | None = Field(default=None, min_length=1)
    case_sensitive: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> _ContainsParams:
        if (self.value is None) == (self.values is None):
            raise ValueError("give exactly one of 'value' or 'values'")
        if any(v == "" for v in self.needles()):
            raise ValueError("an empty string is contained in every output")
        return self

    def needles(self) -> list[str]:
        return [self.value] if self.value is not None else list(self.values or [])


def _contains_factory(name: str, want_present: bool) -> None:
    @register_check(name)
    def factory(params: dict[str, Any], ctx: BuildContext) -> CheckFn:
        p = parse_params(_ContainsParams, params, name, ctx)
        needles = p.needles()
        fold = not p.case_sensitive
        probes = [n.casefold() for n in needles] if fold else needles

        def check(inp: CheckInput) -> CheckOutcome:
            text = inp.call.output or ""
            if fold:
                text = text.casefold()
            present = [n for n, probe in zip(needles, probes, strict=True) if probe in text]
            if want_present:
                missing = [n for n in needles if n not in present]
                if missing:
                    return CheckOutcome(name, False, f"missing: {', '.join(map(repr, missing))}")
                return CheckOutcome(name, True, f"contains {', '.join(map(repr, needles))}")
            if present:
                return CheckOutcome(name, False, f"contains: {', '.join(map(repr, present))}")
            return CheckOutcome(name, True, f"contains none of {', '.join(map(repr, needles))}")

        return check


_contains_factory("contains", want_present=True)
_contains_factory("not_contains", want_present=False)


class _EqualsParams(CheckParams):
    value: str
    case_sensitive: bool = True
    strip: bool = True


@register_check("equals")
def _equals_factory(params: dict[str, Any], ctx: BuildContext) -> CheckFn:
    p = parse_params(_EqualsParams, params, "equals", ctx)
    strip, case_sensitive = p.strip, p.case_sensitive

    def norm(text: str) -> str:
        # Strip applies to both sides: YAML block scalars add a trailing newline to value.
        if strip:
            text = text.strip()
        return text if case_sensitive else text.casefold()

    expected = norm(p.value)

    def check(inp: CheckInput) -> CheckOutcome:
        got = inp.call.output or ""
        if norm(got) == expected:
            return CheckOutcome("equals", True, "output equals the expected value")
        return CheckOutcome("equals", False, f"expected {_snippet(p.value)}, got {_snippet(got)}")

    return check
