"""The normalised log table every source is mapped onto (one row per request or trace).

| column | type | meaning |
|---|---|---|
| unit_id | string | request id (or span id) |
| trace_id | string | trace / conversation turn id (``unit: trace`` aggregates by it; default unit_id) |
| ts | timestamp (UTC) | when the request started |
| session_id | string | session / conversation id (optional) |
| model_version, prompt_version, retrieval_version, policy_version | string | the four version labels |
| cohort | string | the cohort the report breaks results down by (tenant, use case, region, queue…) |
| response_format | string | ``json`` when the request expected a JSON answer (for content checks) |
| input_tokens, output_tokens | float | provider token usage |
| cost_usd | float | cost of the unit in USD |
| latency_ms | float | provider round trip in milliseconds |
| error_type | string | NULL when the request succeeded, else the error kind |
| tool_calls, tool_errors | integer | tool calls made, and how many failed |
| parse_ok, schema_ok | boolean | strict parse / schema outcome (NULL: no format expected) |
| refused, should_refuse | boolean | the answer refused; the request should have been refused (known-bad) |
| task_success | boolean | the application's task-success outcome |
| output | string | the answer text, where the source stores content (untrusted) |

plus the source's ``cohort_fields`` (strings). Missing columns are NULL. Quality outcomes
count over units that did not error, as in Stage 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ibis.expr.types as ir

COLUMNS: dict[str, str] = {
    "unit_id": "string",
    "trace_id": "string",
    "ts": "timestamp('UTC')",
    "session_id": "string",
    "model_version": "string",
    "prompt_version": "string",
    "retrieval_version": "string",
    "policy_version": "string",
    "cohort": "string",
    "response_format": "string",
    "input_tokens": "float64",
    "output_tokens": "float64",
    "cost_usd": "float64",
    "latency_ms": "float64",
    "error_type": "string",
    "tool_calls": "int64",
    "tool_errors": "int64",
    "parse_ok": "boolean",
    "schema_ok": "boolean",
    "refused": "boolean",
    "should_refuse": "boolean",
    "task_success": "boolean",
    "output": "string",
}
"""Normalised columns and their ibis types (the contract every source adapter meets)."""

MEASURE_COLUMNS: tuple[str, ...] = (
    "task_success", "parse_ok", "schema_ok", "tool_ok", "over_refused", "bad_refused",
    "is_error", "output_tokens", "cost_usd", "latency_ms",
)
"""Per-unit values the metric catalogue reads (derived in ``with_measures``)."""


def conform(t: ir.Table, cohort_fields: list[str]) -> ir.Table:
    """Select exactly the normalised columns (typed NULL where the source lacks one)."""
    import ibis

    cols: dict[str, Any] = {}
    present = set(t.columns)
    for name, dtype in COLUMNS.items():
        if name in present:
            cols[name] = t[name] if _same_type(t[name].type(), dtype) else t[name].cast(dtype)
        else:
            cols[name] = ibis.null().cast(dtype)
    for name in cohort_fields:
        cols[name] = t[name].cast("string") if name in present else ibis.null().cast("string")
    out = t.select(**cols)
    return out.mutate(
        trace_id=out.trace_id.fill_null(out.unit_id),
        cohort=out.cohort.fill_null("(none)"),
    )


def _same_type(have: Any, want: str) -> bool:
    """No cast needed (a needless cast can keep filters from reaching the Parquet scan)."""
    import ibis

    if want.startswith("timestamp"):
        return bool(have.is_timestamp() and have.timezone == "UTC")
    return bool(have.copy(nullable=True) == ibis.dtype(want).copy(nullable=True))


def by_trace(t: ir.Table, cohort_fields: list[str]) -> ir.Table:
    """One row per trace: sums for tokens, cost and tool calls, end-to-end latency, any
    error, all parsed/valid, any refusal; labels and cohort from the trace's rows."""
    ts_ms = t.ts.epoch_seconds().cast("float64") * 1000
    g = t.mutate(_end=ts_ms + t.latency_ms.fill_null(0))
    keep = {name: g[name].max() for name in
            ("session_id", "model_version", "prompt_version", "retrieval_version",
             "policy_version", "cohort", "response_format", "output", *cohort_fields)}
    agg = g.group_by("trace_id").aggregate(
        unit_id=g.trace_id.max(),
        ts=g.ts.min(),
        _start_ms=ts_ms.min(),
        _end_ms=g._end.max(),
        input_tokens=g.input_tokens.sum(),
        output_tokens=g.output_tokens.sum(),
        cost_usd=g.cost_usd.sum(),
        error_type=g.error_type.max(),
        tool_calls=g.tool_calls.sum(),
        tool_errors=g.tool_errors.sum(),
        parse_ok=g.parse_ok.min(),
        schema_ok=g.schema_ok.min(),
        refused=g.refused.max(),
        should_refuse=g.should_refuse.max(),
        task_success=g.task_success.min(),
        **keep,
    )
    return agg.mutate(latency_ms=(agg._end_ms - agg._start_ms).cast("float64")).drop("_start_ms", "_end_ms")


def with_measures(t: ir.Table) -> ir.Table:
    """Add the per-unit measure columns (floats, NULL where a metric does not apply)."""
    import ibis

    ok = t.error_type.isnull()
    f = "float64"
    # Integer 0/1 cast to double: a float literal is NUMERIC on PostgreSQL (it comes back
    # as Decimal), and ibis drops a cast of a float64 literal to float64.
    one, zero = ibis.literal(1, type="int8"), ibis.literal(0, type="int8")

    def as_float(x: Any) -> Any:
        # PostgreSQL has no boolean → double cast; CASE keeps NULL as NULL everywhere.
        if x.type().is_boolean():
            return ibis.cases((x == True, one), (x == False, zero), else_=ibis.null().cast("int8")).cast(f)  # noqa: E712
        return x.cast(f)

    def when_ok(x: Any) -> Any:
        return ibis.ifelse(ok, as_float(x), ibis.null().cast(f))

    not_bad = t.should_refuse.fill_null(False) == False  # noqa: E712 (an ibis expression)
    return t.mutate(
        is_error=ibis.ifelse(ok, zero, one).cast(f),
        task_success=when_ok(t.task_success),
        parse_ok=when_ok(t.parse_ok),
        schema_ok=when_ok(t.schema_ok),
        tool_ok=ibis.ifelse(ok & (t.tool_calls.fill_null(0) > 0),
                            ibis.ifelse(t.tool_errors.fill_null(0) == 0, one, zero).cast(f), ibis.null().cast(f)),
        over_refused=ibis.ifelse(not_bad, when_ok(t.refused), ibis.null().cast(f)),
        bad_refused=ibis.ifelse(t.should_refuse.fill_null(False), when_ok(t.refused),
                                ibis.null().cast(f)),
        output_tokens=when_ok(t.output_tokens),
        latency_ms=when_ok(t.latency_ms),
        cost_usd=t.cost_usd.cast(f),
    )
