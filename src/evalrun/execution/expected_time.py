"""How long a compare should take, before any call: from the response cache's history.

Calls the cache will answer take no time. The rest take what the same model's calls took
when they were recorded (the median of its most recent stored calls, retries included),
spread over the suite's ``concurrency`` — or one at a time for a serial provider (the
embedded model). A model with no stored calls has no history to go by: its time is unknown
rather than guessed.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalrun.execution.cache import ResponseCache, default_cache_path
from evalrun.execution.runner import PlannedCall
from evalrun.project.config import project_root
from evalrun.project.loader import Project
from evalrun.providers.registry import spec_for
from evalrun.records import SIDES

__all__ = ["SideTiming", "TimeEstimate", "expected_time"]


@dataclass(frozen=True, slots=True)
class SideTiming:
    """One side: calls planned, how many the cache answers, the expected seconds per call."""

    calls: int
    cached: int
    per_call_s: float | None
    history: int
    serial: bool

    @property
    def work_s(self) -> float | None:
        """Seconds of calls this side still has to make (None: no history)."""
        fresh = self.calls - self.cached
        if fresh == 0:
            return 0.0
        return None if self.per_call_s is None else fresh * self.per_call_s

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"calls": self.calls, "cached": self.cached, "per_call_s": self.per_call_s, "history": self.history,
                "serial": self.serial, "work_s": self.work_s}


@dataclass(frozen=True, slots=True)
class TimeEstimate:
    """Both sides' timing and the run's expected wall time."""

    sides: dict[str, SideTiming]
    concurrency: int

    @property
    def total_s(self) -> float | None:
        """Expected seconds for the whole run (None when a side has no history)."""
        works = [t.work_s for t in self.sides.values()]
        if any(w is None for w in works):
            return None
        serial = sum(w for t, w in zip(self.sides.values(), works, strict=True) if t.serial and w)
        fresh = sum(t.calls - t.cached for t in self.sides.values() if not t.serial)
        parallel = sum(w for t, w in zip(self.sides.values(), works, strict=True) if not t.serial and w)
        return serial + parallel / max(1, min(self.concurrency, fresh or 1))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"sides": {k: v.to_dict() for k, v in self.sides.items()}, "concurrency": self.concurrency,
                "total_s": self.total_s}


def expected_time(project: Project, plan: Sequence[PlannedCall], *, cache_dir: Path | None = None) -> TimeEstimate:
    """Expected time of ``plan`` from the response cache (never created by this)."""
    path = (cache_dir / "responses.sqlite3") if cache_dir is not None else default_cache_path(
        project_root(project.suite.path))
    store = ResponseCache(path) if path.is_file() else None
    sides: dict[str, SideTiming] = {}
    try:
        for side in SIDES:
            model = project.variant(side).config.model
            calls = [p for p in plan if p.side == side]
            cached = len(store.get_many([p.key for p in calls])) if store is not None else 0
            times = store.recent_call_times(model) if store is not None else []
            sides[side] = SideTiming(len(calls), cached, statistics.median(times) if times else None, len(times),
                                     spec_for(model).serial)
    finally:
        if store is not None:
            store.close()
    return TimeEstimate(sides, project.suite.config.concurrency)
