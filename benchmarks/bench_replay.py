"""Cached replay: `evalrun compare --replay` of an N-case suite, end to end.

    python benchmarks/bench_replay.py --n 1000 --repeat 5

Fills a fresh response cache once (a real compare against the 127.0.0.1 test server),
stops the server, then times ``evalrun compare ... --replay`` R times (a fresh ``--out``
each time; no server, no key needed) and prints the median wall time, CPU and peak RSS.
Also runs one replay under ``python -X importtime`` and reports whether litellm (or
pandas, jinja2) was imported, and the slowest imports.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from _common import (
    KEY_ENV,
    child_env,
    fmt_row,
    median,
    run_measured,
    test_server,
    write_bench_project,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeat", "-r", type=int, default=5)
    parser.add_argument("--src", type=Path, help="put this folder first on PYTHONPATH")
    parser.add_argument("--workers", type=int, default=1, help="workers for the cache-filling run")
    args = parser.parse_args(argv)
    env = child_env(src=args.src)
    with tempfile.TemporaryDirectory(prefix="evalrun-bench-replay-") as tmp:
        root = Path(tmp)
        cache_dir = root / "cache"
        with test_server(10.0) as server:
            extra = {"workers": args.workers} if args.workers != 1 else None
            b, c = write_bench_project(root / "proj", args.n, server.url, suite_extra=extra)
            fill = run_measured([sys.executable, "-m", "evalrun", "compare", str(b), str(c), "--cache-dir",
                                 str(cache_dir), "--out", str(root / "fill"), "--quiet"], env=env, timeout_s=900)
            if fill.returncode not in (0, 1, 3):
                print(f"filling the cache failed (rc {fill.returncode}): {fill.stderr[-3000:]}", file=sys.stderr)
                return 1
            print(f"cache filled: {2 * args.n} calls in {fill.wall_s:.1f} s (workers={args.workers}, "
                  f"peak RSS {fill.max_rss_mb:.0f} MB, CPU {fill.cpu_s:.1f} s)")
        replay_env = {k: v for k, v in env.items() if k != KEY_ENV}  # replay needs no key
        runs = []
        for rep in range(args.repeat):
            out = root / f"replay-{rep}"
            m = run_measured([sys.executable, "-m", "evalrun", "compare", str(b), str(c), "--replay", "--cache-dir",
                              str(cache_dir), "--out", str(out), "--quiet"], env=replay_env, timeout_s=300)
            if m.returncode not in (0, 1, 3):
                print(f"replay failed (rc {m.returncode}): {m.stderr[-3000:]}", file=sys.stderr)
                return 1
            runs.append(m)
        probe = run_measured([sys.executable, "-X", "importtime", "-m", "evalrun", "compare", str(b), str(c), "--replay",
                              "--cache-dir", str(cache_dir), "--out", str(root / "probe"), "--quiet"],
                             env=replay_env, timeout_s=300)
    imported: dict[str, int] = {}
    for line in probe.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[1].strip().isdigit():
            imported[parts[2].strip()] = int(parts[1])
    print(f"\nreplay of N = {args.n} cases x 2 sides ({2 * args.n} cached calls); median of R = {args.repeat}; "
          f"load average {os.getloadavg()[0]:.2f}")
    widths = (26, 10)
    print(fmt_row(("measure", "median"), widths))
    print(fmt_row(("wall (end to end)", f"{median([m.wall_s for m in runs]):.2f} s"), widths))
    print(fmt_row(("CPU (user+sys)", f"{median([m.cpu_s for m in runs]):.2f} s"), widths))
    print(fmt_row(("peak RSS", f"{median([m.max_rss_mb for m in runs]):.0f} MB"), widths))
    print("imports during replay: " + ", ".join(f"{m}: {'yes' if m in imported else 'no'}"
                                                for m in ("litellm", "openai", "pandas", "scipy", "jinja2")))
    top = sorted(((v, k) for k, v in imported.items() if k.count(".") == 0), reverse=True)[:8]
    print("largest top-level imports (cumulative ms): " + ", ".join(f"{k} {v / 1000:.0f}" for v, k in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
