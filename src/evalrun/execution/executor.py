"""One interface for making planned calls: in this process, or spread over worker processes.

An ``Executor`` takes a plan and a run folder, makes every call with the runner's retries,
journals each result the moment it finishes (``journal.jsonl``, or ``journal.w{i}.jsonl``
per worker process) and hands each to ``on_result`` as it arrives. The run orchestration
(``execution.run``), judge calls and benchmarks all make their calls through it.

* ``InProcessExecutor`` — one event loop here (``asyncio.run``); the only executor that
  takes an ``admit`` hook (a budget must decide every call in one place) and the one
  serial providers (the embedded model) need.
* ``PoolExecutor`` — worker processes (``execution.pool.WorkerPool``), started ahead of
  the work so their imports overlap with planning and cache reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from evalrun.execution.pool import DEFAULT_PRELOAD, BatchHook, WorkerPool, effective_workers
from evalrun.execution.runner import AdmitHook, PlannedCall, ProgressHook, RetryPolicy, run_calls
from evalrun.execution.store import JOURNAL, Journal
from evalrun.providers.base import Provider
from evalrun.records import CallResult

__all__ = ["Executor", "InProcessExecutor", "PoolExecutor", "run_in_workers"]


class Executor(Protocol):
    """Makes planned calls and journals them; see the module docstring."""

    def run(
        self,
        plan: Sequence[PlannedCall],
        journal_dir: Path,
        *,
        on_result: ProgressHook | None = None,
        on_batch: BatchHook | None = None,
        admit: AdmitHook | None = None,
    ) -> list[CallResult]:
        """Make every call of ``plan``; return the results (completion order)."""
        ...

    def close(self) -> None:
        """Release processes and clients (idempotent)."""
        ...


class InProcessExecutor:
    """Calls made on one event loop in this process (journal ``journal.jsonl``).

    The provider is closed (``aclose``) at the end of each ``run``, on the loop that used it.
    """

    def __init__(self, provider: Provider, *, concurrency: int, policy: RetryPolicy, seed: int) -> None:
        self.provider = provider
        self.concurrency = concurrency
        self.policy = policy
        self.seed = seed

    def run(
        self,
        plan: Sequence[PlannedCall],
        journal_dir: Path,
        *,
        on_result: ProgressHook | None = None,
        on_batch: BatchHook | None = None,
        admit: AdmitHook | None = None,
    ) -> list[CallResult]:
        """Make every call of ``plan`` here; ``on_batch`` sees each result as a batch of one."""
        hook = on_result
        if on_batch is not None:
            batch_hook = on_batch

            def hook(result: CallResult) -> None:
                if on_result is not None:
                    on_result(result)
                batch_hook([result])

        prepare = getattr(self.provider, "prepare", None)
        if callable(prepare):  # a ModelRouter: build its providers before the loop starts (imports take seconds)
            # One request per distinct setting tells a provider which imports its calls need.
            kinds = {(p.request.model, p.request.api_base, tuple(sorted(p.request.params)), bool(p.request.api_key),
                      p.request.router is None): p.request for p in plan}
            prepare(sorted({p.request.model for p in plan}), list(kinds.values()))
        journal = Journal(journal_dir / JOURNAL)

        async def go() -> list[CallResult]:
            try:
                return await run_calls(plan, self.provider, concurrency=self.concurrency, policy=self.policy,
                                       journal=journal, progress=hook, seed=self.seed, admit=admit)
            finally:
                await self.provider.aclose()

        try:
            return asyncio.run(go())
        finally:
            journal.close()

    def close(self) -> None:
        """Nothing to release: the provider is closed after each run."""


class PoolExecutor:
    """Calls made by the worker processes of ``pool`` (one plan per pool)."""

    def __init__(self, pool: WorkerPool, *, concurrency: int, policy: RetryPolicy, seed: int) -> None:
        self.pool = pool
        self.concurrency = concurrency
        self.policy = policy
        self.seed = seed

    def run(
        self,
        plan: Sequence[PlannedCall],
        journal_dir: Path,
        *,
        on_result: ProgressHook | None = None,
        on_batch: BatchHook | None = None,
        admit: AdmitHook | None = None,
    ) -> list[CallResult]:
        """Make every call of ``plan`` in the workers; results stream back as they finish."""
        if admit is not None:
            raise ValueError("an admit hook (a budget) needs every call decided in one process: use InProcessExecutor")
        return self.pool.run(plan, concurrency=self.concurrency, policy=self.policy, journal_dir=journal_dir,
                             seed=self.seed, progress=on_result, on_batch=on_batch)

    def close(self) -> None:
        """Stop the workers and reap them."""
        self.pool.close()


def run_in_workers(
    plan: list[PlannedCall],
    *,
    workers: int,
    concurrency: int,
    policy: RetryPolicy,
    journal_dir: Path,
    seed: int,
    progress: ProgressHook | None,
    provider_factory: Callable[[], Provider],
    preload: Sequence[str] = DEFAULT_PRELOAD,
    on_batch: BatchHook | None = None,
) -> list[CallResult]:
    """Make every planned call in ``workers`` processes; return all results (arrival order).

    When ``min(workers, len(plan), concurrency)`` is 1 the calls are made here
    (``InProcessExecutor``, journal ``journal.jsonl``); otherwise by a new ``WorkerPool``
    (round-robin slices, split concurrency, ``journal.w{i}.jsonl``). Raises
    ``WorkerCrashedError`` when a worker dies (after the others finished), or the
    ``EvalrunError`` a worker's provider raised.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    executor: Executor
    if effective_workers(workers, len(plan), concurrency) == 1:
        executor = InProcessExecutor(provider_factory(), concurrency=concurrency, policy=policy, seed=seed)
    else:
        executor = PoolExecutor(WorkerPool(workers, provider_factory, preload=preload), concurrency=concurrency,
                                policy=policy, seed=seed)
    try:
        return executor.run(plan, journal_dir, on_result=progress, on_batch=on_batch)
    finally:
        executor.close()
