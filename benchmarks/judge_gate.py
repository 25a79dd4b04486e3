"""Seeded simulation of the judge rules as the gate decides them (compare → gate wiring).

Run: ``python benchmarks/judge_gate.py [--reps N] [--cases N]`` (~1 min at the defaults).

Each repetition draws a suite of correlated cases (a case's difficulty is shared by both
sides), a true pass per (case, side), a judge with sensitivity Se and specificity Sp
grading every output, and a fresh calibration set of 40 human-passed and 40 human-failed
items graded by the same judge. The judge pass rate metric is built by
``analysis.compare.binary_metric`` and ``analysis.judged.adjust_rate`` and decided by
``analysis.gate.evaluate_rules`` (margin −5 points, fail margin 0, α = 0.05), exactly as in
a run. Printed per scenario: how often the rule PASSes and FAILs, calibrated (corrected)
and — for comparison — the same judge trusted blindly (uncorrected, allowed to PASS).

What must hold: an unchanged candidate FAILs ≤ 5 %; a true regression of exactly the margin
PASSes ≤ 5 % when corrected (the blindly trusted judge passes it far more often, because
its errors shrink the drop by J = Se + Sp − 1).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import pandas as pd

from evalrun.analysis.compare import CompareSettings, binary_metric
from evalrun.analysis.gate import evaluate_rules
from evalrun.analysis.judged import JudgeEvidence, adjust_rate
from evalrun.judging import Reliability, binary_agreement
from evalrun.project.config import GateConfig

GATE = GateConfig()
SETTINGS = CompareSettings()


def one_run(rng: np.random.Generator, *, n: int, p_base: float, delta: float, se: float, sp: float,
            calibrated: bool) -> str:
    """The judge_pass_rate rule's status on one simulated suite."""
    logit = np.log(p_base / (1 - p_base)) + rng.normal(0.0, 1.0, n)  # case difficulty, shared by both sides
    pb = 1 / (1 + np.exp(-logit))
    pc = np.clip(pb + delta, 0.0, 1.0)
    true_b, true_c = rng.random(n) < pb, rng.random(n) < pc

    def judged(truth: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        u = rng.random(truth.size)
        return np.where(truth, u < se, u >= sp)

    jb, jc = judged(true_b), judged(true_c)
    rows = [{"case_id": f"c{i:04d}", "side": side, "judge_pass": float(v)}
            for i in range(n) for side, v in (("baseline", jb[i]), ("candidate", jc[i]))]
    entry = binary_metric(pd.DataFrame(rows), "judge_pass_rate", "Judge pass rate", "judge_pass", True, SETTINGS, 1)
    ev = JudgeEvidence(fail_at={"judge_pass_rate": 0.0}, confidence=SETTINGS.confidence)
    if calibrated:
        human = np.array([True] * 40 + [False] * 40)
        agreement = binary_agreement(list(human), list(judged(human).astype(float)), confidence=SETTINGS.confidence)
        ev.rates = agreement.error_rates()
        # Studied here: the statistic, not the minimum-agreement policy (a judge below it decides nothing).
        ev.rubric = Reliability("reliable", True, True)
    else:
        ev.rubric = Reliability("reliable", True, True)  # a judge trusted blindly
    adjust_rate(entry, list(jb.astype(float)), list(jc.astype(float)), ev)
    (result,) = evaluate_rules([entry], GATE, "overall", only=["judge_pass_rate"])
    return result.status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--cases", type=int, default=300)
    args = parser.parse_args()
    t0 = time.perf_counter()
    print(f"judge_pass_rate rule, {args.cases} cases, {args.reps} reps, margin -5 pts, fail margin 0, alpha 0.05")
    print(f"{'judge Se/Sp':>12} {'true change':>12} {'mode':>12} {'PASS':>7} {'FAIL':>7}")
    for se, sp in ((0.9, 0.9), (0.85, 0.75)):
        for delta in (0.0, -0.05, -0.10):
            for calibrated in (True, False):
                rng = np.random.default_rng(20261130)
                statuses = [one_run(rng, n=args.cases, p_base=0.7, delta=delta, se=se, sp=sp, calibrated=calibrated)
                            for _ in range(args.reps)]
                mode = "corrected" if calibrated else "uncorrected"
                print(f"{se:.2f}/{sp:.2f}".rjust(12), f"{delta * 100:+.0f} pts".rjust(12), mode.rjust(12),
                      f"{statuses.count('pass') / args.reps:7.3f}", f"{statuses.count('fail') / args.reps:7.3f}")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
