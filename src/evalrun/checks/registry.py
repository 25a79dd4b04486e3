"""The check registry: check names from case files map to factories that build check functions.

A factory validates its parameters eagerly (at case-load time, before any model call) and
returns a ``CheckFn``. Every user mistake surfaces as a ``UserInputError`` naming the case
file, the case id and the expectation field, never as a traceback.

Third parties add checks with ``@register_check("name")`` or through the entry-point group
``evalrun.checks`` (loaded lazily, only when a case uses a name not registered yet).
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from evalrun.checks.budget import DEFAULT_CHECK_TIMEOUT_S, CheckTimeout, run_with_budget
from evalrun.errors import UserInputError
from evalrun.records import CallResult, CheckOutcome

ENTRY_POINT_GROUP = "evalrun.checks"

# No "#": scoring uses "name#2" to tell repeated checks of one case apart.
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class BuildContext:
    """Where an expectation comes from, for error messages and relative paths."""

    file: str  # the case file, for error messages
    case_id: str
    base_dir: Path  # folder that relative paths (schema files) resolve against
    field: str  # e.g. "expect[2].regex"


@dataclass(frozen=True)
class CheckInput:
    """What a check sees for one call."""

    call: CallResult
    # The variant's declared tools in OpenAI format:
    # [{"type": "function", "function": {"name", "description", "parameters"}}]
    tools: list[dict[str, Any]]
    case_kind: str  # representative | known_bad | format_sensitive
    # Seconds the check may spend on this call (None: unbounded); see checks.budget.
    budget_s: float | None = DEFAULT_CHECK_TIMEOUT_S
    # The suite's refusal detector (checks.refusal.RefusalDetector; None: the default one).
    refusal: Any = None


CheckFn = Callable[[CheckInput], CheckOutcome]
Factory = Callable[[dict[str, Any], BuildContext], CheckFn]

Feed = Literal["parse", "schema", "tool"]
"""A score flag a check's facts feed: ``parse`` (facts ``strict``, ``lenient``,
``failure_class``), ``schema`` (fact ``schema_valid``), ``tool`` (fact ``tool_valid``)."""


@dataclass(frozen=True, slots=True)
class _Entry:
    factory: Factory
    evaluate_failed_calls: bool
    feeds: frozenset[Feed] = frozenset()


_REGISTRY: dict[str, _Entry] = {}


def register_check(
    name: str, *, evaluate_failed_calls: bool = False, feeds: tuple[Feed, ...] = ()
) -> Callable[[Factory], Factory]:
    """Register a check factory under ``name`` (decorator).

    By default the built check is not run on a failed call (``call.error_kind`` set): it
    fails with detail ``call failed: <kind>``. Pass ``evaluate_failed_calls=True`` for checks
    that have something to say about failed calls (the refusal check does). ``feeds``: the
    score flags (and so the metrics) this check's facts set (see ``Feed``).

    Raises ``ValueError`` when the name is malformed or already registered.
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid check name {name!r}: use letters, digits, '_', '.', '-'")

    def decorator(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"check {name!r} is already registered")
        _REGISTRY[name] = _Entry(factory, evaluate_failed_calls, frozenset(feeds))
        return factory

    return decorator


def check_feeds(name: str) -> frozenset[Feed]:
    """The score flags the registered check ``name`` feeds (empty for an unknown name)."""
    entry = _REGISTRY.get(name)
    return entry.feeds if entry is not None else frozenset()


def known_checks() -> list[str]:
    """Names usable in a case's ``expect`` list: registered checks plus installed plugins."""
    names = set(_REGISTRY)
    # Broken installed metadata must not hide the built-in names.
    with contextlib.suppress(Exception):
        names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def build_check(name: str, params: dict[str, Any] | None, ctx: BuildContext) -> CheckFn:
    """Build the check ``name`` with ``params``; raise ``UserInputError`` on any user mistake.

    The returned function never raises: a failed call or an exception inside the check
    becomes a failed ``CheckOutcome``.
    """
    entry = _REGISTRY.get(name) or _load_plugin(name, ctx)
    if entry is None:
        names = known_checks()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise user_error(ctx, f"unknown check {name!r}{hint}; known checks: {', '.join(names)}")
    if params is None:  # `- json:` with nothing after the colon
        params = {}
    if not isinstance(params, dict):
        raise user_error(
            ctx,
            f"parameters of check {name!r} must be a mapping, got {type(params).__name__}",
        )
    try:
        fn = entry.factory(params, ctx)
    except UserInputError as exc:
        raise UserInputError(
            exc.detail,
            file=exc.file or ctx.file,
            case_id=exc.case_id or ctx.case_id,
            field=exc.field or ctx.field,
        ) from None
    except ValidationError as exc:
        raise user_error(ctx, f"check {name!r}: {format_validation_error(exc)}") from None
    except Exception as exc:  # a third-party factory's own exception is still a config error
        raise user_error(
            ctx, f"check {name!r} rejected its parameters: {type(exc).__name__}: {exc}"
        ) from None
    return _guard(name, fn, entry.evaluate_failed_calls)


def _guard(name: str, fn: CheckFn, evaluate_failed_calls: bool) -> CheckFn:
    """Wrap ``fn`` so one bad output or a buggy check cannot abort (or freeze) a 20,000-call run.

    A check that runs past ``inp.budget_s`` fails with the fact ``check_error: "timeout"``.
    """

    def guarded(inp: CheckInput) -> CheckOutcome:
        kind = inp.call.error_kind
        if kind is not None and not evaluate_failed_calls:
            return CheckOutcome(name, False, f"call failed: {kind}")
        try:
            outcome = run_with_budget(lambda: fn(inp), inp.budget_s)
        except CheckTimeout:
            return CheckOutcome(
                name,
                False,
                f"check error: ran past its time budget of {inp.budget_s:g} s on this output",
                {"check_error": "timeout"},
            )
        except Exception as exc:
            message = str(exc).splitlines()[0][:300] if str(exc) else ""
            return CheckOutcome(
                name, False, f"check raised {type(exc).__name__}: {message}", {"check_error": "exception"}
            )
        if not isinstance(outcome, CheckOutcome):
            return CheckOutcome(
                name, False, f"check returned {type(outcome).__name__}, not a CheckOutcome"
            )
        return outcome

    return guarded


def _load_plugin(name: str, ctx: BuildContext) -> _Entry | None:
    try:
        candidates = list(entry_points(group=ENTRY_POINT_GROUP, name=name))
    except Exception:
        return None
    for ep in candidates:
        try:
            obj = ep.load()
        except Exception as exc:
            raise user_error(
                ctx,
                f"check plugin {name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}",
            ) from None
        # Loading may have registered the name itself via @register_check.
        if name not in _REGISTRY:
            if not callable(obj):
                raise user_error(ctx, f"check plugin {name!r} ({ep.value}) is not a check factory")
            _REGISTRY[name] = _Entry(obj, False)
        return _REGISTRY[name]
    return None


def user_error(ctx: BuildContext, message: str) -> UserInputError:
    """A ``UserInputError`` located at the expectation ``ctx`` describes."""
    return UserInputError(message, file=ctx.file, case_id=ctx.case_id, field=ctx.field)


class CheckParams(BaseModel):
    """Base for check parameter models: unknown keys and wrong types are errors."""

    # strict: "limit: '500'" or "case_sensitive: 'no'" in YAML is a mistake, not a value.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


P = TypeVar("P", bound=BaseModel)


def parse_params(model: type[P], params: dict[str, Any], check: str, ctx: BuildContext) -> P:
    """Validate ``params`` with ``model``; raise a located ``UserInputError`` if invalid."""
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        allowed = ", ".join(sorted(f.alias or n for n, f in model.model_fields.items()))
        raise user_error(
            ctx,
            f"check {check!r}: {format_validation_error(exc)} (parameters: {allowed or 'none'})",
        ) from None


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, worded for someone editing YAML rather than Python."""
    parts: list[str] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        kind = err["type"]
        msg = str(err["msg"]).removeprefix("Value error, ")
        if kind == "extra_forbidden":
            parts.append(f"unknown parameter {loc!r}")
        elif kind == "missing":
            parts.append(f"missing required parameter {loc!r}")
        elif loc:
            parts.append(f"parameter {loc!r}: {msg}")
        else:
            parts.append(msg)
    return "; ".join(parts)
