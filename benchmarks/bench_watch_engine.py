"""Aggregate one stage of a 10-million-row Parquet log: wall time and peak memory.

    python benchmarks/bench_watch_engine.py --rows 10000000 --repeat 3

Writes the log once (the traffic generator, no answer text, 1 M rows per row group) into
a temp folder (or --dir), then measures `evaluate` (open the source, the latency histogram
query, the aggregate query, the verdict) in a fresh child process per repeat: wall time,
CPU time and peak RSS of that child. DuckDB runs with 2 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from evalrun.watch.run import evaluate, parse_at
t1 = time.perf_counter()
o = evaluate(sys.argv[1], "canary", at=parse_at("2026-11-30T12:00:01Z"))
t2 = time.perf_counter()
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"import_s": t1 - t0, "evaluate_s": t2 - t1, "cpu_s": ru.ru_utime + ru.ru_stime,
                  "peak_rss_mb": ru.ru_maxrss / 1024, "verdict": o.verdict.status,
                  "units": o.summary["units"], "rows_in_log": None}))
"""


def write_log(directory: Path, rows: int) -> Path:
    import pyarrow.parquet as pq
    import yaml

    from evalrun.watch.traffic import TrafficSpec, demo_plan, generate
    from evalrun.watch.traffic import write_log as write_chunk

    path = directory / "traffic.parquet"
    if path.exists() and pq.ParquetFile(path).metadata.num_rows == rows:
        return directory / "rollout.yaml"
    chunk = 1_000_000
    writer = None
    done = 0
    seed = 0
    while done < rows:
        n = min(chunk, rows - done)
        cols, _ = generate(TrafficSpec(requests=n, seed=seed, content=False, regression={"parse_fail": 0.03}))
        part = directory / f"part{seed}.parquet"
        write_chunk(cols, part, "parquet")
        table = pq.read_table(part)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=chunk)
        part.unlink()
        done += n
        seed += 1
        print(f"  wrote {done:,} rows", file=sys.stderr)
    assert writer is not None
    writer.close()
    plan = directory / "rollout.yaml"
    plan.write_text(yaml.safe_dump(demo_plan(path.name, TrafficSpec()), sort_keys=False))
    return plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="keep the log here (reused when it has --rows rows)")
    args = ap.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="evalrun-watch-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    plan = write_log(directory, args.rows)
    size = (directory / "traffic.parquet").stat().st_size / 1e6
    print(f"log: {args.rows:,} rows, {size:.0f} MB Parquet ({time.perf_counter() - t0:.0f} s to write)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
    results = []
    for i in range(args.repeat):
        out = subprocess.run([sys.executable, "-c", CHILD, str(plan)], capture_output=True, text=True,
                             env=env, timeout=600, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"run {i + 1}: evaluate {r['evaluate_s']:.2f} s (imports {r['import_s']:.2f} s), CPU {r['cpu_s']:.1f} s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB, verdict {r['verdict']}, units {r['units']}")
    best = sorted(results, key=lambda r: r["evaluate_s"])[len(results) // 2]
    print(f"median: evaluate {best['evaluate_s']:.2f} s, peak RSS {max(r['peak_rss_mb'] for r in results):.0f} MB "
          f"(targets: <= 5 s, <= 1024 MB); this machine has {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
