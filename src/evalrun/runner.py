"""Run planned calls on one event loop with bounded concurrency and harness-owned retries.

Why the harness owns retries: the SDKs under litellm retry silently (a 429 with
Retry-After 7 blocked one call 15 s here), which hides rate limits from the report and
makes latency lie. Providers get ``max_retries=0``; this module retries with exponential
backoff and full jitter, honours Retry-After, and counts every attempt.

Rate limits are shared: a 429 pauses *every* worker until its Retry-After has passed, so
a limited provider is not hammered by the other in-flight calls.

Latency: each answer records two times. ``latency_s`` is the provider's round trip as the
provider measured it at the transport (see ``evalrun.providers.timing``); ``client_latency_s``
is the whole provider call timed here, which also holds the client's CPU and its waits for
the event loop. Before the others, the first call of each side runs alone (the warm-up), so
the lazy imports and client set-up of a process's first calls stall no other call; the
warm-up's own transport time is kept (those costs fall outside the span), a whole-call
time is not. ``order_calls`` interleaves the two sides in a seeded random order, so a
drift in the provider or the machine hits both sides alike.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from evalrun.errors import EvalrunError
from evalrun.providers.base import Provider, ProviderError, ProviderRequest, ProviderResponse
from evalrun.records import CallResult, Side, call_identity
from evalrun.secrets import scrub_known
from evalrun.store import Journal


@dataclass(slots=True)
class PlannedCall:
    """One call to make: which case, side and sample, and the request itself."""

    case_id: str
    side: Side
    sample: int
    request: ProviderRequest
    key: str

    @property
    def identity(self) -> str:
        """Matches ``CallResult.identity`` of this call's result."""
        return call_identity(self.case_id, self.side, self.key)


def order_calls(plan: Sequence[PlannedCall], seed: int) -> list[PlannedCall]:
    """The calls in a seeded random order that keeps the two sides interleaved.

    The unit is a (case, sample): both sides' calls of one unit stay adjacent, which side
    goes first is a coin flip, and the units are shuffled. So at any moment of a run both
    sides have made the same number of calls (±1), and a provider or machine that slows
    down part-way slows both sides alike; the random order keeps any pattern in the case
    list (kinds, lengths) from lining up with time. Same plan and seed, same order.
    """
    rng = random.Random(f"evalrun.order:{seed}")
    units: dict[tuple[str, int], list[PlannedCall]] = {}
    for planned in plan:
        units.setdefault((planned.case_id, planned.sample), []).append(planned)
    groups = list(units.values())
    rng.shuffle(groups)
    ordered: list[PlannedCall] = []
    for group in groups:
        if len(group) > 1 and rng.random() < 0.5:
            group = group[::-1]
        ordered.extend(group)
    return ordered


def warmup_calls(plan: Sequence[PlannedCall]) -> list[PlannedCall]:
    """The first planned call of each side: made alone, before any other call starts."""
    first: dict[str, PlannedCall] = {}
    for planned in plan:
        first.setdefault(planned.side, planned)
    return list(first.values())


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded attempts with capped exponential backoff and full jitter."""

    max_attempts: int = 4
    initial_s: float = 0.5
    max_s: float = 20.0
    multiplier: float = 2.0

    def delay(self, attempt: int, rng: random.Random, retry_after_s: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (attempt counts from 1)."""
        cap = min(self.max_s, self.initial_s * self.multiplier ** (attempt - 1))
        jittered = rng.uniform(cap / 2, cap)
        if retry_after_s is not None:
            # The server said when: never come back earlier, but do not wait absurdly long.
            return max(jittered, min(retry_after_s, max(self.max_s, 60.0)))
        return jittered


ProgressHook = Callable[[CallResult], None]


class _SharedPause:
    """A run-wide 'do not start a request before T' set by rate-limit answers."""

    def __init__(self) -> None:
        self.until = 0.0

    def push(self, seconds: float) -> None:
        self.until = max(self.until, time.monotonic() + seconds)

    async def wait(self) -> None:
        while True:
            remaining = self.until - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining)


# litellm's timeout is per read: a server that trickles bytes can keep an attempt alive far
# past it. The harness enforces timeout_s as a deadline on the whole attempt.
DEADLINE_GRACE_S = 0.5


async def _with_deadline(provider: Provider, req: ProviderRequest) -> ProviderResponse:
    try:
        return await asyncio.wait_for(provider.complete(req), timeout=req.timeout_s + DEADLINE_GRACE_S)
    except TimeoutError:
        raise ProviderError(
            "timeout", f"no complete answer within timeout_s={req.timeout_s:g}s", retryable=True
        ) from None


def _is_in_process(model: str) -> bool:
    """In-process models (llama.cpp) run one generation at a time."""
    return model.startswith("local/")


async def _one_call(
    planned: PlannedCall,
    provider: Provider,
    policy: RetryPolicy,
    rng: random.Random,
    pause: _SharedPause,
    serial: asyncio.Semaphore,
) -> CallResult:
    req = planned.request
    result = CallResult(
        case_id=planned.case_id, side=planned.side, sample=planned.sample, model=req.model, request_key=planned.key
    )
    started = time.monotonic()
    for attempt in range(1, policy.max_attempts + 1):
        await pause.wait()
        t0 = time.monotonic()
        try:
            if _is_in_process(req.model):
                # The embedded model serialises generations; take the turn *before* starting
                # the clock so latency measures generation, not time spent in the queue.
                async with serial:
                    t0 = time.monotonic()
                    resp = await _with_deadline(provider, req)
            else:
                t0 = time.monotonic()
                resp = await _with_deadline(provider, req)
        except ProviderError as exc:
            result.attempt_latencies_s.append(time.monotonic() - t0)
            result.attempts = attempt
            result.error_kind = exc.kind
            result.error_message = scrub_known(exc.message)[:500]
            if not exc.retryable or attempt == policy.max_attempts:
                break
            wait = policy.delay(attempt, rng, exc.retry_after_s)
            if exc.kind == "rate_limited":
                pause.push(wait)
            else:
                await asyncio.sleep(wait)
            continue
        except EvalrunError:
            raise
        except Exception as exc:  # a provider bug must not kill the run: record it
            result.attempt_latencies_s.append(time.monotonic() - t0)
            result.attempts = attempt
            result.error_kind = "unknown"
            result.error_message = scrub_known(f"{type(exc).__name__}: {exc}")[:500]
            break
        elapsed = time.monotonic() - t0
        result.attempt_latencies_s.append(elapsed)
        result.attempts = attempt
        result.error_kind = None
        result.error_message = None
        result.client_latency_s = elapsed
        if resp.transport_s is not None and resp.latency_clock is not None:
            result.latency_s, result.latency_clock = resp.transport_s, resp.latency_clock
        else:  # the provider cannot time its transport: the whole call is all there is
            result.latency_s, result.latency_clock = elapsed, "call"
        result.output = resp.output
        result.tool_calls = resp.tool_calls
        result.finish_reason = resp.finish_reason
        result.refusal = resp.refusal
        result.prompt_tokens = resp.prompt_tokens
        result.completion_tokens = resp.completion_tokens
        result.tokens_estimated = resp.tokens_estimated
        result.cost_usd = resp.cost_usd
        result.cost_status = resp.cost_status
        break
    result.wall_s = time.monotonic() - started
    return result


async def run_calls(
    plan: Iterable[PlannedCall],
    provider: Provider,
    *,
    concurrency: int,
    policy: RetryPolicy,
    journal: Journal | None,
    progress: ProgressHook | None = None,
    seed: int = 0,
    should_start: Callable[[PlannedCall], bool] | None = None,
    warmup: bool = True,
) -> list[CallResult]:
    """Make every planned call (in plan order); each result is journaled the moment it finishes.

    ``should_start`` lets the caller stop starting new calls (a budget): a call it rejects
    is not made and not recorded. Results come back in completion order.

    ``warmup``: first make the first call of each side alone (``warmup_calls``); those
    results are ordinary results marked ``warmup``, except that a latency only the whole
    call could time (clock "call") is dropped, since it holds the first-call costs.
    """
    items = list(plan)
    first = warmup_calls(items) if warmup else []
    first_ids = {id(p) for p in first}
    queue: asyncio.Queue[PlannedCall] = asyncio.Queue()
    for item in items:
        if id(item) not in first_ids:
            queue.put_nowait(item)
    results: list[CallResult] = []
    rng = random.Random(seed)  # jitter only: never affects what is measured
    pause = _SharedPause()
    serial = asyncio.Semaphore(1)

    async def make(planned: PlannedCall, *, is_warmup: bool = False) -> None:
        if should_start is not None and not should_start(planned):
            return
        res = await _one_call(planned, provider, policy, rng, pause, serial)
        if is_warmup:
            res.warmup = True
            if res.latency_clock == "call":
                res.latency_s = None
        if journal is not None:
            journal.append(res)
        results.append(res)
        if progress is not None:
            progress(res)

    for planned in first:
        await make(planned, is_warmup=True)

    async def worker() -> None:
        while True:
            try:
                planned = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await make(planned)

    n_workers = max(1, min(concurrency, queue.qsize()))
    tasks = [asyncio.create_task(worker()) for _ in range(n_workers)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return results
