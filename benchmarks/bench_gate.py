"""The gate's error rates with the default rules, measured by seeded simulation.

Every simulated run goes through evalrun's own ``compare.metric_table`` and
``gate.decide_verdict`` (see ``evalrun.analysis.simulate`` for the model: within-case correlation
0.5 between any two calls of a case, both sides and all samples). Prints markdown tables:

* A/A (candidate identical to baseline): FAIL and PASS shares over pass/parse rates
  {0.5, 0.9, 0.99} x n {30, 100, 300, 1000} x K {1, 3};
* power: a 10-point strict-parse drop (95 -> 85 %, 300 cases of which 120 parse cases),
  +20 % cost per call, latency x1.5, all on 300 cases;
* a pure improvement (every metric better): FAIL share;
* A/A with two critical cohorts: family-wise FAIL share.

    python benchmarks/bench_gate.py                  # ~15 min on 2 quiet cores
    python benchmarks/bench_gate.py --reps 100       # a quicker look

The same script measured the code before the gate rework (copy ``src/evalrun/analysis/simulate.py``
into an older tree and point PYTHONPATH at it); see the README's Statistics section.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from evalrun.analysis.simulate import Scenario, verdict_rates

RATES = (0.5, 0.9, 0.99)
SIZES = (30, 100, 300, 1000)
SAMPLES = (1, 3)


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _se(p: float, reps: int) -> float:
    return math.sqrt(max(p * (1 - p), 1 / reps) / reps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=300, help="simulated runs per A/A cell")
    ap.add_argument("--power-reps", type=int, default=400, help="simulated runs per power scenario")
    ap.add_argument("--boot", type=int, default=500, help="latency bootstrap resamples per run")
    ap.add_argument("--seed", type=int, default=20261130)
    ap.add_argument("--skip-aa", action="store_true", help="only the power scenarios")
    args = ap.parse_args()
    t0 = time.perf_counter()
    worst = 0.0
    if not args.skip_aa:
        print(f"## A/A: FAIL share (PASS share), {args.reps} runs per cell, within-case correlation 0.5\n")
        header = "| rate | K | " + " | ".join(f"n = {n}" for n in SIZES) + " |"
        print(header)
        print("|" + " --- |" * (2 + len(SIZES)))
        for rate in RATES:
            for k in SAMPLES:
                cells = []
                for n in SIZES:
                    sc = Scenario(n=n, samples=k, pass_rate=(rate, rate), parse_rate=(rate, rate))
                    r = verdict_rates(sc, reps=args.reps, seed=args.seed + n + k, bootstrap_samples=args.boot)
                    worst = max(worst, r["fail"])
                    cells.append(f"{_pct(r['fail'])} ({_pct(r['pass'])})")
                print(f"| {rate} | {k} | " + " | ".join(cells) + " |", flush=True)
        print(f"\nworst A/A cell: FAIL {_pct(worst)} (Monte Carlo standard error of a cell at 5 %: "
              f"{_pct(_se(0.05, args.reps))})\n")
    scenarios = [
        ("10-pt strict-parse drop 95 -> 85 % (300 cases, 120 parse)", Scenario(n=300, parse_rate=(0.95, 0.85)),
         "parse_strict", ">= 80 %"),
        ("+20 % cost per call (300 cases)", Scenario(n=300, cost_ratio=1.2), "cost_ratio", ">= 80 %"),
        ("latency x1.5 (300 cases)", Scenario(n=300, latency_ratio=1.5), "latency_p50_ratio", ">= 80 %"),
        ("pure improvement (every metric better, 300 cases)",
         Scenario(n=300, pass_rate=(0.9, 0.95), parse_rate=(0.9, 0.97), over_refusal=(0.05, 0.03),
                  known_bad_refusal=(0.9, 0.97), cost_ratio=0.9, latency_ratio=0.9), "", "<= 5 %"),
        ("A/A, two critical cohorts (300 cases, rates 0.9)",
         Scenario(n=300, critical_cohorts=("cohort0", "cohort1")), "", "<= 5 %"),
        ("A/A, two critical cohorts (1000 cases, K = 3, rates 0.5)",
         Scenario(n=1000, samples=3, pass_rate=(0.5, 0.5), parse_rate=(0.5, 0.5),
                  critical_cohorts=("cohort0", "cohort1")), "", "<= 5 %"),
    ]
    print(f"## Scenarios, {args.power_reps} runs each\n")
    print("| scenario | verdict FAIL | target | that rule FAILs | PASS | INCONCLUSIVE |")
    print("| --- | --- | --- | --- | --- | --- |")
    for i, (name, sc, rule, target) in enumerate(scenarios):
        r = verdict_rates(sc, reps=args.power_reps, seed=args.seed + 1000 + i, bootstrap_samples=args.boot,
                          rules=(rule,) if rule else ())
        rule_fail = _pct(r[f"fail:{rule}"]) if rule else "-"
        print(f"| {name} | {_pct(r['fail'])} | {target} | {rule_fail} | {_pct(r['pass'])} | "
              f"{_pct(r['inconclusive'])} |", flush=True)
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
