"""The HTTP session litellm sends evalrun's requests through, stamping each exchange.

Where the hook sits (litellm 1.110.2): ``litellm.acompletion(shared_session=S)`` hands the
aiohttp ``ClientSession`` S to every HTTP path evalrun uses — the OpenAI SDK path
(``openai/…``: its httpx client gets a ``LiteLLMAiohttpTransport`` around S), litellm's
own HTTP handler (other providers) and ``aiohttp_openai/…``. So one session built here
sees every request, and three small hooks on it mark the span (see
``evalrun.providers.timing`` for what the span means):

1. an aiohttp trace (``on_request_headers_sent``) opens an exchange on the call's clock
   just before the request is written — the connection is established by then, so pool
   waits, the TCP connect and the TLS handshake fall before the span;
2. the socket's ``send``/``sendmsg`` stamp the wall clock as each write starts: the last
   one is the moment the rest of the request went to the kernel. Writes run inside the
   calling task, so the call's clock comes from its context;
3. the socket's ``recv``/``recv_into`` read with ``recvmsg`` and take the kernel's receive
   timestamp of the packet (``SO_TIMESTAMPNS``, Linux) — when the bytes reached this host,
   not when the busy event loop got round to reading them. Reads run in event-loop
   callbacks, outside the call's context, so the socket remembers which call wrote last
   (HTTP/1.1 without pipelining: a connection serves one request at a time).

Measured on this machine (127.0.0.1 server at 40 ms vs 120 ms, two CPU burners, 50 calls
in flight): the p50 ratio read 1.10 around the whole call, 1.09 at the event loop's read,
2.57 with kernel receive stamps.

Not covered (the call then falls back to the whole-call clock, and says so): event loops
that bypass Python sockets (uvloop), HTTP/2 (litellm then uses httpx, not aiohttp), a
process-wide ``litellm.aclient_session`` set by the host application.
"""

from __future__ import annotations

import platform
import socket
import struct
import sys
import time
from collections.abc import Iterable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from evalrun.providers.timing import CallClock, current_clock

if TYPE_CHECKING:
    import aiohttp

__all__ = ["KERNEL_STAMPS", "TimedSocket", "open_timed_session"]

# SO_TIMESTAMPNS (asm-generic value; Python's socket module does not export it). Only
# enabled where that value is known to be right: elsewhere 35 may mean another option.
_SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@qq")
KERNEL_STAMPS = sys.platform.startswith("linux") and platform.machine().lower() in {
    "x86_64",
    "amd64",
    "aarch64",
    "arm64",
}
"""Whether sockets ask the kernel for receive timestamps on this platform."""
_ANC_SIZE = socket.CMSG_SPACE(_TIMESPEC.size) if KERNEL_STAMPS else 0
# Same connection settings litellm gives its own sessions (its defaults).
_KEEPALIVE_TIMEOUT_S = 15
_DNS_TTL_S = 300


class TimedSocket(socket.socket):
    """A client TCP socket that stamps its writes and reads on the owning call's clock."""

    __slots__ = ("_kernel", "_owner")

    def __init__(self, family: int = -1, kind: int = -1, proto: int = -1) -> None:
        super().__init__(family, kind, proto)
        self._owner: CallClock | None = None
        self._kernel = False
        if KERNEL_STAMPS:
            try:
                self.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
                self._kernel = True
            except OSError:
                self._kernel = False

    def _writer_clock(self) -> CallClock | None:
        clock = current_clock()
        if clock is None:  # a buffered write flushed later: still the current request's
            clock = self._owner
        elif clock.closed:  # protocol traffic (e.g. TLS) in an old call's context: not ours
            return None
        else:
            self._owner = clock
        return clock if clock is not None and not clock.closed else None

    # The stamp is taken just *before* the write: the write itself wakes the server, and
    # the scheduler may run it (and deliver its answer) before this thread gets the CPU
    # back, so a stamp taken after could postdate the answer. Taken before, it can only
    # add the microseconds of the system call itself.
    def send(self, data: Any, flags: int = 0) -> int:
        when = time.time()
        n = super().send(data, flags)
        clock = self._writer_clock()
        if clock is not None:
            clock.mark_sent(when)
        return n

    def sendmsg(self, buffers: Iterable[Any], *args: Any) -> int:
        when = time.time()
        n = super().sendmsg(buffers, *args)
        clock = self._writer_clock()
        if clock is not None:
            clock.mark_sent(when)
        return n

    def _stamp(self, nbytes: int, ancdata: list[tuple[int, int, bytes]]) -> None:
        owner = self._owner
        if not nbytes or owner is None or owner.closed:
            return
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(data)
                owner.mark_received(sec + nsec / 1e9, kernel=True)
                return
        owner.mark_received(time.time(), kernel=False)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if not self._kernel:
            data = super().recv(bufsize, flags)
            self._stamp(len(data), [])
            return data
        data, ancdata, _flags, _addr = self.recvmsg(bufsize, _ANC_SIZE, flags)
        self._stamp(len(data), ancdata)
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        if not self._kernel:
            n = super().recv_into(buffer, nbytes, flags)
            self._stamp(n, [])
            return n
        view = memoryview(buffer)
        if nbytes:
            view = view[:nbytes]
        n, ancdata, _flags, _addr = self.recvmsg_into([view], _ANC_SIZE, flags)
        self._stamp(n, ancdata)
        return n


def _socket_factory(addr_info: tuple[Any, ...]) -> socket.socket:
    family, type_, proto = addr_info[0], addr_info[1], addr_info[2]
    sock = TimedSocket(family, type_, proto)
    sock.setblocking(False)
    return sock


async def _on_headers_sent(session: Any, context: SimpleNamespace, params: Any) -> None:
    clock = current_clock()
    if clock is not None:
        clock.begin_exchange()


def open_timed_session() -> aiohttp.ClientSession:
    """A session for ``litellm.acompletion(shared_session=…)``; call it on the running loop.

    No connection limit of its own: the runner already bounds the calls in flight, and a
    pool wait would only add client time (outside the span, but inside the client's view).
    """
    import aiohttp

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(_on_headers_sent)
    connector = aiohttp.TCPConnector(
        limit=0,
        keepalive_timeout=_KEEPALIVE_TIMEOUT_S,
        ttl_dns_cache=_DNS_TTL_S,
        socket_factory=_socket_factory,
    )
    return aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trace_configs=[trace]
    )
