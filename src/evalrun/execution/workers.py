"""How many processes make a run's calls when neither the suite nor ``--workers`` says.

What decides it is the CPU each call costs in the client, and the start-up a worker pays
before its first call (measured on 2 cores with ``benchmarks/bench_peers.py``, 127.0.0.1
server at 50 ms, concurrency 50):

* calls on the direct path (``openai/NAME`` at an ``api_base``, see
  ``evalrun.providers.litellm.direct``) cost ~0.5 ms of CPU each: one event loop serves
  ~1,000 calls/s, more than concurrency 50 at 50 ms asks for. A second process only adds
  its start-up, a second copy of the imports, and splits the journal: **1**;
* calls through ``litellm.acompletion`` cost ~4 ms each (one core tops out near 250
  calls/s) after a ~2.5 s import. Below ~1,000 such calls the import and start-up dominate
  (**1**); above, a worker per 1,000 calls, up to the cores and at most 4 (each worker
  holds its own litellm, ~250 MB).

Calls the local model or an injected provider serves always stay in this process (the
executor decides that before asking here).
"""

from __future__ import annotations

import os

from evalrun.execution.plan import side_request
from evalrun.project.loader import Project
from evalrun.providers.base import ProviderRequest
from evalrun.providers.registry import DEFAULT_PROVIDER, spec_for
from evalrun.records import SIDES

__all__ = ["AUTO_CALLS_PER_WORKER", "AUTO_MAX_WORKERS", "auto_workers", "litellm_sides", "needs_litellm"]

AUTO_CALLS_PER_WORKER = 1000
"""litellm-path calls that make one more worker worth its start-up."""
AUTO_MAX_WORKERS = 4
"""The most workers chosen automatically (memory: each holds its own litellm)."""


def needs_litellm(request: ProviderRequest) -> bool:
    """Whether ``request`` is made by ``litellm.acompletion`` (not the direct path, not another provider)."""
    if spec_for(request.model).name != DEFAULT_PROVIDER:
        return False
    from evalrun.providers.litellm import direct

    return not direct.eligible(request)


def litellm_sides(project: Project) -> int:
    """How many of the two sides make their calls through ``litellm.acompletion`` (0, 1 or 2)."""
    return sum(needs_litellm(side_request(project, side)) for side in SIDES)


def auto_workers(calls: int, litellm_share: float, cores: int | None = None) -> int:
    """Worker processes for ``calls`` calls of which ``litellm_share`` go through litellm."""
    cores = cores if cores is not None else (os.cpu_count() or 1)
    slow_calls = int(calls * litellm_share)
    if cores < 2 or slow_calls < AUTO_CALLS_PER_WORKER:
        return 1
    return max(1, min(cores, AUTO_MAX_WORKERS, 1 + slow_calls // AUTO_CALLS_PER_WORKER))
