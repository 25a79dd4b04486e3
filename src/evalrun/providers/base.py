"""The provider contract: one attempt of one chat completion, no retries.

The runner owns retries, timeouts accounting and journaling; a provider only turns a
``ProviderRequest`` into a ``ProviderResponse`` or raises ``ProviderError`` with a named kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from evalrun.records import CostStatus, ErrorKind, LatencyClock, ToolCall

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
"""The largest answer read when a request sets no ``max_response_bytes``."""


@dataclass(frozen=True, slots=True)
class Pricing:
    """Per-token prices given in a variant config, in USD per million tokens."""

    input_per_mtok: float
    output_per_mtok: float


@dataclass(slots=True)
class ProviderRequest:
    """Everything needed for one call. ``api_key`` is a secret: never log or store it."""

    model: str
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 60.0
    pricing: Pricing | None = None
    local_model_path: str | None = None
    # litellm Router model_list (may hold keys: never log or store it); model = the group name.
    router: dict[str, Any] | None = field(default=None, repr=False)
    # case_id / side / sample: lets test doubles script answers; never sent to a provider.
    metadata: dict[str, Any] = field(default_factory=dict)
    # Cap on one answer (decoded HTTP body, or text for in-process models); None: 4 MiB.
    max_response_bytes: int | None = None
    # Set for an embedding request (a ``similar`` check): the text to embed; ``messages`` is
    # then empty and the answer's ``output`` is the vector as a JSON list.
    embed_input: str | None = None


@dataclass(slots=True)
class ProviderResponse:
    """A successful completion, normalised across providers."""

    output: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    refusal: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_estimated: bool = False
    cost_usd: float | None = None
    cost_status: CostStatus = "unpriced"
    # The provider's own time for this call, measured at the transport (or the generation
    # of an in-process model), and how; None when the provider cannot time it (the runner
    # then records the whole call, clock "call").
    transport_s: float | None = None
    latency_clock: LatencyClock | None = None
    # The answer was larger than max_response_bytes: its text was cut there.
    response_truncated: bool = False


class ProviderError(Exception):
    """A failed attempt, classified.

    ``kind`` is one of ``evalrun.records.ErrorKind``; ``retryable tells the runner
    whether another attempt may help; ``retry_after_s`` is the server's Retry-After.
    The message must already be scrubbed of secrets.
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        retryable: bool,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class Provider(Protocol):
    """Anything that can make one attempt of a chat completion."""

    async def complete(self, request: ProviderRequest) -> ProviderResponse: ...

    async def aclose(self) -> None: ...
