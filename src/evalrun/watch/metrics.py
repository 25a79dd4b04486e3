"""The metric catalogue of `evalrun watch`: one entry per trigger metric, in one place.

Trigger metric names are the Stage-1 gate rule names, so `evalrun plan RUN_DIR` maps
each gate rule to a trigger one to one. Each entry says which column of the normalised
table (see ``evalrun.watch.table``) gives the per-unit value, over which units it is
defined, whether it is a 0/1 outcome, and which direction is harm.

A later refactor may move these definitions into a catalogue shared with Stage 1; this
module is the only place `watch` reads them from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ValueKind = Literal["binary", "continuous", "quantile"]


@dataclass(frozen=True, slots=True)
class MetricDef:
    """How one trigger metric is measured on live traffic."""

    name: str
    label: str
    """Human wording, e.g. "strict parse rate"."""
    kind: ValueKind
    column: str
    """Normalised-table column holding the per-unit value (bool → 0/1)."""
    higher_is_better: bool
    where: str
    """Which units count, in words (shown in reports next to the numbers)."""
    quantile: float | None = None
    """For quantile metrics: the quantile (0.5, 0.95)."""
    invert: bool = False
    """The stored value is the *good* outcome; the bad event is ``1 - value``."""
    unit: str = ""
    """Display unit for continuous values ("tokens", "USD", "ms")."""

    @property
    def event_word(self) -> str:
        """What one bad event is called in rare-event (count-based) triggers."""
        return _EVENT_WORDS.get(self.name, f"{self.label} miss")


METRICS: dict[str, MetricDef] = {
    m.name: m
    for m in (
        MetricDef("pass_rate", "task success rate", "binary", "task_success", True,
                  "units with a task_success outcome", invert=True),
        MetricDef("parse_strict", "strict parse rate", "binary", "parse_ok", True,
                  "units with a parse outcome (a format was expected)", invert=True),
        MetricDef("schema_valid", "schema-valid rate", "binary", "schema_ok", True,
                  "units with a schema outcome", invert=True),
        MetricDef("tool_valid", "tool-call validity", "binary", "tool_ok", True,
                  "units that made at least one tool call", invert=True),
        MetricDef("over_refusal", "over-refusal rate", "binary", "over_refused", False,
                  "units that should be answered (should_refuse not true)"),
        MetricDef("known_bad_refusal", "known-bad refusal rate", "binary", "bad_refused", True,
                  "units flagged should_refuse", invert=True),
        MetricDef("error_rate", "error rate", "binary", "is_error", False, "all units"),
        MetricDef("completion_tokens_ratio", "completion tokens per unit", "continuous",
                  "output_tokens", False, "units without an error, with token counts", unit="tokens"),
        MetricDef("cost_ratio", "cost per unit", "continuous", "cost_usd", False,
                  "units with a cost", unit="USD"),
        MetricDef("latency_p50_ratio", "p50 latency", "quantile", "latency_ms", False,
                  "units without an error, with a latency", quantile=0.5, unit="ms"),
        MetricDef("latency_p95_ratio", "p95 latency", "quantile", "latency_ms", False,
                  "units without an error, with a latency", quantile=0.95, unit="ms"),
    )
}
"""Every metric a trigger may name, keyed by the Stage-1 gate rule name."""

_EVENT_WORDS = {
    "pass_rate": "task failure",
    "parse_strict": "parse failure",
    "schema_valid": "schema violation",
    "tool_valid": "tool-call failure",
    "over_refusal": "refusal of an answerable request",
    "known_bad_refusal": "known-bad request answered",
    "error_rate": "error",
}

METRIC_NAMES: tuple[str, ...] = tuple(sorted(METRICS))
"""Sorted metric names (for messages and `Literal`-like validation)."""


def metric(name: str) -> MetricDef:
    """The catalogue entry for ``name`` (KeyError when unknown)."""
    return METRICS[name]
