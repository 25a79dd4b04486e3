"""How a run is made, in one object: passed from the CLI (or a script) down to the executor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from evalrun.execution.runner import ProgressHook
    from evalrun.providers.base import Provider

__all__ = ["CacheMode", "LogHook", "RunOptions"]

CacheMode = Literal["use", "refresh", "off", "replay"]
"""``use``: answer repeated requests from the response cache and store fresh answers;
``refresh``: call again and overwrite; ``off``: neither read nor write; ``replay``: never call
a provider (needs no key), fail naming the calls the cache cannot answer."""

LogHook = Callable[[str], None]
"""Receives one-line notices for the user (warnings), e.g. the CLI's stderr."""


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Everything about *how* to make a run's calls (what to call is the ``Project``).

    ``provider``: make every call with this provider (tests, custom providers) instead of the
    registry's provider for each model; the run then stays in this process. ``workers``:
    processes making the calls (None: the suite's ``workers``). ``max_cost``: USD for both
    sides, never passed (see ``execution.budget``). ``progress`` sees every result as it
    finishes; ``log`` receives warnings.
    """

    resume: bool = False
    max_cost: float | None = None
    cache: CacheMode = "use"
    cache_dir: Path | None = None
    workers: int | None = None
    provider: Provider | None = None
    progress: ProgressHook | None = None
    log: LogHook | None = None
