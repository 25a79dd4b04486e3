"""Adaptive-safe concurrency: a 429 burst with Retry-After slows the endpoint it came from.

    python benchmarks/bench_ratelimit.py --n 300 --workers 1 --workers 2
    python benchmarks/bench_ratelimit.py --side baseline            # only the baseline's endpoint is limited
    python benchmarks/bench_ratelimit.py --side baseline --always   # ... and never recovers (circuit breaker)

The 127.0.0.1 test server (20 ms per request) answers every request that arrives within
``--window`` seconds after request number ``--at`` with HTTP 429 and ``Retry-After:
WINDOW``. evalrun's runner (``run_in_workers``, in a child process; ``--workers 2`` forks two
worker processes) makes the suite's calls at concurrency ``--concurrency``. Printed: requests
per second before, during and after the window (by the server's clock), the number of 429s
sent, and a timeline in 100 ms buckets. With the endpoint's pause, its requests stop (almost:
only those already on their way) while Retry-After is in force; without it every task would
keep retrying into the limit. With workers the pause is per process: each worker stops at its
own first 429. The two sides are two endpoints (models ``bench-baseline``/``bench-candidate``):
with ``--side baseline`` only the baseline's requests are limited and the candidate's rate
during the window shows whether the other side kept going; ``--always`` limits that side for
good (a dead endpoint: the run's wall time shows what the circuit breaker saves).
``--src DIR`` measures another checkout's ``src``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import ROOT, child_env, write_bench_project

sys.path.insert(0, str(ROOT))
from tests.support.openai_server import OpenAIServer, Reply, last_user_text


def _client(project_dir: Path, workers: int, concurrency: int) -> int:
    """Child: plan the project and make every call with evalrun's runner; print a summary."""
    from evalrun import api
    from evalrun.execution.executor import run_in_workers
    from evalrun.execution.runner import RetryPolicy
    from evalrun.providers.registry import ModelRouter

    project = api.load_project(project_dir / "evals" / "baseline.yaml", project_dir / "evals" / "candidate.yaml")
    plan = api.plan_calls(project)
    started = time.monotonic()
    results = run_in_workers(plan, workers=workers, concurrency=concurrency,
                             policy=RetryPolicy(max_attempts=6, initial_s=0.05, max_s=2.0),
                             journal_dir=project_dir / f"run-{workers}", seed=0, progress=None,
                             provider_factory=ModelRouter)
    errors: dict[str, int] = {}
    for r in results:
        if r.error_kind:
            errors[r.error_kind] = errors.get(r.error_kind, 0) + 1
    print(json.dumps({"calls": len(results), "ok": sum(r.ok for r in results),
                      "attempts": sum(r.attempts for r in results), "wall_s": time.monotonic() - started,
                      "errors": errors}))
    return 0


class _Burst:
    """Server behaviour: 429 + Retry-After for every request inside the window (of ``side``'s
    model only, when given; for good with ``always``)."""

    def __init__(self, at: int, window_s: float, side: str | None = None, always: bool = False) -> None:
        self.at, self.window_s, self.side, self.always = at, window_s, side, always
        self.lock = threading.Lock()
        self.arrivals: list[tuple[float, bool]] = []
        self.sides: list[str] = []
        self.start: float | None = None

    def __call__(self, body: dict[str, Any], number: int) -> Reply:
        now = time.monotonic()
        side = str(body.get("model", "")).removeprefix("bench-")
        with self.lock:
            if number == self.at:
                self.start = now
            limited = self.start is not None and (self.always or now - self.start < self.window_s)
            limited = limited and (self.side is None or side == self.side)
            self.arrivals.append((now, limited))
            self.sides.append(side)
        if limited:
            return Reply(status=429, headers={"Retry-After": f"{self.window_s:g}"}, error_message="rate limited")
        return Reply(content=last_user_text(body))


def _report(burst: _Burst, workers: int, summary: dict[str, Any]) -> None:
    assert burst.start is not None, "the burst never started: raise --n or lower --at"
    t0, s = burst.arrivals[0][0], burst.start
    end = s + burst.window_s
    before = [t for t, _ in burst.arrivals if t < s]
    inside = [t for t, _ in burst.arrivals if s <= t < end]
    after = [t for t, _ in burst.arrivals if t >= end]
    n429 = sum(1 for _, limited in burst.arrivals if limited)

    def rate(ts: list[float], lo: float, hi: float) -> float:
        return len(ts) / max(1e-9, hi - lo)

    last = burst.arrivals[-1][0]
    print(f"\nworkers={workers}: {summary['calls']} calls ({summary['ok']} ok, {summary['attempts']} attempts), "
          f"{len(burst.arrivals)} requests, {n429} answered 429, client wall {summary.get('wall_s', 0):.2f} s"
          + (f", errors {summary['errors']}" if summary.get("errors") else ""))
    print(f"  requests/s before the burst {rate(before, t0, s):7.1f}   during Retry-After "
          f"{rate(inside, s, end):7.1f} ({len(inside)} requests in {burst.window_s:g} s)   after "
          f"{rate(after, end, last):7.1f}")
    if burst.side is not None:
        for side in ("baseline", "candidate"):
            mine = [t for (t, _), sd in zip(burst.arrivals, burst.sides, strict=True) if sd == side]
            pre = [t for t in mine if t < s]
            during = [t for t in mine if s <= t < end]
            print(f"  {side:9s} requests/s before {rate(pre, t0, s):7.1f}   during the window {rate(during, s, end):7.1f}")
    buckets: dict[int, int] = {}
    for t, _ in burst.arrivals:
        buckets[int((t - t0) / 0.1)] = buckets.get(int((t - t0) / 0.1), 0) + 1
    print("  timeline (100 ms buckets, # = 2 requests, | = inside the Retry-After window):")
    for b in range(max(buckets) + 1):
        mid = t0 + (b + 0.5) * 0.1
        mark = "|" if s <= mid < end else " "
        print(f"  {b * 0.1:5.1f}s {mark} {'#' * ((buckets.get(b, 0) + 1) // 2)} {buckets.get(b, 0) or ''}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=300, help="cases (2N calls)")
    parser.add_argument("--workers", type=int, action="append")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--at", type=int, default=150, help="request number that starts the burst")
    parser.add_argument("--window", type=float, default=1.5, help="seconds of 429s (and the Retry-After)")
    parser.add_argument("--side", choices=["baseline", "candidate"], help="limit only this side's endpoint")
    parser.add_argument("--always", action="store_true", help="once started, the limit never ends")
    parser.add_argument("--src", type=Path, help="put this folder first on PYTHONPATH")
    parser.add_argument("--client", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client is not None:
        return _client(args.client, args.workers[0], args.concurrency)
    for workers in args.workers or [1]:
        burst = _Burst(args.at, args.window, args.side, args.always)
        with tempfile.TemporaryDirectory(prefix="evalrun-bench-429-") as tmp, \
                OpenAIServer(burst, latency_s=0.02) as server:
            project = Path(tmp) / "proj"
            write_bench_project(project, args.n, server.base_url, concurrency=args.concurrency)
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--client", str(project),
                                   "--workers", str(workers), "--concurrency", str(args.concurrency)],
                                  env=child_env(src=args.src), cwd=ROOT, capture_output=True, text=True, timeout=900,
                                  check=False)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            _report(burst, workers, json.loads(proc.stdout.strip().splitlines()[-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
