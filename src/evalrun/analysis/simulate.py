"""Seeded simulation of paired runs, decided by evalrun's own compare and gate functions.

This is how the gate's error rates are measured (``tests/test_gate_simulation.py``,
``benchmarks/bench_gate.py``), and how a team can measure them for its own rules and suite
shape: build a :class:`Scenario`, then :func:`verdict_rates` runs it many times through
:func:`evalrun.analysis.compare.metric_table` and :func:`evalrun.analysis.gate.decide_verdict` — the very
code a real ``evalrun compare`` runs on its results — and counts PASS / FAIL / INCONCLUSIVE.

The model of a suite (documented so the numbers can be judged):

* cases of three kinds — format-sensitive (a strict parse and a schema check), known-bad
  (should be refused) and representative — spread over ``cohorts`` cohorts;
* every binary outcome (pass, parse, schema shape, refusal) of a case has a per-case
  success probability drawn from a Beta distribution whose intra-case correlation is
  ``icc``: any two calls of one case — both sides, all K samples — have outcomes correlated
  ``icc``. The candidate's probability for a case is the same quantile of its own Beta
  (a case hard for the baseline stays hard for the candidate), so an A/A run has identical
  per-case probabilities on both sides and a change moves every case the same way;
* a call passes when its own content check passes and, for format cases, it parses and
  its shape is valid, for known-bad cases it refuses;
* completion tokens, prompt tokens and latency are log-normal with a per-case component
  (log-scale correlation ``icc`` between calls of a case); cost = tokens × gpt-4o-mini list
  prices. ``cost_ratio`` scales completion tokens so the expected cost per call changes by
  exactly that factor; ``latency_ratio`` scales every candidate latency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evalrun.project.cases import Case
from evalrun.project.config import GateConfig
from evalrun.records import CallResult, CaseKind, Score

__all__ = ["Scenario", "simulate_calls", "simulate_verdict", "verdict_rates"]

PRICE_IN = 0.15e-6
PRICE_OUT = 0.60e-6
KINDS = ("format_sensitive", "known_bad", "representative")


@dataclass(frozen=True)
class Scenario:
    """One simulated world: suite shape and the (baseline, candidate) truth of every metric.

    Rates are per call; ``cost_ratio`` and ``latency_ratio`` are candidate / baseline.
    """

    n: int = 300
    samples: int = 1
    icc: float = 0.5
    pass_rate: tuple[float, float] = (0.9, 0.9)
    parse_rate: tuple[float, float] = (0.9, 0.9)
    shape_rate: tuple[float, float] = (0.98, 0.98)
    over_refusal: tuple[float, float] = (0.05, 0.05)
    known_bad_refusal: tuple[float, float] = (0.9, 0.9)
    cost_ratio: float = 1.0
    latency_ratio: float = 1.0
    kind_shares: tuple[float, float, float] = (0.4, 0.1, 0.5)
    cohorts: int = 4
    completion_sd: float = 0.6
    latency_sd: float = 0.5
    critical_cohorts: tuple[str, ...] = field(default=())

    def kinds(self) -> list[CaseKind]:
        """The kind of each case, in case order (shares rounded, the rest representative)."""
        n_fmt = round(self.n * self.kind_shares[0])
        n_kb = round(self.n * self.kind_shares[1])
        counts: tuple[tuple[CaseKind, int], ...] = (
            ("format_sensitive", n_fmt), ("known_bad", n_kb), ("representative", self.n - n_fmt - n_kb))
        return [kind for kind, count in counts for _ in range(count)]


def _case_probs(rng: np.random.Generator, n: int, rates: tuple[float, float], icc: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-case success probabilities on each side: comonotone Beta quantiles (see module doc)."""
    from scipy.stats import beta

    u = rng.random(n)
    s = 1.0 / icc - 1.0
    out = []
    for p in rates:
        if p <= 0.0 or p >= 1.0:
            out.append(np.full(n, float(p)))
        else:
            out.append(np.clip(beta.ppf(u, p * s, (1.0 - p) * s), 0.0, 1.0))
    return out[0], out[1]


def _lognormal(rng: np.random.Generator, n: int, k: int, sd: float, icc: float) -> np.ndarray:
    """exp(case part + call part) for both sides: array (2, n, k), log-scale correlation icc."""
    case = rng.standard_normal(n)[None, :, None] * sd * math.sqrt(icc)
    call = rng.standard_normal((2, n, k)) * sd * math.sqrt(1.0 - icc)
    return np.asarray(np.exp(case + call))


def simulate_calls(scenario: Scenario, rng: np.random.Generator) -> tuple[list[Case], list[CallResult], list[Score]]:
    """One paired run of ``scenario``: cases, call results and scores (both sides, K samples)."""
    sc = scenario
    n, k = sc.n, sc.samples
    kinds = sc.kinds()
    cases = [
        Case(id=f"c{i:05d}", kind=kinds[i], cohort=f"cohort{i % sc.cohorts}", tags=[], vars={}, messages=None,
             expect=[], file="simulated")
        for i in range(n)
    ]
    probs = {
        "pass": _case_probs(rng, n, sc.pass_rate, sc.icc),
        "parse": _case_probs(rng, n, sc.parse_rate, sc.icc),
        "shape": _case_probs(rng, n, sc.shape_rate, sc.icc),
        "over": _case_probs(rng, n, sc.over_refusal, sc.icc),
        "kb": _case_probs(rng, n, sc.known_bad_refusal, sc.icc),
    }
    draws = {name: np.stack([rng.random((n, k)) < p[side][:, None] for side in (0, 1)]) for name, p in probs.items()}
    completion = 60.0 * _lognormal(rng, n, k, sc.completion_sd, sc.icc)
    prompt = np.round(400.0 * np.exp(0.3 * rng.standard_normal(n)))
    # Scale the candidate's completion tokens so its expected cost per call is cost_ratio x.
    mean_prompt = 400.0 * math.exp(0.045)
    mean_completion = 60.0 * math.exp(sc.completion_sd**2 / 2)
    base_cost = PRICE_IN * mean_prompt + PRICE_OUT * mean_completion
    factor = 1.0 + (sc.cost_ratio - 1.0) * base_cost / (PRICE_OUT * mean_completion)
    completion[1] *= factor
    completion = np.maximum(1.0, np.round(completion))
    latency = 0.8 * _lognormal(rng, n, k, sc.latency_sd, sc.icc)
    latency[1] *= sc.latency_ratio
    results: list[CallResult] = []
    scores: list[Score] = []
    for s_idx, side in enumerate(("baseline", "candidate")):
        for i, case in enumerate(cases):
            for j in range(k):
                fmt = case.kind == "format_sensitive"
                kb = case.kind == "known_bad"
                parse = bool(draws["parse"][s_idx, i, j]) if fmt else None
                schema = (bool(parse and draws["shape"][s_idx, i, j])) if fmt else None
                refused = bool(draws["kb"][s_idx, i, j]) if kb else bool(draws["over"][s_idx, i, j])
                passed = bool(draws["pass"][s_idx, i, j]) and (not fmt or bool(schema)) and (not kb or refused)
                pt, ct = int(prompt[i]), int(completion[s_idx, i, j])
                results.append(CallResult(
                    case_id=case.id, side=side, sample=j, model="sim", output="", prompt_tokens=pt,  # type: ignore[arg-type]
                    completion_tokens=ct, latency_s=float(latency[s_idx, i, j]),
                    cost_usd=pt * PRICE_IN + ct * PRICE_OUT, cost_status="config", attempts=1,
                ))
                scores.append(Score(checks=[], passed=passed, parse_strict=parse, parse_lenient=parse,
                                    schema_valid=schema, refused=refused, should_refuse=kb))
    return cases, results, scores


def simulate_verdict(
    scenario: Scenario, gate: GateConfig, rng: np.random.Generator, *, bootstrap_samples: int | None = None
) -> dict[str, Any]:
    """One simulated run through compare and the gate: the verdict as summary.json has it."""
    from evalrun.analysis import compare as cmp
    from evalrun.analysis.gate import decide_verdict

    cases, results, scores = simulate_calls(scenario, rng)
    settings = cmp.CompareSettings(
        alpha=gate.alpha, bootstrap_samples=bootstrap_samples or gate.bootstrap_samples,
        seed=int(rng.integers(0, 2**31)),
    )
    frame = cmp.build_frame(cases, results, scores)
    overall = cmp.metric_table(frame, settings, scenario.samples)
    critical = list(gate.critical_cohorts)
    cohorts: dict[str, Any] = {}
    if critical:
        cohorts = cmp.slice_tables(frame[frame["cohort"].isin(critical)], "cohort", settings, scenario.samples,
                                   critical=critical)
    return decide_verdict(overall, cohorts, gate).to_dict()


def verdict_rates(
    scenario: Scenario, gate: GateConfig | None = None, *, reps: int, seed: int, bootstrap_samples: int | None = None,
    rules: Sequence[str] = (),
) -> dict[str, float]:
    """Share of ``reps`` simulated runs with each verdict (and, for ``rules``, each rule's FAIL share)."""
    if gate is None:
        gate = GateConfig(critical_cohorts=list(scenario.critical_cohorts))
    elif scenario.critical_cohorts and not gate.critical_cohorts:
        gate = gate.model_copy(update={"critical_cohorts": list(scenario.critical_cohorts)})
    rng = np.random.default_rng(seed)
    counts = {"PASS": 0, "FAIL": 0, "INCONCLUSIVE": 0, "COULD_NOT_MEASURE": 0}
    rule_fails = dict.fromkeys(rules, 0)
    for _ in range(reps):
        verdict = simulate_verdict(scenario, gate, rng, bootstrap_samples=bootstrap_samples)
        counts[verdict["status"]] += 1
        for r in verdict["rules"]:
            if r["rule"] in rule_fails and r["status"] == "fail":
                rule_fails[r["rule"]] += 1
    out = {k.lower(): v / reps for k, v in counts.items()}
    out.update({f"fail:{k}": v / reps for k, v in rule_fails.items()})
    return out

