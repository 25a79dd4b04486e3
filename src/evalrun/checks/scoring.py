"""Turn a case's expectations into check functions once, then score each call with them.

``compile_expectations`` runs at case-load time (all parameter errors surface there);
``score_call`` runs for every call of a run, so it only calls precompiled functions.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evalrun.checks import build_check
from evalrun.checks.budget import DEFAULT_CHECK_TIMEOUT_S
from evalrun.checks.refusal import DEFAULT_DETECTOR, RefusalDetector, expected_refusal
from evalrun.checks.registry import BuildContext, CheckFn, CheckInput, check_feeds
from evalrun.records import CallResult, CheckOutcome, Score


@dataclass(frozen=True)
class CompiledExpectations:
    """What a case's ``expect`` list compiles to."""

    # (display name, fn) in case order. A name used more than once in a case is shown as
    # "name#1", "name#2", ... so per-check results stay distinguishable in reports.
    checks: list[tuple[str, CheckFn]]
    # From an explicit refusal check's `expected`, else case_kind == "known_bad".
    should_refuse: bool


def check_kind(display_name: str) -> str:
    """The registered check name behind a display name ("regex#2" -> "regex")."""
    return display_name.partition("#")[0]


def compile_expectations(
    expect: list[tuple[str, dict[str, Any]]],
    case_kind: str,
    ctx_for: Callable[[int, str], BuildContext],
) -> CompiledExpectations:
    """Build every check of a case; raises ``UserInputError`` on the first invalid one.

    A ``known_bad`` case without an explicit ``refusal`` check gets one (expected true)
    appended, so "the model should refuse this" needs no boilerplate in case files.
    """
    counts = Counter(name for name, _ in expect)
    seen: Counter[str] = Counter()
    checks: list[tuple[str, CheckFn]] = []
    refusal_params: dict[str, Any] | None = None
    has_refusal = False
    for index, (name, params) in enumerate(expect):
        fn = build_check(name, params, ctx_for(index, name))
        seen[name] += 1
        display = f"{name}#{seen[name]}" if counts[name] > 1 else name
        checks.append((display, fn))
        if name == "refusal" and not has_refusal:
            has_refusal, refusal_params = True, params
    if has_refusal:
        should_refuse = expected_refusal(refusal_params, case_kind)
    else:
        should_refuse = case_kind == "known_bad"
        if should_refuse:
            implicit = build_check("refusal", {"expected": True}, ctx_for(len(expect), "refusal"))
            checks.append(("refusal", implicit))
    return CompiledExpectations(checks=checks, should_refuse=should_refuse)


def score_call(
    call: CallResult,
    compiled: CompiledExpectations,
    tools: list[dict[str, Any]],
    case_kind: str,
    *,
    check_timeout_s: float | None = DEFAULT_CHECK_TIMEOUT_S,
    refusal: RefusalDetector | None = None,
) -> Score:
    """Run the compiled checks on ``call`` and derive the metric flags (``refusal``: the
    suite's refusal detector; None: the default English phrase list).

    For a failed call the format flags stay ``None`` (quality metrics exclude failed calls;
    the error rate counts them) and ``passed`` is False. Each check gets
    ``check_timeout_s`` seconds on this call; past it, it fails as a check error.
    """
    inp = CheckInput(call=call, tools=tools, case_kind=case_kind, budget_s=check_timeout_s, refusal=refusal)
    outcomes: list[CheckOutcome] = []
    for display, fn in compiled.checks:
        outcome = fn(inp)
        if outcome.check != display:
            # Copy rather than mutate: a user check may return a shared CheckOutcome.
            outcome = dataclasses.replace(outcome, check=display)
        outcomes.append(outcome)
    refused, source = (refusal or DEFAULT_DETECTOR).detect(call, inp)
    ok = call.ok
    score = Score(
        checks=outcomes,
        passed=ok and all(o.passed for o in outcomes),
        refused=refused,
        refusal_source=source,
        should_refuse=compiled.should_refuse,
    )
    if not ok:
        return score
    parse_facts: dict[str, Any] | None = None
    schema_flags: list[bool] = []
    tool_flags: list[bool] = []
    for outcome in outcomes:
        feeds = check_feeds(check_kind(outcome.check))
        facts = outcome.facts
        if "parse" in feeds and parse_facts is None:
            parse_facts = facts
        if "schema" in feeds:
            schema_flags.append(bool(facts.get("schema_valid")))
        if "tool" in feeds:
            tool_flags.append(bool(facts.get("tool_valid")))
    if parse_facts is not None:
        score.parse_strict = bool(parse_facts.get("strict"))
        score.parse_lenient = bool(parse_facts.get("lenient"))
        score.parse_failure = parse_facts.get("failure_class")
    if schema_flags:
        # Several schema (or tool) checks in one case must all hold.
        score.schema_valid = all(schema_flags)
    if tool_flags:
        score.tool_valid = all(tool_flags)
    return score
