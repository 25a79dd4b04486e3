"""Progress on stderr: a redrawn line on a terminal, periodic plain lines in CI, or nothing."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from evalrun.records import CallResult


class Progress:
    """Counts finished calls per side, errors and spend; prints at a bounded rate."""

    def __init__(self, total: int, *, stream: TextIO | None = None, quiet: bool = False, interval_s: float | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = interval_s if interval_s is not None else (0.1 if self.tty else 5.0)
        self.done = {"baseline": 0, "candidate": 0}
        self.errors = 0
        self.cached = 0
        self.spend = 0.0
        self.unpriced = False
        self._last = 0.0
        self._start = time.monotonic()

    def __call__(self, result: CallResult) -> None:
        self.done[result.side] += 1
        if not result.ok:
            self.errors += 1
        if result.cached:
            self.cached += 1
        elif result.cost_usd is not None:
            self.spend += result.cost_usd
        elif result.ok and result.cost_status == "unpriced":
            self.unpriced = True
        now = time.monotonic()
        finished = sum(self.done.values()) == self.total
        if not self.quiet and (finished or now - self._last >= self.interval_s):
            self._last = now
            self._emit(finished)

    def line(self) -> str:
        n = sum(self.done.values())
        pct = 100.0 * n / self.total if self.total else 100.0
        spend = f"${self.spend:.4f}" + (" + unpriced" if self.unpriced else "")
        elapsed = time.monotonic() - self._start
        return (
            f"calls {n}/{self.total} ({pct:.0f}%)  baseline {self.done['baseline']}  candidate {self.done['candidate']}"
            f"  errors {self.errors}  cached {self.cached}  spend {spend}  {elapsed:.0f}s"
        )

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
