"""Before any call: what a compare will cost and what its suite can decide (`evalrun estimate`).

Costs: prompt tokens counted for everything a request carries and a provider bills, completion
tokens bounded by ``max_tokens``, prices from the config, litellm's price map or a free
provider (``evalrun.execution.costs``). Power: per gate rule, whether an equally good candidate
can PASS with this suite and the smallest regression a FAIL can catch
(``evalrun.analysis.suite_power``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evalrun.analysis.judge_estimate import judge_estimate, judge_lines
from evalrun.analysis.suite_power import SuitePower, suite_power
from evalrun.execution.costs import CostEstimate, SideEstimate, cost_estimate
from evalrun.execution.plan import plan_calls
from evalrun.project.loader import Project

__all__ = ["Estimate", "estimate"]


@dataclass(slots=True)
class Estimate(CostEstimate):
    """Cost bounds of both sides and the suite's power per rule."""

    power: SuitePower | None = None
    judge: SideEstimate | None = None
    """The judge calls (``rubric``, ``pairwise``, ``similar``, calibration), when the suite has any."""

    def text(self) -> str:
        """The cost line, then one line per gate rule: can it PASS, what can it detect."""
        lines = [self.line(), *judge_lines(self.judge)]
        if self.power is not None:
            lines += self.power.lines()
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``evalrun estimate --json``)."""
        return {"sides": {k: v.to_dict() for k, v in self.sides.items()}, "total_min_usd": self.total_min(),
                "total_max_usd": self.total_max(),
                "power": self.power.to_dict() if self.power is not None else None,
                "judge": self.judge.to_dict() if self.judge is not None else None}


def estimate(project: Project) -> Estimate:
    """Costs of every planned call (no key read) and the suite's power."""
    costs = cost_estimate(project, plan_calls(project, with_keys=False))
    return Estimate(costs.sides, costs.per_call_max_usd, costs.costs, power=suite_power(project),
                    judge=judge_estimate(project))
