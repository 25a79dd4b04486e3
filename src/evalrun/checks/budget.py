"""A time budget for every check, so one model output cannot freeze scoring.

Two mechanisms, because no single one reaches everywhere:

* Pattern matching (the ``regex`` check, JSON Schema ``pattern`` / ``patternProperties``)
  runs on the third-party ``regex`` engine with ``timeout=remaining()``: catastrophic
  backtracking is stopped inside the C matcher, in any thread.
* Everything else a check does in Python (schema validation of a huge instance,
  ``uniqueItems`` on a long array, a user's ``python`` check) is stopped by a watchdog
  thread that raises ``CheckTimeout`` in the checking thread once the budget is spent
  (``PyThreadState_SetAsyncExc``). Such an exception is delivered between bytecodes, so a
  check blocked inside one long C call (``time.sleep`` in a user function) is stopped only
  when that call returns; the JSON scan and the regex matching are bounded by design.

Python drops an exception raised inside a finaliser, so cyclic garbage collection (which
runs other objects' finalisers in whichever thread allocates) is paused for the length of
a check, and a budget fires a second time if its check is still running 0.5 s later.

A check that runs out of budget is a recorded check error (a failed ``CheckOutcome``), never
a hang and never a crash of the run.
"""

from __future__ import annotations

import ctypes
import gc
import os
import threading
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["DEFAULT_CHECK_TIMEOUT_S", "CheckTimeout", "remaining", "run_with_budget"]

DEFAULT_CHECK_TIMEOUT_S = 2.0
"""Seconds one check may spend on one call (the suite's ``check_timeout_s`` overrides it)."""

T = TypeVar("T")


class CheckTimeout(BaseException):
    """Raised inside a check that ran past its budget.

    A ``BaseException`` so a check's own ``except Exception`` cannot swallow it.
    """


_local = threading.local()


def remaining() -> float | None:
    """Seconds left in the current check's budget; None outside a budgeted check."""
    deadline: float | None = getattr(_local, "deadline", None)
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic())


def _async_raiser() -> tuple[Callable[[int], None], Callable[[int], None]] | None:
    """(raise CheckTimeout in thread, clear a pending one) or None off CPython."""
    api = getattr(ctypes, "pythonapi", None)
    if api is None:
        return None
    proto_set = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)
    proto_clear = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
    try:
        set_exc = proto_set(("PyThreadState_SetAsyncExc", api))
        clear_exc = proto_clear(("PyThreadState_SetAsyncExc", api))
    except (AttributeError, TypeError):
        return None

    def raise_in(ident: int) -> None:
        set_exc(ident, CheckTimeout)

    def clear_in(ident: int) -> None:
        clear_exc(ident, None)

    return raise_in, clear_in


REFIRE_AFTER_S = 0.5
"""A check still running this long after its ``CheckTimeout`` is sent gets a second one
(the first can be lost: Python ignores exceptions raised inside a finaliser)."""

_FIRINGS = 2


class _Watchdog:
    """One daemon thread that raises ``CheckTimeout`` in threads whose budget ran out.

    Arming and disarming are a lock and a dict operation; the thread is only woken when a
    new deadline is earlier than the one it sleeps towards. Each budget fires at most
    twice: at its deadline, and once more ``REFIRE_AFTER_S`` later if still armed.
    """

    def __init__(self) -> None:
        self._raiser = _async_raiser()
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._armed: dict[int, tuple[threading.Thread, float, int]] = {}  # token -> (thread, deadline, fired)
        self._fired: set[int] = set()
        self._next = 0
        self._sleeping_until = float("inf")
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    @property
    def enabled(self) -> bool:
        return self._raiser is not None

    def arm(self, seconds: float) -> int:
        deadline = time.monotonic() + seconds
        if self._pid != os.getpid():  # a forked child inherits the state, not the thread
            self._reset()
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="evalrun-check-budget", daemon=True)
                self._thread.start()
            self._next += 1
            token = self._next
            self._armed[token] = (threading.current_thread(), deadline, 0)
            if deadline < self._sleeping_until:
                self._cond.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._armed.pop(token, None)
            if token in self._fired:
                self._fired.discard(token)
                # The watchdog fired just as the check finished: drop the exception if it
                # is still pending, so it cannot surface in unrelated code.
                if self._raiser is not None:
                    self._raiser[1](threading.get_ident())

    def _watch(self) -> None:
        with self._cond:
            while True:
                if not self._armed:
                    self._sleeping_until = float("inf")
                    self._cond.wait()
                    continue
                token, (thread, deadline, fired) = min(self._armed.items(), key=lambda item: item[1][1])
                now = time.monotonic()
                if deadline > now:
                    self._sleeping_until = deadline
                    self._cond.wait(deadline - now)
                    continue
                if fired + 1 < _FIRINGS:
                    self._armed[token] = (thread, now + REFIRE_AFTER_S, fired + 1)
                else:
                    del self._armed[token]
                # A thread that ended without disarming (a firing landed in its clean-up) may
                # have its ident reused by a new thread: never raise into that one.
                if self._raiser is not None and thread.is_alive() and thread.ident is not None:
                    self._fired.add(token)
                    self._raiser[0](thread.ident)


_WATCHDOG = _Watchdog()


def _disarm(token: int) -> None:
    """Disarm ``token`` even when its second firing lands here, in the clean-up."""
    for _ in range(_FIRINGS + 1):
        try:
            _WATCHDOG.disarm(token)
            return
        except CheckTimeout:
            continue


def run_with_budget(fn: Callable[[], T], seconds: float | None) -> T:
    """Call ``fn()``; raise ``CheckTimeout`` if it runs longer than ``seconds``.

    ``seconds=None`` means no budget. Budgets do not nest: an inner call runs under the
    outer deadline.
    """
    if seconds is None or getattr(_local, "deadline", None) is not None:
        return fn()
    # No cyclic collection inside a check: it would run other objects' finalisers in this
    # thread, and a CheckTimeout arriving inside one is silently dropped by Python.
    collecting = gc.isenabled()
    gc.disable()
    _local.deadline = time.monotonic() + seconds
    token = _WATCHDOG.arm(seconds) if _WATCHDOG.enabled else None
    try:
        return fn()
    finally:
        try:
            if token is not None:
                _disarm(token)
        finally:
            _local.deadline = None
            if collecting:
                gc.enable()
