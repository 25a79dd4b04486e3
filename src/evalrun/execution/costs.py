"""What each planned call may cost: counted prompt tokens, their hard bound, and each side's prices.

The pre-run estimate and the ``--max-cost`` budget both read this, so they agree. Prices
come from the config's ``pricing:``, litellm's price map, zero for a free provider (the
embedded model), or are *unpriced*, which is reported as such, never as $0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from evalrun.execution.runner import PlannedCall
from evalrun.project.loader import Project
from evalrun.providers.registry import spec_for
from evalrun.records import SIDES

__all__ = ["CallCosts", "CostEstimate", "CostStatus", "SideEstimate", "call_costs", "cost_estimate", "judge_prices"]

CostStatus = Literal["priced", "config", "local", "unpriced"]


@dataclass(slots=True)
class CallCosts:
    """Per request key: counted prompt tokens and a hard upper bound; per side: prices (USD
    per prompt and per completion token) and how they were established."""

    counted: dict[str, int] = field(default_factory=dict)
    bound: dict[str, int] = field(default_factory=dict)
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    status: dict[str, CostStatus] = field(default_factory=dict)


def _count(model: str, planned: PlannedCall) -> int:
    """A request's prompt tokens: by its provider's own counter when it has one (the
    embedded model's tokenizer, no litellm import), else by litellm's."""
    req = planned.request
    own = spec_for(model).count_prompt_tokens(model, req.local_model_path, req.messages)
    if own is not None:
        return own
    from evalrun.providers.litellm.tokens import count_prompt_tokens

    return count_prompt_tokens(model, req.messages, req.params)


def call_costs(project: Project, plan: Sequence[PlannedCall]) -> CallCosts:
    """Count every planned call's prompt tokens and look up each side's prices."""
    from evalrun.providers.litellm.tokens import prompt_token_bound  # (imports no litellm)

    out = CallCosts()
    for p in plan:
        if p.key not in out.counted:
            model = project.variant(p.side).config.model
            out.counted[p.key] = _count(model, p)
            out.bound[p.key] = max(out.counted[p.key], prompt_token_bound(p.request.messages, p.request.params))
    for side in SIDES:
        cfg = project.variant(side).config
        if cfg.pricing is not None:
            out.prices[side] = (cfg.pricing.input_per_mtok / 1e6, cfg.pricing.output_per_mtok / 1e6)
            out.status[side] = "config"
        elif spec_for(cfg.model).free:
            out.prices[side] = (0.0, 0.0)
            out.status[side] = "local"
        else:
            from evalrun.providers.litellm.tokens import prices_per_token

            prices = prices_per_token(cfg.model)
            out.status[side] = "unpriced" if prices is None else "priced"
            if prices is not None:
                out.prices[side] = prices
    return out


@dataclass(slots=True)
class SideEstimate:
    """Token and cost bounds of one side's calls."""

    calls: int = 0
    prompt_tokens: int = 0
    max_completion_tokens: int | None = 0  # None: max_tokens not set, unbounded
    cost_min_usd: float | None = 0.0  # prompt tokens only
    cost_max_usd: float | None = 0.0  # prompt + max completion
    cost_status: CostStatus = "priced"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {k: getattr(self, k) for k in self.__slots__}

    def completion_text(self) -> str:
        """The completion bound as the estimate lines say it (``<= N`` or ``unbounded``)."""
        return "unbounded" if self.max_completion_tokens is None else f"<= {self.max_completion_tokens}"

    def cost_text(self) -> str:
        """The cost bounds as the estimate lines say them (``$min..$max``, unpriced, local)."""
        if self.cost_status == "unpriced":
            return "unpriced"
        if self.cost_status == "local":
            return "local (free)"
        hi = "unbounded" if self.cost_max_usd is None else f"${self.cost_max_usd:.4f}"
        return f"${self.cost_min_usd or 0:.4f}..{hi}"


@dataclass(slots=True)
class CostEstimate:
    """Token and cost bounds of both sides; ``per_call_max_usd`` is the worst single call."""

    sides: dict[str, SideEstimate]
    per_call_max_usd: dict[str, float | None] = field(default_factory=dict)
    costs: CallCosts = field(default_factory=CallCosts)

    def total_min(self) -> float | None:
        """Both sides' prompt cost (None when a side is unpriced)."""
        vals = [s.cost_min_usd for s in self.sides.values()]
        return None if any(v is None for v in vals) else sum(v for v in vals if v is not None)

    def total_max(self) -> float | None:
        """Both sides' worst case (None when unpriced or unbounded)."""
        vals = [s.cost_max_usd for s in self.sides.values()]
        return None if any(v is None for v in vals) else sum(v for v in vals if v is not None)

    def line(self) -> str:
        """The one pre-run line: tokens and cost bounds per side."""
        parts = []
        for side, s in self.sides.items():
            parts.append(f"{side}: {s.calls} calls, {s.prompt_tokens} prompt tokens, completion {s.completion_text()}, "
                         f"cost {s.cost_text()}")
        return "estimate: " + "; ".join(parts)


def cost_estimate(project: Project, plan: Sequence[PlannedCall]) -> CostEstimate:
    """Count prompt tokens of every planned call and bound the cost of each side."""
    costs = call_costs(project, plan)
    out: dict[str, SideEstimate] = {}
    per_call: dict[str, float | None] = {}
    for side in SIDES:
        max_tokens = project.variant(side).config.params.max_tokens
        side_calls = [p for p in plan if p.side == side]
        est = SideEstimate(calls=len(side_calls), cost_status=costs.status[side])
        est.prompt_tokens = sum(costs.counted[p.key] for p in side_calls)
        est.max_completion_tokens = None if max_tokens is None else max_tokens * est.calls
        prices = costs.prices.get(side)
        if prices is None:
            est.cost_min_usd = est.cost_max_usd = None
            per_call[side] = None
            out[side] = est
            continue
        p_in, p_out = prices
        est.cost_min_usd = est.prompt_tokens * p_in
        est.cost_max_usd = None if max_tokens is None else est.cost_min_usd + max_tokens * est.calls * p_out
        biggest_prompt = max((costs.counted[p.key] for p in side_calls), default=0)
        per_call[side] = None if max_tokens is None else biggest_prompt * p_in + max_tokens * p_out
        out[side] = est
    return CostEstimate(out, per_call, costs)


def judge_prices(model: str) -> tuple[tuple[float, float] | None, CostStatus]:
    """USD per token of a judge model (a free provider costs nothing; unknown: unpriced)."""
    from evalrun.providers.litellm.tokens import prices_per_token

    if spec_for(model).free:
        return (0.0, 0.0), "local"
    prices = prices_per_token(model)
    return prices, "unpriced" if prices is None else "priced"

