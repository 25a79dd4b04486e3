"""What the judges said about a run, as evidence: verdicts per output, calibration, reliability.

``judge_evidence`` reads the final judge answers (``execution.judge_calls.final_answers``)
and builds:

* per variant call, the entries the reports show under its output (verdict, score, reason,
  or the judge error) and ``Score.judge_pass`` (share of its rubric judgments that passed;
  judge errors are left out, never counted as a failure of the output);
* per (case, sample), the candidate's pairwise score (wins − losses over its pairwise
  checks, a pair counting as a win or loss only when both orders agree);
* the calibration: the judge against the human labels (accuracy, κ, sensitivity,
  specificity, Youden's J with intervals), its error rates for the correction;
* the reliability of each judge kind (``judging.reliability``): whether its rule may PASS
  or FAIL, and why not;
* the judge calls' own usage (calls, tokens, cost, latency), kept apart from the variants'.

``adjust_rate`` / ``preference_metric`` turn a slice's per-case values into the metric
entries the gate reads: the paired difference corrected for the judge's error rates
(Rogan–Gladen / Fieller) when calibrated, the net preference with its interval, and the
``judge`` block (p-value of the FAIL test, may_pass, may_fail, reason).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evalrun.execution.judge_calls import CALIBRATION, JudgeAnswer, JudgeCalls, final_answers
from evalrun.judging.agreement import BinaryAgreement, CategoricalAgreement
from evalrun.judging.answers import (
    JudgeError,
    PairOutcome,
    PairwiseVerdict,
    RubricVerdict,
    combine_orders,
)
from evalrun.judging.calibration import score_pairwise_calibration, score_rubric_calibration
from evalrun.judging.correction import ErrorRates, corrected_difference, corrected_rate
from evalrun.judging.preference import net_preference, position_bias
from evalrun.judging.reliability import Reliability, pairwise_reliability, rubric_reliability
from evalrun.judging.similarity import SimilarVerdict, similar_verdict
from evalrun.judging.spec import SimilarCheck
from evalrun.project.loader import Project
from evalrun.records import CallResult, CheckOutcome, Score

__all__ = ["JUDGE_METRICS", "JudgeEvidence", "adjust_rate", "apply_evidence", "judge_evidence", "preference_metric"]

JUDGE_METRICS = ("judge_pass_rate", "pairwise_net")
"""Catalogue metrics computed only when the suite has judge checks."""

CallKey = tuple[str, str, int]


def _reliability_dict(rel: Reliability | None) -> dict[str, Any] | None:
    if rel is None:
        return None
    return {"status": rel.status, "may_pass": rel.may_pass, "may_fail": rel.may_fail, "reason": rel.reason}


@dataclass
class JudgeEvidence:
    """See the module docstring."""

    entries: dict[CallKey, list[dict[str, Any]]] = field(default_factory=dict)
    checks: dict[CallKey, list[CheckOutcome]] = field(default_factory=dict)
    """``similar`` outcomes: checks of the output like any other (they enter ``Score.passed``)."""
    judge_pass: dict[CallKey, float] = field(default_factory=dict)
    pairwise: dict[tuple[str, int], float] = field(default_factory=dict)
    rates: ErrorRates | None = None
    rubric: Reliability | None = None
    pairwise_rel: Reliability | None = None
    fail_at: dict[str, float] = field(default_factory=dict)
    confidence: float = 0.90
    block: dict[str, Any] = field(default_factory=dict)
    """summary.json's ``judges``."""


def _verdict_entry(name: str, answers: Sequence[JudgeAnswer]) -> dict[str, Any]:
    usable = [a.parsed for a in answers if isinstance(a.parsed, RubricVerdict)]
    errors = [a.parsed for a in answers if isinstance(a.parsed, JudgeError)]
    entry: dict[str, Any] = {"check": name, "kind": "rubric", "judgments": len(answers),
                             "passed": sum(v.passed for v in usable), "errors": len(errors)}
    if usable:
        first = usable[0]
        entry.update({"verdict": "pass" if sum(v.passed for v in usable) * 2 > len(usable) else "fail",
                      "score": first.score, "reason": first.reason})
    else:
        entry.update({"verdict": "judge error", "reason": errors[0].reason if errors else ""})
    return entry


def _calls_block(results: Sequence[CallResult]) -> dict[str, Any]:
    lat = sorted(r.latency_s for r in results if r.latency_s is not None)
    costs = [r.cost_usd for r in results if r.ok and r.cost_usd is not None]
    priced = all(r.cost_status != "unpriced" for r in results if r.ok)
    return {
        "calls": len(results),
        "ok": sum(r.ok for r in results),
        "cached": sum(r.cached for r in results),
        "errors_by_kind": dict(sorted({k: sum(1 for r in results if r.error_kind == k)
                                       for k in {r.error_kind for r in results if r.error_kind}}.items())),
        "prompt_tokens": sum(r.prompt_tokens or 0 for r in results),
        "completion_tokens": sum(r.completion_tokens or 0 for r in results),
        "cost_usd": sum(costs) if priced and results else None,
        "cost_status": sorted({r.cost_status for r in results if r.ok}),
        "latency_p50_s": statistics.median(lat) if lat else None,
        "latency_mean_s": statistics.fmean(lat) if lat else None,
    }


def judge_evidence(project: Project, results: Sequence[CallResult], calls: JudgeCalls, *,
                   confidence: float) -> JudgeEvidence | None:
    """The judges' evidence on this run (None when the suite has no judge check)."""
    setup = project.judges
    if setup is None:
        return None
    answers = final_answers(calls)
    ev = JudgeEvidence(confidence=confidence)
    gate = project.suite.config.gate
    for rule in ("judge_pass_rate", "pairwise_net_loss"):
        spec = gate.rules.get(rule)
        fail = spec.fail_margin if spec is not None and spec.fail_margin is not None else (
            spec.margin if spec is not None and spec.margin is not None else 0.0)
        ev.fail_at[rule] = float(fail)
    _similar(project, answers, ev)
    rubric_by: dict[tuple[str, str, int, str], list[JudgeAnswer]] = {}
    pair_by: dict[tuple[str, int, str, int], dict[str, JudgeAnswer]] = {}
    cal_rubric: dict[str, list[RubricVerdict | JudgeError]] = {}
    cal_pair: dict[tuple[str, int], dict[str, JudgeAnswer]] = {}
    for a in sorted(answers.values(), key=lambda a: a.task.slot):
        t = a.task
        if t.check == CALIBRATION:
            if t.kind == "rubric":
                parsed = a.parsed if isinstance(a.parsed, RubricVerdict | JudgeError) else JudgeError(
                    "invalid", "not a rubric answer")
                cal_rubric.setdefault(t.case_id, []).append(parsed)
            else:
                cal_pair.setdefault((t.case_id, t.judge_sample), {})[t.order or ""] = a
        elif t.kind == "embedding":
            continue
        elif t.kind == "rubric":
            rubric_by.setdefault((t.case_id, t.side or "", t.sample, t.check), []).append(a)
        else:
            pair_by.setdefault((t.case_id, t.sample, t.check, t.judge_sample), {})[t.order or ""] = a

    run_rubric_calls = run_rubric_errors = 0
    shares: dict[CallKey, list[bool]] = {}
    for (case_id, side, sample, check), group in sorted(rubric_by.items()):
        key = (case_id, side, sample)
        ev.entries.setdefault(key, []).append(_verdict_entry(check, group))
        run_rubric_calls += len(group)
        run_rubric_errors += sum(isinstance(a.parsed, JudgeError) for a in group)
        shares.setdefault(key, []).extend(a.parsed.passed for a in group if isinstance(a.parsed, RubricVerdict))
    for key, flags in shares.items():
        if flags:
            ev.judge_pass[key] = sum(flags) / len(flags)

    run_pairs: list[PairOutcome] = []
    pair_errors = 0
    per_sample: dict[tuple[str, int], list[int]] = {}
    pair_entries: dict[tuple[str, int, str], list[PairOutcome | JudgeError]] = {}
    for (case_id, sample, check, _j), orders in sorted(pair_by.items()):
        outcome = _combine(orders)
        pair_entries.setdefault((case_id, sample, check), []).append(outcome)
        if isinstance(outcome, JudgeError):
            pair_errors += 1
            continue
        run_pairs.append(outcome)
        per_sample.setdefault((case_id, sample), []).append(outcome.score)
    for key2, scores in per_sample.items():
        ev.pairwise[key2] = sum(scores) / len(scores)
    for (case_id, sample, check), outcomes in sorted(pair_entries.items()):
        entry = _pair_entry(check, outcomes)
        for side in ("baseline", "candidate"):
            ev.entries.setdefault((case_id, side, sample), []).append(entry)

    settings = setup.settings
    policy = settings.policy()
    suite_judge = setup.suite_judge()
    kinds = {cj.kind for c in project.cases for cj in c.judges}
    overridden = sorted({cj.name for c in project.cases for cj in c.judges if cj.kind != "similar"
                         and (cj.judge.model, cj.judge.api_base, cj.judge.params)
                         != (suite_judge.model, suite_judge.api_base, suite_judge.params)})
    block: dict[str, Any] = {"judge": {"model": settings.model, "samples": settings.samples,
                                       "params": dict(settings.params)},
                             "calibration": {"source": setup.calibration_source}}
    rubric_agreement: BinaryAgreement | None = None
    if "rubric" in kinds:
        cal_errors = 0
        if setup.calibration is not None and setup.calibration.rubric:
            cal = score_rubric_calibration(setup.calibration.rubric, cal_rubric, confidence=confidence)
            rubric_agreement, cal_errors = cal.agreement, cal.errors
            block["calibration"]["rubric"] = {"agreement": cal.agreement.to_dict(), "errors": cal.errors,
                                              "error_ids": list(cal.error_ids)}
        if overridden and rubric_agreement is not None:
            block["calibration"]["note"] = (f"checks {', '.join(overridden)} use another judge than the calibrated "
                                            "one: the judge pass rate is treated as uncalibrated")
            rubric_agreement = None
        ev.rates = rubric_agreement.error_rates() if rubric_agreement is not None else None
        ev.rubric = rubric_reliability(rubric_agreement, calibration_errors=cal_errors, run_errors=run_rubric_errors,
                                       run_calls=run_rubric_calls, policy=policy)
        block["rubric"] = {"judgments": run_rubric_calls, "errors": run_rubric_errors,
                           "corrected": ev.rates is not None, "reliability": _reliability_dict(ev.rubric)}
    if "pairwise" in kinds:
        pair_agreement: CategoricalAgreement | None = None
        cal_errors = 0
        if setup.calibration is not None and setup.calibration.pairwise:
            cal_outcomes: dict[str, list[PairOutcome | JudgeError]] = {}
            for (item_id, _j), orders in sorted(cal_pair.items()):
                cal_outcomes.setdefault(item_id, []).append(_combine(orders))
            pcal = score_pairwise_calibration(setup.calibration.pairwise, cal_outcomes, confidence=confidence)
            pair_agreement, cal_errors = pcal.agreement, pcal.errors
            block["calibration"]["pairwise"] = {"agreement": pcal.agreement.to_dict(), "errors": pcal.errors,
                                                "error_ids": list(pcal.error_ids)}
        bias = position_bias(run_pairs, confidence=confidence) if run_pairs else None
        ev.pairwise_rel = pairwise_reliability(pair_agreement, bias, calibration_errors=cal_errors,
                                               run_errors=pair_errors, run_calls=len(run_pairs) + pair_errors,
                                               policy=policy)
        block["pairwise"] = {"pairs": len(run_pairs) + pair_errors, "errors": pair_errors,
                             "wins": sum(p.outcome == "win" for p in run_pairs),
                             "ties": sum(p.outcome == "tie" for p in run_pairs),
                             "losses": sum(p.outcome == "loss" for p in run_pairs),
                             "position_bias": bias.to_dict() if bias is not None else None,
                             "reliability": _reliability_dict(ev.pairwise_rel)}
    made = calls.all_results()
    block["usage"] = {"run": _calls_block([r for t, r in zip(calls.tasks, _results_of(calls), strict=True)
                                           if r is not None and t.check != CALIBRATION]),
                      "calibration": _calls_block([r for t, r in zip(calls.tasks, _results_of(calls), strict=True)
                                                   if r is not None and t.check == CALIBRATION]),
                      "answer_retries": sum(1 for t in calls.tasks if t.retry > 0),
                      "total_calls": len(made)}
    ev.block = block
    return ev


def _similar(project: Project, answers: dict[Any, JudgeAnswer], ev: JudgeEvidence) -> None:
    """``similar`` checks: each output's embedding against its reference's (a check, not a judge)."""
    thresholds = {(c.id, cj.name): cj.check.threshold for c in project.cases for cj in c.judges
                  if isinstance(cj.check, SimilarCheck)}
    refs: dict[tuple[str, str], JudgeAnswer] = {}
    outs: list[JudgeAnswer] = []
    for a in answers.values():
        if a.task.kind == "embedding":
            if a.task.side is None:
                refs[(a.task.case_id, a.task.check)] = a
            else:
                outs.append(a)
    for a in sorted(outs, key=lambda a: a.task.slot):
        t = a.task
        ref = refs.get((t.case_id, t.check))
        key = (t.case_id, t.side or "", t.sample)
        threshold = thresholds[(t.case_id, t.check)]
        verdict: SimilarVerdict | JudgeError
        if ref is None or isinstance(ref.parsed, JudgeError):
            verdict = ref.parsed if ref is not None and isinstance(ref.parsed, JudgeError) else JudgeError(
                "call_failed", "the reference was not embedded")
        elif isinstance(a.parsed, JudgeError):
            verdict = a.parsed
        else:
            verdict = similar_verdict(list(a.parsed), list(ref.parsed), threshold=threshold)  # type: ignore[arg-type]
        entry: dict[str, Any] = {"check": t.check, "kind": "similar", "judgments": 1}
        if isinstance(verdict, SimilarVerdict):
            detail = f"similarity {verdict.similarity:.3f} (threshold {threshold:g})"
            entry.update({"verdict": "pass" if verdict.passed else "fail", "reason": detail,
                          "similarity": verdict.similarity, "errors": 0})
            ev.checks.setdefault(key, []).append(CheckOutcome(t.check, verdict.passed, detail,
                                                              {"similarity": verdict.similarity}))
        else:
            entry.update({"verdict": "judge error", "reason": verdict.reason, "errors": 1})
        ev.entries.setdefault(key, []).append(entry)


def _results_of(calls: JudgeCalls) -> list[CallResult | None]:
    return [calls.results.get(t.planned.identity) for t in calls.tasks]


def _combine(orders: dict[str, JudgeAnswer]) -> PairOutcome | JudgeError:
    bf, cf = orders.get("baseline_first"), orders.get("candidate_first")
    if bf is None or cf is None:
        return JudgeError("call_failed", "one order of the pair was not asked")
    a, b = bf.parsed, cf.parsed
    if not isinstance(a, PairwiseVerdict | JudgeError) or not isinstance(b, PairwiseVerdict | JudgeError):
        return JudgeError("invalid", "not a pairwise answer")
    return combine_orders(a, b)


def _pair_entry(name: str, outcomes: Sequence[PairOutcome | JudgeError]) -> dict[str, Any]:
    usable = [o for o in outcomes if isinstance(o, PairOutcome)]
    errors = [o for o in outcomes if isinstance(o, JudgeError)]
    entry: dict[str, Any] = {"check": name, "kind": "pairwise", "judgments": len(outcomes), "errors": len(errors),
                             "wins": sum(o.outcome == "win" for o in usable),
                             "ties": sum(o.outcome == "tie" for o in usable),
                             "losses": sum(o.outcome == "loss" for o in usable)}
    if usable:
        first = usable[0]
        entry.update({"verdict": first.outcome, "agreement": first.agreement,
                      "reason": " | ".join(r for r in first.reasons if r)})
    else:
        entry.update({"verdict": "judge error", "reason": errors[0].reason if errors else ""})
    return entry


def apply_evidence(evidence: JudgeEvidence | None, results: Sequence[CallResult], scores: Sequence[Score]) -> None:
    """Write the judges' verdicts into the scores of the variant calls (in place)."""
    if evidence is None:
        return
    for r, s in zip(results, scores, strict=True):
        key = (r.case_id, r.side, r.sample)
        s.judges = list(evidence.entries.get(key, []))
        extra = evidence.checks.get(key, [])
        if extra and r.ok:
            s.checks = [*s.checks, *extra]
            s.passed = s.passed and all(c.passed for c in extra)
        s.judge_pass = evidence.judge_pass.get(key)
        if r.side == "candidate":
            s.pairwise = evidence.pairwise.get((r.case_id, r.sample))


def _gate_view(rel: Reliability | None, p_value: float | None) -> dict[str, Any]:
    rel = rel or Reliability("uncalibrated", False, True)
    return {"p_value": p_value, "may_pass": rel.may_pass, "may_fail": rel.may_fail, "reason": rel.reason,
            "status": rel.status}


def adjust_rate(entry: dict[str, Any], baseline: Sequence[float], candidate: Sequence[float],
                evidence: JudgeEvidence) -> None:
    """Turn a judge pass rate entry into what the gate decides on (in place).

    Calibrated: the paired difference is corrected for the judge's error rates (interval
    by Fieller's method, carrying the calibration sample's uncertainty) and replaces the
    observed one, which stays under ``judge.observed_*``; each side's corrected rate is
    shown too. Uncalibrated: the observed difference, whose FAIL test is still valid.
    """
    d = corrected_difference(baseline, candidate, evidence.rates, confidence=evidence.confidence)
    fail_at = evidence.fail_at.get("judge_pass_rate", 0.0)
    p = d.p_value(fail_at) if d.n and not d.threshold_is_untestable(fail_at) else None
    block = _gate_view(evidence.rubric, p)
    block.update({"corrected": evidence.rates is not None, "method": d.method,
                  "observed_delta": entry.get("delta"), "observed_ci": entry.get("delta_ci"),
                  "youden": d.youden, "bounded": d.bounded})
    if evidence.rates is not None:
        for side, values in (("baseline", baseline), ("candidate", candidate)):
            cr = corrected_rate(values, evidence.rates, confidence=evidence.confidence)
            block[f"{side}_corrected"] = {"value": cr.estimate, "ci": [cr.ci_low, cr.ci_high]}
        entry.update({"delta": d.estimate, "delta_ci": [d.ci_low, d.ci_high] if d.bounded else None,
                      "centre": d.centre, "se": d.se, "mde": None, "moments": None,
                      "method": "paired difference of judge pass rates corrected for the judge's calibrated "
                                "error rates (Rogan–Gladen, Fieller interval)"})
    entry["judge"] = block


def preference_metric(scores: dict[str, float], evidence: JudgeEvidence | None, label: str,
                      confidence: float) -> dict[str, Any]:
    """The pairwise net preference of a slice: per case, the candidate's mean pairwise score."""
    values = [scores[k] for k in sorted(scores)]
    net = net_preference(values, confidence=confidence)
    fail_at = evidence.fail_at.get("pairwise_net_loss", 0.0) if evidence is not None else 0.0
    out: dict[str, Any] = {
        "metric": "pairwise_net", "label": label, "type": "preference", "higher_is_better": True,
        "paired_n": net.n, "wins": net.wins, "ties": net.ties, "losses": net.losses,
        "delta": net.net, "delta_ci": [net.ci_low, net.ci_high] if net.ci_low is not None else None,
        "centre": net.centre, "se": net.se,
        "method": "per case: the candidate's wins − losses over its pairwise judgments (both orders must "
                  "agree); interval on the mean over cases",
    }
    if evidence is not None:
        p = net.p_value(fail_at) if net.n else None
        out["judge"] = _gate_view(evidence.pairwise_rel, p)
    return out
