"""OpenAI-compatible endpoints called straight on the timed aiohttp session (the fast path).

Why: per call, ``litellm.acompletion`` spends ~3.8 ms of CPU on an ``openai/…`` model (its
logging, parameter mapping, the OpenAI SDK, pydantic response objects) against ~0.3 ms
for the HTTP exchange itself, and ``import litellm`` costs ~2.5 s before the first call.
For the requests where litellm only forwards — an ``openai/NAME`` model at a given
``api_base`` with plain OpenAI parameters — this module sends the same JSON body
litellm sends, on the same timed session (so latency is measured the same way), and
reads the answer with the same rules:

* the body is read with the same cap and bounded decoding (``bounded_http.CappedBody``)
  and parsed by ``completion_json`` — the code litellm's answers already go through;
* an error status goes through litellm's own mapping (the OpenAI SDK's status error,
  litellm's ``OpenAIError`` and ``exception_type``: what ``litellm.acompletion`` raises)
  and then ``classify_exception``, so every error kind, retryable flag and Retry-After is
  litellm's. litellm is imported for that on the first error answer only;
* a ``finish_reason`` outside OpenAI's own set goes through litellm's map.

What qualifies (``eligible``): ``openai/NAME`` with an ``api_base`` (no query string) and
a key, no router, only the parameters litellm passes through unchanged for such a model
(``PASSTHROUGH_PARAMS``), a NAME litellm has no price for and does not rewrite
parameters for (its reasoning-model families), and no HTTP proxy in the environment. Everything else — priced models, other
providers, ``extra`` params, routers — goes through ``litellm.acompletion`` as before.
``EVALRUN_TRANSPORT=litellm`` switches the fast path off.

One deliberate difference: on HTTP 422 litellm (with ``drop_params``) drops the parameters
the error names and sends the request again by itself — a hidden retry. Here the 422 is
the call's answer (``bad_request``): the harness owns retries, and a rejected parameter is
a config problem to show, not to hide.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from evalrun.providers.base import ProviderError, ProviderRequest
from evalrun.providers.litellm.bounded_http import (
    ACCEPTED_ENCODINGS,
    BodyCapture,
    CappedBody,
    ResponseBodyError,
)

__all__ = ["PASSTHROUGH_PARAMS", "TRANSPORT_ENV", "eligible", "normal_finish_reason", "post_chat", "raise_for_status"]

TRANSPORT_ENV = "EVALRUN_TRANSPORT"
"""``litellm`` sends every call through ``litellm.acompletion`` (no fast path)."""

PREFIX = "openai/"

PASSTHROUGH_PARAMS = frozenset(
    {"temperature", "max_tokens", "top_p", "seed", "stop", "response_format", "tools", "tool_choice"}
)
"""The variant params litellm sends unchanged to an OpenAI-compatible endpoint (verified by
``tests/test_direct_transport.py`` against the bodies litellm sends)."""

_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")

# OpenAI's own finish reasons: litellm keeps them as they are; others go through its map.
_OPENAI_FINISH = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
# Model families whose parameters litellm's OpenAI config rewrites (max_completion_tokens,
# dropped temperature...): never on the fast path, priced or not.
_REWRITTEN = re.compile(r"^(o\d|gpt-5|gpt-oss|codex|computer-use|gpt-4o-(audio|search|mini-(audio|search|tts|transcribe)))",
                        re.IGNORECASE)


@functools.lru_cache(maxsize=1)
def _priced_names() -> frozenset[str]:
    """Model names in litellm's offline price map, read from its file (no litellm import)."""
    spec = importlib.util.find_spec("litellm")
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root) / "model_prices_and_context_window_backup.json"
        if path.is_file():
            with open(path, encoding="utf-8") as fh:
                return frozenset(str(k).lower() for k in json.load(fh))
    return frozenset({"*"})  # map not found: treat everything as priced (litellm decides)


def eligible(request: ProviderRequest) -> bool:
    """Whether ``request`` may take the fast path (see the module docstring)."""
    if os.environ.get(TRANSPORT_ENV, "").strip().lower() == "litellm":
        return False
    if any(os.environ.get(name) for name in _PROXY_ENV):  # litellm routes through the proxy; this path would not
        return False
    if request.embed_input is not None:  # an embedding (judge `similar`): litellm.aembedding
        return False
    model = request.model
    if not model.startswith(PREFIX) or request.router is not None or not request.api_key:
        return False
    base = request.api_base
    if not base or "?" in base or "#" in base or not base.startswith(("http://", "https://")):
        return False
    if any(k not in PASSTHROUGH_PARAMS for k, v in request.params.items() if v is not None):
        return False
    name = model[len(PREFIX):]
    if not name or _REWRITTEN.match(name):
        return False
    priced = _priced_names()
    return "*" not in priced and name.lower() not in priced and model.lower() not in priced


def chat_url(api_base: str) -> str:
    """Where the OpenAI SDK posts a chat completion for ``api_base``."""
    return api_base.rstrip("/") + "/chat/completions"


def request_body(request: ProviderRequest) -> bytes:
    """The JSON body litellm sends for ``request`` (model without its prefix, params as given)."""
    payload: dict[str, Any] = {"model": request.model[len(PREFIX):], "messages": request.messages}
    payload.update((k, v) for k, v in request.params.items() if v is not None)
    # ASCII JSON: the same value for the server, and a lone surrogate (a valid JSON escape)
    # cannot make the encoding fail.
    return json.dumps(payload, separators=(",", ":")).encode("ascii")


async def post_chat(session: Any, request: ProviderRequest, seen: BodyCapture) -> dict[str, str]:
    """POST the chat completion on ``session``; the answer's body lands (capped) in ``seen``.

    Returns the response headers. Network failures and timeouts raise aiohttp's / asyncio's
    exceptions (``classify_exception`` names them); reading stops at the cap.
    """
    import aiohttp

    timeout_s = request.timeout_s
    headers = {
        "Authorization": f"Bearer {request.api_key}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Accept-Encoding": ACCEPTED_ENCODINGS,
    }
    # The same per-phase timeouts litellm's aiohttp transport sets from the SDK's timeout.
    timeout = aiohttp.ClientTimeout(sock_connect=timeout_s, sock_read=timeout_s, connect=timeout_s)
    async with session.post(chat_url(request.api_base or ""), data=request_body(request), headers=headers,
                            timeout=timeout, allow_redirects=False, auto_decompress=False) as response:
        seen.status = response.status
        try:
            body = CappedBody(seen, response.headers.get("Content-Encoding"))
            async for raw in response.content.iter_any():
                for _ in body.feed(raw):
                    pass
                if seen.truncated:
                    response.close()  # the rest is never read: drop the connection
                    break
            else:
                for _ in body.finish():
                    pass
        except ResponseBodyError as exc:
            # A body that cannot be decoded fails the read, as in litellm's path (where the
            # SDK reports it as a connection error).
            response.close()
            raise aiohttp.ClientPayloadError(str(exc)) from exc
        return dict(response.headers)


@functools.lru_cache(maxsize=1)
def _sdk_client() -> Any:
    """An OpenAI SDK client, used only to build its status errors exactly as it does."""
    import openai

    return openai.AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1/v1", max_retries=0)


def raise_for_status(litellm: Any, request: ProviderRequest, status: int, headers: Mapping[str, str],
                     body: bytes) -> NoReturn:
    """Raise what ``litellm.acompletion`` raises for this error answer (for ``classify_exception``).

    The chain is litellm's: the SDK's status error → litellm's ``OpenAIError`` → the
    exception ``exception_type`` maps it to.
    """
    import httpx2
    from litellm.litellm_core_utils.exception_mapping_utils import exception_type
    from litellm.llms.openai.common_utils import OpenAIError, upstream_error_response

    url = chat_url(request.api_base or "")
    response = httpx2.Response(status, headers=list(headers.items()), content=body,
                               request=httpx2.Request("POST", url))
    sdk_error = _sdk_client()._make_status_error_from_response(response)
    try:
        try:
            raise sdk_error
        except Exception as e:
            raise OpenAIError(
                status_code=getattr(e, "status_code", 500),
                message=getattr(e, "message", str(e)),
                response=upstream_error_response(e),
                headers=getattr(getattr(e, "response", None), "headers", None),
                body=getattr(e, "body", None),
            ) from None
    except OpenAIError as err:
        mapped = exception_type(  # type: ignore[no-untyped-call]
            model=request.model[len(PREFIX):], original_exception=err, custom_llm_provider="openai",
            completion_kwargs={}, extra_kwargs={},
        )
        raise mapped from err
    raise ProviderError("unknown", f"HTTP {status}", retryable=False)  # pragma: no cover (exception_type raises)


def normal_finish_reason(value: str | None) -> str | None:
    """``value`` as litellm's response object reports it (OpenAI's reasons unchanged)."""
    if value is None or value in _OPENAI_FINISH:
        return value
    from evalrun.providers.litellm.importer import import_litellm

    import_litellm()
    from litellm.litellm_core_utils.core_helpers import map_finish_reason

    return str(map_finish_reason(value))
