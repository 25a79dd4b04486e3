"""The scripted OpenAI-compatible test server itself, exercised with plain httpx."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.openai_server import DIRECTIVE, OpenAIServer, Reply, running_server

pytestmark = pytest.mark.network

ROOT = Path(__file__).resolve().parent.parent


def chat(server: OpenAIServer, text: str, **extra: Any) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(
        server.base_url + "/chat/completions",
        json=body,
        headers={"Authorization": "Bearer sk-test-abcdefgh1234"},
        timeout=5,
    )


def test_default_echo_with_word_count_usage(openai_server: OpenAIServer) -> None:
    assert openai_server.base_url.startswith("http://127.0.0.1:")
    assert openai_server.base_url.endswith("/v1")
    body = chat(openai_server, "three little words").json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "three little words"}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 3 + 3}
    assert openai_server.count == 1
    assert openai_server.requests[0]["messages"][0]["content"] == "three little words"
    assert openai_server.authorizations == ["Bearer sk-test-abcdefgh1234"]


def test_models_endpoint(openai_server: OpenAIServer) -> None:
    data = httpx.get(openai_server.base_url + "/models", timeout=5).json()
    assert data["object"] == "list" and data["data"][0]["id"]
    assert openai_server.count == 0  # only chat requests are counted


def test_behaviour_gets_body_and_1_based_number(openai_server: OpenAIServer) -> None:
    seen: list[tuple[str, int]] = []

    def behaviour(body: dict[str, Any], n: int) -> Reply:
        seen.append((body["messages"][-1]["content"], n))
        return Reply(
            content=f"#{n}", prompt_tokens=11, completion_tokens=22, finish_reason="length"
        )

    openai_server.behaviour = behaviour
    first = chat(openai_server, "a").json()
    chat(openai_server, "b")
    assert seen == [("a", 1), ("b", 2)]
    assert first["choices"][0]["message"]["content"] == "#1"
    assert first["choices"][0]["finish_reason"] == "length"
    assert first["usage"]["prompt_tokens"] == 11 and first["usage"]["completion_tokens"] == 22


def test_status_headers_and_error_object(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda b, n: Reply(
        status=429, headers={"Retry-After": "3"}, error_message="slow down", error_code="rate"
    )
    resp = chat(openai_server, "x")
    assert resp.status_code == 429 and resp.headers["retry-after"] == "3"
    assert resp.json()["error"]["message"] == "slow down"
    assert resp.json()["error"]["code"] == "rate"


def test_usage_none_raw_body_empty_choices_tool_calls_refusal(openai_server: OpenAIServer) -> None:
    replies = {
        "nousage": Reply(content="x", usage=None),
        "raw": Reply(raw_body="{broken"),
        "empty": Reply(content="x", empty_choices=True),
        "tool": Reply(tool_calls=[{"name": "f", "arguments": {"a": 1}}]),
        "refuse": Reply(refusal="no"),
    }
    openai_server.behaviour = lambda b, n: replies[b["messages"][-1]["content"]]
    assert "usage" not in chat(openai_server, "nousage").json()
    assert chat(openai_server, "raw").text == "{broken"
    assert chat(openai_server, "empty").json()["choices"] == []
    tool = chat(openai_server, "tool").json()["choices"][0]
    assert tool["finish_reason"] == "tool_calls"
    assert tool["message"]["tool_calls"] == [
        {"id": "call_0", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]
    refusal = chat(openai_server, "refuse").json()["choices"][0]["message"]
    assert refusal == {"role": "assistant", "content": None, "refusal": "no"}


@pytest.mark.parametrize("mode", ["drop_connection", "drop_mid_response"])
def test_dropped_connections(openai_server: OpenAIServer, mode: str) -> None:
    openai_server.behaviour = lambda b, n: Reply(
        content="word " * 100,
        drop_connection=mode == "drop_connection",
        drop_mid_response=mode == "drop_mid_response",
    )
    with pytest.raises(httpx.TransportError):
        chat(openai_server, "x")
    assert openai_server.count == 1
    openai_server.behaviour = lambda b, n: Reply(content="fine")  # the server survives
    assert chat(openai_server, "again").json()["choices"][0]["message"]["content"] == "fine"


def test_delay(openai_server: OpenAIServer) -> None:
    openai_server.behaviour = lambda b, n: Reply(content="late", delay_s=0.3)
    started = time.monotonic()
    chat(openai_server, "x")
    assert 0.3 <= time.monotonic() - started < 2


def test_script_markers_give_each_occurrence_its_reply(openai_server: OpenAIServer) -> None:
    openai_server.use_script(
        {
            "[case-1]": [{"status": 503}, {"content": "recovered"}],
            "[case-10]": {"content": "ten"},
        }
    )
    assert chat(openai_server, "question [case-1]").status_code == 503
    assert chat(openai_server, "question [case-1]").json()["choices"][0]["message"]["content"] == (
        "recovered"
    )
    assert chat(openai_server, "question [case-1]").status_code == 200  # last one repeats
    ten = chat(openai_server, "question [case-10]").json()
    assert ten["choices"][0]["message"]["content"] == "ten"  # longest marker wins
    assert chat(openai_server, "no marker").json()["choices"][0]["message"]["content"] == (
        "no marker"
    )


def test_inline_directive(openai_server: OpenAIServer) -> None:
    text = f'Answer politely. {DIRECTIVE}{{"status": 500, "error_message": "boom"}} thanks'
    resp = chat(openai_server, text)
    assert resp.status_code == 500 and resp.json()["error"]["message"] == "boom"
    usage_text = f'{DIRECTIVE} {{"usage": null}}'
    data = chat(openai_server, usage_text).json()
    assert "usage" not in data and data["choices"][0]["message"]["content"] == usage_text


def test_bad_script_is_a_visible_500(openai_server: OpenAIServer) -> None:
    openai_server.use_script({"m": {"stauts": 429}})
    resp = chat(openai_server, "m")
    assert resp.status_code == 500 and "stauts" in resp.text
    assert len(openai_server.errors) == 1


@pytest.mark.slow
def test_hundreds_of_concurrent_connections() -> None:
    with running_server(lambda b, n: Reply(content=f"r{n}", delay_s=0.5)) as server:

        async def burst() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
            async with httpx.AsyncClient(timeout=20, limits=limits) as client:
                body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
                return await asyncio.gather(
                    *(
                        client.post(server.base_url + "/chat/completions", json=body)
                        for _ in range(150)
                    )
                )

        started = time.monotonic()
        responses = asyncio.run(burst())
        elapsed = time.monotonic() - started
        assert {r.status_code for r in responses} == {200}
        assert server.count == 150
        assert server.max_in_flight >= 100  # they really were concurrent
        assert elapsed < 5, elapsed


def test_requests_are_recorded_thread_safely() -> None:
    with OpenAIServer() as server:

        async def many() -> None:
            async with httpx.AsyncClient(timeout=10) as client:
                await asyncio.gather(
                    *(
                        client.post(
                            server.base_url + "/chat/completions",
                            json={"messages": [{"role": "user", "content": str(i)}]},
                        )
                        for i in range(50)
                    )
                )

        asyncio.run(many())
        assert server.count == 50
        assert sorted(int(r["messages"][0]["content"]) for r in server.requests) == list(range(50))
        server.reset()
        assert server.count == 0 and server.authorizations == []


def test_stop_is_prompt_even_with_a_request_still_sleeping() -> None:
    server = OpenAIServer(lambda b, n: Reply(content="x", delay_s=30)).start()
    with pytest.raises(httpx.ReadTimeout):
        chat_body = {"messages": [{"role": "user", "content": "x"}]}
        httpx.post(server.base_url + "/chat/completions", json=chat_body, timeout=0.2)
    started = time.monotonic()
    server.stop()
    server.stop()  # idempotent
    assert time.monotonic() - started < 3


def test_cli_prints_the_url_and_adds_latency(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"[teapot]": {"status": 418}}))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.openai_server",
            "--port",
            "0",
            "--latency-ms",
            "50",
            "--script",
            str(script),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        started = time.monotonic()
        ok = httpx.post(url + "/chat/completions", json=body, timeout=5)
        assert ok.status_code == 200 and time.monotonic() - started >= 0.05
        body["messages"][0]["content"] = "[teapot]"
        assert httpx.post(url + "/chat/completions", json=body, timeout=5).status_code == 418
    finally:
        proc.terminate()
        proc.wait(timeout=10)
