"""The litellm-backed provider: one attempt per call, errors classified, secrets scrubbed.

Requests litellm would only forward to an OpenAI-compatible endpoint take the direct path
(``direct``: same body, session, cap, parsing and error mapping, without litellm's ~4 ms of
CPU per call or its import); every other request goes through ``litellm.acompletion``.

litellm is imported lazily, once (``importer.import_litellm``): the import costs seconds
and ~200 MB, and `evalrun --help` / `evalrun validate` must not pay for it. Retries belong to the runner, so every hidden retry layer is switched off here
(litellm's wrapper retries, the openai SDK's own retries).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC
from types import ModuleType
from typing import Any

from evalrun.errors import EvalrunError
from evalrun.providers.base import ProviderError, ProviderRequest, ProviderResponse
from evalrun.providers.litellm import direct
from evalrun.providers.litellm.bounded_http import (
    DEFAULT_MAX_BYTES,
    BodyCapture,
    capture,
)
from evalrun.providers.litellm.completion_json import (
    Completion,
    MalformedCompletion,
    parse_completion,
    salvage_content,
)
from evalrun.providers.litellm.importer import (
    bundled_tiktoken_dir,
    import_litellm,
    imported_litellm,
)
from evalrun.providers.timing import use_clock
from evalrun.records import CostStatus, ErrorKind
from evalrun.secrets import register_secret, scrub, scrub_known

__all__ = [
    "LitellmProvider",
    "bundled_tiktoken_dir",
    "classify_exception",
    "import_litellm",
    "parse_retry_after",
]

MAX_MESSAGE_CHARS = 300

# Keys the provider sets itself; a value in ``request.params`` must not override them
# (e.g. a config smuggling ``num_retries`` back in would re-enable hidden retries).
_RESERVED_PARAMS = frozenset(
    {
        "model",
        "messages",
        "api_base",
        "base_url",
        "api_key",
        "timeout",
        "max_retries",
        "num_retries",
        "retry_policy",
        "fallbacks",
        "context_window_fallback_dict",
        "stream",
        "drop_params",
        "shared_session",
        "client",
    }
)



# --------------------------------------------------------------------------- import


# --------------------------------------------------------------------------- errors


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes/contexts, without cycles."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nxt in (
            current.__cause__,
            current.__context__,
            getattr(current, "original_exception", None),
        ):
            if isinstance(nxt, BaseException):
                stack.append(nxt)


def _is_litellm_class(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("litellm")


def _named(exc: BaseException, litellm: ModuleType | None, *names: str) -> bool:
    """isinstance against litellm exception classes looked up by name."""
    if litellm is None:
        return type(exc).__name__ in names and _is_litellm_class(exc)
    classes = tuple(c for n in names if isinstance(c := getattr(litellm, n, None), type))
    return bool(classes) and isinstance(exc, classes)


def _openai() -> ModuleType | None:
    """The OpenAI SDK when this process loaded it: otherwise no exception can be one of its
    classes, and the fast path's errors are classified without the ~0.3 s import."""
    return sys.modules.get("openai")


def _http_status(chain: list[BaseException]) -> int | None:
    """The status of a real HTTP response in the chain (litellm's own classes carry synthesized ones)."""
    import httpx

    openai = _openai()
    for exc in chain:
        if isinstance(exc, httpx.HTTPStatusError):
            return exc.response.status_code
        if openai is not None and isinstance(exc, openai.APIStatusError) and not _is_litellm_class(exc):
            return int(exc.status_code)
    return None


def _is_timeout(exc: BaseException) -> bool:
    import httpx

    openai = _openai()
    if openai is not None and isinstance(exc, openai.APITimeoutError):
        return True
    # TimeoutError covers asyncio.TimeoutError and aiohttp's timeout errors on 3.11+.
    return isinstance(exc, httpx.TimeoutException | TimeoutError)


def _is_network_error(exc: BaseException) -> bool:
    import aiohttp
    import httpx

    openai = _openai()
    if (openai is not None and isinstance(exc, openai.APIConnectionError)
            and not isinstance(exc, openai.APITimeoutError)):
        # litellm's own APIConnectionError is a catch-all for provider bugs; only trust the SDK's.
        return not _is_litellm_class(exc)
    return isinstance(
        exc,
        httpx.NetworkError  # ConnectError, ReadError, WriteError, CloseError
        | httpx.RemoteProtocolError
        | aiohttp.ClientConnectionError  # ClientConnectorError, ServerDisconnectedError, ClientOSError
        | aiohttp.ClientPayloadError
        | ConnectionError,  # ConnectionRefusedError, ConnectionResetError, BrokenPipeError
    )


def _is_malformed_body(exc: BaseException) -> bool:
    import pydantic

    if isinstance(exc, json.JSONDecodeError | pydantic.ValidationError):
        return True
    text = str(exc)
    return "no 'choices'" in text or "Empty or invalid response" in text or "Invalid response object" in text


_POLICY_RE = re.compile(
    r"content[ _-]?(?:policy|management|filter)|safety system|responsible ?ai", re.IGNORECASE
)
_PREFIX_RE = re.compile(r"^(?:(?:litellm\.)?[A-Za-z]*(?:Error|Exception|Timeout)\s*[:-]\s*)+")


def parse_retry_after(
    headers: Mapping[str, str] | None, *, now: float | None = None
) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP-date)."""
    if not headers:
        return None
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    value = lowered.get("retry-after-ms")
    if value is not None:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else time.time()
    return max(0.0, when.timestamp() - current)


def _headers_of(chain: list[BaseException]) -> Mapping[str, str] | None:
    for exc in chain:
        for candidate in (
            getattr(getattr(exc, "response", None), "headers", None),
            getattr(exc, "headers", None),
        ):
            if isinstance(candidate, Mapping) and candidate:
                return candidate
            if candidate is not None and hasattr(candidate, "items"):
                items = dict(candidate.items())
                if items:
                    return items
    return None


_TRACEBACK_RE = re.compile(r"\s*Traceback \(most recent call last\).*", re.DOTALL)


def _short_message(
    exc: BaseException, secrets: tuple[str, ...], cause: BaseException | None
) -> str:
    # litellm embeds whole tracebacks in some messages ("Invalid response object Traceback...").
    lines = [line.strip() for line in _TRACEBACK_RE.sub("", str(exc)).splitlines() if line.strip()]
    text = _PREFIX_RE.sub("", lines[0]) if lines else ""
    message = f"{type(exc).__name__}: {text or 'no message'}"
    if cause is not None and cause is not exc:
        message += f" [{type(cause).__name__}]"
    # Scrub before truncating, so a cut cannot leave half a secret unmatched.
    return scrub_known(scrub(message, secrets))[:MAX_MESSAGE_CHARS]


def classify_exception(
    exc: BaseException,
    *,
    secrets: tuple[str, ...] = (),
    litellm: ModuleType | None = None,
) -> ProviderError:
    """Map an exception raised by ``litellm.acompletion`` to a ``ProviderError`` kind.

    ``litellm`` defaults to the imported module (classes are matched by identity); the
    message is the first line, at most 300 characters, scrubbed of ``secrets`` and of every
    registered secret.
    """
    if isinstance(exc, ProviderError):
        return exc
    lib = litellm if litellm is not None else imported_litellm()
    chain = list(_chain(exc))
    status = _http_status(chain)

    def error(kind: ErrorKind, retryable: bool, cause: BaseException | None = None) -> ProviderError:
        retry_after = parse_retry_after(_headers_of(chain)) if retryable else None
        return ProviderError(
            kind,
            _short_message(exc, secrets, cause),
            retryable=retryable,
            retry_after_s=retry_after,
        )

    # Timeouts first: openai's APITimeoutError is a subclass of APIConnectionError.
    if _named(exc, lib, "Timeout") or (status is None and any(_is_timeout(e) for e in chain)):
        return error("timeout", True)
    # Refused / reset / dropped connections arrive as InternalServerError(500); only the
    # cause chain tells "server down" from "server answered 500".
    if status is None:
        network = next((e for e in chain if _is_network_error(e)), None)
        if network is not None:
            root = next((e for e in reversed(chain) if _is_network_error(e)), network)
            return error("connection", True, root)
    if _named(exc, lib, "RateLimitError") or status == 429:
        return error("rate_limited", True)
    if _named(exc, lib, "AuthenticationError", "PermissionDeniedError") or status in (401, 403):
        return error("auth", False)
    if _named(exc, lib, "ContextWindowExceededError"):
        return error("context_window", False)
    is_bad_request = _named(exc, lib, "BadRequestError") or status == 400
    if _named(exc, lib, "ContentPolicyViolationError") or (
        is_bad_request and _POLICY_RE.search(str(exc))
    ):
        return error("content_policy", False)
    if status is None:
        malformed = next((e for e in chain if _is_malformed_body(e)), None)
        if malformed is not None:
            return error("malformed_response", True, malformed)
    if (
        is_bad_request
        or _named(exc, lib, "NotFoundError", "UnprocessableEntityError", "UnsupportedParamsError")
        or status in (404, 409, 413, 422)
    ):
        return error("bad_request", False)
    server_status = status if status is not None else getattr(exc, "status_code", None)
    if _named(exc, lib, "InternalServerError", "ServiceUnavailableError", "BadGatewayError") or (
        isinstance(server_status, int) and server_status >= 500
    ):
        return error("server_error", True)
    return error("unknown", False)


# --------------------------------------------------------------------------- responses


# How litellm's failure to convert a 2xx body gets classified ("Invalid response object").
_UNREADABLE = frozenset({"malformed_response", "server_error", "unknown"})


def _answered(seen: BodyCapture) -> bool:
    """The server sent a successful body, whole or up to the cap (so a failure is in
    reading it, not in the network or the server)."""
    ok = seen.status is not None and 200 <= seen.status < 300
    return ok and (seen.finished or seen.truncated)


class LitellmProvider:
    """``Provider`` backed by ``litellm.acompletion``; exactly one HTTP attempt per call.

    ``drop_params=True`` makes litellm drop params a provider does not support (e.g.
    ``seed``) instead of failing the call. Answers are read through a size-capped
    transport (``bounded_http``); an answer litellm cannot read (too large, content parts,
    an odd ``finish_reason``) is read from the kept body with the rules of
    ``completion_json``, so every malformed answer ends as ``malformed_response``.
    """

    def __init__(self, *, drop_params: bool = True) -> None:
        self.drop_params = drop_params
        self._routers: dict[str, Any] = {}
        self._session: Any = None  # the timed aiohttp session of the running loop
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def warm(self, requests: Sequence[ProviderRequest] = ()) -> None:
        """Import and configure litellm now (seconds), not inside the first call's deadline;
        when every one of ``requests`` (samples of the calls to come) takes the direct path,
        only its HTTP client: those calls never need litellm."""
        if requests and all(direct.eligible(r) for r in requests):
            import aiohttp  # noqa: F401  (the direct path's client, loaded outside the loop)

            return
        import_litellm()

    def _timed_session(self) -> Any:
        """The loop's HTTP session that stamps each exchange (``evalrun.providers.litellm.timed_session``).

        One per event loop: an aiohttp session is bound to the loop it was made on, and
        litellm would quietly replace a foreign one with an untimed session of its own.
        """
        loop = asyncio.get_running_loop()
        if self._session is None or self._session_loop is not loop or self._session.closed:
            from evalrun.providers.litellm.timed_session import open_timed_session

            self._session = open_timed_session()
            self._session_loop = loop
        return self._session

    def _router(self, litellm: ModuleType, spec: dict[str, Any]) -> Any:
        """One litellm Router per deployment list, reused across calls (it tracks rpm/tpm).

        The router retries nothing (``num_retries=0``): the harness owns retries, and a
        429 from one deployment is retried by the harness, which the router may send to
        another deployment.
        """
        ident = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()
        router = self._routers.get(ident)
        if router is None:
            for deployment in spec["model_list"]:
                register_secret(deployment["litellm_params"].get("api_key"))
            router = litellm.Router(
                model_list=spec["model_list"],
                routing_strategy=spec.get("routing_strategy", "simple-shuffle"),
                num_retries=0,
                retry_after=0,
                max_fallbacks=0,
            )
            self._routers[ident] = router
        return router

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        """Make one attempt; return a normalised response or raise ``ProviderError``.

        ``EvalrunError``s (e.g. ``MissingExtraError`` from the local model provider)
        propagate unchanged.
        """
        secrets: tuple[str, ...] = (request.api_key,) if request.api_key else ()
        register_secret(request.api_key)
        if direct.eligible(request):
            return await self._complete_direct(request, secrets)
        litellm = import_litellm()
        if request.embed_input is not None:
            return await self._embed(litellm, request, secrets)

        kwargs: dict[str, Any] = {
            k: v for k, v in request.params.items() if v is not None and k not in _RESERVED_PARAMS
        }
        kwargs.update(
            model=request.model,
            messages=request.messages,
            api_base=request.api_base,
            api_key=request.api_key,
            timeout=request.timeout_s,
            # max_retries -> the openai SDK client's own retries; num_retries -> litellm's
            # wrapper retries (utils.client). Both default to retrying 429/5xx/timeouts.
            max_retries=0,
            num_retries=0,
            drop_params=self.drop_params,
        )
        # Every HTTP path of litellm sends through this session, where the exchange is timed.
        session = self._timed_session()
        kwargs["shared_session"] = session
        if request.model.startswith("aiohttp_openai/"):
            kwargs["client"] = session  # that path takes its aiohttp session as `client`
        if request.router is not None:
            router = self._router(litellm, request.router)
            secrets = tuple(
                str(d["litellm_params"]["api_key"]) for d in request.router["model_list"] if d["litellm_params"].get("api_key")
            )
            for name in ("api_base", "api_key", "num_retries"):
                kwargs.pop(name, None)
        max_bytes = request.max_response_bytes or DEFAULT_MAX_BYTES
        with capture(max_bytes) as seen:
            try:
                # The clock rides in this task's context: the socket writes of this call and
                # the local model's generation find it there. Only the span it records is the
                # provider's latency; everything else in this method is the client's overhead.
                # The capture rides there too: the capped transport keeps this call's body.
                with use_clock() as clock:
                    if request.router is not None:
                        response = await router.acompletion(**kwargs)
                    else:
                        response = await litellm.acompletion(**kwargs)
            except Exception as exc:
                for inner in _chain(exc):
                    # Raised on purpose inside a custom handler (the local provider): a missing
                    # extra or a bad model path is the user's to fix, not an "unknown" error.
                    if isinstance(inner, ProviderError | EvalrunError):
                        raise inner from None
                error = classify_exception(exc, secrets=secrets, litellm=litellm)
                if not (_answered(seen) and (seen.truncated or error.kind in _UNREADABLE)):
                    # `from None`: the raw litellm exception may echo headers; don't print it.
                    raise error from None
                # litellm could not read an answer the server did send (too large, or a shape
                # it refuses): read it here, with one rule for every oddity. A 200 that litellm
                # read as a rate limit or an auth error keeps that kind (raised above).
                normalised = self._from_body(litellm, request, seen, secrets)
            else:
                normalised = self._from_response(litellm, request, response, secrets)
        measured = clock.measured()
        if measured is not None:
            normalised.transport_s, normalised.latency_clock = measured
        return normalised

    async def _embed(self, litellm: ModuleType, request: ProviderRequest, secrets: tuple[str, ...]) -> ProviderResponse:
        """One ``litellm.aembedding`` attempt: the vector comes back as a JSON list in ``output``."""
        kwargs: dict[str, Any] = {"model": request.model, "input": [request.embed_input], "api_base": request.api_base,
                                  "api_key": request.api_key, "timeout": request.timeout_s, "max_retries": 0,
                                  "num_retries": 0}
        try:
            response = await litellm.aembedding(**kwargs)
        except Exception as exc:
            raise classify_exception(exc, secrets=secrets, litellm=litellm) from None
        try:
            item = response.data[0]
            vector = item["embedding"] if isinstance(item, dict) else item.embedding
            values = [float(x) for x in vector]
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise ProviderError("malformed_response", f"unreadable embedding: {type(exc).__name__}",
                                retryable=True) from None
        usage = getattr(response, "usage", None)
        prompt = getattr(usage, "prompt_tokens", None) if usage is not None else None
        hidden = getattr(response, "_hidden_params", None) or {}
        cost = hidden.get("response_cost") if isinstance(hidden, dict) else None
        return ProviderResponse(output=json.dumps(values), finish_reason="stop",
                                prompt_tokens=prompt if isinstance(prompt, int) else None, completion_tokens=0,
                                cost_usd=float(cost) if isinstance(cost, int | float) else None,
                                cost_status="priced" if isinstance(cost, int | float) else "unpriced")

    async def _complete_direct(self, request: ProviderRequest, secrets: tuple[str, ...]) -> ProviderResponse:
        """The fast path (``direct``): same session, cap, parsing and error mapping as litellm's."""
        session = self._timed_session()
        with capture(request.max_response_bytes or DEFAULT_MAX_BYTES) as seen:
            try:
                with use_clock() as clock:
                    headers = await direct.post_chat(session, request, seen)
                if seen.status is not None and not 200 <= seen.status < 300:
                    # litellm maps the error. Its first import (seconds) blocks the loop on
                    # purpose: awaited on a thread, this call's own deadline would fire
                    # meanwhile and a rejected key would read as a timeout (and retry).
                    direct.raise_for_status(import_litellm(), request, seen.status, headers, seen.body())
            except Exception as exc:
                raise classify_exception(exc, secrets=secrets) from None
            normalised = self._from_direct_body(request, seen, secrets)
        measured = clock.measured()
        if measured is not None:
            normalised.transport_s, normalised.latency_clock = measured
        return normalised

    def _from_direct_body(self, request: ProviderRequest, seen: BodyCapture, secrets: tuple[str, ...]) -> ProviderResponse:
        if not seen.truncated:
            try:
                data = json.loads(seen.body())
            except (ValueError, RecursionError) as exc:
                message = scrub_known(scrub(f"response body is not JSON: {exc}", secrets))
                raise ProviderError("malformed_response", message[:MAX_MESSAGE_CHARS], retryable=True) from None
            if isinstance(data, dict):
                for choice in data.get("choices") or []:
                    if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
                        choice["finish_reason"] = direct.normal_finish_reason(choice["finish_reason"])
            try:
                completion = parse_completion(data)
            except MalformedCompletion as exc:
                raise ProviderError("malformed_response", str(exc)[:MAX_MESSAGE_CHARS], retryable=True) from None
            return self._finish(None, request, completion, None, truncated=False)
        return self._from_body(None, request, seen, secrets)

    def _from_response(
        self, litellm: ModuleType, request: ProviderRequest, response: Any, secrets: tuple[str, ...]
    ) -> ProviderResponse:
        try:
            completion = parse_completion(response)
        except MalformedCompletion as exc:
            raise ProviderError("malformed_response", str(exc)[:MAX_MESSAGE_CHARS], retryable=True) from None
        except Exception as exc:
            message = scrub_known(
                scrub(f"unreadable completion: {type(exc).__name__}: {exc}", secrets)
            )
            raise ProviderError(
                "malformed_response", message.splitlines()[0][:MAX_MESSAGE_CHARS], retryable=True
            ) from None
        return self._finish(litellm, request, completion, response, truncated=False)

    def _from_body(
        self,
        litellm: ModuleType | None,
        request: ProviderRequest,
        seen: BodyCapture,
        secrets: tuple[str, ...],
    ) -> ProviderResponse:
        """The answer from the body the transport kept: parsed whole, or salvaged when cut."""
        body = seen.body()
        if seen.truncated:
            text = salvage_content(body)
            if text is None:
                raise ProviderError(
                    "malformed_response",
                    f"response body over max_response_bytes ({seen.max_bytes:,} bytes) with no readable message text",
                    retryable=False,
                )
            completion = Completion(output=text)
        else:
            try:
                data = json.loads(body)
            except (ValueError, RecursionError) as exc:
                message = scrub_known(scrub(f"response body is not JSON: {exc}", secrets))
                raise ProviderError("malformed_response", message[:MAX_MESSAGE_CHARS], retryable=True) from None
            try:
                completion = parse_completion(data)
            except MalformedCompletion as exc:
                raise ProviderError("malformed_response", str(exc)[:MAX_MESSAGE_CHARS], retryable=True) from None
        return self._finish(litellm, request, completion, None, truncated=seen.truncated)

    def _finish(
        self,
        litellm: ModuleType | None,
        request: ProviderRequest,
        completion: Completion,
        response: Any,
        *,
        truncated: bool,
    ) -> ProviderResponse:
        output = completion.output
        refusal = completion.refusal
        tool_calls = completion.tool_calls
        # In-process models and providers read outside the capped transport: cap the text.
        limit = request.max_response_bytes or DEFAULT_MAX_BYTES
        if output is not None and len(output) > limit:
            output, truncated = output[:limit], True

        prompt_tokens = completion.prompt_tokens
        completion_tokens = completion.completion_tokens
        estimated = False
        # A missing usage object arrives as zeros (litellm fills them in), and impossible
        # counts were dropped by parse_completion: either way, count the tokens here.
        if not prompt_tokens and request.messages:
            from evalrun.providers.litellm.tokens import (
                count_prompt_tokens,  # tools and schemas are billed too
            )

            prompt_tokens = count_prompt_tokens(request.model, request.messages, request.params)
            estimated = True
        completion_text = (output or "") + "".join(t.name + t.arguments for t in tool_calls)
        completion_text += refusal or ""
        if not completion_tokens and completion_text:
            from evalrun.providers.litellm.tokens import count_text_tokens

            completion_tokens = count_text_tokens(request.model, completion_text)
            estimated = True
        prompt_tokens = int(prompt_tokens or 0)
        completion_tokens = int(completion_tokens or 0)

        cost_usd: float | None
        cost_status: CostStatus
        if request.pricing is not None:  # explicit config prices win
            cost_usd = (
                prompt_tokens * request.pricing.input_per_mtok
                + completion_tokens * request.pricing.output_per_mtok
            ) / 1_000_000
            cost_status = "config"
        else:
            cost_usd = self._litellm_cost(
                litellm, request.model, response, prompt_tokens, completion_tokens, estimated
            )
            cost_status = "priced" if cost_usd is not None else "unpriced"

        return ProviderResponse(
            output=output,
            tool_calls=tool_calls,
            finish_reason=completion.finish_reason,
            refusal=refusal,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            tokens_estimated=estimated,
            cost_usd=cost_usd,
            cost_status=cost_status,
            response_truncated=truncated,
        )

    @staticmethod
    def _litellm_cost(
        litellm: ModuleType | None,
        model: str,
        response: Any,
        prompt_tokens: int,
        completion_tokens: int,
        estimated: bool,
    ) -> float | None:
        if litellm is None:  # the fast path: only models litellm has no price for take it
            return None
        # litellm priced the call from the usage it saw; with estimated tokens that usage
        # was zero, so price the estimate instead.
        if not estimated:
            hidden = getattr(response, "_hidden_params", None)
            if isinstance(hidden, dict) and "response_cost" in hidden:
                cost = hidden["response_cost"]
                # None: litellm looked the model up and has no price for it.
                return float(cost) if isinstance(cost, int | float) else None
        try:
            prompt_cost, completion_cost = litellm.cost_per_token(
                model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
            )
            return float(prompt_cost) + float(completion_cost)
        except Exception:  # not in litellm's price map: unpriced, never $0
            return None

    async def aclose(self) -> None:
        """Close litellm's cached async HTTP clients and this loop's timed session."""
        try:
            await self._close_litellm_clients()
        finally:
            session, self._session = self._session, None
            if session is not None and not session.closed and self._session_loop is asyncio.get_running_loop():
                await session.close()
            self._session_loop = None

    @staticmethod
    async def _close_litellm_clients() -> None:
        lib = imported_litellm()
        if lib is None:
            return
        close = getattr(lib, "close_litellm_async_clients", None)
        if close is not None:
            await close()
        # close_litellm_async_clients closes the cached clients but leaves them cached:
        # the next call on this loop would get "the client has been closed" (measured).
        flush = getattr(getattr(lib, "in_memory_llm_clients_cache", None), "flush_cache", None)
        if callable(flush):
            flush()

