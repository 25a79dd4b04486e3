"""Scoring a run and summarising it: the content of summary.json and results.jsonl.

``score`` applies every case's compiled checks to its calls (pure: re-runnable from stored
results); ``summarize`` pairs the sides, computes every metric overall and per slice, and
asks the gate for the verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from evalrun import __version__
from evalrun.analysis.summary_model import SUMMARY_FORMAT_VERSION, Summary
from evalrun.checks.scoring import score_call
from evalrun.errors import ExitCode
from evalrun.project.config import VERSION_LABELS
from evalrun.project.loader import Project
from evalrun.records import SIDES, CallResult, Score

__all__ = ["SUMMARY_FORMAT_VERSION", "SequentialVerdict", "result_rows", "score", "sort_results", "subset_warning", "summarize"]


@dataclass(frozen=True, slots=True)
class SequentialVerdict:
    """What ``compare --sequential`` contributes to a summary.

    ``block`` becomes summary.json's ``sequential`` entry. After an early stop
    (``decision`` set) the sequences decided: the verdict is ``decision``, its reasons
    ``reasons`` followed by the ordinary gate's; otherwise the ordinary gate decides.
    """

    block: dict[str, Any]
    decision: Literal["PASS", "FAIL"] | None = None
    reasons: tuple[str, ...] = ()


def score(project: Project, results: Sequence[CallResult]) -> list[Score]:
    """Apply every case's checks to its calls (pure: re-runnable from stored results)."""
    by_id = {c.id: c for c in project.cases}
    out: list[Score] = []
    for r in results:
        case = by_id[r.case_id]
        tools = project.variant(r.side).config.params.tools or []
        out.append(score_call(r, case.compiled, tools, case.kind, check_timeout_s=project.suite.config.check_timeout_s,
                              refusal=project.refusal))
    return out


def sort_results(results: Sequence[CallResult]) -> list[CallResult]:
    """Deterministic order: case id, then side (baseline first), then sample."""
    order = {"baseline": 0, "candidate": 1}
    return sorted(results, key=lambda r: (r.case_id, order[r.side], r.sample))




def subset_warning(project: Project) -> str:
    """The first warning of a subset run's verdict: which cases, and what the verdict is not."""
    return (f"subset run: {len(project.cases)} of {project.n_suite_cases} cases ({project.subset}); "
            "this verdict is for these cases only, not the suite: run the whole suite before release")


def summarize(project: Project, results: Sequence[CallResult], scores: Sequence[Score], created: str,
              *, sequential: SequentialVerdict | None = None) -> Summary:
    """The summary (typed; ``to_json()`` is summary.json's content): metrics, slices, flips,
    rules, verdict."""
    from evalrun.analysis import compare as cmp
    from evalrun.analysis.gate import decide_verdict

    gate = project.suite.config.gate
    settings = cmp.CompareSettings(alpha=gate.alpha, bootstrap_samples=gate.bootstrap_samples, seed=project.suite.config.seed)
    samples = project.suite.config.samples
    frame = cmp.build_frame(project.cases, results, scores)
    overall = cmp.metric_table(frame, settings, samples)
    by_kind = cmp.slice_tables(frame, "kind", settings, samples)
    by_cohort = cmp.slice_tables(frame, "cohort", settings, samples, critical=gate.critical_cohorts)
    from evalrun.analysis.label_rules import audit_rules
    from evalrun.analysis.measurement import latency_measurement
    from evalrun.project.fingerprint import label_audit

    findings = label_audit(project.baseline, project.candidate)
    verdict = decide_verdict(overall, by_cohort, gate, extra_rules=audit_rules(findings))
    if sequential is not None and sequential.decision is not None:
        verdict.status = sequential.decision
        verdict.exit_code = int(ExitCode.REGRESSION if sequential.decision == "FAIL" else ExitCode.PASSED)
        verdict.reasons = [*sequential.reasons, *verdict.reasons]
    if project.subset:
        verdict.warnings = [subset_warning(project), *verdict.warnings]
    labels = {side: project.variant(side).config.versions.model_dump() for side in SIDES}
    summary: dict[str, Any] = {
        "format_version": SUMMARY_FORMAT_VERSION,
        "evalrun_version": __version__,
        "created": created,
        "verdict": verdict.to_dict(),
        "run": {
            "fingerprint": project.fingerprint(),
            "suite": project.suite.config.name,
            "suite_file": str(project.suite.path),
            "n_cases": len(project.cases),
            "samples": samples,
            "aa_mode": project.aa_mode,
            "alpha": gate.alpha,
            "confidence": settings.confidence,
            "seed": project.suite.config.seed,
            **({"subset": project.subset, "n_suite_cases": project.n_suite_cases} if project.subset else {}),
        },
        "variants": {
            side: {
                "name": project.variant(side).config.name,
                "model": project.variant(side).config.model,
                "config_file": str(project.variant(side).path),
                "labels": labels[side],
            }
            for side in SIDES
        },
        "labels": labels,
        "label_changes": {k: [labels["baseline"][k], labels["candidate"][k]] for k in VERSION_LABELS
                          if labels["baseline"][k] != labels["candidate"][k]},
        "label_audit": [f.to_dict() for f in findings],
        "calls": cmp.call_counts(frame),
        "metrics": overall,
        "slices": {"kind": by_kind, "cohort": by_cohort},
        "flips": cmp.flips(frame, project.cases),
        "flaky": cmp.flaky_cases(frame),
        "consistency": cmp.consistency(frame),
        "latency_measurement": latency_measurement(results),
    }
    if sequential is not None:
        summary["sequential"] = sequential.block
    return Summary.of(summary)


def result_rows(project: Project, results: Sequence[CallResult], scores: Sequence[Score]) -> list[dict[str, Any]]:
    """results.jsonl rows: the call, its score, the case and the variant's version labels."""
    from evalrun.execution.store import (
        plain,  # asdict without its deep copies: same dicts, 3x faster
    )

    by_id = {c.id: c for c in project.cases}
    per_side = {side: (project.variant(side).config.name, project.variant(side).config.versions.model_dump())
                for side in SIDES}
    rows = []
    for r, s in zip(results, scores, strict=True):
        case = by_id[r.case_id]
        name, labels = per_side[r.side]
        rows.append(
            {
                **plain(r),
                "client_overhead_s": r.client_overhead_s,
                "variant": name,
                "kind": case.kind,
                "cohort": case.cohort,
                "tags": case.tags,
                **labels,
                "score": plain(s),
            }
        )
    return rows


