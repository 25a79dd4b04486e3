"""How each side's latency was measured, and the client's own overhead, for the outputs.

The latency metrics and rules read ``CallResult.latency_s``: the provider's round trip at
the transport (``evalrun.providers.timing``). This module describes those numbers — which
clock took them, how many came from the cache or a warm-up — and reports what the gate
deliberately does not read: the client's view of each call (the whole provider call) and
its own overhead (whole call − provider time: building the request, parsing the answer,
waiting for a busy event loop). A large overhead is this machine's cost, not the
provider's; a p50 ratio on the client's view (``client_ratio``) is what a gate timing whole
calls would have read.

Which calls count where:

* provider latency (the metrics): every answered call with a latency, cached ones included
  (a cached answer keeps the provider time recorded when it was made: the provider then,
  not now — the latency rules say when they include such calls);
* client view and overhead: only calls made in this run, after the warm-up — a cached
  answer's client time belongs to another run, and a warm-up call carries the process's
  first-call costs by design.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, get_args

from evalrun.records import SIDES, CallResult, LatencyClock

__all__ = ["CLOCK_LABELS", "latency_measurement"]

CLOCK_LABELS: dict[str, str] = {
    "socket": "transport, kernel receive timestamps",
    "loop": "transport, read by the event loop",
    "generation": "in-process generation",
    "call": "whole provider call",
}
"""What each ``latency_clock`` value means, for the reports."""


def _quantile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between order statistics (numpy's default, as the metrics use)."""
    if not values:
        return None
    x = sorted(values)
    h = (len(x) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(x) - 1)
    return x[lo] + (h - lo) * (x[hi] - x[lo])


def _spread(values: Sequence[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": _quantile(values, 0.5),
        "p95": _quantile(values, 0.95),
        "mean": sum(values) / len(values) if values else None,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return b / a if a and b is not None else None


def _side(results: Sequence[CallResult]) -> dict[str, Any]:
    answered = [r for r in results if r.ok]
    clocks = {c: 0 for c in get_args(LatencyClock)}
    for r in answered:
        if r.latency_s is not None and r.latency_clock is not None:
            clocks[r.latency_clock] += 1
    fresh = [r for r in answered if not r.cached and not r.warmup and r.client_latency_s is not None]
    client = [r.client_latency_s for r in fresh if r.client_latency_s is not None]
    overheads = [o for r in fresh if (o := r.client_overhead_s) is not None]
    paired_client = [r.client_latency_s for r in fresh if r.client_overhead_s is not None]
    overhead = _spread(overheads)
    total_client = sum(c for c in paired_client if c is not None)
    overhead["share"] = sum(overheads) / total_client if total_client > 0 else None
    return {
        "answered": len(answered),
        "clocks": clocks,
        "cached": sum(1 for r in answered if r.cached),
        "warmup": sum(1 for r in results if r.warmup),
        "client": _spread(client),
        "overhead": overhead,
    }


def latency_measurement(results: Sequence[CallResult]) -> dict[str, Any]:
    """summary.json's ``latency_measurement``: per side, how latency was measured
    (``clocks``: answered calls per ``latency_clock``), the client's view of fresh calls
    (``client``: p50/p95/mean of the whole provider call), the client's overhead
    (``overhead``: whole call − provider time, with ``share`` = its fraction of the
    client's total time), and ``notes`` on anything that weakens the latency comparison.
    """
    sides: dict[str, dict[str, Any]] = {side: _side([r for r in results if r.side == side]) for side in SIDES}
    base, cand = sides["baseline"]["client"], sides["candidate"]["client"]
    notes: list[str] = []
    used = {side: {c for c, n in sides[side]["clocks"].items() if n} for side in SIDES}
    if used["baseline"] and used["candidate"] and used["baseline"] != used["candidate"]:
        notes.append(
            "the sides' latencies were taken with different clocks ("
            + "; ".join(f"{side}: {', '.join(sorted(used[side]))}" for side in SIDES)
            + "): the latency comparison mixes provider time with client time"
        )
    whole = sum(sides[side]["clocks"]["call"] for side in SIDES)
    if whole:
        notes.append(
            f"{whole} call(s) could only be timed as whole calls: their latency includes the "
            "client's own overhead"
        )
    return {
        "clock_labels": CLOCK_LABELS,
        **sides,
        "client_ratio": {
            "p50": _ratio(base["p50"], cand["p50"]),
            "p95": _ratio(base["p95"], cand["p95"]),
        },
        "notes": notes,
    }
