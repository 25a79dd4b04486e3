"""Latency is the provider's round trip at the transport, not the client's queue.

The structural proof: a blocking stall on the client's event loop while the answer is on its
way must land in the client's overhead, never in the provider's latency. No test here has
a threshold on how fast this machine is: every inequality follows from the order of events
(the answer is waiting in the socket before the stall starts; the stall ends before the
call can).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.openai_server import OpenAIServer

from evalrun.execution.runner import PlannedCall, RetryPolicy, run_calls
from evalrun.providers import local
from evalrun.providers.base import ProviderRequest
from evalrun.providers.litellm import provider as litellm_provider
from evalrun.providers.litellm import timed_session
from evalrun.providers.litellm.provider import LitellmProvider, import_litellm
from evalrun.providers.litellm.timed_session import KERNEL_STAMPS, TimedSocket
from evalrun.providers.timing import CallClock, current_clock, use_clock

needs_kernel_stamps = pytest.mark.skipif(not KERNEL_STAMPS, reason="kernel receive timestamps need Linux x86_64/aarch64")
STALL_S = 0.2
# time.time() (the stamps) and time.monotonic() (the runner) may drift apart by microseconds.
CLOCK_SLACK_S = 0.001


@pytest.fixture(scope="module")
def litellm() -> Any:
    return import_litellm()


def _wait_for_stamps(server: socket.socket, client: socket.socket) -> None:
    """Round trips until the kernel stamps a packet.

    Linux turns receive timestamps on lazily (a deferred static key) when the first socket
    asks, and off again some time after the last such socket closes: until then packets
    arrive unstamped and a call honestly reports the loop's clock.
    """
    for _ in range(200):
        server.sendall(b"warm")
        _, ancdata, _, _ = client.recvmsg(16, socket.CMSG_SPACE(16))
        if ancdata:
            return
        time.sleep(0.005)


@pytest.fixture
def kernel_stamping() -> Iterator[None]:
    """Keeps receive timestamps switched on for the test (a stamped socket stays open)."""
    if not KERNEL_STAMPS:
        yield
        return
    listener = socket.create_server(("127.0.0.1", 0))
    client = TimedSocket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        client.connect(listener.getsockname())
        server, _ = listener.accept()
        with server:
            _wait_for_stamps(server, client)
            yield
    finally:
        client.close()
        listener.close()


# --------------------------------------------------------------------------- the clock


def test_clock_measures_request_sent_to_response_received() -> None:
    clock = CallClock()
    clock.begin_exchange()
    clock.mark_received(99.0, kernel=True)  # before the request went out: not its answer
    clock.mark_sent(100.0)
    clock.mark_sent(100.5)  # the last write wins: the whole request is out at 100.5
    clock.mark_received(100.75, kernel=True)
    clock.mark_received(100.25, kernel=True)  # an earlier packet read late: the last packet counts
    clock.mark_received(101.0, kernel=True)
    clock.close()
    assert clock.measured() == (0.5, "socket")


def test_clock_sums_exchanges_and_says_when_the_loop_stamped_them() -> None:
    clock = CallClock()
    for sent, received, kernel in ((10.0, 10.25, True), (20.0, 20.5, False)):
        clock.begin_exchange()
        clock.mark_sent(sent)
        clock.mark_received(received, kernel=kernel)
    clock.close()
    assert clock.measured() == (0.75, "loop")


@pytest.mark.parametrize(
    "stamps",
    [[], ["begin"], ["begin", "sent"]],
    ids=["no request", "never written", "never answered"],
)
def test_incomplete_exchange_is_not_a_measurement(stamps: list[str]) -> None:
    clock = CallClock()
    if "begin" in stamps:
        clock.begin_exchange()
    if "sent" in stamps:
        clock.mark_sent(1.0)
    clock.close()
    assert clock.measured() is None


def test_closed_clock_takes_no_stamps_from_a_reused_connection() -> None:
    clock = CallClock()
    clock.begin_exchange()
    clock.mark_sent(1.0)
    clock.mark_received(1.5, kernel=True)
    clock.close()
    clock.begin_exchange()
    clock.mark_sent(5.0)
    clock.mark_received(9.0, kernel=True)
    clock.add_generation(3.0)
    assert clock.measured() == (0.5, "socket")


def test_a_wall_clock_step_during_the_call_drops_the_spans() -> None:
    clock = CallClock()
    clock.begin_exchange()
    clock.mark_sent(1.0)
    clock.mark_received(1.5, kernel=True)
    clock._wall0 -= 3600.0  # the wall clock jumped an hour while the monotonic clock did not
    clock.close()
    assert clock.measured() is None


def test_use_clock_sets_and_restores_the_context() -> None:
    assert current_clock() is None
    with use_clock() as clock:
        assert current_clock() is clock
    assert current_clock() is None
    assert clock.closed


# --------------------------------------------------------------------------- the socket


@needs_kernel_stamps
def test_socket_stamps_arrival_not_the_late_read() -> None:
    """The receive time is when the bytes reached this host, not when they were read."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = TimedSocket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        client.connect(listener.getsockname())
        server, _ = listener.accept()
        _wait_for_stamps(server, client)
        with use_clock() as clock, server:
            clock.begin_exchange()
            client.send(b"request")
            assert server.recv(16) == b"request"
            server.sendall(b"response")
            select.select([client], [], [], 10)  # the answer is waiting in the socket
            waiting_since = time.time()
            time.sleep(STALL_S)  # a busy client that reads late
            assert client.recv(64) == b"response"
            read_at = time.time()
        measured = clock.measured()
    finally:
        client.close()
        listener.close()
    assert measured is not None
    span, how = measured
    assert how == "socket"
    ex = clock.exchanges[0]
    assert ex.sent is not None and ex.received is not None
    assert ex.received <= waiting_since < read_at - STALL_S + CLOCK_SLACK_S
    assert span == ex.received - ex.sent


def test_socket_without_a_call_clock_stamps_nothing() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = TimedSocket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        client.connect(listener.getsockname())
        server, _ = listener.accept()
        with server:
            client.send(b"x")
            server.sendall(server.recv(1))
            assert client.recv(1) == b"x"
    finally:
        client.close()
        listener.close()
    assert client._owner is None


# --------------------------------------------------------------------------- through litellm


def _planned(server: OpenAIServer, text: str, model: str = "openai/evalrun-timing", **kw: Any) -> PlannedCall:
    req = ProviderRequest(
        model=model, messages=[{"role": "user", "content": text}], api_base=server.base_url,
        api_key="sk-timing-test-0000", timeout_s=10.0, **kw,
    )
    return PlannedCall(case_id=text, side="baseline", sample=0, request=req, key=text)


@pytest.fixture
def recorded_sockets(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[socket.socket]]:
    """Every socket the timed session opens, so a test can wait on one."""
    made: list[socket.socket] = []
    original = timed_session._socket_factory

    def factory(addr_info: tuple[Any, ...]) -> socket.socket:
        sock = original(addr_info)
        made.append(sock)
        return sock

    monkeypatch.setattr(timed_session, "_socket_factory", factory)
    yield made


@needs_kernel_stamps
@pytest.mark.network
def test_a_stall_on_the_event_loop_is_client_overhead_not_provider_latency(
    litellm: Any, openai_server: OpenAIServer, recorded_sockets: list[socket.socket],
    monkeypatch: pytest.MonkeyPatch, kernel_stamping: None,
) -> None:
    """While the answer waits in the socket, the loop is blocked (as by CPU-bound work):
    the provider's latency ends when the answer arrived, so the whole stall is overhead."""
    openai_server.latency_s = 0.02
    stall: dict[str, float] = {}
    clocks: list[CallClock] = []

    @contextlib.contextmanager
    def recording_clock() -> Iterator[CallClock]:
        with use_clock() as clock:
            clocks.append(clock)
            yield clock

    monkeypatch.setattr(litellm_provider, "use_clock", recording_clock)

    async def staller() -> None:
        while openai_server.count < 1:  # the request is out: the server has read it
            await asyncio.sleep(0.001)
        select.select([recorded_sockets[0]], [], [], 10)  # blocks the loop until the answer is here
        stall["wall"] = time.time()
        stall["start"] = time.monotonic()
        time.sleep(STALL_S)
        stall["end"] = time.monotonic()

    async def go() -> list[Any]:
        provider = LitellmProvider()
        try:
            stalling = asyncio.create_task(staller())
            results = await run_calls([_planned(openai_server, "stall")], provider, concurrency=1,
                                      policy=RetryPolicy(max_attempts=1), journal=None, warmup=False)
            await stalling
            return results
        finally:
            await provider.aclose()

    [result] = asyncio.run(go())
    assert result.ok, result.error_message
    assert result.latency_clock == "socket"
    [exchange] = clocks[0].exchanges
    assert exchange.sent is not None and exchange.received is not None
    # The answer was stamped when it arrived, before the stall; the loop read it after.
    assert exchange.received <= stall["wall"]
    assert result.latency_s == pytest.approx(exchange.received - exchange.sent)
    # Call start <= sent < received <= stall start < stall end <= call end, so:
    assert result.client_overhead_s is not None
    assert result.client_overhead_s >= (stall["end"] - stall["start"]) - CLOCK_SLACK_S


@pytest.mark.network
@pytest.mark.parametrize("model", ["openai/evalrun-timing", "aiohttp_openai/evalrun-timing", "router"])
def test_every_litellm_http_path_is_timed_at_the_transport(
    litellm: Any, openai_server: OpenAIServer, model: str, kernel_stamping: None
) -> None:
    """openai/ (the SDK over httpx), aiohttp_openai/ and a Router all send through the timed session."""
    router = None
    if model == "router":
        router = {"model_list": [
            {"model_name": "grp", "litellm_params": {"model": "openai/evalrun-timing", "api_base": openai_server.base_url,
                                                     "api_key": f"sk-timing-{i}"}}
            for i in range(2)
        ]}
        model = "grp"
    plan = [_planned(openai_server, f"q{i}", model=model, router=router) for i in range(6)]

    async def go() -> list[Any]:
        provider = LitellmProvider()
        try:
            return await run_calls(plan, provider, concurrency=3, policy=RetryPolicy(max_attempts=1), journal=None)
        finally:
            await provider.aclose()

    results = asyncio.run(go())
    assert len(results) == 6 and all(r.ok for r in results), [r.error_message for r in results]
    expected = "socket" if KERNEL_STAMPS else "loop"
    assert {r.latency_clock for r in results} == {expected}
    assert openai_server.count == 6  # one exchange per call: no stamp can have come from another
    for r in results:
        assert r.latency_s is not None and r.client_latency_s is not None
        assert 0 < r.latency_s <= r.client_latency_s + CLOCK_SLACK_S


@pytest.mark.network
def test_concurrent_calls_on_shared_connections_each_time_their_own_exchange(
    litellm: Any, openai_server: OpenAIServer
) -> None:
    """Connections are pooled and reused across calls; each call's span is its own answer's.

    The server delays each request by a per-request amount it records; a call whose span
    came from another call's exchange would not match its own delay's order.
    """
    rng = random.Random(7)
    delays = {f"d{i}": rng.choice([0.01, 0.08]) for i in range(16)}
    lock = threading.Lock()
    seen: list[str] = []

    def behaviour(body: dict[str, Any], number: int) -> Any:
        from tests.support.openai_server import Reply, last_user_text

        text = last_user_text(body)
        with lock:
            seen.append(text)
        return Reply(content=text, delay_s=delays[text])

    openai_server.behaviour = behaviour
    plan = [_planned(openai_server, key) for key in delays]

    async def go() -> list[Any]:
        provider = LitellmProvider()
        try:
            return await run_calls(plan, provider, concurrency=4, policy=RetryPolicy(max_attempts=1), journal=None)
        finally:
            await provider.aclose()

    results = asyncio.run(go())
    assert sorted(seen) == sorted(delays)
    for r in results:
        assert r.ok and r.latency_s is not None
        # The span includes the server's own delay for this request: it is this call's exchange.
        assert r.latency_s >= delays[r.case_id]


# --------------------------------------------------------------------------- the embedded model


class _SlowLlama:
    """Stands in for llama_cpp.Llama: one 'generation' is a short sleep."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def create_chat_completion(self, **_: Any) -> dict[str, Any]:
        time.sleep(self.seconds)
        return {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}], "usage": {}}


def test_local_generation_time_excludes_waiting_for_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """An in-process model's latency is the generation: waiting for a busy model is not in it."""
    path = Path("/nonexistent/evalrun-fake.gguf")
    loaded = local._LoadedModel(llama=_SlowLlama(0.01))
    monkeypatch.setitem(local._models, path, loaded)
    done: dict[str, Any] = {}

    def call() -> None:
        with use_clock() as clock:
            started = time.monotonic()
            local._generate(path, [{"role": "user", "content": "hi"}], {}, clock)
            done["elapsed"] = time.monotonic() - started
        done["measured"] = clock.measured()

    with loaded.lock:  # another generation holds the model
        worker = threading.Thread(target=call)
        worker.start()
        time.sleep(STALL_S)
        released = time.monotonic()
    worker.join()
    generation, how = done["measured"]
    assert how == "generation"
    assert done["elapsed"] >= STALL_S  # the call waited for the model...
    assert generation <= time.monotonic() - released  # ...its latency began once it held it
