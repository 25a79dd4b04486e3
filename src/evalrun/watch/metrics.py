"""The trigger metrics of `evalrun watch`, as the metric catalogue defines them for live traffic.

Trigger metric names are the Stage-1 gate rule names (``error_rate`` for the error rate),
so `evalrun plan RUN_DIR` maps each gate rule to a trigger one to one. Each entry comes
from ``evalrun.catalogue`` (its ``Live`` part): which column of the normalised table (see
``evalrun.watch.table``) gives the per-unit value, over which units it is defined,
whether it is a 0/1 outcome, and which direction is harm. This module is the only place
`watch` reads them from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from evalrun import catalogue

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
    event: str | None = None
    """What one bad event is called (None: "<label> miss")."""

    @property
    def event_word(self) -> str:
        """What one bad event is called in rare-event (count-based) triggers."""
        return self.event or f"{self.label} miss"


def _from_catalogue() -> dict[str, MetricDef]:
    out: dict[str, MetricDef] = {}
    for m in catalogue.METRICS:
        if m.live is None:
            continue
        name = m.rule.name if m.rule is not None else m.name
        out[name] = MetricDef(name, m.live.label, m.live.kind, m.live.column, m.higher_is_better, m.live.where,
                              quantile=m.quantile, invert=m.live.invert, unit=m.live.unit,
                              event=m.live.event)
    return out


METRICS: dict[str, MetricDef] = _from_catalogue()
"""Every metric a trigger may name, keyed by the Stage-1 gate rule name."""

METRIC_NAMES: tuple[str, ...] = tuple(sorted(METRICS))
"""Sorted metric names (for messages and `Literal`-like validation)."""


def metric(name: str) -> MetricDef:
    """The catalogue entry for ``name`` (KeyError when unknown)."""
    return METRICS[name]
