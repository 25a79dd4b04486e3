"""What a call's latency measures: the provider's round trip, not the client's queue.

A provider call has three parts. The client builds the request (litellm: parameter
mapping, the SDK's request object, serialisation), the request travels and the provider
answers, and the client turns the answer into a result (parsing, pricing, logging). On a
busy event loop each client part also waits behind every other call in flight, and the
first calls of a process pay litellm's lazy imports. Timing the whole call measures all of
that; a latency gate reading it compares two queues instead of two providers, and reads
"no change" where the provider became three times slower.

So a call carries a :class:`CallClock` (a context variable, set by the provider around the
call) and the transport stamps the exchange on it: see ``evalrun.providers.litellm.timed_session``
for where, exactly. The span is

* from the moment the last write of the request is handed to the kernel (after any wait
  for a pooled connection, after the TCP connect and the TLS handshake),
* to the kernel's receive timestamp of the last packet of the response (``SO_TIMESTAMPNS``:
  taken when the packet reached this host, however long the busy event loop then took to
  read it).

It includes the network both ways and the provider's own queueing and generation. It
excludes the client's CPU before and after, waiting for the event loop, connection setup,
and first-call imports. Where the kernel gives no receive timestamp (not Linux), the time
the event loop read the packet is used instead: the clock is then ``"loop"``, which does
include the loop's delay in noticing the answer.

``LatencyClock`` names how a recorded latency was taken:

* ``"socket"`` — the transport span above, kernel receive timestamps;
* ``"loop"`` — the transport span, received when the event loop read the bytes;
* ``"generation"`` — an in-process model (``local/…``): the generation call itself, from
  the moment it holds the model to the moment it returns (no network; waiting for the
  model, loading it and litellm's wrapping are excluded);
* ``"call"`` — the whole provider call: the provider offers no transport timing (a test
  double, a custom provider, a litellm path that does not use evalrun's HTTP session).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from evalrun.records import LatencyClock

__all__ = [
    "CLOCK_STEP_TOLERANCE_S",
    "CallClock",
    "Exchange",
    "LatencyClock",
    "current_clock",
    "use_clock",
]

CLOCK_STEP_TOLERANCE_S = 0.05
"""Kernel timestamps are wall-clock (CLOCK_REALTIME); if the wall clock moved this much
more or less than the monotonic clock during a call (an NTP step), its spans are dropped."""

_current: contextvars.ContextVar[CallClock | None] = contextvars.ContextVar(
    "evalrun_call_clock", default=None
)


@dataclass(slots=True)
class Exchange:
    """One HTTP request and its response, in wall-clock seconds (``time.time()`` scale)."""

    sent: float | None = None  # the last write of the request went to the kernel
    received: float | None = None  # last response packet (kernel stamp, or loop read time)
    kernel_stamped: bool = True  # every receive time came from the kernel

    @property
    def span_s(self) -> float | None:
        """Request sent → response received (None while incomplete)."""
        if self.sent is None or self.received is None:
            return None
        return self.received - self.sent


@dataclass(slots=True)
class CallClock:
    """The transport spans of one provider call (or the generation of an in-process model).

    Created and closed by the provider; filled by the transport (``begin_exchange``,
    ``mark_sent``, ``mark_received``) or by an in-process model (``add_generation``).
    A closed clock takes no more stamps: a pooled connection reused by a later call can
    never write into it.
    """

    exchanges: list[Exchange] = field(default_factory=list)
    generation_s: float | None = None
    closed: bool = False
    _wall0: float = field(default_factory=time.time)
    _mono0: float = field(default_factory=time.monotonic)
    _stepped: bool = False

    @property
    def current(self) -> Exchange | None:
        """The exchange being sent or received now (the latest one)."""
        return self.exchanges[-1] if self.exchanges else None

    def begin_exchange(self) -> None:
        """A request is about to be written on an established connection."""
        if not self.closed:
            self.exchanges.append(Exchange())

    def mark_sent(self, when: float) -> None:
        """Request bytes reached the kernel at ``when`` (the last call wins)."""
        ex = self.current
        if not self.closed and ex is not None and ex.received is None:
            ex.sent = when

    def mark_received(self, when: float, *, kernel: bool) -> None:
        """Response bytes arrived at ``when``; ignored before the request was sent."""
        ex = self.current
        if self.closed or ex is None or ex.sent is None or when < ex.sent:
            return
        ex.received = when if ex.received is None else max(ex.received, when)
        ex.kernel_stamped = ex.kernel_stamped and kernel

    def add_generation(self, seconds: float) -> None:
        """An in-process model generated for ``seconds``."""
        if not self.closed:
            self.generation_s = (self.generation_s or 0.0) + seconds

    def close(self) -> None:
        """Stop taking stamps; check the wall clock did not step during the call."""
        if self.closed:
            return
        self.closed = True
        wall = time.time() - self._wall0
        mono = time.monotonic() - self._mono0
        self._stepped = abs(wall - mono) > CLOCK_STEP_TOLERANCE_S

    def measured(self) -> tuple[float, LatencyClock] | None:
        """The provider's time for this call and how it was taken, or None (not measured).

        Transport: the sum over the call's complete exchanges (usually one). None when an
        exchange is incomplete (a request whose answer was never stamped), when there was
        none, or when the wall clock stepped during the call.
        """
        if self.generation_s is not None:
            return self.generation_s, "generation"
        if not self.exchanges or self._stepped:
            return None
        spans = [ex.span_s for ex in self.exchanges]
        if any(s is None for s in spans):
            return None
        total = sum(s for s in spans if s is not None)
        clock: LatencyClock = "socket" if all(ex.kernel_stamped for ex in self.exchanges) else "loop"
        return total, clock


def current_clock() -> CallClock | None:
    """The clock of the provider call running in this context (None outside one)."""
    return _current.get()


@contextlib.contextmanager
def use_clock() -> Iterator[CallClock]:
    """Run a provider call with a fresh :class:`CallClock` in context; closed on exit."""
    clock = CallClock()
    token = _current.set(clock)
    try:
        yield clock
    finally:
        clock.close()
        _current.reset(token)
