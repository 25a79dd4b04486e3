"""The fast path for OpenAI-compatible endpoints gives exactly what litellm gives.

Every scripted answer and fault of the 127.0.0.1 server goes once through
``litellm.acompletion`` (``EVALRUN_TRANSPORT=litellm``) and once through the direct path;
what evalrun records — output, tool calls, finish reason, refusal, tokens (and whether
they were estimated), cost, truncation, the latency clock, or the error kind, its
retryability and Retry-After — must be identical, and so must the request the server saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.openai_server import OpenAIServer, completion_body, gzip_bomb, running_server

from evalrun.providers.base import Pricing, ProviderError, ProviderRequest
from evalrun.providers.litellm import direct
from evalrun.providers.litellm.provider import LitellmProvider
from evalrun.providers.litellm.timed_session import KERNEL_STAMPS, TimedSocket

pytestmark = pytest.mark.network

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-direct-test-0123456789"
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object",
          "properties": {"q": {"type": "string"}}}}}]

# name -> server directive (Reply fields); each case sends "case=<name>" as the user message.
FAULTS: dict[str, dict[str, Any]] = {
    "echo": {},
    "tool call": {"tool_calls": [{"name": "lookup", "arguments": {"q": "socks"}}]},
    "refusal field": {"content": None, "refusal": "I can't help with that."},
    "no usage": {"usage": None},
    "negative usage": {"prompt_tokens": -5, "completion_tokens": -7},
    "finish length": {"finish_reason": "length"},
    "finish content_filter": {"finish_reason": "content_filter"},
    "finish eos": {"finish_reason": "eos"},
    "finish unknown word": {"finish_reason": "because"},
    "finish object": {"raw_body": completion_body({"role": "assistant", "content": "hi"},
                                                  finish_reason={"type": "stop"}).decode()},
    "content parts": {"raw_body": completion_body({"role": "assistant", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}).decode()},
    "content number": {"raw_body": completion_body({"role": "assistant", "content": 5}).decode()},
    "null message": {"raw_body": completion_body(None).decode()},
    "empty choices": {"empty_choices": True},
    "not json": {"raw_body": "<html>oops</html>"},
    "gzip": {"gzip": True},
    "corrupt gzip": {"raw_body": "not gzip at all", "headers": {"Content-Encoding": "gzip"}},
    "brotli": {"raw_body": "xx", "headers": {"Content-Encoding": "br"}},
    "big body": {"content": "y" * 300_000},
    "gzip bomb": {"raw_body": gzip_bomb(8 << 20), "headers": {"Content-Encoding": "gzip"}},
    "429 retry-after": {"status": 429, "headers": {"Retry-After": "3"}},
    "429 retry-after-ms": {"status": 429, "headers": {"retry-after-ms": "1500"}},
    "500": {"status": 500},
    "500 html": {"status": 500, "raw_body": "<html>Internal Server Error</html>"},
    "502": {"status": 502},
    "503": {"status": 503},
    "504": {"status": 504},
    "408": {"status": 408},
    "400": {"status": 400, "error_message": "bad value for temperature"},
    "400 context": {"status": 400, "error_message": "This model's maximum context length is 8192 tokens",
                    "error_code": "context_length_exceeded"},
    "400 policy": {"status": 400, "error_message": "Your request was rejected as a result of the safety system",
                   "error_code": "content_policy_violation"},
    "400 rate words": {"status": 400, "error_message": "rate limit reached for requests"},
    "401": {"status": 401, "error_message": "Incorrect API key provided: sk-dire****6789"},
    "403": {"status": 403},
    "404": {"status": 404, "error_code": "model_not_found"},
    "409": {"status": 409},
    "413": {"status": 413},
    "418": {"status": 418},
    "drop connection": {"drop_connection": True},
    "drop mid response": {"drop_mid_response": True},
    "slow": {"delay_s": 1.5},
}


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy in the environment keeps every call on litellm (tested below); these tests
    compare the two transports, so they run without one."""
    for name in direct._PROXY_ENV:
        monkeypatch.delenv(name, raising=False)


def _request(server: OpenAIServer, name: str, **overrides: Any) -> ProviderRequest:
    fields: dict[str, Any] = {
        "model": "openai/direct-test",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"case={name}"}],
        "params": {"temperature": 0, "max_tokens": 64, "seed": 7, "tools": TOOLS, "tool_choice": "auto"},
        "api_base": server.base_url,
        "api_key": KEY,
        "timeout_s": 0.6 if name == "slow" else 10.0,
        "max_response_bytes": 100_000 if name == "big body" else None,
    }
    fields.update(overrides)
    return ProviderRequest(**fields)


def _outcome(provider: LitellmProvider, request: ProviderRequest) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        try:
            r = await provider.complete(request)
        except ProviderError as e:
            return {"error": e.kind, "retryable": e.retryable, "retry_after_s": e.retry_after_s}
        finally:
            await provider.aclose()
        return {
            "output": r.output, "tool_calls": [(t.name, t.arguments, t.id) for t in r.tool_calls],
            "finish_reason": r.finish_reason, "refusal": r.refusal, "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens, "estimated": r.tokens_estimated, "cost": r.cost_usd,
            "cost_status": r.cost_status, "truncated": r.response_truncated, "clock": r.latency_clock,
            "timed": r.transport_s is not None,
        }

    return asyncio.run(go())


def _both(monkeypatch: pytest.MonkeyPatch, server: OpenAIServer, request: ProviderRequest
          ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    assert direct.eligible(request)
    monkeypatch.setenv(direct.TRANSPORT_ENV, "litellm")
    server.reset()
    via_litellm = _outcome(LitellmProvider(), request)
    sent_litellm = server.requests
    monkeypatch.delenv(direct.TRANSPORT_ENV)
    server.reset()
    via_direct = _outcome(LitellmProvider(), request)
    return via_litellm, via_direct, [sent_litellm, server.requests]


@pytest.fixture(scope="module")
def server() -> Any:
    with _kernel_stamps_on(), running_server(script={f"case={name}": spec for name, spec in FAULTS.items()}) as s:
        yield s


@contextlib.contextmanager
def _kernel_stamps_on() -> Iterator[None]:
    """Keep one stamping socket open: Linux enables receive timestamps lazily (and turns
    them off when no socket asks), so a connection's first answer could arrive unstamped
    on one transport and stamped on the other (clock "loop" vs "socket")."""
    if not KERNEL_STAMPS:
        yield
        return
    listener = socket.create_server(("127.0.0.1", 0))
    client = TimedSocket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        client.connect(listener.getsockname())
        peer, _ = listener.accept()
        with peer:
            for _ in range(200):
                peer.sendall(b"warm")
                _, ancdata, _, _ = client.recvmsg(16, socket.CMSG_SPACE(16))
                if ancdata:
                    break
                time.sleep(0.005)
            yield
    finally:
        client.close()
        listener.close()


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_every_answer_and_fault_reads_the_same_on_both_transports(
    name: str, server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    via_litellm, via_direct, (sent_litellm, sent_direct) = _both(monkeypatch, server, _request(server, name))
    assert via_direct == via_litellm
    # One attempt each (the harness owns retries), carrying the same request.
    assert len(sent_direct) == len(sent_litellm) == 1
    assert sent_direct == sent_litellm


def test_non_ascii_prompts_reach_the_server_unchanged(server: OpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    messages = [{"role": "system", "content": "Réponds brièvement ✓"},
                {"role": "user", "content": "case=echo 東京 \U0001f600 naïve"}]
    via_litellm, via_direct, (sent_litellm, sent_direct) = _both(
        monkeypatch, server, _request(server, "echo", messages=messages))
    assert via_direct == via_litellm
    assert sent_direct == sent_litellm and sent_direct[0]["messages"] == messages


def test_config_prices_apply_on_the_fast_path(server: OpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    request = _request(server, "echo", pricing=Pricing(input_per_mtok=1.0, output_per_mtok=2.0))
    via_litellm, via_direct, _ = _both(monkeypatch, server, request)
    assert via_direct == via_litellm
    assert via_direct["cost_status"] == "config" and via_direct["cost"] > 0


def test_unprocessable_entity_is_one_attempt_not_a_hidden_retry(
    server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """litellm re-sends a 422 without the params it names; the fast path reports it once."""
    monkeypatch.delenv(direct.TRANSPORT_ENV, raising=False)
    server.use_script({"case=422": {"status": 422, "error_message": "seed is not supported"}})
    try:
        server.reset()
        outcome = _outcome(LitellmProvider(), _request(server, "422"))
        assert outcome == {"error": "bad_request", "retryable": False, "retry_after_s": None}
        assert server.count == 1
    finally:
        server.use_script({f"case={n}": spec for n, spec in FAULTS.items()})


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"model": "openai/gpt-4o-mini"}, "priced by litellm"),
        ({"model": "openai/o3-custom"}, "a reasoning-model family litellm rewrites"),
        ({"model": "anthropic/claude-x"}, "another provider"),
        ({"params": {"temperature": 0, "extra_body": {"x": 1}}}, "a param litellm may transform"),
        ({"api_key": None}, "no key: litellm looks for one"),
        ({"api_base": None}, "no endpoint"),
        ({"router": {"model_list": []}}, "a router"),
    ],
)
def test_what_litellm_would_change_stays_on_litellm(server: OpenAIServer, overrides: dict[str, Any], why: str) -> None:
    assert not direct.eligible(_request(server, "echo", **overrides)), why


def test_the_switch_turns_the_fast_path_off(server: OpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(direct.TRANSPORT_ENV, "litellm")
    assert not direct.eligible(_request(server, "echo"))


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "http_proxy", "ALL_PROXY"])
def test_a_configured_proxy_keeps_calls_on_litellm(
    server: OpenAIServer, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    """litellm sends through the proxy the environment names; the direct path would not."""
    monkeypatch.delenv(direct.TRANSPORT_ENV, raising=False)
    assert direct.eligible(_request(server, "echo"))
    monkeypatch.setenv(variable, "http://proxy.invalid:3128")
    assert not direct.eligible(_request(server, "echo"))


def test_a_clean_run_never_imports_litellm(tmp_path: Path) -> None:
    """The whole point: a compare against an OpenAI-compatible endpoint skips the 2.5 s import
    (and its statistics skip scipy.stats)."""
    with running_server() as s:
        script = f"""
import sys
from pathlib import Path
from evalrun import api
from projectkit import case, variant, write_project
base = dict(api_base={s.base_url!r}, api_key_env="DIRECT_KEY", params={{"temperature": 0}})
b, c = write_project(Path({str(tmp_path)!r}), cases=[case(f"c{{i}}") for i in range(6)],
                     baseline=variant("baseline", model="openai/direct-a", **base),
                     candidate=variant("candidate", model="openai/direct-b", **base))
outcome = api.compare(api.load_project(b, c), options=api.RunOptions(cache="off"))
print(outcome.verdict_status, "litellm" in sys.modules, "scipy.stats" in sys.modules)
"""
        env = {**os.environ, "DIRECT_KEY": KEY, "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
        for name in (direct.TRANSPORT_ENV, *direct._PROXY_ENV):
            env.pop(name, None)
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        status, litellm, scipy_stats = done.stdout.split()[-3:]
        assert status in ("PASS", "FAIL", "INCONCLUSIVE"), done.stdout  # measured: answers came back
        assert litellm == "False", done.stdout
        assert scipy_stats == "False", done.stdout  # ~45 MB and ~0.4 s a run does not need
        assert s.count == 12
        assert all(json.dumps(r).count("direct-") for r in s.requests)
