"""Before any call: what a compare will cost and what its suite can decide (`evalrun estimate`).

Costs: prompt tokens counted for everything a request carries and a provider bills, completion
tokens bounded by ``max_tokens``, prices from the config, litellm's price map or a free
provider (``evalrun.execution.costs``). Power: per gate rule, whether an equally good candidate
can PASS with this suite and the smallest regression a FAIL can catch
(``evalrun.analysis.suite_power``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalrun.analysis.judge_estimate import judge_estimate, judge_lines
from evalrun.analysis.suite_power import SuitePower, suite_power
from evalrun.execution.costs import CostEstimate, SideEstimate, cost_estimate
from evalrun.execution.expected_time import SideTiming, TimeEstimate, expected_time
from evalrun.execution.plan import plan_calls
from evalrun.project.loader import Project

__all__ = ["Estimate", "estimate"]


@dataclass(slots=True)
class Estimate(CostEstimate):
    """Cost bounds of both sides and the suite's power per rule."""

    power: SuitePower | None = None
    judge: SideEstimate | None = None
    """The judge calls (``rubric``, ``pairwise``, ``similar``, calibration), when the suite has any."""
    timing: TimeEstimate | None = None

    def table(self) -> list[str]:
        """A table per side: calls (cached), prompt tokens, completion bound, cost, expected time."""
        header = ["side", "calls", "cached", "prompt tokens", "completion max", "cost", "expected time"]
        rows = [header]
        for side, s in self.sides.items():
            t = self.timing.sides.get(side) if self.timing is not None else None
            rows.append([side, f"{s.calls:,}", f"{t.cached:,}" if t else "-", f"{s.prompt_tokens:,}",
                         "unbounded" if s.max_completion_tokens is None else f"{s.max_completion_tokens:,}",
                         _cost(s), _side_time(t)])
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        out = []
        for r in rows:
            out.append("  ".join(c.rjust(w) if 0 < i < 5 else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
            if r is header:
                out.append("  ".join("-" * w for w in widths))
        total = self.timing.total_s if self.timing is not None else None
        lo, hi = self.total_min(), self.total_max()
        cost = ("unpriced" if lo is None else f"${lo:.4f}" + (f"..${hi:.4f}" if hi is not None else "..unbounded")
                if any(s.cost_status not in ("local",) for s in self.sides.values()) else "free (local)")
        when = "unknown (no earlier calls of a model to time)" if total is None else f"about {_duration(total)}"
        conc = f", {self.timing.concurrency} in flight" if self.timing is not None else ""
        out.append(f"both sides: cost {cost}; expected time {when}{conc}")
        return out

    def text(self) -> str:
        """The table per side, then one line per gate rule: can it PASS, what can it detect."""
        lines = [*self.table(), *judge_lines(self.judge)]
        if self.power is not None:
            lines += ["", *self.power.lines()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``evalrun estimate --json``)."""
        return {"sides": {k: v.to_dict() for k, v in self.sides.items()}, "total_min_usd": self.total_min(),
                "total_max_usd": self.total_max(),
                "timing": self.timing.to_dict() if self.timing is not None else None,
                "power": self.power.to_dict() if self.power is not None else None,
                "judge": self.judge.to_dict() if self.judge is not None else None}


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _cost(s: SideEstimate) -> str:
    return "free (local)" if s.cost_status == "local" else s.cost_text()  # the table's wording for local


def _side_time(t: SideTiming | None) -> str:
    if t is None:
        return "-"
    if t.calls == t.cached:
        return "0 s (all cached)"
    if t.per_call_s is None:
        return "unknown (no history)"
    how = "one at a time" if t.serial else "before concurrency"
    return f"{_duration(t.work_s or 0.0)} ({t.per_call_s:.2f} s/call, {how})"


def estimate(project: Project, *, cache_dir: Path | None = None) -> Estimate:
    """Costs of every planned call (no key read), the expected time (from the response
    cache's history) and the suite's power."""
    plan = plan_calls(project, with_keys=False)
    costs = cost_estimate(project, plan)
    return Estimate(costs.sides, costs.per_call_max_usd, costs.costs, power=suite_power(project),
                    timing=expected_time(project, plan, cache_dir=cache_dir), judge=judge_estimate(project))
