"""Sufficient statistics of one stage, as the engine returns them.

Per cohort × arm × time bucket: the number of units, and per *measure* (a metric's value
column, or a latency exceedance indicator) the count of units that have a value, Σx and
Σx². Nothing else leaves the database; every sequence and verdict is computed from these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

Arm = Literal["baseline", "candidate"]
ARMS: tuple[Arm, Arm] = ("baseline", "candidate")
"""Index 0 is the baseline, 1 the candidate, in every array below."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One candidate unit shown as an example in the report (content is untrusted)."""

    unit_id: str
    ts: str
    cohort: str
    output: str
    outcome: str


@dataclass(frozen=True)
class StageData:
    """What the engine measured for one stage up to ``at``.

    Arrays are shaped (2 arms, cohorts, buckets); ``buckets`` are bucket start times in
    epoch seconds, ascending; cohorts are sorted.
    """

    bucket_s: int
    cohorts: list[str]
    buckets: NDArray[np.int64]
    units: NDArray[np.float64]
    n: dict[str, NDArray[np.float64]]
    total: dict[str, NDArray[np.float64]]
    squares: dict[str, NDArray[np.float64]]
    first_ts: dict[str, float | None] = field(default_factory=dict)
    """Epoch seconds of each arm's first unit in the window (None: no unit)."""
    last_ts: dict[str, float | None] = field(default_factory=dict)
    """Epoch seconds of each arm's last unit in the window."""
    thresholds: dict[str, float | None] = field(default_factory=dict)
    """Latency thresholds (ms) used by exceedance measures, by measure name."""
    quantiles: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """Descriptive latency quantiles per arm (from a 1 %-wide log histogram)."""
    samples: list[Sample] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    """The SQL the engine ran, for the user to look at the data themselves."""

    @property
    def n_units(self) -> dict[str, int]:
        """Units per arm over the whole window."""
        return {arm: int(self.units[i].sum()) for i, arm in enumerate(ARMS)}


def empty_stage_data(bucket_s: int, measures: list[str]) -> StageData:
    """A window with no units at all."""
    shape = (2, 0, 0)
    return StageData(
        bucket_s=bucket_s,
        cohorts=[],
        buckets=np.zeros(0, dtype=np.int64),
        units=np.zeros(shape),
        n={m: np.zeros(shape) for m in measures},
        total={m: np.zeros(shape) for m in measures},
        squares={m: np.zeros(shape) for m in measures},
        first_ts={"baseline": None, "candidate": None},
        last_ts={"baseline": None, "candidate": None},
    )


def stage_data_from_rows(
    rows: list[dict[str, Any]], *, bucket_s: int, measures: list[str]
) -> StageData:
    """Build ``StageData`` from aggregate rows.

    Each row has ``cohort``, ``arm``, ``bucket`` (epoch seconds), ``units``, ``first_ts``,
    ``last_ts`` and, per measure ``m``, ``m__n``, ``m__s``, ``m__q``.
    """
    if not rows:
        return empty_stage_data(bucket_s, measures)
    cohorts = sorted({str(r["cohort"]) for r in rows})
    buckets = np.array(sorted({int(r["bucket"]) for r in rows}), dtype=np.int64)
    ci = {c: i for i, c in enumerate(cohorts)}
    bi = {int(b): i for i, b in enumerate(buckets)}
    shape = (2, len(cohorts), len(buckets))
    units = np.zeros(shape)
    n = {m: np.zeros(shape) for m in measures}
    s = {m: np.zeros(shape) for m in measures}
    q = {m: np.zeros(shape) for m in measures}
    first: dict[str, float | None] = {"baseline": None, "candidate": None}
    last: dict[str, float | None] = {"baseline": None, "candidate": None}
    for r in rows:
        a = 0 if r["arm"] == "baseline" else 1
        idx = (a, ci[str(r["cohort"])], bi[int(r["bucket"])])
        units[idx] += float(r["units"])
        for m in measures:
            n[m][idx] += _num(r.get(f"{m}__n"))
            s[m][idx] += _num(r.get(f"{m}__s"))
            q[m][idx] += _num(r.get(f"{m}__q"))
        arm = ARMS[a]
        f, l_ = r.get("first_ts"), r.get("last_ts")
        if f is not None:
            first[arm] = float(f) if first[arm] is None else min(first[arm], float(f))  # type: ignore[type-var]
        if l_ is not None:
            last[arm] = float(l_) if last[arm] is None else max(last[arm], float(l_))  # type: ignore[type-var]
    return StageData(bucket_s, cohorts, buckets, units, n, s, q, first, last)


def _num(v: Any) -> float:
    if v is None:
        return 0.0
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if f != f else f
