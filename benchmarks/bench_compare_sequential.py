"""`evalrun compare --sequential`: share of calls made and verdicts, by seeded repetition.

    python benchmarks/bench_compare_sequential.py --reps 100

A 200-case suite (100 JSON extraction, 90 chat, 10 known-bad) run with the FakeProvider
scripts of tests/test_compare_sequential.py: A/A (same noise on both sides), and
regressions where the candidate fences 50 % or 20 % of its JSON answers. Prints, per
scenario, the verdict shares and the calls made as a share of the full run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from evalrun import api
from evalrun.testing import FakeProvider
from test_compare_sequential import script, sequential_project


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=100)
    args = ap.parse_args()
    print(f"{'scenario':34} {'FAIL':>6} {'PASS':>6} {'other':>6} {'calls (median)':>15} {'calls (max)':>12} "
          f"{'runs <= 40 %':>13}  time")
    for label, share in (("A/A", 0.0), ("candidate fences 50 % of JSON", 0.5), ("candidate fences 20 % of JSON", 0.2)):
        t0 = time.perf_counter()
        verdicts: Counter[str] = Counter()
        fractions = []
        for seed in range(args.reps):
            with tempfile.TemporaryDirectory() as d:
                project = sequential_project(Path(d), seed=seed)
                o = api.compare_sequential(project, provider=FakeProvider(script(share, seed=seed)),
                                           run_dir=Path(d) / "run", cache="off")
                verdicts[o.verdict_status] += 1
                seq = o.summary["sequential"]
                fractions.append(seq["calls_made"] / seq["calls_planned"])
        f = np.array(fractions)
        other = args.reps - verdicts["FAIL"] - verdicts["PASS"]
        print(f"{label:34} {verdicts['FAIL'] / args.reps * 100:5.1f}% {verdicts['PASS'] / args.reps * 100:5.1f}% "
              f"{other / args.reps * 100:5.1f}% {np.median(f) * 100:14.0f}% {f.max() * 100:11.0f}% "
              f"{(f <= 0.4).mean() * 100:12.0f}%  {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
