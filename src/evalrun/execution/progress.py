"""Progress on stderr: a redrawn line on a terminal, periodic plain lines in CI, or nothing.

The ETA is the remaining calls at the rate fresh calls have finished so far (cache and
journal answers arrive at once and would make it lie), shown once a few calls and a second
of calls are behind it.

When the share of failed calls passes the suite's ``max_error_rate`` mid-run, the error
alarm fires once with the failed calls so far (the CLI prints their kinds and a message
each), so a broken endpoint is read while the run is still going, not at its end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from evalrun.records import CallResult

ETA_MIN_CALLS = 3
"""Fresh calls finished before an ETA is shown (the first ones include warm-up costs)."""

ALARM_MIN_CALLS = 20
"""Calls finished before the error alarm may fire (one early failure is not a rate)."""


def format_eta(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Counts finished calls per side, errors and spend; prints at a bounded rate."""

    def __init__(self, total: int, *, stream: TextIO | None = None, quiet: bool = False, interval_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic, max_error_rate: float | None = None,
                 error_alarm: Callable[[list[CallResult], float], None] | None = None) -> None:
        self.total = total
        self.max_error_rate = max_error_rate
        self.error_alarm = error_alarm
        self.failed: list[CallResult] = []
        self.alarmed = False
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = interval_s if interval_s is not None else (0.1 if self.tty else 5.0)
        self.done = {"baseline": 0, "candidate": 0}
        self.errors = 0
        self.cached = 0
        self.spend = 0.0
        self.unpriced = False
        self.clock = clock
        self._last = 0.0
        self._start = clock()
        self.fresh = 0
        self._first_fresh: float | None = None  # when the first fresh call finished

    def __call__(self, result: CallResult) -> None:
        self.done[result.side] += 1
        if not result.ok:
            self.errors += 1
            self.failed.append(result)
        if not result.cached:
            self.fresh += 1
            if self._first_fresh is None:
                self._first_fresh = self.clock()
        if result.cached:
            self.cached += 1
        elif result.cost_usd is not None:
            self.spend += result.cost_usd
        elif result.ok and result.cost_status == "unpriced":
            self.unpriced = True
        self._check_error_rate()
        now = self.clock()
        finished = sum(self.done.values()) == self.total
        if not self.quiet and (finished or now - self._last >= self.interval_s):
            self._last = now
            self._emit(finished)

    def _check_error_rate(self) -> None:
        if self.alarmed or self.error_alarm is None or self.max_error_rate is None or not self.errors:
            return
        n = sum(self.done.values())
        if n < min(ALARM_MIN_CALLS, self.total):
            return
        rate = self.errors / n
        if rate > self.max_error_rate:
            self.alarmed = True
            if self.tty and not self.quiet:
                self.stream.write("\n")  # keep the progress line; the alarm goes below it
            self.error_alarm(list(self.failed), rate)

    def line(self) -> str:
        n = sum(self.done.values())
        pct = 100.0 * n / self.total if self.total else 100.0
        spend = f"${self.spend:.4f}" + (" + unpriced" if self.unpriced else "")
        elapsed = self.clock() - self._start
        eta = self.eta_s()
        return (
            f"calls {n}/{self.total} ({pct:.0f}%)  baseline {self.done['baseline']}  candidate {self.done['candidate']}"
            f"  errors {self.errors}  cached {self.cached}  spend {spend}  {elapsed:.0f}s"
            + (f"  ETA {format_eta(eta)}" if eta is not None else "")
        )

    def eta_s(self) -> float | None:
        """Seconds until every call is done at the fresh calls' rate so far (None: too early to say)."""
        remaining = self.total - sum(self.done.values())
        if remaining <= 0 or self._first_fresh is None or self.fresh < ETA_MIN_CALLS:
            return None
        span = self.clock() - self._first_fresh
        if span < 1.0:
            return None
        return remaining * span / (self.fresh - 1)

    def _emit(self, finished: bool) -> None:
        if self.tty:
            width = 24
            n = sum(self.done.values())
            filled = int(width * n / self.total) if self.total else width
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {self.line()}" + ("\n" if finished else ""))
        else:
            self.stream.write(f"evalrun: {self.line()}\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        """A log line on stderr (suppressed by --quiet)."""
        if not self.quiet:
            if self.tty:
                self.stream.write("\r")
            self.stream.write(text + "\n")
            self.stream.flush()
