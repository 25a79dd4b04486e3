"""What a chat-completion answer says, read defensively: from litellm's object or raw JSON.

One set of rules for both paths, so a given oddity always ends the same way:

* ``content`` is text, null, or a list of content parts (their text joined); anything
  else makes the answer ``malformed_response``, as do a missing or non-object ``message``
  and missing ``choices``;
* ``finish_reason`` is kept when it is a string; a ``{"type": ...}`` object gives its type;
  anything else is unknown (None), never a reason to drop the answer;
* a usage count that is negative, not an integer, or absurd (over ``MAX_TOKENS``) is
  treated as missing: the caller counts the tokens itself and marks them estimated.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from evalrun.records import ToolCall

__all__ = [
    "MAX_TOKENS",
    "Completion",
    "MalformedCompletion",
    "finish_reason_of",
    "parse_completion",
    "salvage_content",
    "text_of",
    "token_count",
    "tool_calls_of",
]

MAX_TOKENS = 100_000_000
"""More tokens than any request or answer can hold: a usage count above it is not believed."""

_MAX_REASON = 64


class MalformedCompletion(ValueError):
    """The answer has no usable message; the message says what is wrong (one line)."""


@dataclass(slots=True)
class Completion:
    """The parts of an answer evalrun keeps (token counts already sanity-checked)."""

    output: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    refusal: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def _a(value: Any) -> str:
    name = type(value).__name__
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def text_of(value: Any, what: str = "message content") -> str | None:
    """Text, None, or the joined text of content parts; raises ``MalformedCompletion`` otherwise."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):  # [{"type": "text", "text": "..."}, ...]; non-text parts carry no text
        pieces: list[str] = []
        for part in value:
            if isinstance(part, str):
                pieces.append(part)
            else:
                text = _get(part, "text")
                if isinstance(text, str):
                    pieces.append(text)
        return "".join(pieces)
    raise MalformedCompletion(f"{what} is {_a(value)}, not text or a list of content parts")


def finish_reason_of(value: Any) -> str | None:
    """A string finish_reason, the ``type`` of an object one, else None (unknown)."""
    if isinstance(value, dict):
        value = value.get("type", value.get("reason"))
    if isinstance(value, str) and value:
        return value[:_MAX_REASON]
    return None


def token_count(value: Any) -> int | None:
    """A usage count evalrun believes, or None (missing, negative, fractional, absurd)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value < 0 or value > MAX_TOKENS:
        return None
    return value


def tool_calls_of(message: Any) -> list[ToolCall]:
    """The message's tool calls (and the legacy single ``function_call``), arguments as text."""
    calls: list[ToolCall] = []
    raw_calls = _get(message, "tool_calls")
    for call in raw_calls if isinstance(raw_calls, list) else []:
        function = _get(call, "function")
        name = _get(function, "name")
        arguments = _get(function, "arguments")
        call_id = _get(call, "id")
        if not isinstance(arguments, str):
            arguments = "" if arguments is None else json.dumps(arguments, default=str)
        calls.append(
            ToolCall(name=name if isinstance(name, str) else "", arguments=arguments,
                     id=call_id if isinstance(call_id, str) else None)
        )
    legacy = _get(message, "function_call")
    if not calls and legacy is not None:
        name = _get(legacy, "name")
        arguments = _get(legacy, "arguments")
        calls.append(
            ToolCall(
                name=name if isinstance(name, str) else "",
                arguments=arguments if isinstance(arguments, str) else json.dumps(arguments, default=str),
            )
        )
    return calls


def parse_completion(data: Any) -> Completion:
    """Read a chat completion (litellm's object or the decoded JSON body).

    Raises ``MalformedCompletion`` when there is no usable message.
    """
    if data is None or isinstance(data, str | int | float | bool | list):
        raise MalformedCompletion(f"the body is {_a(data)}, not a completion object")
    choices = _get(data, "choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedCompletion("completion has no choices")
    choice = choices[0]
    if not isinstance(choice, dict) and isinstance(choice, str | int | float | bool | list):
        raise MalformedCompletion(f"choices[0] is {_a(choice)}, not an object")
    message = _get(choice, "message")
    if message is None:
        raise MalformedCompletion("choice has no message")
    if isinstance(message, str | int | float | bool | list):
        raise MalformedCompletion(f"message is {_a(message)}, not an object")
    refusal = _get(message, "refusal")
    usage = _get(data, "usage")
    return Completion(
        output=text_of(_get(message, "content")),
        tool_calls=tool_calls_of(message),
        finish_reason=finish_reason_of(_get(choice, "finish_reason")),
        refusal=refusal if isinstance(refusal, str) and refusal else None,
        prompt_tokens=token_count(_get(usage, "prompt_tokens")),
        completion_tokens=token_count(_get(usage, "completion_tokens")),
    )


_MESSAGE_RE = re.compile(r'"message"\s*:\s*\{')
_CONTENT_RE = re.compile(r'"content"\s*:\s*"')


def salvage_content(partial: bytes) -> str | None:
    """The message text at the start of a body cut off mid-way (None when it is not there).

    Reads the first ``"content": "..."`` after ``"message": {`` up to its closing quote or
    the cut, whichever comes first.
    """
    text = partial.decode("utf-8", "ignore")  # the cut may split a multi-byte character
    m = _MESSAGE_RE.search(text)
    c = _CONTENT_RE.search(text, m.end()) if m else None
    if c is None:
        return None
    body = text[c.end() :]
    # A cut inside an escape (``\\`` or ``\\u12``) leaves an invalid one: drop it.
    for trim in range(7):
        candidate = body[: len(body) - trim] if trim else body
        try:
            value, _ = json.decoder.scanstring(candidate + '"', 0)  # type: ignore[attr-defined]
        except json.JSONDecodeError:
            continue
        return str(value)
    return None
