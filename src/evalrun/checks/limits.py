"""Length limits: ``max_tokens`` (completion tokens) and ``max_chars`` (output characters)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from evalrun.checks.registry import (
    BuildContext,
    CheckFn,
    CheckInput,
    CheckParams,
    parse_params,
    register_check,
)
from evalrun.records import CheckOutcome


class _LimitParams(CheckParams):
    limit: int = Field(ge=0)


@register_check("max_tokens")
def _max_tokens_factory(params: dict[str, Any], ctx: BuildContext) -> CheckFn:
    limit = parse_params(_LimitParams, params, "max_tokens", ctx).limit

    def check(inp: CheckInput) -> CheckOutcome:
        tokens = inp.call.completion_tokens
        if tokens is None:
            # Unknown is not "within the limit": passing silently would hide a regression.
            return CheckOutcome("max_tokens", False, "completion token count is unknown")
        estimated = " (estimated)" if inp.call.tokens_estimated else ""
        passed = tokens <= limit
        relation = "<=" if passed else ">"
        return CheckOutcome(
            "max_tokens", passed, f"{tokens} completion tokens{estimated} {relation} {limit}"
        )

    return check


@register_check("max_chars")
def _max_chars_factory(params: dict[str, Any], ctx: BuildContext) -> CheckFn:
    limit = parse_params(_LimitParams, params, "max_chars", ctx).limit

    def check(inp: CheckInput) -> CheckOutcome:
        n = len(inp.call.output or "")
        passed = n <= limit
        relation = "<=" if passed else ">"
        return CheckOutcome("max_chars", passed, f"{n} characters {relation} {limit}")

    return check
