"""``--max-cost``: spend so far plus the reserved worst case of every call in flight never
passes the cap."""

from __future__ import annotations

import asyncio
import math

from evalrun.errors import CouldNotMeasureError
from evalrun.execution.costs import cost_estimate
from evalrun.execution.runner import PlannedCall
from evalrun.project.loader import Project
from evalrun.records import SIDES, CallResult

__all__ = ["Budget", "JudgeBudget"]


class _Reservations:
    """The cap's bookkeeping both budgets share: a call starts only when the spend so far,
    the reservations of the calls in flight and its own worst case fit under the cap;
    otherwise it waits for a reservation to come back, or is skipped (and counted) when
    nothing is in flight. One event loop admits every call, so no two admissions race."""

    def __init__(self, cap: float, already: float) -> None:
        self.cap = cap
        self.spent = already
        self.reserved = 0.0
        self.in_flight = 0
        self.skipped = 0
        self._held: dict[str, float] = {}
        self._changed: asyncio.Event | None = None

    def worst(self, planned: PlannedCall) -> float:
        """The most ``planned`` can cost, as far as this run knows now."""
        raise NotImplementedError

    async def admit(self, planned: PlannedCall) -> bool:
        """Reserve ``planned``'s worst case and let it start, wait, or skip it."""
        while True:
            worst = self.worst(planned)
            if self.spent + self.reserved + worst <= self.cap:
                self.reserved += worst
                self.in_flight += 1
                self._held[planned.identity] = worst
                return True
            if self.in_flight == 0:
                self.skipped += 1
                return False
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()

    def _release(self, result: CallResult) -> float | None:
        """Give back ``result``'s reservation and add what it cost; its reservation, or None
        when the call was not admitted here (a circuit-open rejection, a cache hit)."""
        worst = self._held.pop(result.identity, None)
        if worst is None:
            return None
        self.reserved -= worst
        self.in_flight -= 1
        if not result.cached and result.cost_usd is not None:
            self.spent += result.cost_usd
        return worst

    def _wake(self) -> None:
        if self._changed is not None:  # wake every waiting call: each re-checks its own fit
            self._changed.set()
            self._changed = None


class Budget(_Reservations):
    """--max-cost: spend so far plus the reserved worst case of every call in flight never
    passes the cap.

    A call's worst case is its prompt tokens times the input price plus ``max_tokens``
    times the output price. Until a side has had an answer, its prompt tokens are taken at
    their hard upper bound (the request's size in bytes, ``tokens.prompt_token_bound``);
    after that, at the counted tokens scaled by the highest billed/counted ratio the side
    has shown, plus 10 % (never above the hard bound). A call billed above its reservation
    raises every later reservation of its side by the same factor.

    A call whose worst case does not fit *waits* while other calls are in flight (their
    reservations come back when they finish); only a call that does not fit with nothing
    in flight is skipped. One event loop admits every call, so no two admissions race.
    """

    MARGIN = 1.10

    def __init__(self, cap: float, todo: list[PlannedCall], project: Project, already: float) -> None:
        est = cost_estimate(project, todo)
        self.max_tokens: dict[str, int] = {}
        for side in SIDES:
            s = est.sides[side]
            if s.calls and s.cost_status == "unpriced":
                raise CouldNotMeasureError(
                    f"--max-cost cannot be enforced: {project.variant(side).config.model} ({side}) has no known price; "
                    f"add pricing: to {project.variant(side).path}"
                )
            max_tokens = project.variant(side).config.params.max_tokens
            if s.calls and (est.per_call_max_usd.get(side) is None or max_tokens is None):
                raise CouldNotMeasureError(
                    f"--max-cost needs params.max_tokens in {project.variant(side).path} to bound each call's cost"
                )
            self.max_tokens[side] = max_tokens or 0
        low = est.total_min() or 0.0
        if already + low > cap:
            raise CouldNotMeasureError(
                f"--max-cost ${cap:.4f} refused before any call: the prompts alone cost ${low:.4f} "
                f"({est.line()})"
            )
        super().__init__(cap, already)
        self.prices = {side: est.costs.prices.get(side, (0.0, 0.0)) for side in SIDES}
        self.counted = est.costs.counted
        self.bound = est.costs.bound
        self.ratio: dict[str, float | None] = dict.fromkeys(SIDES)
        self.factor: dict[str, float] = dict.fromkeys(SIDES, 1.0)

    def worst(self, planned: PlannedCall) -> float:
        """The most ``planned`` can cost, as far as this run knows now."""
        p_in, p_out = self.prices[planned.side]
        bound = self.bound.get(planned.key, 0)
        ratio = self.ratio[planned.side]
        prompt = bound if ratio is None else min(bound, math.ceil(self.counted.get(planned.key, 0) * ratio * self.MARGIN))
        return (prompt * p_in + self.max_tokens[planned.side] * p_out) * self.factor[planned.side]

    def finished(self, result: CallResult) -> None:
        """Turn a finished call's reservation into what it really cost; learn from it."""
        worst = self._release(result)
        if worst is None:
            return
        if not result.cached and result.cost_usd is not None:
            counted = self.counted.get(result.request_key)
            if result.ok and not result.tokens_estimated and result.prompt_tokens and counted:
                seen = result.prompt_tokens / counted
                self.ratio[result.side] = max(self.ratio[result.side] or 0.0, seen)
            if worst > 0 and result.cost_usd > worst:
                self.factor[result.side] *= result.cost_usd / worst
        self._wake()


class JudgeBudget(_Reservations):
    """--max-cost for the judge calls, after the variants': what the run already spent plus
    the reserved worst case of every judge call in flight never passes the cap.

    A judge call's worst case is its prompt's hard token bound at the judge's input price
    plus its ``max_tokens`` at the output price (an embedding: the prompt only). A judge
    without a known price, or without ``max_tokens``, cannot be budgeted: refused before
    any judge call. Calls wait for reservations to come back, as in ``Budget``; a call that
    does not fit with nothing in flight is skipped (and counted).
    """

    def __init__(self, cap: float, todo: list[PlannedCall], already: float) -> None:
        from evalrun.execution.costs import judge_prices
        from evalrun.providers.litellm.tokens import prompt_token_bound

        super().__init__(cap, already)
        self.worst_of: dict[str, float] = {}
        prices: dict[str, tuple[float, float]] = {}
        for p in todo:
            req = p.request
            if req.model not in prices:
                found, _ = judge_prices(req.model)
                if found is None:
                    raise CouldNotMeasureError(f"--max-cost cannot be enforced: the judge model {req.model} has no "
                                               "known price (a judge is priced from litellm's price map)")
                prices[req.model] = found
            p_in, p_out = prices[req.model]
            max_tokens = 0 if req.embed_input is not None else req.params.get("max_tokens")
            if max_tokens is None:
                raise CouldNotMeasureError("--max-cost needs judge.params.max_tokens to bound each judge call's cost")
            messages = req.messages or [{"role": "user", "content": req.embed_input or ""}]
            self.worst_of[p.identity] = prompt_token_bound(messages, {}) * p_in + int(max_tokens) * p_out

    def worst(self, planned: PlannedCall) -> float:
        """A judge call's worst case, fixed before the first one."""
        return self.worst_of.get(planned.identity, 0.0)

    def finished(self, result: CallResult) -> None:
        """Turn a finished judge call's reservation into what it cost."""
        if self._release(result) is not None:
            self._wake()
