"""Seeded simulation of a stage's sufficient statistics, for tests and benchmarks.

Draws per-unit outcomes for a baseline and a candidate arm look by look (one time bucket
per look), aggregates them exactly as the engine would (n, Σx, Σx² per measure and
bucket) and hands the result to ``decide_stage``: the statistics are proven on the very
code path that decides real rollouts, minus the database.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np

from evalrun.watch.data import StageData
from evalrun.watch.plan import Plan
from evalrun.watch.verdict import StageVerdict, TriggerResult, decide_stage, measure_of

T0 = 1_790_000_000
"""Simulated time origin (epoch seconds)."""


@dataclass(frozen=True)
class ArmModel:
    """Per-unit outcome model of one arm."""

    task_success: float = 0.90
    parse_ok: float = 0.99
    """Strict parse rate over units that expect JSON."""
    json_share: float = 0.5
    """Share of units that expect JSON (have a parse outcome)."""
    schema_ok: float = 0.99
    """Schema-valid share of the JSON units that parsed (a parse failure is a schema failure)."""
    error: float = 0.005
    tool_share: float = 0.2
    tool_ok: float = 0.98
    over_refusal: float = 0.02
    known_bad_share: float = 0.01
    bad_refused: float = 0.95
    tokens_mean: float = 120.0
    tokens_sd: float = 60.0
    cost_per_token: float = 2e-6
    cost_scale: float = 1.0
    """Multiplies the cost (1.3 = 30 % more per unit)."""
    latency_median_ms: float = 800.0
    latency_sigma: float = 0.5


@dataclass(frozen=True)
class Scenario:
    """A stage's traffic: looks of ``per_look`` candidate units at share ``share``."""

    looks: int = 100
    per_look: int = 100
    share: float = 0.05
    baseline: ArmModel = field(default_factory=ArmModel)
    candidate: ArmModel = field(default_factory=ArmModel)
    cohorts: tuple[str, ...] = ("canary",)


def _draw(model: ArmModel, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-unit values (NaN = no value) for every measure the engine knows."""
    nan = np.nan
    err = rng.random(n) < model.error
    json = rng.random(n) < model.json_share
    tool = rng.random(n) < model.tool_share
    bad = rng.random(n) < model.known_bad_share
    refused = np.where(bad, rng.random(n) < model.bad_refused, rng.random(n) < model.over_refusal)
    # Gamma tokens: positive, right-skewed, mean and sd as given.
    k = (model.tokens_mean / model.tokens_sd) ** 2
    tokens = rng.gamma(k, model.tokens_mean / k, n)
    latency = model.latency_median_ms * np.exp(model.latency_sigma * rng.standard_normal(n))
    ok = ~err
    parsed = rng.random(n) < model.parse_ok
    return {
        "task_success": np.where(ok, (rng.random(n) < model.task_success).astype(float), nan),
        "parse_ok": np.where(json & ok, parsed.astype(float), nan),
        "schema_ok": np.where(json & ok, (parsed & (rng.random(n) < model.schema_ok)).astype(float), nan),
        "tool_ok": np.where(tool & ok, (rng.random(n) < model.tool_ok).astype(float), nan),
        "over_refused": np.where(~bad & ok, refused.astype(float), nan),
        "bad_refused": np.where(bad & ok, refused.astype(float), nan),
        "is_error": err.astype(float),
        "output_tokens": np.where(ok, tokens, nan),
        "cost_usd": tokens * model.cost_per_token * model.cost_scale,
        "latency_ms": np.where(ok, latency, nan),
    }


def simulate_stage(plan: Plan, stage: str, scenario: Scenario, seed: int) -> StageData:
    """Draw a scenario and aggregate it into the engine's ``StageData``."""
    rng = np.random.default_rng(seed)
    measures = sorted({measure_of(t) for t in plan.stage_triggers(stage)})
    n_base = max(round(scenario.per_look * (1 - scenario.share) / scenario.share), 1)
    cohorts = list(scenario.cohorts)
    shape = (2, len(cohorts), scenario.looks)
    units = np.zeros(shape)
    n = {m: np.zeros(shape) for m in measures}
    s = {m: np.zeros(shape) for m in measures}
    q = {m: np.zeros(shape) for m in measures}
    latencies: dict[int, list[np.ndarray]] = {0: [], 1: []}
    draws: list[tuple[int, int, int, dict[str, np.ndarray]]] = []
    for j in range(scenario.looks):
        for a, (model, size) in enumerate(((scenario.baseline, n_base), (scenario.candidate, scenario.per_look))):
            per_cohort = np.full(len(cohorts), size // len(cohorts))
            per_cohort[: size % len(cohorts)] += 1
            for ci, m_units in enumerate(per_cohort):
                values = _draw(model, int(m_units), rng)
                units[a, ci, j] = m_units
                latencies[a].append(values["latency_ms"])
                draws.append((a, ci, j, values))
    base_lat = np.concatenate(latencies[0]) if latencies[0] else np.zeros(0)
    base_lat = base_lat[~np.isnan(base_lat)]
    thresholds: dict[str, float | None] = {}
    for t in plan.stage_triggers(stage):
        measure = measure_of(t)
        if not measure.endswith("_exceed"):
            continue
        from evalrun.watch.metrics import METRICS

        if t.kind == "absolute":
            thresholds[measure] = t.limit
        else:
            qv = METRICS[t.metric].quantile or 0.5
            thresholds[measure] = float(np.quantile(base_lat, qv)) * t.limit if base_lat.size else None
    for a, ci, j, values in draws:
        for m in measures:
            if m in thresholds:
                lat = values["latency_ms"]
                thr = thresholds[m]
                x = np.where(np.isnan(lat), np.nan, (lat > (thr or np.inf)).astype(float))
            else:
                x = values[m]
            valid = ~np.isnan(x)
            n[m][a, ci, j] = valid.sum()
            s[m][a, ci, j] = x[valid].sum()
            q[m][a, ci, j] = (x[valid] ** 2).sum()
    bucket_s = int(plan.bucket.total_seconds())
    buckets = T0 + bucket_s * np.arange(scenario.looks, dtype=np.int64)
    end = float(buckets[-1] + bucket_s - 1) if scenario.looks else None
    return StageData(
        bucket_s=bucket_s,
        cohorts=cohorts,
        buckets=buckets,
        units=units,
        n=n,
        total=s,
        squares=q,
        first_ts={"baseline": float(T0), "candidate": float(T0)},
        last_ts={"baseline": end, "candidate": end},
        thresholds=thresholds,
    )


def simulated_verdict(
    plan: Plan, stage: str, scenario: Scenario, seed: int
) -> tuple[StageVerdict, StageData]:
    """The verdict right after the scenario's last look, and the data it saw."""
    data = simulate_stage(plan, stage, scenario, seed)
    at = datetime.fromtimestamp(T0 + scenario.looks * data.bucket_s, UTC)
    return decide_stage(plan, stage, data, at), data


def first_rollback(verdict: StageVerdict, data: StageData, metric: str | None = None) -> float | None:
    """Candidate units seen when a rollback trigger's sequence first entered its harm region
    (only ``metric``'s triggers when given)."""
    ends = data.buckets + data.bucket_s
    cum_units = np.cumsum(data.units[1].sum(axis=0))
    firsts: list[float] = []
    for r in verdict.triggers:
        if r.trigger.severity != "rollback" or (metric is not None and r.trigger.metric != metric):
            continue
        for look in r.looks:
            inside = look.low > r.boundary if r.harm_side == "above" else look.high < r.boundary
            if inside:
                j = int(np.searchsorted(ends, look.t))
                firsts.append(float(cum_units[min(j, len(cum_units) - 1)]))
                break
    return min(firsts) if firsts else None


def first_continue(verdict: StageVerdict, data: StageData) -> float | None:
    """Candidate units seen at the first look where the stage could continue: every trigger's
    sequence on its safe side (and none in harm), min_samples and min_duration met.

    Read off the sequences the verdict kept (one per look up to ``MAX_LOOKS_SHOWN`` looks),
    so it ignores ``min_events`` and the traffic-split check, which ``decide_stage`` applies
    at the final look only: use it with ``min_events: 0`` and a correct split.
    """
    stage = verdict.stage
    ends = data.buckets + data.bucket_s
    cum_units = np.cumsum(data.units[1].sum(axis=0))
    start = verdict.start.timestamp() if verdict.start is not None else float(data.buckets[0])
    for j, t in enumerate(ends):
        if cum_units[j] < stage.min_samples or t - start < stage.min_duration.total_seconds():
            continue
        if all(_safe_at(r, float(t)) for r in verdict.triggers):
            return float(cum_units[j])
    return None


def _safe_at(r: TriggerResult, t: float) -> bool:
    """Was the trigger's sequence safe (and not harmful) at the look ending at ``t``?"""
    looks = [lk for lk in r.looks if lk.t <= t]
    if not looks:
        return False
    lk = looks[-1]
    if not (math.isfinite(lk.low) and math.isfinite(lk.high)) or lk.low > lk.high:
        return False
    if r.harm_side == "above":
        return not lk.low > r.boundary and lk.high <= r.safe_limit
    return not lk.high < r.boundary and lk.low >= r.safe_limit


def with_candidate(scenario: Scenario, **changes: float) -> Scenario:
    """The scenario with the candidate's model changed (e.g. ``parse_ok=0.97``)."""
    return replace(scenario, candidate=replace(scenario.candidate, **changes))
