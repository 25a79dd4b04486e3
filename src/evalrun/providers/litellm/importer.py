"""litellm, imported once per process the offline, quiet way (``import_litellm``).

The import costs seconds and ~200 MB; nothing outside ``evalrun.providers.litellm`` imports
litellm, and `evalrun --help` / `evalrun validate` never do. Worker processes run
``import_litellm`` in their forkserver before forking (``execution.pool.DEFAULT_PRELOAD``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import threading
import warnings
from pathlib import Path
from types import ModuleType

from evalrun.providers.litellm.bounded_http import install_in_litellm

__all__ = ["bundled_tiktoken_dir", "import_litellm", "imported_litellm"]

_litellm: ModuleType | None = None
_import_lock = threading.Lock()


def bundled_tiktoken_dir() -> str | None:
    """The folder of BPE files shipped inside the installed litellm (cl100k_base, o200k_base...).

    Found via the package spec, so litellm itself is not imported.
    """
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        folder = Path(root) / "litellm_core_utils" / "tokenizers"
        # tiktoken names cache files by the sha1 of their URL: 40 hex characters.
        if folder.is_dir() and any(re.fullmatch(r"[0-9a-f]{40}", p.name) for p in folder.iterdir()):
            return str(folder)
    return None


def _prepare_environment() -> None:
    # Forced, not setdefault: any other value (even "1" for OFFLINE_MODE, which must be
    # the word "true") makes the import fetch the price map over the network and stall.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ["LITELLM_OFFLINE_MODE"] = "true"
    # litellm's stderr handler takes its level from LITELLM_LOG (default DEBUG): under a
    # host app that lowers the root level, it would print request dumps incl. headers.
    # A user who explicitly asked for a level keeps it.
    if not os.environ.get("LITELLM_LOG"):
        os.environ["LITELLM_LOG"] = "ERROR"
    # tiktoken downloads BPE files on first use; litellm ships the common ones.
    if not os.environ.get("CUSTOM_TIKTOKEN_CACHE_DIR"):
        folder = bundled_tiktoken_dir()
        if folder is not None:
            os.environ["CUSTOM_TIKTOKEN_CACHE_DIR"] = folder
    # litellm copies CUSTOM_ into TIKTOKEN_CACHE_DIR only when its tokenizer module first
    # loads (lazily, at the first token count); plain tiktoken users need it right away.
    custom = os.environ.get("CUSTOM_TIKTOKEN_CACHE_DIR")
    if custom and not os.environ.get("TIKTOKEN_CACHE_DIR"):
        os.environ["TIKTOKEN_CACHE_DIR"] = custom


def _quieten(litellm: ModuleType) -> None:
    settings: dict[str, object] = {
        "suppress_debug_info": True,
        # Both log the raw request (Authorization header included) when enabled.
        "set_verbose": False,
        "log_raw_request_response": False,
    }
    if hasattr(litellm, "telemetry"):  # gone in recent versions; harmless when present
        settings["telemetry"] = False
    for name, value in settings.items():
        setattr(litellm, name, value)
    # litellm dumps the SDK's response object before validating it; an answer with an odd
    # shape (content parts, an object finish_reason) makes pydantic print a warning per call
    # on stderr. evalrun reads such answers itself (completion_json), so they are noise.
    warnings.filterwarnings("ignore", message="Pydantic serializer warnings", category=UserWarning)


def import_litellm() -> ModuleType:
    """Import and configure litellm once per process (offline, quiet); return the module.

    Thread-safe. Call it early (outside the event loop) to keep the multi-second import
    out of the first call's latency.
    """
    global _litellm
    if _litellm is not None:
        return _litellm
    with _import_lock:
        if _litellm is None:
            _prepare_environment()
            module = importlib.import_module("litellm")
            _quieten(module)
            # Every answer read through httpx is capped and kept (bounded_http).
            install_in_litellm()
            _litellm = module
    return _litellm


def imported_litellm() -> ModuleType | None:
    """litellm when this process has imported it (None before ``import_litellm``)."""
    return _litellm
