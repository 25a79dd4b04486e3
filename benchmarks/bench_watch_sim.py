"""`evalrun watch` statistics by seeded simulation: false rollbacks and time to rollback.

    python benchmarks/bench_watch_sim.py --reps 1000

Every run draws a canary stage look by look (100 candidate requests per look, 5 % of the
stage's traffic, so 1,900 baseline requests per look) and runs the real verdict function
on the engine's sufficient statistics. The plan is what `evalrun plan` writes from Stage
1's default gate rules (12 triggers, alpha 0.05 split across them), unless a row says
otherwise. Prints one row per scenario: verdict shares and the candidate requests seen
when the first rollback trigger fired (median, and the share of runs before the target).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from evalrun.watch.simulate import (
    ArmModel,
    Scenario,
    first_rollback,
    simulated_verdict,
    with_candidate,
)
from test_watch_sequential import STAGE1_TRIGGERS, plan_with


def scenario_rows() -> list[tuple[str, Any, Scenario, int | None]]:
    stage1 = plan_with(STAGE1_TRIGGERS)
    floors98 = plan_with([
        {**t, "min": 0.98} if t["metric"] == "parse_strict" and t["kind"] == "absolute" else t
        for t in STAGE1_TRIGGERS
    ])
    on_floor = ArmModel(parse_ok=0.99, tool_ok=0.99)
    aa = Scenario(looks=100, per_look=100, baseline=on_floor, candidate=on_floor)
    aa_cohorts = Scenario(looks=100, per_look=100, baseline=on_floor, candidate=on_floor,
                          cohorts=("north", "south", "east", "west"))
    parse = with_candidate(Scenario(looks=60, per_look=100), parse_ok=0.97, json_share=1.0)
    parse_half = with_candidate(Scenario(looks=60, per_look=100), parse_ok=0.97, json_share=0.5)
    cost = with_candidate(Scenario(looks=30, per_look=100), cost_scale=1.3)
    return [
        ("A/A, 100 looks x 100 (Stage-1 triggers, rates on the 99 % floors)", stage1, aa, None),
        ("A/A, 4 cohorts, 100 looks x 100", stage1, aa_cohorts, None),
        ("parse failures 1 % -> 3 %, all requests JSON (Stage-1 floor 99 %)", stage1, parse, 5000),
        ("parse failures 1 % -> 3 %, all requests JSON, floor 98 %", floors98, parse, 5000),
        ("parse failures 1 % -> 3 %, half the requests JSON (Stage-1 floor 99 %)", stage1, parse_half, 5000),
        ("cost per request x1.3", stage1, cost, 2000),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=1000)
    args = ap.parse_args()
    print(f"{'scenario':74} {'rollback':>9} {'hold':>6} {'continue':>9} {'median n':>9} {'< target':>9}  time")
    for label, plan, sc, target in scenario_rows():
        t0 = time.perf_counter()
        status: Counter[str] = Counter()
        firsts: list[float] = []
        for seed in range(args.reps):
            verdict, data = simulated_verdict(plan, "canary", sc, seed)
            status[verdict.status] += 1
            f = first_rollback(verdict, data)
            firsts.append(f if f is not None else np.inf)
        arr = np.array(firsts)
        med = np.median(arr)
        within = f"{(arr < target).mean() * 100:.1f}%" if target else "-"
        print(f"{label:74} {status['rollback'] / args.reps * 100:8.1f}% {status['hold'] / args.reps * 100:5.1f}% "
              f"{status['continue'] / args.reps * 100:8.1f}% {('-' if not np.isfinite(med) else f'{med:.0f}'):>9} "
              f"{within:>9}  {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
