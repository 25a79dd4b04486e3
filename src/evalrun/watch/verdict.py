"""The stage verdict: a pure function of (plan, stage data, ``at``).

* **rollback** — a rollback trigger's confidence sequence lies wholly in its harm region
  (beyond its FAIL boundary, ``fail_margin``);
* **continue** — every trigger's sequence lies wholly on the safe side (within its PASS
  margin), and the stage's minimum samples, events and duration are met, with no
  sample-ratio mismatch;
* **hold** — anything else, with the reason (inconclusive, a hold-severity trigger in
  harm, split mismatch, stale data, maximum duration reached);
* **no_data** — nothing to measure in the stage's window (exit 4).

Each trigger gets alpha / (number of triggers) of the stage's budget (a union bound,
valid for confidence sequences), and its sequence is the running intersection of the
per-look intervals, so a decision, once reached, is never taken back by later noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from evalrun.watch.data import StageData
from evalrun.watch.metrics import METRICS, MetricDef
from evalrun.watch.plan import Plan, Stage, Trigger
from evalrun.watch.sequential import (
    EVERYTHING,
    Bounds,
    Moments,
    beta_binomial_cs,
    beta_prior,
    difference_cs,
    mean_cs,
    rate_ratio_cs,
    ratio_cs,
)

VerdictStatus = Literal["continue", "rollback", "hold", "no_data"]
TriggerStatus = Literal["harm", "safe", "inconclusive", "no_data"]

EXIT_CODES: dict[str, int] = {"continue": 0, "rollback": 1, "hold": 3, "no_data": 4}
"""Exit code per verdict (2 is a usage error, as in Stage 1)."""

STALE_BUCKETS = 3
"""No candidate unit in this many buckets before ``at``: the data is stale (hold)."""

MAX_LOOKS_SHOWN = 240
"""Sequences keep at most this many looks for reports (decisions use every look)."""


@dataclass(frozen=True, slots=True)
class Look:
    """One point of a sequence: time (end of bucket, epoch s), sample sizes, CS."""

    t: float
    n_candidate: float
    n_baseline: float
    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class TriggerResult:
    """One trigger's standing at ``at``."""

    trigger: Trigger
    metric: MetricDef
    test: str
    """Which sequence: beta_binomial, normal_mixture, ratio_mixture, rate_ratio_count, exceedance."""
    parameter: str
    """What the interval is about, in words."""
    boundary: float
    """The harm boundary: harm when the sequence lies wholly beyond it (the FAIL boundary)."""
    harm_side: Literal["above", "below"]
    alpha: float
    status: TriggerStatus
    bounds: Bounds
    n_candidate: int
    n_baseline: int
    events: int | None
    """Bad events seen (count-based triggers)."""
    baseline_value: float | None
    candidate_value: float | None
    looks: list[Look]
    by_cohort: dict[str, list[Look]] = field(default_factory=dict)
    cohort_status: dict[str, TriggerStatus] = field(default_factory=dict)
    note: str = ""
    safe_boundary: float | None = None
    """The safe boundary (PASS margin) when it differs from ``boundary``: safe when the
    sequence lies wholly on the safe side of it; None: ``boundary`` does both jobs."""

    @property
    def safe_limit(self) -> float:
        """The boundary the sequence must lie within to be safe."""
        return self.boundary if self.safe_boundary is None else self.safe_boundary

    @property
    def reason(self) -> str:
        """One sentence for the verdict's reasons."""
        ci = _fmt_bounds(self.bounds, self.metric, self.test, self.trigger.kind)
        bound = _fmt_value(self.boundary, self.metric, self.test, self.trigger.kind)
        where = {"harm": "wholly in the harm region", "safe": "wholly on the safe side",
                 "inconclusive": "straddles the boundary", "no_data": "has no data yet"}[self.status]
        side = ">" if self.harm_side == "above" else "<"
        safe = ""
        if self.safe_boundary is not None:
            safe_side = "≤" if self.harm_side == "above" else "≥"
            safe = f"; safe: {safe_side} {_fmt_value(self.safe_boundary, self.metric, self.test, self.trigger.kind)}"
        text = (f"{self.trigger.metric} ({self.trigger.title}): {self.parameter} {ci} {where} "
                f"(harm: {side} {bound}{safe}; n={self.n_candidate} candidate, {self.n_baseline} baseline)")
        return text + (f"; {self.note}" if self.note else "")


@dataclass(frozen=True)
class StageVerdict:
    """The verdict of one stage at one time, with everything that produced it."""

    stage: Stage
    status: VerdictStatus
    reasons: list[str]
    at: datetime
    start: datetime | None
    triggers: list[TriggerResult]
    n_units: dict[str, int]
    srm: dict[str, float | bool | None]
    worst_cohort: str | None
    plan_fingerprint: str

    @property
    def exit_code(self) -> int:
        """The documented exit code of this verdict."""
        return EXIT_CODES[self.status]


def measure_of(trigger: Trigger) -> str:
    """The engine measure (aggregated column) a trigger reads."""
    m = METRICS[trigger.metric]
    if m.kind == "quantile":
        return f"{trigger.metric}_{trigger.kind}_exceed"
    return m.column


def stage_measures(plan: Plan, stage: str) -> list[str]:
    """Every measure the stage's triggers read, sorted."""
    return sorted({measure_of(t) for t in plan.stage_triggers(stage)})


def since(data: StageData, start: float) -> StageData:
    """Only the buckets from the one holding ``start`` on: the comparison is between
    concurrent traffic, so baseline units from before the candidate went live do not count."""
    keep = data.buckets + data.bucket_s > start
    if keep.all():
        return data
    return replace(
        data,
        buckets=data.buckets[keep],
        units=data.units[:, :, keep],
        n={k: v[:, :, keep] for k, v in data.n.items()},
        total={k: v[:, :, keep] for k, v in data.total.items()},
        squares={k: v[:, :, keep] for k, v in data.squares.items()},
    )


def _cum(a: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.cumsum(a, axis=-1)


def _sequence(
    trigger: Trigger, metric: MetricDef, data: StageData, cohort: int | None, stage: Stage, alpha: float
) -> tuple[list[Look], Bounds, str, str, float, Literal["above", "below"], int | None]:
    """The trigger's CS at every look (pooled over cohorts, or one cohort)."""
    measure = measure_of(trigger)
    sel = slice(None) if cohort is None else slice(cohort, cohort + 1)

    def arm(a: int, arrays: dict[str, NDArray[np.float64]]) -> NDArray[np.float64]:
        return np.asarray(arrays[measure][a, sel, :].sum(axis=0), dtype=float)

    nb, nc = arm(0, data.n), arm(1, data.n)
    sb, sc = arm(0, data.total), arm(1, data.total)
    qb, qc = arm(0, data.squares), arm(1, data.squares)
    cnb, cnc, csb, csc, cqb, cqc = (_cum(x) for x in (nb, nc, sb, sc, qb, qc))
    binary = metric.kind == "binary"
    n_opt = float(stage.min_samples)
    events: int | None = None
    harm_side: Literal["above", "below"] = "above" if trigger.harm_direction == "increase" else "below"
    boundary = trigger.harm_limit
    per_look: list[Bounds]

    if metric.kind == "quantile":
        q = metric.quantile or 0.5
        boundary, harm_side = 1.0 - q, "above"
        a_, b_ = beta_prior(boundary, n_opt, alpha)
        per_look = [beta_binomial_cs(float(csc[j]), float(cnc[j]), alpha=alpha, a=a_, b=b_)
                    for j in range(len(cnc))]
        test = "exceedance"
        if trigger.kind == "absolute":
            parameter = f"share of candidate units slower than {trigger.limit:g} ms"
        else:
            parameter = (f"share of candidate units slower than {trigger.limit:g}x the baseline's "
                         f"p{round(q * 100)}")
    elif trigger.kind == "absolute" and binary:
        a_, b_ = beta_prior(boundary, n_opt, alpha)
        per_look = [beta_binomial_cs(float(csc[j]), float(cnc[j]), alpha=alpha, a=a_, b=b_)
                    for j in range(len(cnc))]
        test, parameter = "beta_binomial", f"candidate {metric.label}"
    elif trigger.kind == "absolute":
        per_look = [mean_cs(Moments(cnc[j], csc[j], cqc[j]), alpha=alpha, n_opt=n_opt, binary=False)
                    for j in range(len(cnc))]
        test, parameter = "normal_mixture", f"candidate mean {metric.label}"
    elif trigger.kind == "vs_baseline":
        per_look = [
            difference_cs(Moments(cnc[j], csc[j], cqc[j]), Moments(cnb[j], csb[j], cqb[j]),
                          alpha=alpha, n_opt=n_opt, binary=binary)
            for j in range(len(cnc))
        ]
        test, parameter = "normal_mixture", f"difference in {metric.label} (candidate − baseline)"
    elif binary:
        ec = (nc - sc) if metric.invert else sc
        eb = (nb - sb) if metric.invert else sb
        per_look = rate_ratio_cs(ec, eb, nc, nb, alpha=alpha)
        events = round(float(ec.sum() + eb.sum()))
        test, parameter = "rate_ratio_count", f"{metric.event_word} rate ratio (candidate / baseline)"
    else:
        per_look = [
            ratio_cs(Moments(cnc[j], csc[j], cqc[j]), Moments(cnb[j], csb[j], cqb[j]),
                     alpha=alpha, n_opt=n_opt)
            for j in range(len(cnc))
        ]
        test, parameter = "ratio_mixture", f"ratio of mean {metric.label} (candidate / baseline)"

    looks: list[Look] = []
    running = EVERYTHING
    started = False
    for j, b in enumerate(per_look):
        if cnc[j] <= 0:
            continue  # no candidate evidence yet: the sequence starts at the first candidate unit
        if not (math.isnan(b.low) or math.isnan(b.high)):
            running = running.intersect(b) if started else b
            started = True
        else:
            running = Bounds(b.estimate, running.low, running.high)
        looks.append(Look(float(data.buckets[j] + data.bucket_s), float(cnc[j]), float(cnb[j]),
                          running.estimate, running.low, running.high))
    return looks, running, test, parameter, boundary, harm_side, events


def _status(b: Bounds, boundary: float, side: Literal["above", "below"], safe_at: float | None = None) -> TriggerStatus:
    """harm beyond ``boundary`` (checked first, as FAIL is in Stage 1), safe within ``safe_at``
    (default: ``boundary``), else inconclusive."""
    safe_at = boundary if safe_at is None else safe_at
    if math.isnan(b.low) or math.isnan(b.high) or (b.low == -math.inf and b.high == math.inf):
        return "no_data" if math.isnan(b.estimate) else "inconclusive"
    if b.low > b.high:
        return "inconclusive"  # an empty intersection: the data drifted; a human should look
    if side == "above":
        if b.low > boundary:
            return "harm"
        if b.high <= safe_at:
            return "safe"
    else:
        if b.high < boundary:
            return "harm"
        if b.low >= safe_at:
            return "safe"
    return "inconclusive"


def _arm_value(data: StageData, measure: str, arm: int) -> float | None:
    n = float(data.n[measure][arm].sum())
    return float(data.total[measure][arm].sum()) / n if n > 0 else None


def evaluate_trigger(trigger: Trigger, data: StageData, stage: Stage, alpha: float) -> TriggerResult:
    """The trigger's sequence and status, pooled and per cohort."""
    metric = METRICS[trigger.metric]
    measure = measure_of(trigger)
    looks, bounds, test, parameter, boundary, side, events = _sequence(
        trigger, metric, data, None, stage, alpha
    )
    # The PASS margin, where the trigger has one apart from its FAIL boundary (quantile
    # triggers test one threshold: their boundary is the quantile's share, both ways).
    safe_at = trigger.limit if trigger.fail_margin is not None and metric.kind != "quantile" else None
    status = _status(bounds, boundary, side, safe_at)
    note = ""
    if bounds.low > bounds.high:
        note = "the sequence's running intersection is empty (the data drifted); look at the data"
    if status == "safe" and events is not None and events < stage.min_events:
        status = "inconclusive"
        note = f"{events} {metric.event_word}s seen, min_events is {stage.min_events}"
    if metric.kind == "quantile" and trigger.kind == "ratio" and data.thresholds.get(measure) is None:
        status, note = "no_data", "no baseline latency to set the threshold"
    n_c = int(data.n[measure][1].sum()) if data.cohorts else 0
    n_b = int(data.n[measure][0].sum()) if data.cohorts else 0
    if n_c == 0:
        status = "no_data"
    by_cohort: dict[str, list[Look]] = {}
    cohort_status: dict[str, TriggerStatus] = {}
    if len(data.cohorts) > 1:
        for ci, name in enumerate(data.cohorts):
            c_looks, c_bounds, *_ = _sequence(trigger, metric, data, ci, stage, alpha)
            if c_looks:
                by_cohort[name] = _thin(c_looks)
                cohort_status[name] = _status(c_bounds, boundary, side, safe_at)
    return TriggerResult(
        trigger=trigger,
        metric=metric,
        test=test,
        parameter=parameter,
        boundary=boundary,
        harm_side=side,
        alpha=alpha,
        status=status,
        bounds=bounds,
        n_candidate=n_c,
        n_baseline=n_b,
        events=events,
        baseline_value=_arm_value(data, measure, 0) if data.cohorts else None,
        candidate_value=_arm_value(data, measure, 1) if data.cohorts else None,
        looks=_thin(looks),
        by_cohort=by_cohort,
        cohort_status=cohort_status,
        note=note,
        safe_boundary=safe_at,
    )


def _thin(looks: list[Look]) -> list[Look]:
    if len(looks) <= MAX_LOOKS_SHOWN:
        return looks
    step = math.ceil(len(looks) / MAX_LOOKS_SHOWN)
    kept = looks[::step]
    return kept if kept[-1] is looks[-1] else [*kept, looks[-1]]


def _srm(plan: Plan, stage: Stage, data: StageData) -> dict[str, float | bool | None]:
    if stage.traffic_share is None or not data.cohorts:
        return {"expected": stage.traffic_share, "observed": None, "low": None, "high": None,
                "mismatch": False}
    nc = _cum(data.units[1].sum(axis=0))
    nt = _cum(data.units.sum(axis=(0, 1)))
    a_, b_ = beta_prior(stage.traffic_share, stage.min_samples / stage.traffic_share, plan.srm_alpha)
    running = EVERYTHING
    started = False
    for j in range(len(nt)):
        if nc[j] <= 0:
            continue
        b = beta_binomial_cs(float(nc[j]), float(nt[j]), alpha=plan.srm_alpha, a=a_, b=b_)
        running = running.intersect(b) if started else b
        started = True
    share = stage.traffic_share
    mismatch = started and not (running.low <= share <= running.high)
    observed = float(nc[-1] / nt[-1]) if len(nt) and nt[-1] > 0 else None
    return {"expected": share, "observed": observed, "low": running.low if started else None,
            "high": running.high if started else None, "mismatch": bool(mismatch)}


def _worst_cohort(results: list[TriggerResult]) -> str | None:
    score: dict[str, tuple[int, int]] = {}
    for r in results:
        for cohort, st in r.cohort_status.items():
            harm, rb = score.get(cohort, (0, 0))
            score[cohort] = (harm + (st == "harm"), rb + (st == "harm" and r.trigger.severity == "rollback"))
    if not score:
        return None
    return sorted(score, key=lambda c: (-score[c][1], -score[c][0], c))[0]


def decide_stage(plan: Plan, stage_name: str, data: StageData, at: datetime) -> StageVerdict:
    """The verdict of ``stage_name`` at ``at`` from the engine's ``data`` (pure)."""
    stage = plan.stage(stage_name)
    triggers = plan.stage_triggers(stage_name)
    alpha = plan.alpha / len(triggers)
    first_c = data.first_ts.get("candidate")
    start = stage.start or (datetime.fromtimestamp(first_c, UTC) if first_c is not None else None)
    if start is not None:
        data = since(data, start.timestamp())
    results = [evaluate_trigger(t, data, stage, alpha) for t in triggers]
    units = data.n_units if data.cohorts else {"baseline": 0, "candidate": 0}
    srm = _srm(plan, stage, data)
    reasons: list[str] = []
    status: VerdictStatus

    comparative = any(t.kind != "absolute" for t in triggers)
    harm_rb = [r for r in results if r.status == "harm" and r.trigger.severity == "rollback"]
    harm_hold = [r for r in results if r.status == "harm" and r.trigger.severity == "hold"]
    if units["candidate"] == 0:
        status = "no_data"
        reasons.append("no candidate traffic in this stage's window yet (check the labels, the "
                       "cohort rule and the time window)")
    elif comparative and units["baseline"] == 0:
        status = "no_data"
        reasons.append("no baseline traffic in this stage's window: comparisons are impossible")
    elif harm_rb:
        status = "rollback"
        reasons += [r.reason for r in harm_rb]
    else:
        reasons += [r.reason for r in harm_hold]
        if srm["mismatch"]:
            reasons.append(
                f"sample-ratio mismatch: the candidate has {float(srm['observed'] or 0) * 100:.2f}% of the "
                f"stage's traffic, expected {float(srm['expected'] or 0) * 100:g}% (sequence "
                f"[{float(srm['low'] or 0) * 100:.2f}%, {float(srm['high'] or 0) * 100:.2f}%]): the split "
                "is broken, so comparisons cannot be trusted"
            )
        duration = (at - start) if start is not None else timedelta(0)
        last_c = data.last_ts.get("candidate")
        stale = last_c is not None and at.timestamp() - last_c > STALE_BUCKETS * data.bucket_s
        if stale:
            assert last_c is not None
            reasons.append(f"stale data: no candidate unit since "
                           f"{datetime.fromtimestamp(last_c, UTC):%Y-%m-%d %H:%M:%S} UTC")
        undecided = [r for r in results if r.status != "safe" and r.status != "harm"]
        minimums: list[str] = []
        if units["candidate"] < stage.min_samples:
            minimums.append(f"{units['candidate']} of min_samples {stage.min_samples} candidate units")
        if duration < stage.min_duration:
            minimums.append(f"live for {_td(duration)} of min_duration {_td(stage.min_duration)}")
        all_safe = not undecided and not harm_hold
        if all_safe and not minimums and not srm["mismatch"] and not stale:
            status = "continue"
            reasons.append(f"every trigger is on its safe side ({len(results)} triggers, "
                           f"{units['candidate']} candidate units, live {_td(duration)})")
        else:
            status = "hold"
            reasons += [r.reason for r in undecided]
            if minimums:
                reasons.append("minimums not met: " + "; ".join(minimums))
            if stage.max_duration is not None and duration >= stage.max_duration:
                reasons.insert(0, f"max_duration {_td(stage.max_duration)} reached without a decision: "
                                  "a human must decide")
    return StageVerdict(
        stage=stage,
        status=status,
        reasons=reasons,
        at=at,
        start=start,
        triggers=results,
        n_units=units,
        srm=srm,
        worst_cohort=_worst_cohort(results),
        plan_fingerprint=plan.fingerprint(),
    )


def _td(td: timedelta) -> str:
    s = int(td.total_seconds())
    if s >= 86400:
        return f"{s // 86400}d{(s % 86400) // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s"


def _fmt_value(v: float, m: MetricDef, test: str, kind: str = "") -> str:
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if kind == "vs_baseline" and m.kind == "binary":
        return f"{v * 100:+.2f} pts"
    if test in ("exceedance", "beta_binomial") or (m.kind == "binary" and test == "normal_mixture"):
        return f"{v * 100:.2f}%"
    if test in ("rate_ratio_count", "ratio_mixture"):
        return f"{v:.3f}x"
    return f"{v:.4g}"


def _fmt_bounds(b: Bounds, m: MetricDef, test: str, kind: str = "") -> str:
    est = "n/a" if math.isnan(b.estimate) else _fmt_value(b.estimate, m, test, kind)
    if math.isnan(b.low) or math.isnan(b.high):
        return f"{est} [no interval yet]"
    return f"{est} [{_fmt_value(b.low, m, test, kind)}, {_fmt_value(b.high, m, test, kind)}]"
