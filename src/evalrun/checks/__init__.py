"""Checks that score a model output. Importing this package registers the built-in checks.

Built-ins: json, json_schema, regex, contains, not_contains, equals, tool_call, refusal,
max_tokens, max_chars, python. See ``registry`` for adding your own.
"""

from __future__ import annotations

from evalrun.checks import json_checks, limits, python_check, refusal, text_checks, tool_checks
from evalrun.checks.json_checks import JsonAnalysis, analyze_json
from evalrun.checks.refusal import REFUSAL_PHRASES, detect_refusal
from evalrun.checks.registry import (
    BuildContext,
    CheckFn,
    CheckInput,
    Factory,
    Feed,
    build_check,
    check_feeds,
    known_checks,
    register_check,
)

__all__ = [
    "REFUSAL_PHRASES",
    "BuildContext",
    "CheckFn",
    "CheckInput",
    "Factory",
    "Feed",
    "JsonAnalysis",
    "analyze_json",
    "build_check",
    "check_feeds",
    "detect_refusal",
    "json_checks",
    "known_checks",
    "limits",
    "python_check",
    "refusal",
    "register_check",
    "text_checks",
    "tool_checks",
]
