"""`evalrun watch` statistics by seeded simulation: false rollbacks, time to rollback, time to continue.

    python benchmarks/bench_watch_sim.py --reps 500

Every run draws a canary stage look by look (100 candidate requests per 15-minute look, 5 %
of the stage's traffic, so 1,900 baseline requests per look) and runs the real verdict
function on the engine's sufficient statistics. The plan is what `evalrun plan` writes from
a run gated by Stage 1's default rules (``evalrun.watch.from_run.default_triggers()``: ten
rule triggers, each rate rule with its PASS margin and its FAIL boundary, plus the two
error-rate triggers; alpha 0.05 split across them) and its default canary stage
(min_samples 500, min_duration 2h, max_duration 24h), unless a row says otherwise.

Columns: verdict shares after the last look; the candidate requests seen when the first
rollback trigger (``metric``: that metric's) entered its harm region, median and share of
runs before the target; the candidate requests seen at the first look where the stage could
continue (every trigger safe, minimums met), the share of runs that got there at some look
and their median; and the
share of runs in which some trigger's running intersection ended empty (the sequence missed
the truth at some look: "drifted", which holds the stage).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evalrun.watch.from_run import default_stages, default_triggers
from evalrun.watch.plan import Plan, validate_plan
from evalrun.watch.simulate import (
    Scenario,
    first_continue,
    first_rollback,
    simulated_verdict,
    with_candidate,
)

LABELS = {"model_version": "m", "prompt_version": "p1", "retrieval_version": "r", "policy_version": "v"}


def plan_of(triggers: list[dict[str, Any]]) -> Plan:
    """The triggers with `evalrun plan`'s default stages."""
    data = {
        "source": {"kind": "evalrun", "path": "x.jsonl"},
        "labels": {"baseline": LABELS, "candidate": {"prompt_version": "p2"}},
        "triggers": triggers,
        "stages": default_stages("bench"),
    }
    return validate_plan(data, Path("rollout.yaml"))


def before_fix_triggers() -> list[dict[str, Any]]:
    """What `evalrun plan` wrote from the default rules before triggers carried fail_margin:
    the PASS margin alone as the one boundary, and no error trigger."""
    return [{k: v for k, v in t.items() if k != "fail_margin"} for t in default_triggers()
            if t["metric"] != "error_rate"]


@dataclass(frozen=True)
class Row:
    label: str
    plan: Plan
    scenario: Scenario
    target: int | None = None
    metric: str | None = None


def rows() -> list[Row]:
    default = plan_of(default_triggers())
    before = plan_of(before_fix_triggers())
    aa = Scenario(looks=100, per_look=100)
    aa_cohorts = Scenario(looks=100, per_look=100, cohorts=("north", "south", "east", "west"))
    aa_stage = Scenario(looks=96, per_look=100)  # the default canary's max_duration: 24 h of 15-min looks
    aa_busy = Scenario(looks=96, per_look=300)
    parse = with_candidate(Scenario(looks=60, per_look=100), parse_ok=0.97, json_share=1.0)
    parse_half = with_candidate(Scenario(looks=60, per_look=100), parse_ok=0.97, json_share=0.5)
    cost = with_candidate(Scenario(looks=30, per_look=100), cost_scale=1.3)
    errors = with_candidate(Scenario(looks=60, per_look=100), error=0.015)
    return [
        Row("A/A, 100 looks x 100", default, aa),
        Row("A/A, 4 cohorts, 100 looks x 100", default, aa_cohorts),
        Row("A/A, default canary (96 looks = 24 h, 100/look)", default, aa_stage),
        Row("A/A, default canary (96 looks = 24 h, 300/look)", default, aa_busy),
        Row("parse 1 % -> 3 %, all JSON", default, parse, 5000),
        Row("parse 1 % -> 3 %, all JSON: parse_strict trigger", default, parse, 5000, "parse_strict"),
        Row("parse 1 % -> 3 %, half JSON: parse_strict trigger", default, parse_half, 5000, "parse_strict"),
        Row("parse 1 % -> 3 %, all JSON, plan before the fix", before, parse, 5000),
        Row("cost per request x1.3", default, cost, 2000),
        Row("errors 0.5 % -> 1.5 %: error_rate trigger", default, errors, 5000, "error_rate"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=500)
    ap.add_argument("--only", default="", help="run only the scenarios whose label contains this")
    args = ap.parse_args()
    print(f"{'scenario (reps=' + str(args.reps) + ')':52} {'rollback':>8} {'hold':>6} {'continue':>8} "
          f"{'rb median n':>11} {'rb < target':>11} {'ever cont':>9} {'cont median n':>13} {'drifted':>7}  time")
    for row in rows():
        if args.only not in row.label:
            continue
        t0 = time.perf_counter()
        status: Counter[str] = Counter()
        firsts: list[float] = []
        conts: list[float] = []
        drifted = 0
        for seed in range(args.reps):
            verdict, data = simulated_verdict(row.plan, "canary", row.scenario, seed)
            status[verdict.status] += 1
            drifted += any(r.bounds.low > r.bounds.high for r in verdict.triggers)
            f = first_rollback(verdict, data, row.metric)
            firsts.append(f if f is not None else np.inf)
            c = first_continue(verdict, data)
            if c is not None:
                conts.append(c)
        arr = np.array(firsts)
        med = np.median(arr)
        within = f"{(arr < row.target).mean() * 100:.1f}%" if row.target else "-"
        cont = f"{np.median(conts):.0f}" if conts else "-"
        n = args.reps
        print(f"{row.label:52} {status['rollback'] / n * 100:7.1f}% {status['hold'] / n * 100:5.1f}% "
              f"{status['continue'] / n * 100:7.1f}% {('-' if not np.isfinite(med) else f'{med:.0f}'):>11} "
              f"{within:>11} {len(conts) / n * 100:8.1f}% {cont:>13} {drifted / n * 100:6.1f}%  {time.perf_counter() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
