"""Test doubles shipped with evalrun: a scriptable provider that never touches litellm.

Use them in your own tests (or evalrun's) to drive the runner without a network::

    from evalrun.testing import FakeProvider, fake_response
    from evalrun.providers.base import ProviderError

    def script(req):
        if req.metadata.get("case_id") == "flaky":
            return ProviderError("rate_limited", "slow down", retryable=True, retry_after_s=0)
        return fake_response('{"ok": true}')

    provider = FakeProvider(script)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from evalrun.providers.base import Provider, ProviderError, ProviderRequest, ProviderResponse
from evalrun.providers.registry import ProviderSpec, register_provider, unregister_provider
from evalrun.records import CostStatus, ToolCall

__all__ = ["FakeProvider", "Script", "echo_script", "fake_response", "last_user_text", "serving"]

Script = Callable[[ProviderRequest], ProviderResponse | ProviderError | Exception]


def fake_response(
    text: str | None,
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    finish_reason: str | None = "stop",
    tool_calls: list[ToolCall] | None = None,
    cost_usd: float | None = None,
    cost_status: CostStatus = "unpriced",
    *,
    refusal: str | None = None,
    tokens_estimated: bool = False,
) -> ProviderResponse:
    """A ``ProviderResponse`` with sensible defaults for tests."""
    return ProviderResponse(
        output=text,
        tool_calls=list(tool_calls or []),
        finish_reason=finish_reason,
        refusal=refusal,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        tokens_estimated=tokens_estimated,
        cost_usd=cost_usd,
        cost_status=cost_status,
    )


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """Text of the last ``user`` message ('' if none); content parts are joined."""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(
                    str(part.get("text", "")) for part in content if isinstance(part, dict)
                )
            return "" if content is None else str(content)
    return ""


def echo_script(request: ProviderRequest) -> ProviderResponse:
    """The default script: answer with the last user message."""
    return fake_response(last_user_text(request.messages))


class FakeProvider:
    """A ``Provider`` driven by a script instead of a model.

    ``script(request)`` returns a ``ProviderResponse`` (returned), or a ``ProviderError`` /
    any other exception instance (raised); exceptions the script itself raises propagate.
    Each call first sleeps ``latency_s``. Requests are recorded in ``calls`` in call order.
    """

    def __init__(self, script: Script | None = None, latency_s: float = 0.0) -> None:
        self.script: Script = script or echo_script
        self.latency_s = latency_s
        self.calls: list[ProviderRequest] = []
        self.closed = False

    @property
    def count(self) -> int:
        """Number of ``complete`` calls so far (including failed ones)."""
        return len(self.calls)

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        """Record the request, wait ``latency_s``, then answer from the script."""
        self.calls.append(request)
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        result = self.script(request)
        if isinstance(result, BaseException):
            raise result
        return result

    async def aclose(self) -> None:
        """Mark the provider closed (tests can assert the runner closes providers)."""
        self.closed = True


@contextlib.contextmanager
def serving(provider: Provider, prefix: str) -> Iterator[ProviderSpec]:
    """Route every model string starting with ``prefix`` to ``provider`` while inside.

    How a test or a demo drives the real command (``evalrun compare`` through click, with
    configs naming e.g. ``openai/test-model``) with a scripted provider: the registry
    answers with ``provider`` instead of litellm. The run stays in this process (the
    instance cannot be sent to worker processes), as with ``api.compare(provider=...)``.
    """
    spec = register_provider(ProviderSpec(f"test:{prefix}", lambda: provider, prefix=prefix, in_process=True))
    try:
        yield spec
    finally:
        unregister_provider(spec.name)
