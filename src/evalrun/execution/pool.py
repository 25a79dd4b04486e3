"""Worker processes: one run's calls spread over several processes, each with its own loop.

Why: litellm spends milliseconds of CPU per call (building the request, parsing the
response, pricing it, logging), so one event loop is CPU-bound at a few hundred calls per
second however high the concurrency. Threads do not help (the GIL); processes do.

How it works:

* The plan is split round-robin by (case, sample) into ``workers`` slices (so each worker
  sees both sides of each of its cases, interleaved, and every kind of case), and the concurrency is split across them (the slices' concurrency
  adds up to the suite's: a provider never sees more requests in flight than configured).
* Each worker is a process with one event loop (``asyncio.run``), its own provider from
  ``provider_factory`` (pickled by reference, so it must be a module-level function), its
  own journal ``journal.w{i}.jsonl`` in the run folder (flushed per finished call, exactly
  like the single-process ``journal.jsonl``), and the same runner (``run_calls``: retries,
  backoff, Retry-After, and a warm-up of its own: imports and connections are per process).
* Workers come from a ``forkserver`` (``spawn`` where there is none) that imports litellm
  once, before it forks any worker: the multi-second import is paid once instead of once
  per worker, and it runs while the parent loads the project, plans and reads the cache
  (start it early with :func:`prestart` or :class:`WorkerPool`).
* Finished results stream back to the parent over one pipe per worker, batched per turn of
  the worker's event loop (what finished together travels together; a lone result leaves
  at once), so the parent's progress hook and cache writes see every result as it finishes.
  One pipe per worker rather than one shared ``multiprocessing.Queue``: a worker killed
  while holding a shared queue's write lock would block every other worker forever.
* A worker stops as soon as the parent asks or disappears (its control pipe reaches EOF):
  a killed ``evalrun`` leaves no orphan making calls. A worker returns once its journal is
  closed and its last message sent; multiprocessing then ends the process without the
  interpreter teardown (which, holding litellm, costs ~0.7 s). ``WorkerPool.close`` stops
  and reaps every worker; the forkserver ends by itself when this process exits.
* A worker that dies (killed, crashed) does not stop the others: they finish their slices,
  then :class:`WorkerCrashedError` is raised. Every finished call of every worker, the dead
  one included, is in its journal: ``store.read_journals`` reads them all, so a resumed run
  makes only the calls that are missing.
* ``workers=1`` (or a plan/concurrency too small to split) runs in this process, on this
  thread's event loop: no subprocess at all, journal ``journal.jsonl``.
* The program that starts workers must be importable without side effects (the usual
  ``if __name__ == "__main__":`` guard): like ``spawn``, each worker imports the parent's
  ``__main__`` module. The ``evalrun`` command and ``python -m evalrun`` are.

Rate limits: the runner's per-endpoint pause (a 429 with Retry-After holds back every call
to that endpoint) and its circuit breaker are per process. With N workers, a 429 pauses
the endpoint in the worker that received it; the other workers pause when their own calls
are limited, which under a real rate limit is within a few requests. Requests in flight
across workers still never exceed the suite's concurrency.

Budgets (``--max-cost``) need one place that decides whether each next call may start:
run them in one process (``workers=1``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

from evalrun.errors import CouldNotMeasureError, EvalrunError
from evalrun.execution.runner import PlannedCall, ProgressHook, RetryPolicy, run_calls
from evalrun.execution.store import Journal, worker_journal_name
from evalrun.providers.base import Provider
from evalrun.records import CallResult

__all__ = [
    "DEFAULT_PRELOAD",
    "DIRECT_PRELOAD",
    "BatchHook",
    "WorkerCrashedError",
    "WorkerPool",
    "prestart",
    "split_concurrency",
    "split_plan",
    "warm_imports",
]

DEFAULT_PRELOAD: tuple[str, ...] = ("evalrun.providers.litellm.importer:import_litellm",)
"""Run by the forkserver before it forks a worker: ``module`` is imported, ``module:function``
called (litellm's import: offline switches, quiet settings, seconds of CPU paid once)."""
DIRECT_PRELOAD: tuple[str, ...] = ("evalrun.providers.litellm.provider", "evalrun.execution.runner")
"""The forkserver's preload when every call takes the direct path (no litellm import)."""
# Names the modules the forkserver imports (set only while the forkserver is started).
_PRELOAD_ENV = "EVALRUN_FORKSERVER_PRELOAD"
# Seconds to wait for a worker to stop after being asked to, before it is terminated.
_STOP_GRACE_S = 5.0

BatchHook = Callable[[Sequence[CallResult]], None]
ProviderFactory = Callable[[], Provider]


class WorkerCrashedError(CouldNotMeasureError):
    """A worker process died before finishing its slice of the plan.

    ``results`` holds every result received from all workers (also in their journals).
    """

    def __init__(self, message: str, results: list[CallResult] | None = None) -> None:
        super().__init__(message)
        self.results = results or []

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.results))


# --------------------------------------------------------------------------- planning


def split_plan(plan: Sequence[PlannedCall], workers: int) -> list[list[PlannedCall]]:
    """Round-robin slices of (case, sample) units: unit ``k`` goes to worker ``k % workers``.

    A unit's calls (its two sides, adjacent in the plan: ``runner.order_calls``) stay
    together and in order, so every worker's slice keeps both sides level; splitting call
    by call would send the first call of every pair to one worker and the second to the
    other (with the old fixed order: every baseline call to one process).
    """
    slices: list[list[PlannedCall]] = [[] for _ in range(workers)]
    unit, last = -1, None
    for planned in plan:
        key = (planned.case_id, planned.sample)
        if key != last:
            unit, last = unit + 1, key
        slices[unit % workers].append(planned)
    return slices


def split_concurrency(concurrency: int, workers: int) -> list[int]:
    """Per-worker concurrency adding up to ``concurrency`` (the first ones get the remainder)."""
    base, extra = divmod(concurrency, workers)
    return [base + (1 if i < extra else 0) for i in range(workers)]


def effective_workers(workers: int, plan_size: int, concurrency: int) -> int:
    """Processes worth starting: never more than calls, nor than the concurrency allows."""
    return max(1, min(workers, plan_size, concurrency))


# --------------------------------------------------------------------------- forkserver


def _preload_in_forkserver() -> None:
    """Run in the forkserver (this module is its preload): import (or call) what workers need."""
    names = [n for n in os.environ.pop(_PRELOAD_ENV, "").split(",") if n]
    for name in names:
        module, _, function = name.partition(":")
        try:
            loaded = importlib.import_module(module)
            if function:
                getattr(loaded, function)()
        except Exception:  # a worker importing it itself will report the real error
            continue
    # The forkserver ends when this program does; the objects it loaded stay out of its
    # teardown's garbage collection (~1 s of CPU with litellm, measured), and out of every
    # forked worker's collections (copy-on-write pages stay shared).
    gc.freeze()


# Only the forkserver started by ``_context`` sees the variable: the parent sets it for
# that one start and removes it again, and the forkserver removes it before forking.
if os.environ.get(_PRELOAD_ENV):
    _preload_in_forkserver()


_context_lock = threading.Lock()
_started_with: tuple[str, ...] | None = None


def _context(
    preload: Sequence[str],
) -> multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext:
    """The forkserver context, its server started (once per process) with ``preload``."""
    global _started_with
    try:
        ctx = multiprocessing.get_context("forkserver")
    except ValueError:  # no forkserver on this platform
        return multiprocessing.get_context("spawn")
    with _context_lock:
        if _started_with is None:
            wanted = tuple(preload)
            ctx.set_forkserver_preload(["evalrun.execution.pool"])
            os.environ[_PRELOAD_ENV] = ",".join(wanted)
            try:
                from multiprocessing import forkserver

                forkserver.ensure_running()
            finally:
                os.environ.pop(_PRELOAD_ENV, None)
            _started_with = wanted
    return ctx


def prestart(preload: Sequence[str] = DEFAULT_PRELOAD) -> None:
    """Start the forkserver now (non-blocking) so its imports overlap with other work.

    The server runs ``preload`` (see ``DEFAULT_PRELOAD``) before forking the first worker.
    It ends by itself when this process exits (its end of the server's pipe closes). Idempotent; the first call's ``preload`` wins for this process.
    """
    _context(preload)


# --------------------------------------------------------------------------- worker side


@dataclass
class _Task:
    index: int
    plan: list[PlannedCall]
    concurrency: int
    policy: RetryPolicy
    journal_path: Path
    seed: int


@dataclass(frozen=True, slots=True)
class _Run:
    """Parent → worker: make this slice."""

    task: _Task


@dataclass(frozen=True, slots=True)
class _Stop:
    """Parent → worker: stop (cancel the slice, or exit before starting one)."""


@dataclass(frozen=True, slots=True)
class _Ready:
    """Worker → parent: the provider is built."""

    pid: int


@dataclass(frozen=True, slots=True)
class _Results:
    """Worker → parent: results that finished in one turn of the worker's loop."""

    batch: list[CallResult]


@dataclass(frozen=True, slots=True)
class _Done:
    """Worker → parent: the slice is finished (how many calls, the loop's wall and CPU seconds)."""

    count: int
    run_s: float
    cpu_s: float


@dataclass(frozen=True, slots=True)
class _Stopped:
    """Worker → parent: stopped on request."""


@dataclass(frozen=True, slots=True)
class _Failed:
    """Worker → parent: the provider or the run raised; the exception itself when it pickles."""

    error: BaseException | None
    text: str


_ToParent = _Ready | _Results | _Done | _Stopped | _Failed


def _send(conn: Connection, message: _ToParent) -> None:
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _error_message(exc: BaseException) -> _Failed:
    """The failure message: the exception itself when it pickles, and its text."""
    text = f"{type(exc).__name__}: {exc}"
    try:
        payload: BaseException | None = pickle.loads(pickle.dumps(exc))
    except Exception:
        payload = None
    return _Failed(payload, text)


def _watch_for_stop(conn: Connection, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
    """Cancel the run when the parent says stop or goes away (EOF): no orphaned calls."""
    with contextlib.suppress(Exception):
        conn.recv()
    # Cancelling mid-call leaves litellm's inner coroutines un-awaited; their warnings on
    # stderr would only be noise from a worker that is stopping on purpose.
    warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
    with contextlib.suppress(RuntimeError):  # the loop already finished
        loop.call_soon_threadsafe(task.cancel)


class _Outbox:
    """Sends finished results to the parent, batched per event-loop iteration.

    ``put`` only appends; the first result of an iteration schedules one ``flush`` for the
    next one, so results finishing together travel in one message (one system call) and a
    lone result leaves at once. (A sender thread was measured: ~4 % more CPU per call from
    GIL hand-offs, for no gain.)
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.pending: list[CallResult] = []
        self.broken = False
        self.loop: asyncio.AbstractEventLoop | None = None

    def put(self, result: CallResult) -> None:
        if not self.pending:
            if self.loop is None:
                self.loop = asyncio.get_running_loop()
            self.loop.call_soon(self.flush)
        self.pending.append(result)

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        if batch and not self.broken:
            try:
                _send(self.conn, _Results(batch))
            except OSError:
                self.broken = True

    def close(self) -> None:
        self.flush()


async def _run_task(task: _Task, provider: Provider, outbox: _Outbox, control: Connection) -> int:
    journal = Journal(task.journal_path)
    count = 0

    def progress(result: CallResult) -> None:
        nonlocal count
        count += 1
        outbox.put(result)

    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    assert current is not None
    threading.Thread(target=_watch_for_stop, args=(control, loop, current), name="evalrun-stop", daemon=True).start()
    try:
        await run_calls(task.plan, provider, concurrency=task.concurrency, policy=task.policy, journal=journal,
                        progress=progress, seed=task.seed)
    finally:
        journal.close()
        with contextlib.suppress(Exception):
            await provider.aclose()
    return count


def _worker_main(index: int, control: Connection, results: Connection, provider_factory: ProviderFactory) -> None:
    """A worker process: make its provider, wait for its slice, run it, report, exit.

    The exit status is ``sys.exit``'s: multiprocessing's bootstrap turns it into the process's
    exit code and ends the process at once (``os._exit``), skipping the interpreter teardown.
    """
    code = 0
    try:
        code = _serve(control, results, provider_factory)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # the parent is gone (broken pipe) or a bug: the journal has the rest
        code = 1
    finally:
        with contextlib.suppress(Exception):
            results.close()
    sys.exit(code)


def _serve(control: Connection, results: Connection, provider_factory: ProviderFactory) -> int:
    try:
        provider = provider_factory()
    except Exception as exc:
        _send(results, _error_message(exc))
        return 1
    _send(results, _Ready(os.getpid()))
    try:
        message = control.recv()
    except EOFError:
        return 0  # the parent went away before sending work
    if not isinstance(message, _Run):
        return 0  # stopped: not needed after all
    task = message.task
    outbox = _Outbox(results)
    started, cpu0 = time.monotonic(), time.process_time()
    try:
        count = asyncio.run(_run_task(task, provider, outbox, control))
    except asyncio.CancelledError:  # the parent asked to stop
        outbox.close()
        _send(results, _Stopped())
        return 0
    except KeyboardInterrupt:
        outbox.close()
        return 130
    except Exception as exc:
        outbox.close()
        _send(results, _error_message(exc))
        return 1
    outbox.close()
    _send(results, _Done(count, time.monotonic() - started, time.process_time() - cpu0))
    return 0


# --------------------------------------------------------------------------- parent side


@dataclass
class _Handle:
    index: int
    process: multiprocessing.process.BaseProcess
    control: Connection  # parent -> worker
    results: Connection  # worker -> parent
    ready: bool = False
    done: bool = False
    stopped: bool = False
    eof: bool = False
    error: BaseException | None = None
    error_text: str | None = None
    received: int = 0
    assigned: int = 0
    exited: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class WorkerPool:
    """Worker processes started ahead of the work: ``WorkerPool(2, factory)`` returns at once
    (processes come up in a background thread while the forkserver imports ``preload``:
    litellm, unless every call takes the direct path), then
    ``pool.run(plan, ...)`` hands out the slices. Use as a context manager, or call
    ``close()``: idle workers are stopped, nothing is left running.
    """

    def __init__(
        self,
        workers: int,
        provider_factory: ProviderFactory,
        *,
        preload: Sequence[str] = DEFAULT_PRELOAD,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.provider_factory = provider_factory
        self.preload = tuple(preload)
        self._handles: list[_Handle] = []
        self._start_error: BaseException | None = None
        self._closed = False
        self._used = False
        self._starter = threading.Thread(target=self._start_all, name="evalrun-worker-start", daemon=True)
        self._starter.start()

    def _start_all(self) -> None:
        try:
            ctx = _context(self.preload)
            for i in range(self.workers):
                if self._closed:
                    return
                control_r, control_w = ctx.Pipe(duplex=False)
                results_r, results_w = ctx.Pipe(duplex=False)
                process = ctx.Process(
                    target=_worker_main, args=(i, control_r, results_w, self.provider_factory),
                    name=f"evalrun-worker-{i}", daemon=True,
                )
                process.start()
                # The child has its own copies now; without closing ours no EOF would come.
                control_r.close()
                results_w.close()
                self._handles.append(_Handle(i, process, control_w, results_r))
        except BaseException as exc:
            self._start_error = exc

    def _wait_started(self) -> list[_Handle]:
        self._starter.join()
        if self._start_error is not None:
            self.close()
            raise CouldNotMeasureError(
                f"could not start worker processes: {type(self._start_error).__name__}: {self._start_error}"
            ) from self._start_error
        return self._handles

    def run(
        self,
        plan: Sequence[PlannedCall],
        *,
        concurrency: int,
        policy: RetryPolicy,
        journal_dir: Path,
        seed: int,
        progress: ProgressHook | None = None,
        on_batch: BatchHook | None = None,
    ) -> list[CallResult]:
        """Run ``plan`` on the pool's workers; every result passes ``progress`` as it arrives.

        Uses at most ``min(workers, len(plan), concurrency)`` workers (extra ones are
        stopped). ``on_batch`` sees each batch received (after ``progress`` saw its results):
        the place for batched side effects such as cache writes.
        """
        if self._used:
            raise RuntimeError("a WorkerPool runs one plan")
        self._used = True
        handles = self._wait_started()
        n = effective_workers(len(handles), len(plan), concurrency)
        active, idle = handles[:n], handles[n:]
        for h in idle:
            self._stop(h)
        results: list[CallResult] = []
        completed = False
        try:
            slices = split_plan(plan, n)
            shares = split_concurrency(concurrency, n)
            journal_dir.mkdir(parents=True, exist_ok=True)
            for h, part, share in zip(active, slices, shares, strict=True):
                h.assigned = len(part)
                task = _Task(h.index, part, share, policy, journal_dir / worker_journal_name(h.index),
                             seed * 1_000_003 + h.index)
                with contextlib.suppress(OSError):  # died before its work: reported from its exit
                    h.control.send(_Run(task))
            self._collect(active, results, progress, on_batch)
            completed = True
        finally:
            if not completed:
                for h in active:
                    self._stop(h)
            self.close()
        self._raise_failures(active, results, journal_dir)
        return results

    def _collect(
        self, handles: list[_Handle], results: list[CallResult], progress: ProgressHook | None,
        on_batch: BatchHook | None,
    ) -> None:
        by_conn = {id(h.results): h for h in handles}
        by_sentinel = {h.process.sentinel: h for h in handles}
        while True:
            waiting: list[Any] = [h.results for h in handles if not h.eof]
            waiting += [h.process.sentinel for h in handles if not h.exited]
            if not waiting:
                return
            for ready in multiprocessing.connection.wait(waiting, timeout=1.0):
                if isinstance(ready, int):
                    handle = by_sentinel[ready]
                    handle.exited = True
                    handle.process.join(timeout=0)
                    continue
                assert isinstance(ready, Connection)
                handle = by_conn[id(ready)]
                try:
                    message = pickle.loads(ready.recv_bytes())
                except (EOFError, OSError):
                    handle.eof = True
                    with contextlib.suppress(Exception):
                        ready.close()
                    continue
                self._handle_message(handle, message, results, progress, on_batch)

    @staticmethod
    def _handle_message(
        handle: _Handle, message: _ToParent, results: list[CallResult], progress: ProgressHook | None,
        on_batch: BatchHook | None,
    ) -> None:
        match message:
            case _Results(batch):
                handle.received += len(batch)
                results.extend(batch)
                if progress is not None:
                    for r in batch:
                        progress(r)
                if on_batch is not None:
                    on_batch(batch)
            case _Ready(pid):
                handle.ready = True
                handle.extra["pid"] = pid
            case _Done(_, run_s, cpu_s):
                handle.done = True
                handle.extra.update(run_s=run_s, cpu_s=cpu_s)
            case _Stopped():
                handle.stopped = True
            case _Failed(error, text):
                handle.error, handle.error_text = error, text

    def _stop(self, handle: _Handle) -> None:
        with contextlib.suppress(Exception):
            handle.control.send(_Stop())

    def _raise_failures(self, handles: list[_Handle], results: list[CallResult], journal_dir: Path) -> None:
        for h in handles:
            if h.error is not None and isinstance(h.error, EvalrunError):
                raise h.error  # e.g. a missing extra, raised inside the worker's provider
        failed = [h for h in handles if not h.done]
        if not failed:
            return
        parts = []
        for h in failed:
            why = h.error_text or _describe_exit(h.process.exitcode)
            parts.append(f"worker {h.index} ({why}) after {h.received} of {h.assigned} calls")
        raise WorkerCrashedError(
            f"{len(failed)} of {len(handles)} worker processes stopped early: {'; '.join(parts)}. "
            f"Every finished call is saved in the journals in {journal_dir} (journal.w*.jsonl); "
            "resume the run to make only the missing calls",
            results,
        )

    def close(self) -> None:
        """Stop idle workers and reap every process (idempotent)."""
        self._closed = True
        self._starter.join()
        deadline = time.monotonic() + _STOP_GRACE_S
        for h in self._handles:
            if not self._used or (h.process.exitcode is None and not h.done):
                self._stop(h)
        for h in self._handles:
            h.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if h.process.exitcode is None:
                h.process.terminate()
                h.process.join(timeout=_STOP_GRACE_S)
            if h.process.exitcode is None:
                h.process.kill()
                h.process.join()
            for conn in (h.control, h.results):
                with contextlib.suppress(Exception):
                    conn.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        """Process ids of the started workers (waits for them to start)."""
        self._starter.join()
        return [h.process.pid for h in self._handles if h.process.pid is not None]


def warm_imports(names: Sequence[str]) -> threading.Thread:
    """Import ``names`` on a daemon thread (errors ignored; the real import reports them).

    For the parent while its workers make the calls: the comparison's pandas/scipy and the
    report's jinja2 are then loaded by the time the last result arrives.
    """

    def work() -> None:
        for name in names:
            with contextlib.suppress(Exception):
                __import__(name)

    thread = threading.Thread(target=work, name="evalrun-warm-imports", daemon=True)
    thread.start()
    return thread
