"""Spend guard: expected tokens and cost of a compare before any call is made.

Prompt tokens are counted for everything a request carries and a provider bills: the
messages, the declared ``tools`` (and ``tool_choice``), and every other structured
parameter (``response_format``'s schema, ``extra`` payloads) — litellm's counter for the
model, tiktoken-based offline. Completion tokens are bounded by ``max_tokens``. Cost
comes from the config's ``pricing:``, litellm's price map, zero for local models, or is
*unpriced* — which is reported as such, never as $0.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evalrun.records import SIDES

if TYPE_CHECKING:
    from evalrun.analysis.suite_power import SuitePower
    from evalrun.api import Project
    from evalrun.execution.runner import PlannedCall


@dataclass(slots=True)
class SideEstimate:
    """Token and cost bounds of one side's calls."""

    calls: int = 0
    prompt_tokens: int = 0
    max_completion_tokens: int | None = 0  # None: max_tokens not set, unbounded
    cost_min_usd: float | None = 0.0  # prompt tokens only
    cost_max_usd: float | None = 0.0  # prompt + max completion
    cost_status: str = "priced"  # priced | config | local | unpriced

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class Estimate:
    """Bounds for both sides; the per-call figures feed the --max-cost guard.

    ``prompt_tokens_by_key``: counted prompt tokens per request key; ``prompt_bound_by_key``:
    a hard upper bound of the same (see ``prompt_token_bound``); ``prices``: USD per prompt
    and per completion token of each priced side.
    """

    sides: dict[str, SideEstimate]
    per_call_max_usd: dict[str, float | None] = field(default_factory=dict)
    prompt_tokens_by_key: dict[str, int] = field(default_factory=dict)
    prompt_bound_by_key: dict[str, int] = field(default_factory=dict)
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    power: SuitePower | None = None  # what the suite can decide, per rule (evalrun.analysis.suite_power)

    def total_min(self) -> float | None:
        vals = [s.cost_min_usd for s in self.sides.values()]
        return None if any(v is None for v in vals) else sum(v for v in vals if v is not None)

    def total_max(self) -> float | None:
        vals = [s.cost_max_usd for s in self.sides.values()]
        return None if any(v is None for v in vals) else sum(v for v in vals if v is not None)

    def line(self) -> str:
        """The one pre-run line: tokens and cost bounds per side."""
        parts = []
        for side, s in self.sides.items():
            comp = "unbounded" if s.max_completion_tokens is None else f"<= {s.max_completion_tokens}"
            if s.cost_status == "unpriced":
                cost = "unpriced"
            elif s.cost_status == "local":
                cost = "local (free)"
            else:
                hi = "unbounded" if s.cost_max_usd is None else f"${s.cost_max_usd:.4f}"
                cost = f"${s.cost_min_usd or 0:.4f}..{hi}"
            parts.append(f"{side}: {s.calls} calls, {s.prompt_tokens} prompt tokens, completion {comp}, cost {cost}")
        return "estimate: " + "; ".join(parts)

    def text(self) -> str:
        """The cost line, then one line per gate rule: can it PASS, what can it detect."""
        lines = [self.line()]
        if self.power is not None:
            lines += self.power.lines()
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"sides": {k: v.to_dict() for k, v in self.sides.items()}, "total_min_usd": self.total_min(),
                "total_max_usd": self.total_max(),
                "power": self.power.to_dict() if self.power is not None else None}


def _prices(litellm: Any, model: str) -> tuple[float, float] | None:
    """USD per token (input, output) from litellm's offline price map, or None."""
    try:
        p_in, _ = litellm.cost_per_token(model=model, prompt_tokens=1, completion_tokens=0)
        _, p_out = litellm.cost_per_token(model=model, prompt_tokens=0, completion_tokens=1)
        return float(p_in), float(p_out)
    except Exception:  # not in the price map
        return None


# Request parameters that are plain settings, not text a provider reads (and bills).
_SCALAR_TYPES = (str, int, float, bool, type(None))
# Counted by litellm's counter with the messages (it knows how providers render them).
_COUNTED_WITH_MESSAGES = frozenset({"tools", "tool_choice"})


def _billable_extras(params: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Structured request parameters whose content reaches the model (response_format's
    schema, legacy ``functions``, ``extra`` payloads): counted as their JSON text."""
    return sorted((k, v) for k, v in params.items()
                  if k not in _COUNTED_WITH_MESSAGES and not isinstance(v, _SCALAR_TYPES))


def count_prompt_tokens(litellm: Any, model: str, messages: Sequence[Mapping[str, Any]],
                        params: Mapping[str, Any]) -> int:
    """Prompt tokens of one request: messages with the declared tools and tool_choice, plus
    the JSON text of every other structured parameter. A tokenizer that cannot load
    offline falls back to ~4 characters per token over the same text."""
    tools = params.get("tools") or None
    tool_choice = params.get("tool_choice")
    extras = _billable_extras(params)
    try:
        n = int(litellm.token_counter(model=model, messages=list(messages), tools=tools,
                                      tool_choice=tool_choice if isinstance(tool_choice, dict) else None))
        for _, value in extras:
            n += int(litellm.token_counter(model=model, text=json.dumps(value, sort_keys=True, default=str)))
        return n
    except Exception:
        text = json.dumps([list(messages), tools, tool_choice, extras], default=str)
        return len(text) // 4 + 1


def prompt_token_bound(messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> int:
    """A hard upper bound of a request's prompt tokens: the UTF-8 bytes of its messages,
    tools and structured parameters as JSON. A byte-level tokenizer never makes more tokens
    than bytes, and the JSON syntax outweighs the few tokens a provider adds per message."""
    billable = [list(messages), params.get("tools"), params.get("tool_choice"), _billable_extras(params)]
    return len(json.dumps(billable, ensure_ascii=False, default=str).encode("utf-8", "replace")) + 16


def estimate(project: Project, plan: list[PlannedCall] | None = None) -> Estimate:
    """Count prompt tokens of every planned call and bound the cost of each side."""
    from evalrun.api import plan_calls
    from evalrun.providers.litellm.provider import import_litellm

    litellm = import_litellm()
    calls = plan if plan is not None else plan_calls(project, with_keys=False)
    out: dict[str, SideEstimate] = {}
    per_call: dict[str, float | None] = {}
    counted: dict[str, int] = {}
    bounds: dict[str, int] = {}
    prices_by_side: dict[str, tuple[float, float]] = {}
    for side in SIDES:
        v = project.variant(side)
        cfg = v.config
        est = SideEstimate()
        side_calls = [p for p in calls if p.side == side]
        est.calls = len(side_calls)
        for p in side_calls:
            if p.key not in counted:
                counted[p.key] = count_prompt_tokens(litellm, cfg.model, p.request.messages, p.request.params)
                bounds[p.key] = max(counted[p.key], prompt_token_bound(p.request.messages, p.request.params))
            est.prompt_tokens += counted[p.key]
        max_tokens = cfg.params.max_tokens
        est.max_completion_tokens = None if max_tokens is None else max_tokens * est.calls
        if cfg.pricing is not None:
            p_in, p_out = cfg.pricing.input_per_mtok / 1e6, cfg.pricing.output_per_mtok / 1e6
            est.cost_status = "config"
        elif cfg.model.startswith("local/"):
            p_in = p_out = 0.0
            est.cost_status = "local"
        else:
            prices = _prices(litellm, cfg.model)
            if prices is None:
                est.cost_status = "unpriced"
                est.cost_min_usd = est.cost_max_usd = None
                per_call[side] = None
                out[side] = est
                continue
            p_in, p_out = prices
            est.cost_status = "priced"
        prices_by_side[side] = (p_in, p_out)
        est.cost_min_usd = est.prompt_tokens * p_in
        est.cost_max_usd = None if max_tokens is None else est.cost_min_usd + max_tokens * est.calls * p_out
        biggest_prompt = max((counted[p.key] for p in side_calls), default=0)
        per_call[side] = None if max_tokens is None else biggest_prompt * p_in + max_tokens * p_out
        out[side] = est
    from evalrun.analysis.suite_power import suite_power

    return Estimate(out, per_call, prompt_tokens_by_key=counted, prompt_bound_by_key=bounds, prices=prices_by_side,
                    power=suite_power(project))
