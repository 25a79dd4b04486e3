"""The judge pass rate rule as compare and the gate decide it, by seeded simulation.

A suite of correlated cases, a judge with known sensitivity and specificity, a fresh
calibration set per repetition (benchmarks/judge_gate.py runs more repetitions and prints
the table). What the wiring must keep: an unchanged candidate rarely FAILs, and a true
regression of exactly the margin PASSes rarely once the judge's errors are corrected —
less often than when the same judge is trusted blindly.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "judge_gate.py"


@pytest.fixture(scope="module")
def one_run():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("judge_gate_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["judge_gate_bench"] = module
    spec.loader.exec_module(module)
    return module.one_run


def _rates(one_run, delta: float, calibrated: bool, reps: int = 120) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    statuses = [one_run(rng, n=300, p_base=0.7, delta=delta, se=0.85, sp=0.8, calibrated=calibrated)
                for _ in range(reps)]
    return statuses.count("pass") / reps, statuses.count("fail") / reps


def test_an_unchanged_candidate_rarely_fails_the_judge_rule(one_run) -> None:  # type: ignore[no-untyped-def]
    _, fail = _rates(one_run, 0.0, calibrated=True)
    assert fail <= 0.10  # nominal 5 %; Monte Carlo SE at 120 reps is 2 points


def test_correction_keeps_a_margin_sized_regression_from_passing(one_run) -> None:  # type: ignore[no-untyped-def]
    corrected, _ = _rates(one_run, -0.05, calibrated=True)
    blind, _ = _rates(one_run, -0.05, calibrated=False)
    assert corrected <= 0.10
    assert corrected < blind


def test_a_large_regression_fails(one_run) -> None:  # type: ignore[no-untyped-def]
    _, fail = _rates(one_run, -0.20, calibrated=True, reps=40)
    assert fail >= 0.8
