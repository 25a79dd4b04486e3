"""Run planned calls on one event loop with bounded concurrency and harness-owned retries.

Why the harness owns retries: the SDKs under litellm retry silently (a 429 with
Retry-After 7 blocked one call 15 s here), which hides rate limits from the report and
makes latency lie. Providers get ``max_retries=0``; this module retries with exponential
backoff and full jitter, honours Retry-After, and counts every attempt.

Latency: each answer records two times. ``latency_s`` is the provider's round trip as the
provider measured it at the transport (see ``evalrun.providers.timing``); ``client_latency_s``
is the whole provider call timed here, which also holds the client's CPU and its waits for
the event loop. Before the others, the first call of each side runs alone (the warm-up), so
the lazy imports and client set-up of a process's first calls stall no other call; the
warm-up's own transport time is kept (those costs fall outside the span), a whole-call
time is not. ``order_calls`` interleaves the two sides in a seeded random order, so a
drift in the provider or the machine hits both sides alike.

Rate limits are per endpoint (model, api_base and key): a 429 pauses the calls to that
endpoint until its Retry-After has passed, so a limited provider is not hammered by the
other in-flight calls, while calls to other endpoints (the other side of a comparison)
go on. A Retry-After longer than the policy's longest wait ends the call instead of
retrying early. An endpoint whose calls keep failing after their retries trips a circuit
breaker: its remaining calls are recorded as ``circuit_open`` at once (a probe call is let
through now and then), so a dead endpoint costs seconds, not hours.

Preflight: the warm-up call of each side is also its preflight. When it fails with a kind
no retry or other call can fix (``PREFLIGHT_FATAL``: a rejected key, an unknown provider or
model, a server that refuses connections after the retries), the run stops there with a
``PreflightError`` carrying the provider's (scrubbed) message: the other calls of that side
and, when it had not started yet, the other side's warm-up are never made.

Everything a provider returns is made safe to store here, before any file sees it:
lone surrogates (valid JSON escapes, invalid UTF-8) become U+FFFD and every registered
secret is masked, so the journal, results, cache and reports never hold an echoed key.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from evalrun.errors import EvalrunError, PreflightError
from evalrun.execution.store import Journal
from evalrun.providers.base import Provider, ProviderError, ProviderRequest, ProviderResponse
from evalrun.records import CallResult, ErrorKind, Side, ToolCall, call_identity
from evalrun.secrets import register_secret, scrub_known, scrub_registered


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


LONGEST_RETRY_AFTER_S = 60.0
"""The longest Retry-After honoured by waiting (or ``backoff.max_s`` when that is larger)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded attempts with capped exponential backoff and full jitter.

    ``breaker_failures``: calls to one endpoint failing in a row (after their retries) that
    open its circuit (None: ``max(10, concurrency)``); ``breaker_cooldown_s``: how long an
    open circuit rejects calls before one probe call is let through.
    """

    max_attempts: int = 4
    initial_s: float = 0.5
    max_s: float = 20.0
    multiplier: float = 2.0
    breaker_failures: int | None = None
    breaker_cooldown_s: float = 30.0

    @property
    def longest_wait_s(self) -> float:
        """The longest Retry-After waited for; a longer one ends the call (never retried early)."""
        return max(self.max_s, LONGEST_RETRY_AFTER_S)

    def delay(self, attempt: int, rng: random.Random, retry_after_s: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (attempt counts from 1)."""
        cap = min(self.max_s, self.initial_s * self.multiplier ** (attempt - 1))
        jittered = rng.uniform(cap / 2, cap)
        if retry_after_s is not None:
            # The server said when: never come back earlier (a longer wait than
            # longest_wait_s is not retried at all, see _one_call).
            return max(jittered, min(retry_after_s, self.longest_wait_s))
        return jittered


ProgressHook = Callable[[CallResult], None]
AdmitHook = Callable[["PlannedCall"], Awaitable[bool]]
"""Awaited before a call starts (a budget): True to make it, False to skip it (not recorded)."""

# Failures that say "this endpoint is not serving (us)", as opposed to "this request is wrong".
_ENDPOINT_FAILURES = frozenset({"rate_limited", "server_error", "timeout", "connection", "malformed_response", "auth"})

PREFLIGHT_FATAL: frozenset[ErrorKind] = frozenset({"auth", "bad_request", "connection"})
"""Error kinds that end the run when a side's first call (its preflight) ends with one:
the same key, model string and server serve every other call of that side. A connection
error counts only when no server is there (``_NO_SERVER``); a reset mid-answer does not."""

# Connection errors that mean "nothing is listening / no such host" (the exception names
# the litellm provider and aiohttp/httpx put in the message), as opposed to a dropped answer.
_NO_SERVER = re.compile(
    r"ConnectionRefused|Connection refused|ClientConnector|ConnectError|Name or service not known|"
    r"nodename nor servname|getaddrinfo|No route to host|Network is unreachable", re.IGNORECASE)


def is_preflight_fatal(kind: ErrorKind | None, message: str | None) -> bool:
    """Whether a side's first call failing this way stops the run (see ``PREFLIGHT_FATAL``)."""
    if kind == "connection":
        return bool(_NO_SERVER.search(message or ""))
    return kind in PREFLIGHT_FATAL


def preflight_message(result: CallResult, api_base: str | None) -> str:
    """The one line a failed preflight stops the run with (the provider's message, scrubbed)."""
    where = f" at {api_base}" if api_base else ""
    hint = {"auth": "check the key in the variable the config's api_key_env names",
            "bad_request": "check the model string (provider prefix and model name)",
            "connection": "is the server running and api_base right?"}.get(result.error_kind or "", "")
    tries = f" after {result.attempts} attempts" if result.attempts > 1 else ""
    hint = hint if hint.endswith("?") else hint + "."
    return (f"preflight: the first {result.side} call to {result.model}{where} failed{tries} "
            f"({result.error_kind}): {result.error_message or 'no message'} -- {hint} "
            "The run stopped before making its other calls")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def store_safe(text: str) -> str:
    """``text`` as it may be stored: lone surrogates → U+FFFD, registered secrets masked.

    A JSON body may carry ``"\\ud800"`` (a valid escape) that no UTF-8 file can hold.
    """
    if _SURROGATE_RE.search(text) is not None:
        text = _SURROGATE_RE.sub("\ufffd", text)
    return scrub_registered(text)


def _safe_opt(text: str | None) -> str | None:
    return store_safe(text) if isinstance(text, str) else text


class Endpoint:
    """Where calls go (model, api_base, key): its rate-limit pause and circuit breaker."""

    def __init__(self, label: str, failures_to_open: int, cooldown_s: float) -> None:
        self.label = label
        self.paused_until = 0.0
        self.failures_to_open = failures_to_open
        self.cooldown_s = cooldown_s
        self.failures_in_a_row = 0
        self.open_until: float | None = None  # None: closed
        self.probing = False
        self.last_failure = ""

    def pause(self, seconds: float) -> None:
        """No request to this endpoint starts before ``seconds`` from now."""
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    async def wait(self) -> None:
        """Return once the endpoint is not paused."""
        while True:
            remaining = self.paused_until - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining)

    def admits(self) -> bool:
        """Whether a call may be made now (closed circuit, or the one probe of an open one)."""
        if self.open_until is None:
            return True
        if self.probing or time.monotonic() < self.open_until:
            return False
        self.probing = True
        return True

    def record(self, result: CallResult) -> None:
        """Account a finished call: a success closes the circuit; failures in a row open it."""
        self.probing = False
        if result.ok or result.error_kind not in _ENDPOINT_FAILURES:
            if result.ok:
                self.failures_in_a_row = 0
                self.open_until = None
            return
        self.failures_in_a_row += 1
        self.last_failure = f"{result.error_kind}: {result.error_message or ''}".strip(": ")[:200]
        if self.failures_in_a_row >= self.failures_to_open:
            self.open_until = time.monotonic() + self.cooldown_s

    def rejected(self, planned: PlannedCall) -> CallResult:
        """The recorded outcome of a call the open circuit did not make."""
        return CallResult(
            case_id=planned.case_id, side=planned.side, sample=planned.sample, model=planned.request.model,
            request_key=planned.key, attempts=0, wall_s=0.0, error_kind="circuit_open",
            error_message=store_safe(scrub_known(
                f"not attempted: the last {self.failures_in_a_row} calls to {self.label} failed after their "
                f"retries (last: {self.last_failure}); run again to retry")),
        )


class _Endpoints:
    """One ``Endpoint`` per (model, api_base, key) seen in a plan; keys stay in memory only."""

    def __init__(self, failures_to_open: int, cooldown_s: float) -> None:
        self.failures_to_open = failures_to_open
        self.cooldown_s = cooldown_s
        self.by_key: dict[tuple[str, str | None, str | None], Endpoint] = {}

    def of(self, req: ProviderRequest) -> Endpoint:
        key = (req.model, req.api_base, req.api_key)
        ep = self.by_key.get(key)
        if ep is None:
            label = f"{req.model}" + (f" at {req.api_base}" if req.api_base else "")
            ep = self.by_key[key] = Endpoint(label, self.failures_to_open, self.cooldown_s)
        return ep


class _Picker:
    """Hands out calls in plan order, holding back those whose endpoint is paused.

    A call of a paused endpoint is set aside (not started: it would only wait, holding a
    concurrency slot other endpoints could use) and handed out first once the pause ends.
    """

    def __init__(self, plan: Iterable[PlannedCall], endpoints: _Endpoints) -> None:
        self.queue: deque[PlannedCall] = deque(plan)
        self.endpoints = endpoints
        self.held: dict[int, tuple[Endpoint, deque[PlannedCall]]] = {}

    def __len__(self) -> int:
        return len(self.queue) + sum(len(q) for _, q in self.held.values())

    async def next(self) -> PlannedCall | None:
        """The next call to make, or None when every call was handed out."""
        while True:
            now = time.monotonic()
            for ep, held in self.held.values():
                if held and ep.paused_until <= now:
                    return held.popleft()
            while self.queue:
                planned = self.queue.popleft()
                ep = self.endpoints.of(planned.request)
                if ep.paused_until <= now:
                    return planned
                self.held.setdefault(id(ep), (ep, deque()))[1].append(planned)
            waits = [ep.paused_until for ep, held in self.held.values() if held]
            if not waits:
                return None
            await asyncio.sleep(max(0.0, min(waits) - now))


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


def _serial_models(calls: Sequence[PlannedCall]) -> frozenset[str]:
    """Models whose provider runs one call at a time (an in-process model)."""
    from evalrun.providers.registry import spec_for

    return frozenset(m for m in {p.request.model for p in calls} if spec_for(m).serial)


def _take_response(result: CallResult, resp: ProviderResponse) -> None:
    """Copy a response into the result, every text made safe to store (see ``store_safe``)."""
    result.output = _safe_opt(resp.output)
    result.tool_calls = [ToolCall(store_safe(t.name) if isinstance(t.name, str) else t.name,
                                  store_safe(t.arguments) if isinstance(t.arguments, str) else t.arguments,
                                  _safe_opt(t.id))
                         for t in resp.tool_calls]
    result.finish_reason = _safe_opt(resp.finish_reason)
    result.refusal = _safe_opt(resp.refusal)
    result.prompt_tokens = resp.prompt_tokens
    result.completion_tokens = resp.completion_tokens
    result.tokens_estimated = resp.tokens_estimated
    result.response_truncated = resp.response_truncated
    result.cost_usd = resp.cost_usd
    result.cost_status = resp.cost_status


async def _one_call(
    planned: PlannedCall,
    provider: Provider,
    policy: RetryPolicy,
    rng: random.Random,
    endpoint: Endpoint,
    serial: asyncio.Semaphore | None,
    attempted: Callable[[ProviderError | None], None] | None = None,
) -> CallResult:
    """Make one planned call with its retries; ``attempted(error)`` runs as each attempt ends
    (before any wait for the next), with the attempt's ``ProviderError`` or None."""
    req = planned.request
    result = CallResult(
        case_id=planned.case_id, side=planned.side, sample=planned.sample, model=req.model, request_key=planned.key
    )
    started = time.monotonic()
    for attempt in range(1, policy.max_attempts + 1):
        await endpoint.wait()
        t0 = time.monotonic()
        try:
            if serial is not None:
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
            if attempted is not None:
                attempted(exc)
            result.attempts = attempt
            result.error_kind = exc.kind
            message = exc.message
            too_long = exc.retry_after_s is not None and exc.retry_after_s > policy.longest_wait_s
            if too_long and exc.retryable and attempt < policy.max_attempts:
                message += (f" (Retry-After {exc.retry_after_s:g} s is longer than evalrun waits, "
                            f"{policy.longest_wait_s:g} s: not retried early)")
            result.error_message = store_safe(scrub_known(message))[:500]
            if not exc.retryable or attempt == policy.max_attempts or too_long:
                if exc.kind == "rate_limited" and exc.retry_after_s is not None and not too_long:
                    endpoint.pause(exc.retry_after_s)
                # A wait too long to honour pauses nothing: the endpoint's other calls find
                # out for themselves in one attempt each, and the circuit breaker ends it.
                break
            wait = policy.delay(attempt, rng, exc.retry_after_s)
            if exc.kind == "rate_limited":
                endpoint.pause(wait)
            else:
                await asyncio.sleep(wait)
            continue
        except EvalrunError:
            raise
        except Exception as exc:  # a provider bug must not kill the run: record it
            result.attempt_latencies_s.append(time.monotonic() - t0)
            if attempted is not None:
                attempted(None)
            result.attempts = attempt
            result.error_kind = "unknown"
            result.error_message = store_safe(scrub_known(f"{type(exc).__name__}: {exc}"))[:500]
            break
        elapsed = time.monotonic() - t0
        if attempted is not None:
            attempted(None)
        result.attempt_latencies_s.append(elapsed)
        result.attempts = attempt
        result.error_kind = None
        result.error_message = None
        result.client_latency_s = elapsed
        if resp.transport_s is not None and resp.latency_clock is not None:
            result.latency_s, result.latency_clock = resp.transport_s, resp.latency_clock
        else:  # the provider cannot time its transport: the whole call is all there is
            result.latency_s, result.latency_clock = elapsed, "call"
        _take_response(result, resp)
        break
    result.wall_s = time.monotonic() - started
    return result


def _register_keys(calls: list[PlannedCall]) -> None:
    """Register every key the plan carries (its own and its router deployments'), so
    ``store_safe`` masks them in this process — a worker process included."""
    seen: set[int] = set()
    for planned in calls:
        req = planned.request
        register_secret(req.api_key)
        if req.router is not None and id(req.router) not in seen:
            seen.add(id(req.router))
            for deployment in req.router.get("model_list") or []:
                register_secret((deployment.get("litellm_params") or {}).get("api_key"))


async def run_calls(
    plan: Iterable[PlannedCall],
    provider: Provider,
    *,
    concurrency: int,
    policy: RetryPolicy,
    journal: Journal | None,
    progress: ProgressHook | None = None,
    seed: int = 0,
    admit: AdmitHook | None = None,
    warmup: bool = True,
) -> list[CallResult]:
    """Make every planned call (in plan order); each result is journaled the moment it finishes.

    ``admit`` is awaited before a call starts and may hold it back (a budget waiting for
    calls in flight to finish) or skip it: a skipped call is not made and not recorded.
    A call whose endpoint's circuit is open is recorded as ``circuit_open`` without being
    made. Results come back in completion order. A journal that cannot be written stops
    the run (its ``RunFolderError`` propagates): calls that cannot be saved are not made.

    ``warmup``: the first call of each side (``warmup_calls``) goes first, and its first
    attempt runs alone: the warm-ups one after the other, every other call after them (a
    warm-up that must retry goes on retrying alongside the others). Those results are
    ordinary results marked ``warmup``, except that a latency only the whole call could
    time (clock "call") is dropped, since it holds the process's first-call costs.
    """
    calls = list(plan)
    _register_keys(calls)
    failures_to_open = policy.breaker_failures or max(10, concurrency)
    endpoints = _Endpoints(failures_to_open, policy.breaker_cooldown_s)
    first = warmup_calls(calls) if warmup else []
    turns = {id(p): asyncio.Event() for p in first}  # set: that warm-up's first attempt ended
    queue_of_turns = [turns[id(p)] for p in first]
    warmed = asyncio.Event()  # every warm-up's first attempt ended: the others may start
    if not first:
        warmed.set()
    picker = _Picker(first + [p for p in calls if id(p) not in turns], endpoints)
    results: list[CallResult] = []
    rng = random.Random(seed)  # jitter only: never affects what is measured
    serial_models = _serial_models(calls)
    turn = asyncio.Semaphore(1)

    def took_turn(planned: PlannedCall) -> None:
        turn = turns.get(id(planned))
        if turn is not None and not turn.is_set():
            turn.set()
            if all(t.is_set() for t in queue_of_turns):
                warmed.set()

    async def wait_turn(planned: PlannedCall) -> None:
        turn = turns.get(id(planned))
        if turn is None:
            await warmed.wait()
            return
        k = queue_of_turns.index(turn)
        if k > 0:
            await queue_of_turns[k - 1].wait()

    def attempt_ended(planned: PlannedCall, error: ProviderError | None) -> None:
        # A preflight failing in a fatal way keeps the others waiting until it is decided.
        if error is None or not is_preflight_fatal(error.kind, error.message):
            took_turn(planned)

    async def make(planned: PlannedCall) -> None:
        is_warmup = id(planned) in turns
        stop: PreflightError | None = None
        try:
            await wait_turn(planned)
            endpoint = endpoints.of(planned.request)
            if not endpoint.admits():
                res = endpoint.rejected(planned)
            elif admit is not None and not await admit(planned):
                endpoint.probing = False
                return
            else:
                serial = turn if planned.request.model in serial_models else None
                res = await _one_call(planned, provider, policy, rng, endpoint, serial,
                                      (lambda error: attempt_ended(planned, error)) if is_warmup else None)
                endpoint.record(res)
                if is_warmup:
                    res.warmup = True
                    if res.latency_clock == "call":
                        res.latency_s = None
                    if is_preflight_fatal(res.error_kind, res.error_message):
                        stop = PreflightError(preflight_message(res, planned.request.api_base))
        finally:
            if stop is None:
                took_turn(planned)  # a warm-up skipped, rejected or cancelled still lets the rest go
        if journal is not None:
            journal.append(res)
        results.append(res)
        if progress is not None:
            progress(res)
        if stop is not None:
            raise stop

    async def worker() -> None:
        while True:
            planned = await picker.next()
            if planned is None:
                return
            await make(planned)

    n_workers = max(1, min(concurrency, len(picker)))
    tasks = [asyncio.create_task(worker()) for _ in range(n_workers)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        _quiet_dropped_calls()
        raise
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return results


def _quiet_dropped_calls() -> None:
    """Silence the warnings the calls cancelled by a stopped run leave behind.

    litellm's acompletion builds its HTTP coroutine in an executor thread; a call cancelled
    mid-flight (a full disk, a budget, Ctrl-C stops the run) drops that coroutine unawaited,
    and Python warns later, from the thread pool or the event loop. The calls are recorded
    as not made and the run ends with one line naming why; the warnings would only bury it.
    Installed only once a run is stopping (process-wide, the run is over).
    """
    warnings.filterwarnings("ignore", message=r"coroutine '.*' was never awaited", category=RuntimeWarning)
