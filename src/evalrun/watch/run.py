"""`evalrun watch` as a library call: plan → engine → stage data → verdict → files."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evalrun import __version__
from evalrun.analysis.stats import finite_or_none
from evalrun.errors import UserInputError
from evalrun.watch.data import Sample, StageData
from evalrun.watch.plan import Plan, load_plan, now_utc
from evalrun.watch.sources import describe_source
from evalrun.watch.verdict import StageVerdict, TriggerResult, decide_stage, since

VERDICT_FORMAT = 1
"""verdict.json format version."""


@dataclass
class WatchOutcome:
    """Everything one `evalrun watch` produced."""

    plan: Plan
    plan_path: Path
    verdict: StageVerdict
    data: StageData
    samples: list[Sample]
    summary: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 continue, 1 rollback, 3 hold, 4 no data."""
        return self.verdict.exit_code


def _trigger_dict(r: TriggerResult) -> dict[str, Any]:
    t = r.trigger
    return {
        "metric": t.metric,
        "kind": t.kind,
        "title": t.title,
        "severity": t.severity,
        "status": r.status,
        "test": r.test,
        "parameter": r.parameter,
        "boundary": r.boundary,
        "safe_boundary": r.safe_limit,
        "harm_side": r.harm_side,
        "alpha": r.alpha,
        "estimate": finite_or_none(r.bounds.estimate),
        "low": finite_or_none(r.bounds.low) if not math.isinf(r.bounds.low) else None,
        "high": finite_or_none(r.bounds.high) if not math.isinf(r.bounds.high) else None,
        "n_candidate": r.n_candidate,
        "n_baseline": r.n_baseline,
        "events": r.events,
        "baseline_value": finite_or_none(r.baseline_value),
        "candidate_value": finite_or_none(r.candidate_value),
        "cohorts": {c: s for c, s in sorted(r.cohort_status.items())},
        "reason": r.reason,
    }


def verdict_dict(outcome_plan: Plan, verdict: StageVerdict, data: StageData, source: str) -> dict[str, Any]:
    """verdict.json: stable keys, sorted; what Argo/Flagger and people read."""
    stage = verdict.stage
    return {
        "format_version": VERDICT_FORMAT,
        "evalrun_version": __version__,
        "plan": {"name": outcome_plan.name, "fingerprint": verdict.plan_fingerprint,
                 "alpha": outcome_plan.alpha, "unit": outcome_plan.unit,
                 "bucket_s": int(outcome_plan.bucket.total_seconds())},
        "source": source,
        "stage": stage.name,
        "owner": stage.owner,
        "cohort_rule": stage.cohort,
        "verdict": verdict.status,
        "exit_code": verdict.exit_code,
        "reasons": verdict.reasons,
        "at": verdict.at.astimezone(UTC).isoformat(timespec="seconds"),
        "start": verdict.start.astimezone(UTC).isoformat(timespec="seconds") if verdict.start else None,
        "labels": {"baseline": outcome_plan.labels.resolved("baseline"),
                   "candidate": outcome_plan.labels.resolved("candidate")},
        "units": verdict.n_units,
        "srm": {k: (finite_or_none(v) if isinstance(v, float) else v) for k, v in verdict.srm.items()},
        "worst_cohort": verdict.worst_cohort,
        "cohorts": data.cohorts,
        "latency_quantiles_ms": data.quantiles,
        "triggers": [_trigger_dict(r) for r in verdict.triggers],
        "queries": data.queries,
    }


def parse_at(value: str | None) -> datetime:
    """``--at`` (ISO 8601 with a zone; ``Z`` allowed) or now."""
    if value is None:
        return now_utc()
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UserInputError(f"not an ISO 8601 time: {value!r}", field="--at") from None
    if dt.tzinfo is None:
        raise UserInputError("give a time zone, e.g. 2026-11-30T08:00:00Z", field="--at")
    return dt.astimezone(UTC)


def evaluate(plan_path: str | Path, stage: str, *, at: datetime | None = None) -> WatchOutcome:
    """Measure and decide one stage (no files written)."""
    from evalrun.watch.engine import fetch_samples, measure_stage, open_engine

    path = Path(plan_path)
    plan = load_plan(path)
    try:
        plan.stage(stage)
    except KeyError:
        names = ", ".join(s.name for s in plan.stages)
        raise UserInputError(f"no stage {stage!r} in the plan (stages: {names})", file=path,
                             field="--stage") from None
    when = at or now_utc()
    engine = open_engine(plan, path)
    try:
        data = measure_stage(engine, plan, stage, when)
        verdict = decide_stage(plan, stage, data, when)
        if verdict.start is not None:
            data = since(data, verdict.start.timestamp())
        samples = (fetch_samples(engine, plan, stage, when, verdict.worst_cohort or data.cohorts[0])
                   if data.cohorts else [])
    finally:
        engine.close()
    summary = verdict_dict(plan, verdict, data, describe_source(plan))
    return WatchOutcome(plan, path, verdict, data, samples, summary)


def write_outputs(outcome: WatchOutcome, out_dir: Path) -> dict[str, Path]:
    """verdict.json, summary.md and report.html into ``out_dir``."""
    from evalrun.watch.html import render_html
    from evalrun.watch.markdown import render_markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "verdict_json": out_dir / "verdict.json",
        "summary_md": out_dir / "summary.md",
        "html": out_dir / "report.html",
    }
    _atomic(files["verdict_json"], json.dumps(outcome.summary, indent=2, sort_keys=True,
                                              ensure_ascii=False) + "\n")
    _atomic(files["summary_md"], render_markdown(outcome))
    _atomic(files["html"], render_html(outcome))
    outcome.files = files
    return files


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def default_out_dir(plan_path: Path, stage: str) -> Path:
    """``<plan folder>/reports/watch-<stage>``."""
    return plan_path.resolve().parent / "reports" / f"watch-{stage}"


def watch(plan_path: str | Path, stage: str, *, at: datetime | None = None,
          out_dir: str | Path | None = None) -> WatchOutcome:
    """Measure, decide and write the outputs of one stage."""
    outcome = evaluate(plan_path, stage, at=at)
    write_outputs(outcome, Path(out_dir) if out_dir else default_out_dir(Path(plan_path), stage))
    return outcome
