"""Throughput: `evalrun compare` against a bare litellm loop, same requests, same server.

    python benchmarks/bench_compare.py --n 1000 --repeat 3
    python benchmarks/bench_compare.py --n 200 --n 1000 --n 5000 --workers 1 --workers 2

For each N: generate an N-case suite (two configs → 2N calls), start the OpenAI-compatible
test server (its own process, 50 ms per request: its CPU is never counted), then R times,
interleaved: run the bare loop (``bare_litellm_loop.py``: asyncio, semaphore = concurrency,
max_retries=0, offline switches) and ``evalrun compare --no-cache --out TMP --quiet`` for each
``--workers`` value, each as a child process measured with ``os.wait4``.

Printed per N and side (medians over R): wall seconds, CPU seconds per call (user+sys of the
child and the workers it reaped, divided by 2N), peak RSS (largest single process of the tree),
wall/ideal with ideal = 2N / concurrency × latency, evalrun/bare ratios, and "others' cores":
the CPU the rest of the machine used meanwhile divided by the wall time (other people's
work on the same 2 cores; near 1 it halves what 2 worker processes can gain). Both sides pay
their interpreter start and ``import litellm`` (the bare loop also prints its loop-only time).

``--workers K`` writes ``workers: K`` into the suite (explicitly, also for 1: unset, evalrun
chooses); ``--src DIR`` measures another checkout's ``src``. ``bench_peers.py`` adds
promptfoo, raw aiohttp and evalrun's default settings to the same comparison.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
    Measured,
    child_env,
    fmt_row,
    median,
    run_measured,
    test_server,
    write_bench_project,
)


def _plan_requests(b: Path, c: Path, target: Path) -> int:
    """The exact requests evalrun will make, for the bare loop (no key read, no litellm)."""
    from evalrun import api

    project = api.load_project(b, c)
    plan = api.plan_calls(project, with_keys=False)
    rows = [
        {"model": p.request.model, "messages": p.request.messages, "params": p.request.params,
         "api_base": p.request.api_base, "timeout_s": p.request.timeout_s}
        for p in plan
    ]
    target.write_text(json.dumps(rows), encoding="utf-8")
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, action="append", help="cases per run (repeatable; default 1000)")
    parser.add_argument("--repeat", "-r", type=int, default=3, help="runs per configuration (medians are printed)")
    parser.add_argument("--workers", type=int, action="append", help="evalrun worker processes (repeatable; default 1)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--src", type=Path, help="put this folder first on PYTHONPATH (another evalrun checkout's src)")
    parser.add_argument("--skip-bare", action="store_true")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before a child is killed")
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    args = parser.parse_args(argv)
    sizes = args.n or [1000]
    worker_counts = args.workers or [1]
    env = child_env(src=args.src)
    report: list[dict[str, Any]] = []

    for n in sizes:
        calls = 2 * n
        ideal = calls / args.concurrency * args.latency_ms / 1000.0
        with tempfile.TemporaryDirectory(prefix="evalrun-bench-") as tmp, test_server(args.latency_ms) as server:
            root = Path(tmp)
            b, c = write_bench_project(root / "proj", n, server.url, concurrency=args.concurrency)
            requests = root / "requests.json"
            planned = _plan_requests(b, c, requests)
            assert planned == calls, (planned, calls)
            suite = (b.parent / "suite.yaml").read_text(encoding="utf-8")
            runs: dict[str, list[Measured]] = {}
            for rep in range(args.repeat):
                if not args.skip_bare:
                    m = run_measured([sys.executable, str(ROOT / "benchmarks" / "bare_litellm_loop.py"), str(requests),
                                      "--concurrency", str(args.concurrency)], env=env, timeout_s=args.timeout,
                                     server_pid=server.pid)
                    if m.returncode != 0:
                        print(f"bare loop failed (rc {m.returncode}): {m.stderr[-2000:]}", file=sys.stderr)
                        return 1
                    m.extra = json.loads(m.stdout.strip().splitlines()[-1])
                    runs.setdefault("bare litellm", []).append(m)
                for w in worker_counts:
                    suite_text = suite + f"workers: {w}\n"  # explicit: unset means "chosen by evalrun"
                    (b.parent / "suite.yaml").write_text(suite_text, encoding="utf-8")
                    out = root / f"run-{w}-{rep}"
                    m = run_measured([sys.executable, "-m", "evalrun", "compare", str(b), str(c), "--no-cache",
                                      "--out", str(out), "--quiet"], env=env, cwd=root, timeout_s=args.timeout,
                                     server_pid=server.pid)
                    if m.returncode not in (0, 1, 3):
                        print(f"evalrun failed (rc {m.returncode}): {m.stderr[-3000:]}", file=sys.stderr)
                        return 1
                    journals = list(out.glob("journal*.jsonl"))
                    rows = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in journals)
                    if rows != calls:
                        print(f"evalrun journaled {rows} of {calls} calls", file=sys.stderr)
                        return 1
                    shutil.rmtree(out, ignore_errors=True)
                    runs.setdefault(f"evalrun workers={w}", []).append(m)
                print(f"  N={n} repeat {rep + 1}/{args.repeat} done", file=sys.stderr, flush=True)
            (b.parent / "suite.yaml").write_text(suite, encoding="utf-8")

        print(f"\nN = {n} cases x 2 configs = {calls} calls; concurrency {args.concurrency}, "
              f"latency {args.latency_ms:.0f} ms, ideal {ideal:.2f} s; medians of R = {args.repeat}")
        widths = (22, 9, 12, 8, 10, 13, 12, 14)
        print(fmt_row(("run", "wall s", "CPU ms/call", "RSS MB", "wall/ideal", "wall vs bare", "CPU vs bare",
                       "others' cores"), widths))
        bare = runs.get("bare litellm")
        bare_wall = median([m.wall_s for m in bare]) if bare else None
        bare_cpu = median([m.cpu_s for m in bare]) / calls if bare else None
        for name, ms in runs.items():
            wall = median([m.wall_s for m in ms])
            cpu_call = median([m.cpu_s for m in ms]) / calls
            rss = median([m.max_rss_mb for m in ms])
            vs_wall = f"{wall / bare_wall:.2f}x" if bare_wall else "-"
            vs_cpu = f"{cpu_call / bare_cpu:.2f}x" if bare_cpu else "-"
            others = median([m.others_cpu_s / m.wall_s for m in ms])
            print(fmt_row((name, f"{wall:.2f}", f"{cpu_call * 1000:.2f}", f"{rss:.0f}", f"{wall / ideal:.1f}",
                           vs_wall, vs_cpu, f"{others:.2f}"), widths))
            report.append({"n": n, "run": name, "repeat": args.repeat, "wall_s": [m.wall_s for m in ms],
                           "cpu_s": [m.cpu_s for m in ms], "max_rss_mb": [m.max_rss_mb for m in ms],
                           "others_cpu_s": [m.others_cpu_s for m in ms],
                           "ideal_s": ideal, "extra": [m.extra for m in ms]})
        if bare:
            imp = median([float(m.extra["import_s"]) for m in bare])
            loop = median([float(m.extra["loop_s"]) for m in bare])
            print(f"  bare loop inside: import litellm {imp:.2f} s, calls {loop:.2f} s "
                  f"({calls / loop:.0f} calls/s)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
