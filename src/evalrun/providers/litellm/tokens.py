"""Token counts and prices as litellm knows them (its tokenizers and offline price map).

One counting rule for the whole program: the pre-run estimate, the ``--max-cost`` budget
and the provider's fallback when an answer carries no usage all count here. Prompt tokens
are counted for everything a request carries and a provider bills: the messages, the
declared ``tools`` (and ``tool_choice``), and every other structured parameter
(``response_format``'s schema, ``extra`` payloads). A tokenizer that cannot load offline
falls back to ~4 characters per token over the same text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from evalrun.providers.litellm.importer import import_litellm

__all__ = ["count_prompt_tokens", "count_text_tokens", "prices_per_token", "prompt_token_bound"]

# Request parameters that are plain settings, not text a provider reads (and bills).
_SCALAR_TYPES = (str, int, float, bool, type(None))
# Counted by litellm's counter with the messages (it knows how providers render them).
_COUNTED_WITH_MESSAGES = frozenset({"tools", "tool_choice"})


def _billable_extras(params: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Structured request parameters whose content reaches the model (response_format's
    schema, legacy ``functions``, ``extra`` payloads): counted as their JSON text."""
    return sorted((k, v) for k, v in params.items()
                  if k not in _COUNTED_WITH_MESSAGES and not isinstance(v, _SCALAR_TYPES))


def _by_characters(text: str) -> int:
    return len(text) // 4 + 1


def count_prompt_tokens(model: str, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> int:
    """Prompt tokens of one request (messages, tools, tool_choice, structured params)."""
    litellm = import_litellm()
    tools = params.get("tools") or None
    tool_choice = params.get("tool_choice")
    extras = _billable_extras(params)
    try:
        n = int(litellm.token_counter(model=model, messages=list(messages), tools=tools,
                                      tool_choice=tool_choice if isinstance(tool_choice, dict) else None))
        for _, value in extras:
            n += int(litellm.token_counter(model=model, text=json.dumps(value, sort_keys=True, default=str)))
        return n
    except Exception:
        return _by_characters(json.dumps([list(messages), tools, tool_choice, extras], default=str))


def count_text_tokens(model: str, text: str) -> int:
    """Tokens of a completion's text (output, tool calls, refusal)."""
    try:
        return int(import_litellm().token_counter(model=model, text=text))
    except Exception:
        return _by_characters(text)


def prompt_token_bound(messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> int:
    """A hard upper bound of a request's prompt tokens: the UTF-8 bytes of its messages,
    tools and structured parameters as JSON. A byte-level tokenizer never makes more tokens
    than bytes, and the JSON syntax outweighs the few tokens a provider adds per message."""
    billable = [list(messages), params.get("tools"), params.get("tool_choice"), _billable_extras(params)]
    return len(json.dumps(billable, ensure_ascii=False, default=str).encode("utf-8", "replace")) + 16


def prices_per_token(model: str) -> tuple[float, float] | None:
    """USD per token (input, output) from litellm's offline price map, or None (unpriced)."""
    litellm = import_litellm()
    try:
        p_in, _ = litellm.cost_per_token(model=model, prompt_tokens=1, completion_tokens=0)
        _, p_out = litellm.cost_per_token(model=model, prompt_tokens=0, completion_tokens=1)
        return float(p_in), float(p_out)
    except Exception:  # not in the price map
        return None
