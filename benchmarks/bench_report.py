"""Compare + render at scale without a model: fabricate 2 x N CallResults, time write_outputs.

    python benchmarks/bench_report.py --n 10000 --repeat 3

Each repeat runs in a fresh child process (``--child``), so imports (pandas, scipy, jinja2)
and peak RSS are those of one real ``compare`` at that size. The child loads an N-case
project, fabricates one seeded result per planned call (outputs that pass or fail the
checks, a few errors, tokens, latency, cost), then times ``api.write_outputs`` (score,
compare, gate, results.jsonl, summary.json/md, report.html, junit.xml) and prints the
phase times, its CPU and its peak RSS. The parent prints medians.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, child_env, fmt_row, median, run_measured, write_bench_project


def _fabricate(project: Any, seed: int) -> list[Any]:
    from evalrun import api
    from evalrun.records import CallResult

    rng = random.Random(seed)
    out: list[CallResult] = []
    for p in api.plan_calls(project, with_keys=False):
        text = str(p.request.messages[-1]["content"])
        r = CallResult(case_id=p.case_id, side=p.side, sample=p.sample, model=p.request.model, request_key=p.key)
        roll = rng.random()
        if roll < 0.004:
            r.error_kind, r.error_message, r.attempts = "server_error", "InternalServerError: scripted 500", 2
        else:
            if p.side == "candidate" and roll < 0.05:
                text = "I can't help with that."
            elif roll < 0.08:
                text = "```json\n" + text + "\n```"
            r.output = text
            r.finish_reason = "stop"
            r.prompt_tokens = 20 + rng.randint(0, 30)
            r.completion_tokens = max(1, len(text.split()) + rng.randint(-2, 5))
            r.latency_s = rng.lognormvariate(-2.5, 0.4) * (1.1 if p.side == "candidate" else 1.0)
            r.attempt_latencies_s = [r.latency_s]
            r.wall_s = r.latency_s
            r.cost_usd = (r.prompt_tokens * 0.15 + r.completion_tokens * 0.6) / 1e6
            r.cost_status = "config"
            r.attempts = 1
        out.append(r)
    return out


def child(n: int, workdir: Path) -> int:
    t0 = time.perf_counter()
    c0 = time.process_time()
    from evalrun import api

    b, c = write_bench_project(workdir / "proj", n, "http://127.0.0.1:9/v1")
    project = api.load_project(b, c)
    results = _fabricate(project, seed=n)
    (workdir / "run").mkdir()
    t1 = time.perf_counter()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    outcome = api.write_outputs(project, workdir / "run", results, "2026-01-01 00:00:00 UTC")
    t2 = time.perf_counter()
    c2 = time.process_time()
    sizes = {k: p.stat().st_size for k, p in outcome.files.items()}
    print(json.dumps({
        "setup_s": t1 - t0, "write_outputs_s": t2 - t1, "cpu_s": c2 - c0,
        "rss_before_mb": rss_before, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "status": outcome.verdict_status, "bytes": sizes,
    }))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=10_000, help="cases (calls = 2N)")
    parser.add_argument("--repeat", "-r", type=int, default=3)
    parser.add_argument("--src", type=Path, help="put this folder first on PYTHONPATH")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return child(args.n, args.child)
    env = child_env(src=args.src)
    rows: list[dict[str, Any]] = []
    for rep in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="evalrun-bench-report-") as tmp:
            m = run_measured([sys.executable, str(Path(__file__).resolve()), "--n", str(args.n), "--child", tmp],
                             env=env, cwd=ROOT, timeout_s=600)
            if m.returncode != 0:
                print(m.stderr[-3000:], file=sys.stderr)
                return 1
            data = json.loads(m.stdout.strip().splitlines()[-1])
            data["wall_s"], data["child_cpu_s"] = m.wall_s, m.cpu_s
            rows.append(data)
            print(f"  repeat {rep + 1}/{args.repeat}: write_outputs {data['write_outputs_s']:.2f} s, "
                  f"peak RSS {data['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    print(f"\nN = {args.n} cases x 2 sides = {2 * args.n} results; medians of R = {args.repeat}")
    widths = (34, 10)
    print(fmt_row(("measure", "median"), widths))
    for key, label, unit in (("write_outputs_s", "score+compare+gate+render+write", "s"),
                             ("setup_s", "load project + fabricate", "s"),
                             ("wall_s", "whole child process", "s"),
                             ("child_cpu_s", "CPU of the child", "s"),
                             ("rss_before_mb", "RSS before write_outputs", "MB"),
                             ("peak_rss_mb", "peak RSS", "MB")):
        print(fmt_row((label, f"{median([float(r[key]) for r in rows]):.2f} {unit}"), widths))
    print("files: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(rows[-1]["bytes"].items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
