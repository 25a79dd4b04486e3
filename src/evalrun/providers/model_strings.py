"""Offline checks of model strings against litellm's provider list and model map.

``evalrun validate`` must not pay for ``import litellm`` (2.5-11 s here), yet a provider
typo (``opneai/gpt-4o-mini``) should be caught before a call. litellm ships both facts as
files: the ``LlmProviders`` enum in ``litellm/types/utils.py`` and the bundled model map
``model_prices_and_context_window_backup.json``. They are read as text from the installed
package (located with ``importlib.util.find_spec``, which runs none of litellm's code):
about 5 ms for the provider list and 50 ms for the model map, read only for a model
string without a provider prefix.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import json
import re
from pathlib import Path

from evalrun.providers.registry import providers, spec_for

__all__ = ["check_model_string", "litellm_providers"]

_DOCS = "https://docs.litellm.ai/docs/providers"


@functools.cache
def _litellm_root() -> Path | None:
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


@functools.cache
def litellm_providers() -> frozenset[str]:
    """The provider prefixes installed litellm understands (empty when it cannot be read)."""
    root = _litellm_root()
    try:
        source = (root / "types" / "utils.py").read_text(encoding="utf-8") if root else ""
    except OSError:
        return frozenset()
    start = source.find("class LlmProviders(")
    if start < 0:
        return frozenset()
    end = source.find("\nclass ", start + 1)
    block = source[start:end if end > 0 else None]
    return frozenset(re.findall(r'^\s+[A-Z0-9_]+\s*=\s*"([^"]+)"', block, re.MULTILINE))


@functools.cache
def _model_map() -> frozenset[str]:
    root = _litellm_root()
    if root is None:
        return frozenset()
    try:
        data = json.loads((root / "model_prices_and_context_window_backup.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return frozenset()
    return frozenset(data) if isinstance(data, dict) else frozenset()


def check_model_string(model: str) -> str | None:
    """What is wrong with ``model`` as a model string, or None when a provider serves it.

    Strings claimed by an evalrun provider (``local/...``, plugins) are that provider's
    business. For litellm: a ``PREFIX/`` must be one of its providers (with a "did you
    mean" for a typo); a string without one must be a model litellm's map knows (it infers
    the provider from the name). When litellm's files cannot be read, nothing is claimed.
    """
    if spec_for(model).name != "litellm":
        return None
    known = litellm_providers()
    if not known:
        return None
    prefix, slash, _ = model.partition("/")
    if slash and prefix in known:
        return None
    if model in _model_map():
        return None
    if not slash:
        return (f"'{model}' has no provider prefix and litellm's model map does not know it: "
                f"write PROVIDER/MODEL, e.g. openai/{model} for an OpenAI-compatible server ({_DOCS})")
    ours = [s.prefix.rstrip("/") for s in providers().values() if s.prefix]
    close = difflib.get_close_matches(prefix, sorted(known | set(ours)), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}/'?)" if close else f" (litellm's providers: {_DOCS})"
    return f"unknown provider prefix '{prefix}/' in '{model}'{hint}"
