"""Latency under load: does the p50 ratio read the provider, or the client's queue?

    python benchmarks/bench_latency.py                      # 300 cases, concurrency 8 and 32, R=3
    python benchmarks/bench_latency.py --concurrency 50 --repeat 5
    python benchmarks/bench_latency.py --before-src /path/to/old/checkout/src

The 127.0.0.1 test server (its own process) answers the baseline after 40 ms and the
candidate after 120 ms (a marker in each side's user template selects the delay), so the
true ratio is 3. Two CPU burners (``while True: pass`` processes) keep the 2-core machine
busy, then ``evalrun compare --no-cache`` runs as a measured child at each concurrency.

Printed per run, from results.jsonl (successful calls, warm-up calls excluded):

* before — the whole provider call (``client_latency_s``: what a gate timing whole calls
  reads; with ``--before-src``, that checkout's ``latency_s`` too);
* after — the provider's round trip at the transport (``latency_s``), and the gate's own
  p50 ratio from summary.json (paired bootstrap over cases);
* the client's overhead (whole call − transport) p50 per side, the clocks used, and how
  much CPU the rest of the machine used meanwhile ("others' cores", burners included).

The issue's target: the p50 ratio reads within [2.0, 3.2] with the machine busy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
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

BASE_MARK, CAND_MARK = "[bench-side:baseline]", "[bench-side:candidate]"
TARGET = (2.0, 3.2)


@contextlib.contextmanager
def burners(count: int) -> Iterator[list[int]]:
    """``count`` CPU-bound child processes, killed on exit (nothing left running)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def write_project(root: Path, n: int, url: str, concurrency: int, workers: int) -> tuple[Path, Path]:
    """The bench project with one simple check per case and a side marker in each template."""
    cases = [
        {"id": f"l{i:05d}", "kind": "representative", "cohort": ("a", "b", "c", "d")[i % 4],
         "vars": {"question": f"case l{i:05d}: what is the return policy for item {i}?"},
         "expect": [{"contains": {"value": "policy"}}]}
        for i in range(n)
    ]
    suite_extra = {"workers": workers} if workers != 1 else {}
    b, c = write_bench_project(root, n, url, concurrency=concurrency, cases=cases, suite_extra=suite_extra)
    for path, mark in ((b, BASE_MARK), (c, CAND_MARK)):
        variant = yaml.safe_load(path.read_text(encoding="utf-8"))
        variant["prompt"]["user"] = "{{ question }} " + mark
        path.write_text(yaml.safe_dump(variant), encoding="utf-8")
    return b, c


def quantile(values: Sequence[float], q: float) -> float:
    """numpy's default (linear) quantile, as evalrun's metrics use."""
    if not values:
        return float("nan")
    x = sorted(values)
    h = (len(x) - 1) * q
    lo = int(h)
    hi = min(lo + 1, len(x) - 1)
    return x[lo] + (h - lo) * (x[hi] - x[lo])


def ratios(rows: list[dict[str, Any]], field: str) -> tuple[float, float]:
    """Candidate ÷ baseline p50 and p95 of ``field`` over successful non-warm-up calls."""
    out = []
    for q in (0.5, 0.95):
        per_side = {}
        for side in ("baseline", "candidate"):
            vals = [float(r[field]) for r in rows if r["side"] == side and r.get("error_kind") is None
                    and not r.get("warmup") and r.get(field) is not None]
            per_side[side] = quantile(vals, q)
        out.append(per_side["candidate"] / per_side["baseline"])
    return out[0], out[1]


def overhead_p50(rows: list[dict[str, Any]], side: str) -> float:
    vals = [float(r["client_overhead_s"]) for r in rows if r["side"] == side and r.get("client_overhead_s") is not None
            and not r.get("warmup")]
    return statistics.median(vals) if vals else float("nan")


def run_once(b: Path, c: Path, out: Path, env: dict[str, str], server_pid: int, timeout: float) -> tuple[Measured, list[dict[str, Any]], dict[str, Any]]:
    m = run_measured([sys.executable, "-m", "evalrun", "compare", str(b), str(c), "--no-cache", "--out", str(out),
                      "--quiet"], env=env, cwd=b.parent.parent, timeout_s=timeout, server_pid=server_pid)
    if m.returncode not in (0, 1, 3):
        raise RuntimeError(f"evalrun failed (rc {m.returncode}): {m.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return m, rows, summary


def gate_p50_ratio(summary: dict[str, Any]) -> float:
    for m in summary.get("metrics") or []:
        if m.get("metric") == "latency_p50":
            r = m.get("ratio")
            return float(r) if r is not None else float("nan")
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=300, help="cases per run (2N calls)")
    parser.add_argument("--concurrency", type=int, action="append", help="calls in flight (repeatable; default 8 and 32)")
    parser.add_argument("--repeat", "-r", type=int, default=3)
    parser.add_argument("--burners", type=int, default=2, help="CPU-bound processes running meanwhile")
    parser.add_argument("--fast-ms", type=float, default=40.0, help="server delay for the baseline")
    parser.add_argument("--slow-ms", type=float, default=120.0, help="server delay for the candidate")
    parser.add_argument("--workers", type=int, default=1, help="evalrun worker processes")
    parser.add_argument("--src", type=Path, help="the evalrun checkout's src to measure (default: this one)")
    parser.add_argument("--before-src", type=Path, help="also run this (older) checkout's src; its latency_s is shown as 'before'")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--json", type=Path, help="also write every measurement to this file")
    args = parser.parse_args(argv)
    concurrencies = args.concurrency or [8, 32]
    true_ratio = args.slow_ms / args.fast_ms
    script = {BASE_MARK: {"delay_s": args.fast_ms / 1000}, CAND_MARK: {"delay_s": args.slow_ms / 1000}}
    variants = [("after", child_env(src=args.src or ROOT / "src"))]
    if args.before_src is not None:
        variants.append(("before", child_env(src=args.before_src)))
    report: list[dict[str, Any]] = []
    widths = (7, 6, 4, 12, 12, 12, 12, 10, 16, 8, 26)
    with tempfile.TemporaryDirectory(prefix="evalrun-bench-latency-") as tmp:
        script_path = Path(tmp) / "script.json"
        script_path.write_text(json.dumps(script), encoding="utf-8")
        with test_server(0.0, script_path) as server, burners(args.burners):
            print(f"server {args.fast_ms:.0f} ms (baseline) vs {args.slow_ms:.0f} ms (candidate): true ratio "
                  f"{true_ratio:.2f}; {args.burners} CPU burners; N = {args.n} cases x 2; target p50 ratio in "
                  f"[{TARGET[0]}, {TARGET[1]}]")
            print(fmt_row(("code", "conc", "rep", "whole p50", "whole p95", "transp p50", "transp p95", "gate p50",
                           "overhead p50 b/c", "others", "clocks"), widths))
            for conc in concurrencies:
                root = Path(tmp) / f"c{conc}"
                b, c = write_project(root / "proj", args.n, server.url, conc, args.workers)
                for rep in range(args.repeat):
                    for name, env in variants:
                        out = root / f"run-{name}-{rep}"
                        m, rows, summary = run_once(b, c, out, env, server.pid, args.timeout)
                        has_client = any(r.get("client_latency_s") is not None for r in rows)
                        whole = ratios(rows, "client_latency_s" if has_client else "latency_s")
                        transport = ratios(rows, "latency_s") if has_client else (float("nan"), float("nan"))
                        clocks = summary.get("latency_measurement", {})
                        used = sorted({k for s in ("baseline", "candidate")
                                       for k, v in ((clocks.get(s) or {}).get("clocks") or {}).items() if v})
                        ob, oc = overhead_p50(rows, "baseline"), overhead_p50(rows, "candidate")
                        print(fmt_row((name, conc, rep + 1, f"{whole[0]:.2f}", f"{whole[1]:.2f}", f"{transport[0]:.2f}",
                                       f"{transport[1]:.2f}", f"{gate_p50_ratio(summary):.2f}",
                                       f"{ob * 1000:.0f}/{oc * 1000:.0f} ms", f"{m.others_cpu_s / m.wall_s:.2f}",
                                       ",".join(used) or "-"), widths), flush=True)
                        report.append({"code": name, "concurrency": conc, "repeat": rep, "whole": whole,
                                       "transport": transport, "gate_p50": gate_p50_ratio(summary),
                                       "overhead_p50_s": [ob, oc], "wall_s": m.wall_s,
                                       "others_cores": m.others_cpu_s / m.wall_s, "clocks": used})
                        shutil.rmtree(out, ignore_errors=True)
    print("\nmedians over repeats (p50 ratio / p95 ratio):")
    for conc in concurrencies:
        for name, _ in variants:
            rs = [r for r in report if r["concurrency"] == conc and r["code"] == name]
            w50, w95 = median([r["whole"][0] for r in rs]), median([r["whole"][1] for r in rs])
            t50, t95 = median([r["transport"][0] for r in rs]), median([r["transport"][1] for r in rs])
            g50 = median([r["gate_p50"] for r in rs])
            inside = all(TARGET[0] <= r["transport"][0] <= TARGET[1] for r in rs)
            print(f"  {name:6s} concurrency {conc:3d}: whole call {w50:.2f} / {w95:.2f}   transport {t50:.2f} / {t95:.2f}"
                  f"   gate p50 {g50:.2f}   every transport p50 in target: {'yes' if inside else 'no'}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
