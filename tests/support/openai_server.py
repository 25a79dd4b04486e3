"""A scriptable OpenAI-compatible HTTP server on 127.0.0.1 for integration tests and benchmarks.

It is a real aiohttp server running in a background thread with its own event loop, so
litellm talks to it over real sockets exactly as it would to a provider. Behaviour per
request comes from a Python callable ``behaviour(request_json, request_number) -> Reply``;
the default behaviour reads directives from the last user message, so suites can script
faults per case without code:

* ``script={"MARKER": {...} | [{...}, {...}]}``: when MARKER occurs in the last user
  message, the JSON object (Reply fields) is the answer; a list gives the 1st, 2nd, ...
  occurrence of that marker its own answer (the last one repeats), e.g.
  ``[{"status": 429, "headers": {"Retry-After": "1"}}, {"content": "ok"}]``.
* an inline directive ``evalrun-server:{"status": 500}`` inside the message itself.
* otherwise the last user message is echoed back as the answer.

Every request is recorded (``requests``, ``authorizations``, ``count``; thread-safe) so
tests can assert exact call counts and that keys were sent.

Run standalone for benchmarks::

    python -m tests.support.openai_server --port 0 --latency-ms 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gzip
import json
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

__all__ = [
    "DIRECTIVE",
    "Behaviour",
    "OpenAIServer",
    "Reply",
    "completion_body",
    "count_words",
    "default_behaviour",
    "gzip_bomb",
    "last_user_text",
    "reply_from_dict",
    "running_server",
]

DIRECTIVE = "evalrun-server:"


@dataclass
class Reply:
    """What the server answers to one request.

    ``prompt_tokens``/``completion_tokens`` default to word counts (``len(text.split())``)
    so tests know the true usage; ``usage=None`` omits the usage object, a dict is sent
    verbatim. ``finish_reason=None`` means "tool_calls" when tool calls are present, else
    "stop". ``tool_calls`` items are OpenAI-shaped dicts or the short form
    ``{"name": ..., "arguments": str | dict, "id": ...}``.
    """

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage: dict[str, Any] | Literal["auto"] | None = "auto"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    raw_body: bytes | str | None = None  # sent as-is (malformed JSON, HTML error pages...)
    gzip: bool = False  # gzip the body and say so (Content-Encoding: gzip); raw_body is sent as is
    empty_choices: bool = False
    drop_connection: bool = False  # reset the socket before sending a single byte
    drop_mid_response: bool = False  # send headers and half the body, then reset
    refusal: str | None = None
    error_message: str | None = None  # message of the error object when status >= 400
    error_type: str | None = None
    error_code: str | None = None


Behaviour = Callable[[dict[str, Any], int], Reply]

_REPLY_FIELDS = frozenset(f.name for f in dataclasses.fields(Reply))


def completion_body(
    message: Any, *, finish_reason: Any = "stop", usage: Any = None, model: str = "evalrun-test"
) -> bytes:
    """A chat-completion body whose ``message`` (any JSON: null, a string, content parts...),
    ``finish_reason`` and ``usage`` are exactly what the test says (for ``Reply.raw_body``)."""
    data: dict[str, Any] = {
        "id": "chatcmpl-evalrun-raw",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
    }
    if usage is not None:
        data["usage"] = usage
    return json.dumps(data).encode()


def gzip_bomb(content_bytes: int, *, model: str = "evalrun-test") -> bytes:
    """A gzip-compressed completion whose content is ``content_bytes`` of "x": about 1/1000
    of that on the wire (send it as ``Reply(raw_body=..., headers={"Content-Encoding": "gzip"})``).
    Built incrementally, so the test itself never holds the expanded body."""
    head, tail = completion_body({"role": "assistant", "content": "\x00"}, model=model).split(b"\\u0000")
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    parts = [packer.compress(head)]
    block = b"x" * (1 << 20)
    left = content_bytes
    while left > 0:
        parts.append(packer.compress(block[: min(left, len(block))]))
        left -= len(block)
    parts.append(packer.compress(tail))
    parts.append(packer.flush())
    return b"".join(parts)


def reply_from_dict(data: Mapping[str, Any]) -> Reply:
    """Build a ``Reply`` from a JSON object; unknown keys are an error (typos must not pass)."""
    unknown = set(data) - _REPLY_FIELDS
    if unknown:
        raise ValueError(f"unknown Reply field(s): {sorted(unknown)}")
    return Reply(**data)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def last_user_text(request_json: Mapping[str, Any]) -> str:
    """The text of the last ``user`` message of a chat request ('' when there is none)."""
    for message in reversed(request_json.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def count_words(request_json: Mapping[str, Any]) -> int:
    """Prompt tokens as this server counts them: words over all message contents."""
    return sum(
        len(_text_of(m.get("content")).split())
        for m in request_json.get("messages") or []
        if isinstance(m, dict)
    )


class _ScriptedBehaviour:
    """The default behaviour: marker map, inline directive, else echo."""

    def __init__(self, script: Mapping[str, Mapping[str, Any] | Sequence[Mapping[str, Any]]]):
        self.script = dict(script)
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, request_json: dict[str, Any], request_number: int) -> Reply:
        text = last_user_text(request_json)
        spec: Mapping[str, Any] | None = None
        # Longest marker first so "case-10" is not taken for "case-1".
        for marker in sorted(self.script, key=len, reverse=True):
            if marker in text:
                entry = self.script[marker]
                with self._lock:
                    nth = self._seen.get(marker, 0)
                    self._seen[marker] = nth + 1
                spec = entry if isinstance(entry, Mapping) else entry[min(nth, len(entry) - 1)]
                break
        if spec is None and DIRECTIVE in text:
            start = text.index(DIRECTIVE) + len(DIRECTIVE)
            obj, _ = json.JSONDecoder().raw_decode(text[start:].lstrip())
            if not isinstance(obj, dict):
                raise ValueError(f"{DIRECTIVE} must be followed by a JSON object")
            spec = obj
        if spec is None:
            return Reply(content=text)
        reply = reply_from_dict(spec)
        if "content" not in spec and not reply.tool_calls and reply.refusal is None:
            reply.content = text
        return reply


def default_behaviour(
    script: Mapping[str, Mapping[str, Any] | Sequence[Mapping[str, Any]]] | None = None,
) -> Behaviour:
    """The directive-reading behaviour (see the module docstring), with an optional marker map."""
    return _ScriptedBehaviour(script or {})


def _tool_call_json(call: Mapping[str, Any], index: int) -> dict[str, Any]:
    if "function" in call:
        return dict(call)
    arguments = call.get("arguments", "{}")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {
        "id": call.get("id") or f"call_{index}",
        "type": "function",
        "function": {"name": call["name"], "arguments": arguments},
    }


def _completion_tokens(reply: Reply, tool_calls: list[dict[str, Any]]) -> int:
    words = len((reply.content or "").split())
    words += sum(len(str(tc["function"]["arguments"]).split()) for tc in tool_calls)
    return words


def _reset(request: web.Request) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0), like a crashed upstream."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class OpenAIServer:
    """An OpenAI-compatible server in a background thread; use as a context manager.

    ``behaviour`` may be replaced at any time (``server.behaviour = fn``) or use ``script``
    with the default behaviour. ``latency_s`` is added to every chat request. ``api_key``:
    a request without ``Authorization: Bearer <api_key>`` gets OpenAI's 401 (its message
    shows only the key's last four characters, as OpenAI's does).
    """

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        *,
        script: Mapping[str, Mapping[str, Any] | Sequence[Mapping[str, Any]]] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
        api_key: str | None = None,
    ) -> None:
        self.behaviour: Behaviour = behaviour or default_behaviour(script)
        self.api_key = api_key
        self.host = host
        self.port = port
        self.latency_s = latency_s
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._authorizations: list[str | None] = []
        self._errors: list[str] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # -- recorded traffic ----------------------------------------------------------------

    @property
    def requests(self) -> list[dict[str, Any]]:
        """JSON bodies of every chat request, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def authorizations(self) -> list[str | None]:
        """The ``Authorization`` header of every chat request (kept only in memory)."""
        with self._lock:
            return list(self._authorizations)

    @property
    def count(self) -> int:
        """Number of chat requests received so far."""
        with self._lock:
            return len(self._requests)

    @property
    def errors(self) -> list[str]:
        """Exceptions raised by the behaviour (each also answered with HTTP 500)."""
        with self._lock:
            return list(self._errors)

    @property
    def max_in_flight(self) -> int:
        """Highest number of chat requests being handled at the same time."""
        with self._lock:
            return self._max_in_flight

    def reset(self) -> None:
        """Forget recorded traffic (the behaviour is kept)."""
        with self._lock:
            self._requests.clear()
            self._authorizations.clear()
            self._errors.clear()
            self._max_in_flight = 0

    def use_script(
        self, script: Mapping[str, Mapping[str, Any] | Sequence[Mapping[str, Any]]]
    ) -> None:
        """Switch to the default behaviour with this marker map."""
        self.behaviour = default_behaviour(script)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no path)."""
        if self._runner is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL: ``http://127.0.0.1:PORT/v1``."""
        return self.url + "/v1"

    def start(self) -> OpenAIServer:
        """Bind (port 0 picks a free port) and serve in a daemon thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._setup())
            except BaseException as exc:  # reported to start() below
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name="openai-test-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10):
            raise RuntimeError("test server did not start within 10 s")
        if failure:
            self._thread = None
            raise failure[0]
        return self

    async def _setup(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/models", self._models)
        # Short shutdown timeout: a test that scripted a long delay must not block teardown.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2, handle_signals=False)
        await runner.setup()
        # A large backlog so hundreds of concurrent connects are accepted, not refused.
        site = web.TCPSite(runner, self.host, self.port, backlog=2048)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    def stop(self) -> None:
        """Stop serving, cancel handlers still sleeping, join the thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            with contextlib.suppress(Exception):
                future.result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None
        self._runner = None

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        # Handlers of requests the client gave up on (scripted delays) may still be
        # sleeping; cancel them so the loop closes without "Task was destroyed" noise.
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- handlers ------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": "evalrun-test", "object": "model", "created": 0, "owned_by": "evalrun"}
                ],
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                body = {"_raw": raw.decode("utf-8", "replace")}
        except ValueError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        with self._lock:
            self._requests.append(body)
            self._authorizations.append(request.headers.get("Authorization"))
            number = len(self._requests)  # 1-based
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            return await self._answer(request, body, number)
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _answer(
        self, request: web.Request, body: dict[str, Any], number: int
    ) -> web.StreamResponse:
        try:
            reply = self._unauthorized(request) or self.behaviour(body, number)
        except Exception as exc:  # a bug in a test's script: make it visible, not a hang
            message = f"test server behaviour failed: {type(exc).__name__}: {exc}"
            with self._lock:
                self._errors.append(message)
            return web.json_response(
                {"error": {"message": message, "type": "server_error"}}, status=500
            )
        delay = self.latency_s + reply.delay_s
        if delay > 0:
            await asyncio.sleep(delay)

        if reply.drop_connection:
            _reset(request)
            # Nothing can be written any more; returning a response would only log noise.
            raise asyncio.CancelledError

        payload = self._payload(reply, body, number)
        headers = {"Content-Type": "application/json", **reply.headers}
        if reply.gzip:
            payload = gzip.compress(payload)
            headers["Content-Encoding"] = "gzip"
        if reply.drop_mid_response:
            response = web.StreamResponse(status=reply.status, headers=headers)
            response.content_length = len(payload)
            await response.prepare(request)
            await response.write(payload[: max(1, len(payload) // 2)])
            await asyncio.sleep(0.01)  # let the partial body reach the client first
            _reset(request)
            raise asyncio.CancelledError
        return web.Response(body=payload, status=reply.status, headers=headers)

    def _unauthorized(self, request: web.Request) -> Reply | None:
        if self.api_key is None:
            return None
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if sent == self.api_key:
            return None
        return Reply(status=401, error_type="invalid_request_error", error_code="invalid_api_key",
                     error_message=f"Incorrect API key provided: {sent[:3]}***{sent[-4:]}. You can find your "
                                   "API key at https://platform.openai.com/account/api-keys.")

    def _payload(self, reply: Reply, body: dict[str, Any], number: int) -> bytes:
        if reply.raw_body is not None:
            raw = reply.raw_body
            return raw.encode() if isinstance(raw, str) else raw
        if reply.status >= 400:
            error = {
                "message": reply.error_message or f"scripted error {reply.status}",
                "type": reply.error_type
                or ("server_error" if reply.status >= 500 else "invalid_request_error"),
                "param": None,
                "code": reply.error_code,
            }
            return json.dumps({"error": error}).encode()

        tool_calls = [_tool_call_json(tc, i) for i, tc in enumerate(reply.tool_calls or [])]
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if tool_calls:
            message["tool_calls"] = tool_calls
        if reply.refusal is not None:
            message["refusal"] = reply.refusal
        finish = reply.finish_reason or ("tool_calls" if tool_calls else "stop")
        choices = (
            []
            if reply.empty_choices
            else [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}]
        )
        data: dict[str, Any] = {
            "id": f"chatcmpl-evalrun-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "evalrun-test"),
            "choices": choices,
        }
        if reply.usage == "auto":
            prompt = reply.prompt_tokens if reply.prompt_tokens is not None else count_words(body)
            completion = (
                reply.completion_tokens
                if reply.completion_tokens is not None
                else _completion_tokens(reply, tool_calls)
            )
            data["usage"] = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        elif reply.usage is not None:
            data["usage"] = reply.usage
        return json.dumps(data).encode()


@contextlib.contextmanager
def running_server(
    behaviour: Behaviour | None = None,
    **kwargs: Any,
) -> Iterator[OpenAIServer]:
    """``with running_server(...) as server:`` — start, yield, always stop."""
    server = OpenAIServer(behaviour, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run_forever(argv: Sequence[str] | None = None) -> int:
    """CLI: serve until interrupted, printing the base URL on the first line of stdout."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.openai_server", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every request")
    parser.add_argument("--api-key", help="answer 401 (as OpenAI does) unless this key is sent")
    parser.add_argument(
        "--script", type=Path, help="JSON file: {marker: reply-object or list of reply-objects}"
    )
    args = parser.parse_args(argv)
    script = json.loads(args.script.read_text()) if args.script else None
    server = OpenAIServer(
        script=script, host=args.host, port=args.port, latency_s=args.latency_ms / 1000.0,
        api_key=args.api_key,
    )
    with server:
        print(server.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    print(f"served {server.count} chat requests", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_forever())
