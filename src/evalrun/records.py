"""Core record types that flow between stages: one model call, its checks, its score.

Plain dataclasses (not pydantic) because tens of thousands of them are built per run.
Each has ``to_dict``/``from_dict`` so the journal (JSONL) round-trips exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

Side = Literal["baseline", "candidate"]
SIDES: tuple[Side, Side] = ("baseline", "candidate")

ErrorKind = Literal[
    "rate_limited",
    "server_error",
    "timeout",
    "connection",
    "auth",
    "bad_request",
    "content_policy",
    "context_window",
    "malformed_response",
    "circuit_open",  # not attempted: the endpoint failed call after call (see runner.Endpoint)
    "unknown",
]
"""What a failed call is recorded with (after the harness's retries ran out)."""
ERROR_KINDS: tuple[ErrorKind, ...] = get_args(ErrorKind)

CaseKind = Literal["representative", "known_bad", "format_sensitive"]
"""The three kinds of case a suite holds."""

FailureClass = Literal["fenced", "embedded", "truncated", "refused", "invalid"]
"""Why an output expected to be JSON did not parse strictly."""

RefusalSource = Literal["content_policy", "content_filter", "refusal_field", "check", "phrase"]
"""What showed a refusal, in the order they are looked at."""

# How a call's cost was established.
CostStatus = Literal["priced", "config", "local", "unpriced"]
_COST_STATUSES = frozenset(get_args(CostStatus))

# How a call's latency was taken (see evalrun.providers.timing): the transport span with
# kernel receive timestamps, the transport span read by the event loop, an in-process
# model's generation, or the whole provider call (no transport timing available).
LatencyClock = Literal["socket", "loop", "generation", "call"]
_LATENCY_CLOCKS = frozenset(get_args(LatencyClock))


def call_identity(case_id: str, side: str, request_key: str) -> str:
    """One call of a run. The request key alone is not enough: both sides (A/A) or two
    cases with the same rendered prompt make the same request."""
    return f"{case_id}\x00{side}\x00{request_key}"


@dataclass(slots=True)
class ToolCall:
    """One tool call the model asked for; ``arguments`` is the raw string the model wrote."""

    name: str
    arguments: str
    id: str | None = None


@dataclass(slots=True)
class CallResult:
    """Everything recorded about one (case, side, sample) call, success or failure."""

    case_id: str
    side: Side
    sample: int
    model: str
    output: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    refusal: str | None = None  # the message's `refusal` field, when the provider sets one
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_estimated: bool = False  # usage was absent or impossible; counted locally with tiktoken
    response_truncated: bool = False  # the answer exceeded the suite's max_response_mb: text cut there
    # The answering attempt's provider round trip, what latency rules read: request sent ->
    # response received at the transport (``latency_clock`` says how it was taken).
    latency_s: float | None = None
    # The same attempt as the client saw it: the whole provider call, including building
    # the request, parsing the answer and any wait for the busy event loop.
    client_latency_s: float | None = None
    latency_clock: LatencyClock | None = None
    warmup: bool = False  # made alone before the others, to load what first calls load
    attempt_latencies_s: list[float] = field(default_factory=list)  # client view per attempt
    wall_s: float | None = None  # first attempt start to final outcome, incl. backoff waits
    cost_usd: float | None = None
    cost_status: CostStatus = "unpriced"
    attempts: int = 0
    error_kind: ErrorKind | None = None
    error_message: str | None = None  # already scrubbed of secrets
    cached: bool = False
    request_key: str = ""  # canonical hash of the request (cache key, resume identity)

    @property
    def ok(self) -> bool:
        return self.error_kind is None

    @property
    def identity(self) -> str:
        """Which planned call this answers: side and request key (see ``PlannedCall.identity``)."""
        return call_identity(self.case_id, self.side, self.request_key)

    @property
    def client_overhead_s(self) -> float | None:
        """The client's own share of the answering attempt: whole call minus provider time.

        None when there is no separate provider time (clock "call", or not answered).
        """
        if self.latency_s is None or self.client_latency_s is None or self.latency_clock in (None, "call"):
            return None
        return self.client_latency_s - self.latency_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallResult:
        """Rebuild a result from its ``to_dict`` form, checking every field's type.

        Rows come back from files a user, a crash or another version may have altered (the
        journal, the response cache): a wrong-typed field raises ``ValueError`` naming it,
        so the caller can treat the row as missing instead of failing later, far away.
        Unknown keys are ignored (rows of a newer evalrun).
        """
        if not isinstance(data, dict):
            raise ValueError(f"a call result is a JSON object, not {type(data).__name__}")
        values: dict[str, Any] = {}
        for name, check in _FIELD_CHECKS.items():
            if name not in data:
                if name in _REQUIRED:
                    raise ValueError(f"call result without {name!r}")
                continue
            value = data[name]
            if not check(value):
                raise ValueError(f"call result field {name!r} has an invalid value: {value!r:.60}")
            values[name] = value
        values["tool_calls"] = [ToolCall(tc["name"], tc["arguments"], tc.get("id"))
                                for tc in values.get("tool_calls") or []]
        values["attempt_latencies_s"] = [float(x) for x in values.get("attempt_latencies_s") or []]
        if "latency_clock" not in data and values.get("latency_s") is not None:
            # Written before transport timing: its latency is the whole call.
            values["latency_clock"] = "call"
            values["client_latency_s"] = values["latency_s"]
        return cls(**values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(value)


def _opt(check: Any) -> Any:
    return lambda v: v is None or check(v)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_tool_call(value: Any) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("name"), str)
            and isinstance(value.get("arguments"), str) and _opt(_is_str)(value.get("id")))


_REQUIRED = frozenset({"case_id", "side", "sample", "model"})
# What each stored field of a CallResult may hold (see ``CallResult.from_dict``).
_FIELD_CHECKS: dict[str, Any] = {
    "case_id": _is_str,
    "side": lambda v: v in SIDES,
    "sample": lambda v: _is_int(v) and v >= 0,
    "model": _is_str,
    "output": _opt(_is_str),
    "tool_calls": lambda v: isinstance(v, list) and all(_is_tool_call(t) for t in v),
    "finish_reason": _opt(_is_str),
    "refusal": _opt(_is_str),
    "prompt_tokens": _opt(_is_int),
    "completion_tokens": _opt(_is_int),
    "tokens_estimated": lambda v: isinstance(v, bool),
    "latency_s": _opt(_is_number),
    "attempt_latencies_s": lambda v: isinstance(v, list) and all(_is_number(x) for x in v),
    "wall_s": _opt(_is_number),
    "cost_usd": _opt(_is_number),
    "cost_status": lambda v: v in _COST_STATUSES,
    "attempts": lambda v: _is_int(v) and v >= 0,
    "error_kind": lambda v: v is None or v in ERROR_KINDS,
    "error_message": _opt(_is_str),
    "cached": lambda v: isinstance(v, bool),
    "request_key": _is_str,
    "client_latency_s": _opt(_is_number),
    "latency_clock": lambda v: v is None or v in _LATENCY_CLOCKS,
    "warmup": lambda v: isinstance(v, bool),
}


@dataclass(slots=True)
class CheckOutcome:
    """The result of one check on one call.

    ``facts`` carries structured findings the comparator aggregates, e.g. the json check
    sets ``{"strict": bool, "lenient": bool, "failure_class": str | None}``.
    """

    check: str
    passed: bool
    detail: str = ""
    facts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckOutcome:
        return cls(**data)


@dataclass(slots=True)
class Score:
    """Scored view of one call: check outcomes and the flags metrics are built from.

    ``None`` means "not applicable to this case" (e.g. no format expectation), so the
    metric's denominator excludes it.
    """

    checks: list[CheckOutcome]
    passed: bool
    parse_strict: bool | None = None
    parse_lenient: bool | None = None
    parse_failure: FailureClass | None = None
    schema_valid: bool | None = None
    tool_valid: bool | None = None
    refused: bool = False
    refusal_source: RefusalSource | None = None
    should_refuse: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Score:
        data = dict(data)
        data["checks"] = [CheckOutcome.from_dict(c) for c in data.get("checks") or []]
        return cls(**data)
