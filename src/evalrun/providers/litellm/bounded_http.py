"""Provider answers read with a size cap, in bounded memory, and kept for a second look.

litellm reads a response body with httpx, which decompresses each network chunk without an
output limit and joins the whole body in memory: ~260 KB of gzip on the wire became a
268 MB completion (2.5 GB of memory for four calls). The transport here wraps every
transport litellm creates (``install_in_litellm``; the aiohttp session underneath, and
its timing, are untouched) and:

* asks only for ``gzip`` / ``deflate`` and decodes them itself, ``PIECE`` bytes at a time
  (``zlib`` with ``max_length``), so a decompression bomb never expands beyond the cap;
* stops reading once the decoded body exceeds the call's ``max_bytes`` (the suite's
  ``max_response_mb``) and closes the connection: the call is then marked truncated and
  its text is recovered from what was read;
* keeps the (bounded) body of the call that is current in this task (``capture``), so the
  provider can parse an answer litellm refused (content as a list of parts, a ``dict``
  finish_reason, impossible usage) and give one error kind to every malformed one.

litellm's paths through httpx (``openai/…``, routers, its own handler for other
providers) read through this transport; ``aiohttp_openai/…`` and in-process models are
capped as text after the fact (see ``LitellmProvider``).
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import httpx

from evalrun.providers.base import DEFAULT_MAX_BYTES

__all__ = [
    "ACCEPTED_ENCODINGS",
    "DEFAULT_MAX_BYTES",
    "BodyCapture",
    "BoundedTransport",
    "CappedBody",
    "ResponseBodyError",
    "capture",
    "install_in_litellm",
]

"""Cap on one decoded response body when no call-specific cap is set (4 MiB)."""

PIECE = 64 * 1024
"""Largest piece of decoded body produced at once."""

ACCEPTED_ENCODINGS = "gzip, deflate"
"""The only encodings evalrun asks for (and decodes itself, bounded)."""
_ACCEPTED = ACCEPTED_ENCODINGS
_MAX_LAYERS = 2


class ResponseBodyError(httpx.DecodingError):
    """The body cannot be decoded (corrupt or unsupported content-encoding)."""


class ResponseTooLarge(httpx.ReadError):
    """Raised to stop reading a body over the cap (the capture says so)."""


@dataclass(slots=True)
class BodyCapture:
    """One call's view of its HTTP answer (filled in by ``BoundedTransport``)."""

    max_bytes: int = DEFAULT_MAX_BYTES
    status: int | None = None
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    finished: bool = False  # the whole body was read
    truncated: bool = False  # reading stopped at max_bytes

    def body(self) -> bytes:
        """The decoded body read so far (at most ``max_bytes``)."""
        return b"".join(self.chunks)


_CURRENT: ContextVar[BodyCapture | None] = ContextVar("evalrun_body_capture", default=None)


@contextlib.contextmanager
def capture(max_bytes: int) -> Iterator[BodyCapture]:
    """Within the block, HTTP answers read in this task are capped at ``max_bytes`` and kept."""
    current = BodyCapture(max_bytes=max_bytes)
    token = _CURRENT.set(current)
    try:
        yield current
    finally:
        _CURRENT.reset(token)


class _Identity:
    def feed(self, data: bytes) -> Iterator[bytes]:
        if len(data) <= PIECE:  # the usual case: no copy
            yield data
            return
        for i in range(0, len(data), PIECE):
            yield data[i : i + PIECE]

    def flush(self) -> Iterator[bytes]:
        return iter(())


class _Zlib:
    """gzip (possibly multi-member) or deflate (zlib-wrapped or raw), bounded output."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.started = False
        self._d = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            try:
                out = self._d.decompress(data, PIECE)
            except zlib.error as exc:
                if self.encoding == "deflate" and not self.started:  # raw deflate, as httpx allows
                    self._d = zlib.decompressobj(-zlib.MAX_WBITS)
                    self.started = True
                    continue
                raise ResponseBodyError(f"corrupt {self.encoding} body: {exc}") from None
            self.started = True
            if out:
                yield out
            rest = self._d.unconsumed_tail
            if self._d.eof:
                rest = self._d.unused_data
                if not rest or self.encoding != "gzip":
                    return
                self._d = zlib.decompressobj(zlib.MAX_WBITS | 16)  # the next gzip member
            elif not out and rest == data:
                return  # no progress: wait for more input
            data = rest

    def flush(self) -> Iterator[bytes]:
        tail = self._d.flush()
        for i in range(0, len(tail), PIECE):
            yield tail[i : i + PIECE]


def _decoders(header: str | None) -> list[_Identity | _Zlib]:
    codings = [c.strip().lower() for c in (header or "").split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if len(codings) > _MAX_LAYERS:
        raise ResponseBodyError(f"content-encoding {header!r} has too many layers")
    for c in codings:
        if c not in ("gzip", "x-gzip", "deflate"):
            raise ResponseBodyError(f"unsupported content-encoding {c!r} (evalrun asks for {_ACCEPTED})")
    # Applied last first: "gzip, deflate" means gzip then deflate was applied.
    return [_Zlib("gzip" if c == "x-gzip" else c) for c in reversed(codings)] or [_Identity()]


class CappedBody:
    """Decodes (gzip / deflate, bounded) and caps one body fed chunk by chunk into ``seen``.

    The one reading rule of every HTTP path: litellm's (through ``BoundedTransport``) and
    the direct OpenAI-compatible path (``direct``), which feeds aiohttp's raw chunks here.
    Raises ``ResponseBodyError`` for an unsupported or corrupt content-encoding.
    """

    def __init__(self, seen: BodyCapture, content_encoding: str | None) -> None:
        self._decoders = _decoders(content_encoding)
        self.seen = seen

    def _through(self, data: bytes, layer: int = 0) -> Iterator[bytes]:
        if layer == len(self._decoders):
            yield data
            return
        for piece in self._decoders[layer].feed(data):
            yield from self._through(piece, layer + 1)

    def _flushed(self, layer: int = 0) -> Iterator[bytes]:
        if layer == len(self._decoders):
            return
        for piece in self._decoders[layer].flush():
            yield from self._through(piece, layer + 1)
        yield from self._flushed(layer + 1)

    def _take(self, piece: bytes) -> bytes:
        seen = self.seen
        room = seen.max_bytes - seen.size
        if len(piece) > room:
            seen.truncated = True
            piece = piece[: max(room, 0)]
        seen.size += len(piece)
        if piece:
            seen.chunks.append(piece)
        return piece

    def feed(self, raw: bytes) -> Iterator[bytes]:
        """The decoded pieces kept from ``raw``; stops once the cap is reached (``seen.truncated``)."""
        for piece in self._through(raw):
            kept = self._take(piece)
            if kept:
                yield kept
            if self.seen.truncated:
                return

    def finish(self) -> Iterator[bytes]:
        """The decoders' tails; marks the body whole (``seen.finished``) unless it hit the cap."""
        for piece in self._flushed():
            kept = self._take(piece)
            if kept:
                yield kept
            if self.seen.truncated:
                return
        self.seen.finished = True


class _BoundedStream(httpx.AsyncByteStream):
    def __init__(self, inner: Any, body: CappedBody) -> None:
        self._inner = inner
        self._body = body
        self._seen = body.seen

    async def __aiter__(self) -> AsyncIterator[bytes]:
        raw_chunks = self._inner.__aiter__()
        try:
            async for raw in raw_chunks:
                for kept in self._body.feed(raw):
                    yield kept
                if self._seen.truncated:
                    self._stop()
                    return
        finally:
            # Stopping early must release the connection now, not when the generator is collected.
            close = getattr(raw_chunks, "aclose", None)
            if close is not None:
                await close()
        for kept in self._body.finish():
            yield kept
        if self._seen.truncated:
            self._stop()

    def _stop(self) -> None:
        # An answer over the cap must not reach litellm's parser as if it were whole; an
        # error body over the cap is just cut (its status still says what went wrong).
        status = self._seen.status or 0
        if 200 <= status < 300:
            raise ResponseTooLarge(f"response body over {self._seen.max_bytes:,} bytes; reading stopped")

    async def aclose(self) -> None:
        await self._inner.aclose()


class BoundedTransport(httpx.AsyncBaseTransport):
    """Wraps an httpx transport: bounded decoding and the per-call cap (see the module doc)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["Accept-Encoding"] = _ACCEPTED
        response = await self.inner.handle_async_request(request)
        seen = _CURRENT.get() or BodyCapture()
        if seen.status is not None:  # a redirect or second request in the same call: start afresh
            seen.chunks.clear()
            seen.size, seen.finished, seen.truncated = 0, False, False
        seen.status = response.status_code
        try:
            body = CappedBody(seen, response.headers.get("content-encoding"))
        except ResponseBodyError:
            await response.aclose()
            raise
        headers = [
            (k, v) for k, v in response.headers.raw if k.lower() not in (b"content-encoding", b"content-length")
        ]
        return httpx.Response(
            status_code=response.status_code,
            headers=headers,
            stream=_BoundedStream(response.stream, body),
            request=request,
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


def install_in_litellm() -> bool:
    """Wrap every async HTTP transport litellm creates from now on; True when in place.

    litellm builds its transports in one factory, ``AsyncHTTPHandler.create_async_transport``,
    for the OpenAI SDK path (``openai/…``, also around a ``shared_session``) and for its own
    HTTP handler (other providers); proxy mounts are derived from that transport in
    ``create_httpx_proxy_mounts``. Both are wrapped here, once per process. Idempotent.
    ``aiohttp_openai/…`` reads without httpx and is capped only as text, after the fact.
    """
    try:
        from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler
    except ImportError:
        return False
    factory = AsyncHTTPHandler.__dict__.get("create_async_transport")
    mounts = AsyncHTTPHandler.__dict__.get("create_httpx_proxy_mounts")
    if not isinstance(factory, staticmethod) or not isinstance(mounts, staticmethod):
        return False
    if getattr(factory.__func__, "evalrun_bounded", False):
        return True
    make_transport, make_mounts = factory.__func__, mounts.__func__

    def create_async_transport(*args: Any, **kwargs: Any) -> Any:
        transport = make_transport(*args, **kwargs)
        return BoundedTransport(transport) if isinstance(transport, httpx.AsyncBaseTransport) else transport

    def create_httpx_proxy_mounts(transport: Any, *args: Any, **kwargs: Any) -> Any:
        inner = transport.inner if isinstance(transport, BoundedTransport) else transport
        found = make_mounts(inner, *args, **kwargs)
        if not found:
            return found
        return {k: BoundedTransport(v) if isinstance(v, httpx.AsyncBaseTransport) else v for k, v in found.items()}

    create_async_transport.evalrun_bounded = True  # type: ignore[attr-defined]
    for name in ("create_async_transport", "_create_async_transport"):
        setattr(AsyncHTTPHandler, name, staticmethod(create_async_transport))
    for name in ("create_httpx_proxy_mounts", "_create_httpx_proxy_mounts"):
        setattr(AsyncHTTPHandler, name, staticmethod(create_httpx_proxy_mounts))
    return True
