"""Pair the two runs case by case and compute every metric with its uncertainty.

pandas lives here (and only here): call rows → per-case means (samples averaged within a
case first, never treated as independent) → paired statistics from ``evalrun.analysis.stats``.
The output is plain JSON-safe data: it *is* the ``metrics`` part of summary.json.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from evalrun.analysis import inference, stats
from evalrun.analysis.judged import JUDGE_METRICS, JudgeEvidence
from evalrun.catalogue import METRICS, Extractor, Metric, by_name
from evalrun.project.cases import Case
from evalrun.records import CallResult, Score

RATE_METRICS: tuple[Metric, ...] = tuple(m for m in METRICS if m.kind == "rate")
RATIO_METRICS: tuple[Metric, ...] = tuple(m for m in METRICS if m.kind == "ratio")
QUANTILE_METRICS: tuple[Metric, ...] = tuple(m for m in METRICS if m.kind == "quantile")
_EXTRACTORS: tuple[tuple[str, Extractor], ...] = tuple((m.column, m.extract) for m in METRICS if m.extract is not None)


@dataclass(frozen=True, slots=True)
class CompareSettings:
    """How sure to be and how to resample."""

    alpha: float = 0.05
    bootstrap_samples: int = 2000
    seed: int = 0

    @property
    def confidence(self) -> float:
        # One-sided test at alpha ↔ two-sided interval at 1 - 2·alpha.
        return 1.0 - 2.0 * self.alpha


_clean = stats.json_safe  # JSON-safe numbers: NaN/inf → None, numpy scalars → Python


def _ci(lo: float | None, hi: float | None) -> list[float] | None:
    if lo is None or hi is None:
        return None
    return [_clean(lo), _clean(hi)]


def build_frame(cases: Sequence[Case], results: Sequence[CallResult], scores: Sequence[Score]) -> pd.DataFrame:
    """One row per call: its facts and each catalogue metric's value (``Metric.extract``)."""
    meta = {c.id: c for c in cases}
    rows: list[dict[str, Any]] = []
    for r, s in zip(results, scores, strict=True):
        case = meta[r.case_id]
        row: dict[str, Any] = {
            "case_id": r.case_id,
            "side": r.side,
            "sample": r.sample,
            "kind": case.kind,
            "cohort": case.cohort,
            "ok": r.ok,
            "error_kind": r.error_kind,
            "cost_status": r.cost_status,
            "cached": r.cached,
            "attempts": r.attempts,
            "tokens_estimated": r.tokens_estimated,
            "response_truncated": r.response_truncated,
        }
        for column, extract in _EXTRACTORS:
            row[column] = extract(r, s)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["case_id", "side", "sample", "kind", "cohort"])
    return frame


def _per_case(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per-case, per-side mean of ``column`` over samples where it applies; cases × sides.

    Rows are the cases (sorted by id) with a value on at least one side. Built with numpy
    (sums and counts per (case, side) slot): this runs ~100 times per compare.
    """
    present = frame[column].notna().to_numpy()
    sides = frame["side"].to_numpy()
    is_cand = sides == "candidate"
    present = present & (is_cand | (sides == "baseline"))
    if not present.any():
        return pd.DataFrame(columns=["baseline", "candidate"])
    codes, uniques = pd.factorize(frame["case_id"].to_numpy()[present], sort=True)
    values = frame[column].to_numpy()[present].astype(float)
    slot = codes * 2 + is_cand[present]
    size = 2 * len(uniques)
    sums = np.bincount(slot, weights=values, minlength=size)
    counts = np.bincount(slot, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan).reshape(-1, 2)
    index = pd.Index(np.asarray(uniques, dtype=object), name="case_id")
    return pd.DataFrame(table, index=index, columns=pd.Index(["baseline", "candidate"], name="side"))


def _z_sum(alpha: float) -> float:
    """z_{1-alpha} + z_{0.8}: a one-sided test at alpha with 80 % power."""
    from evalrun.analysis.power import POWER, z_one_sided

    return z_one_sided(alpha) + z_one_sided(1.0 - POWER)


def _calls_per_side(frame: pd.DataFrame, column: str) -> dict[str, int]:
    """Per side: how many calls measured ``column`` (the K samples behind the per-case rates)."""
    if column not in frame:
        return {"baseline": 0, "candidate": 0}
    present = frame[column].notna().to_numpy()
    sides = frame["side"].to_numpy()
    return {side: int(np.count_nonzero(present & (sides == side))) for side in ("baseline", "candidate")}


def _side_rate(values: pd.Series, calls: int, conf: float) -> dict[str, Any]:
    rates = values.dropna().to_numpy(dtype=float)
    est = inference.clustered_rate(list(rates), calls, conf)
    return {
        "value": _clean(est.value),
        "n": est.n,
        "calls": est.calls,
        "n_eff": _clean(est.n_eff),
        "successes": _clean(float(np.sum(rates))) if est.n else 0.0,
        "ci": _ci(est.ci_low, est.ci_high),
    }


def binary_metric(
    frame: pd.DataFrame, name: str, label: str, column: str, higher_is_better: bool, settings: CompareSettings, samples: int
) -> dict[str, Any]:
    """A rate on each side (clustered Wilson) and the paired difference (clustered Agresti–Min).

    Cases are the clusters: each case's samples are averaged first. With one sample per case
    the interval is exactly Agresti–Min's and the p-value the exact McNemar test; with K > 1
    the same pseudo-count interval is built on the per-case shares (never zero width).
    """
    conf = settings.confidence
    wide = _per_case(frame, column)
    counts = _calls_per_side(frame, column)
    out: dict[str, Any] = {
        "metric": name,
        "label": label,
        "type": "rate",
        "higher_is_better": higher_is_better,
    }
    for side in ("baseline", "candidate"):
        col = wide[side] if side in wide else pd.Series(dtype=float)
        out[side] = _side_rate(col, counts[side], conf)
    paired = wide.dropna()
    out["paired_n"] = len(paired)
    if len(paired) == 0:
        out.update({"delta": None, "delta_ci": None, "centre": None, "se": None, "p_value": None, "table": None,
                    "mde": None, "moments": None, "regressed_cases": 0})
        return out
    b = paired["baseline"].to_numpy(dtype=float)
    c = paired["candidate"].to_numpy(dtype=float)
    diff = inference.paired_rate_diff(list(b), list(c), conf)
    binary = bool(np.isin(b, (0.0, 1.0)).all() and np.isin(c, (0.0, 1.0)).all())
    worse = c < b if higher_is_better else c > b
    out.update(
        {
            "delta": _clean(diff.delta),
            "delta_ci": _ci(diff.ci_low, diff.ci_high),
            "centre": _clean(diff.centre),
            "se": _clean(diff.se),
            "moments": {"n": diff.n, "sum_d": _clean(diff.sum_d), "sum_d2": _clean(diff.sum_d2)},
            "regressed_cases": int(np.sum(worse)),
            # The smallest change from zero a one-sided test at alpha finds with 80 % power,
            # with this interval's standard error.
            "mde": _clean(_z_sum(settings.alpha) * diff.se) if diff.se is not None else None,
        }
    )
    if name == "known_bad_refusal":
        out["regressed_case_ids"] = sorted(str(x) for x in paired.index[worse])
    if binary and samples == 1:
        pb = stats.paired_binary([bool(x) for x in b], [bool(x) for x in c], conf)
        out.update(
            {
                "method": "paired: Agresti–Min interval, exact McNemar test",
                "p_value": _clean(pb.p_value),
                "table": {"n11": pb.n11, "n10": pb.n10, "n01": pb.n01, "n00": pb.n00},
            }
        )
    else:
        p_one = inference.threshold_p_value(diff.centre, diff.se, 0.0, higher_is_better=True)
        out.update(
            {
                "method": f"per-case shares over {samples} samples, cases as clusters: "
                          "Agresti–Min pseudo-counts, case-level standard error",
                "p_value": _clean(min(1.0, 2.0 * min(p_one, 1.0 - p_one))) if p_one is not None else None,
                "table": None,
            }
        )
    return out


RATIO_MIN_CASES = 10
"""Fewest paired cases a cost or token ratio is gated on (its interval is asymptotic)."""


def ratio_metric(frame: pd.DataFrame, name: str, label: str, column: str, settings: CompareSettings) -> dict[str, Any]:
    """Mean per call on each side and the ratio of means (delta-method interval)."""
    wide = _per_case(frame, column)
    sums = frame.groupby("side")[column].sum(min_count=1) if column in frame else pd.Series(dtype=float)
    out: dict[str, Any] = {"metric": name, "label": label, "type": "ratio", "higher_is_better": False}
    for side in ("baseline", "candidate"):
        col = wide[side] if side in wide else pd.Series(dtype=float)
        out[side] = {
            "mean": _clean(col.mean()) if col.count() else None,
            "total": _clean(sums.get(side)) if side in sums else None,
            "n": int(col.count()),
        }
    paired = wide.dropna()
    est = inference.ratio_of_means(list(paired["baseline"]), list(paired["candidate"]), settings.confidence)
    out.update(
        {
            "ratio": _clean(est.ratio),
            "ratio_ci": _ci(est.ci_low, est.ci_high),
            "centre": _clean(est.log_ratio),
            "se": _clean(est.se_log),
            "df": est.df,
            "scale": "log",
            "paired_n": est.n,
            "excluded": est.n_excluded,
            "method": "ratio of means over paired cases, delta-method t-interval on the log scale",
        }
    )
    out["mde"] = (
        _clean(math.exp(_z_sum(settings.alpha) * est.se_log))
        if est.se_log is not None and est.n >= RATIO_MIN_CASES else None
    )
    if name == "cost":
        statuses = {
            side: sorted(set(frame.loc[(frame["side"] == side) & frame["ok"], "cost_status"]))
            for side in ("baseline", "candidate")
        }
        out["cost_status"] = statuses
        if any("unpriced" in s for s in statuses.values()):
            out["note"] = "unpriced model on at least one side: cost not compared"
            out["ratio"] = out["ratio_ci"] = out["centre"] = out["se"] = out["mde"] = None
        elif all(s and set(s) <= {"local"} for s in statuses.values()):
            out["note"] = "local model on both sides: cost is zero by construction"
            out["ratio"] = out["ratio_ci"] = out["centre"] = out["se"] = out["mde"] = None
    return out


def latency_metrics(frame: pd.DataFrame, settings: CompareSettings) -> list[dict[str, Any]]:
    """Per-call p50/p95/mean per side; quantile ratios with a bootstrap over whole cases.

    The ratio is of the very per-call quantiles shown (every answered call of a side, all
    samples), and a bootstrap replicate resamples cases, taking all of a case's calls on both
    sides, so K samples of a case stay one cluster.
    """
    out: list[dict[str, Any]] = []
    ok = frame["ok"].to_numpy(dtype=bool)
    sides = frame["side"].to_numpy()
    latency = frame["latency_s"]
    cached_col = frame["cached"].to_numpy()
    cached = {side: int(cached_col[ok & (sides == side)].sum()) for side in ("baseline", "candidate")}
    present = latency.notna().to_numpy()
    codes, _ = pd.factorize(frame["case_id"].to_numpy(), sort=True)
    case_codes = {side: codes[present & (sides == side)] for side in ("baseline", "candidate")}
    values = {side: latency.to_numpy()[present & (sides == side)].astype(float) for side in ("baseline", "candidate")}
    # Cases with a latency on either side are the resampling units (renumbered 0..n-1).
    used, remap = np.unique(np.concatenate([case_codes["baseline"], case_codes["candidate"]]), return_inverse=True)
    n_b = case_codes["baseline"].size
    remapped = {"baseline": remap[:n_b], "candidate": remap[n_b:]}
    paired_cases = int(np.intersect1d(case_codes["baseline"], case_codes["candidate"]).size)
    qs = [float(m.quantile or 0.5) for m in QUANTILE_METRICS]
    boot = inference.quantile_ratio_bootstrap(
        list(values["baseline"]), list(remapped["baseline"]), list(values["candidate"]), list(remapped["candidate"]),
        int(used.size), qs, settings.confidence, settings.bootstrap_samples, settings.seed,
    )
    for metric, q in zip(QUANTILE_METRICS, qs, strict=True):
        entry: dict[str, Any] = {
            "metric": metric.name,
            "label": metric.label,
            "type": "quantile",
            "higher_is_better": False,
            "cached_calls": cached,
        }
        for side in ("baseline", "candidate"):
            qe = stats.quantile_ci(list(values[side]), q, settings.confidence)
            entry[side] = {"value": _clean(qe.value), "ci": _ci(qe.ci_low, qe.ci_high), "n": qe.n, "enough": qe.enough}
        br = boot[q]
        entry.update(
            {
                "ratio": _clean(br.ratio),
                "ratio_ci": _ci(br.ci_low, br.ci_high),
                "centre": _clean(br.log_ratio),
                "se": _clean(br.se_log),
                "scale": "log",
                "delta_s": _clean(br.delta),
                "delta_ci": _ci(br.delta_ci_low, br.delta_ci_high),
                "paired_n": paired_cases,
                "n_cases": br.n_cases,
                "method": f"per-call quantiles; bootstrap over whole cases ({settings.bootstrap_samples} resamples, "
                          f"seed {settings.seed}), normal interval on the log ratio",
                "mde": _clean(math.exp(_z_sum(settings.alpha) * br.se_log)) if br.se_log is not None else None,
            }
        )
        out.append(entry)
    mean = by_name("latency_mean")
    mean_entry: dict[str, Any] = {"metric": mean.name, "label": mean.label, "type": "mean",
                                  "higher_is_better": mean.higher_is_better}
    for side in ("baseline", "candidate"):
        lat = values[side]
        mean_entry[side] = {"value": _clean(float(np.mean(lat))) if lat.size else None, "n": int(lat.size)}
    out.append(mean_entry)
    return out


def metric_table(frame: pd.DataFrame, settings: CompareSettings, samples: int, *, with_latency: bool = True,
                 judge: JudgeEvidence | None = None) -> list[dict[str, Any]]:
    """Every metric for one slice of calls (the judge metrics only when ``judge`` is given)."""
    metrics = [binary_metric(frame, m.name, m.label, m.column, m.higher_is_better, settings, samples)
               for m in RATE_METRICS if judge is not None or m.name not in JUDGE_METRICS]
    if judge is not None:
        _judge_metrics(frame, metrics, judge, settings)
    metrics += [ratio_metric(frame, m.name, m.label, m.column, settings) for m in RATIO_METRICS]
    if with_latency:
        metrics += latency_metrics(frame, settings)
    return metrics


def _judge_metrics(frame: pd.DataFrame, metrics: list[dict[str, Any]], judge: JudgeEvidence,
                   settings: CompareSettings) -> None:
    """Correct the judge pass rate for the judge's error rates; add the pairwise net preference."""
    from evalrun.analysis.judged import adjust_rate, preference_metric

    entry = next(m for m in metrics if m["metric"] == "judge_pass_rate")
    if judge.rubric is not None:
        paired = _per_case(frame, "judge_pass").dropna()
        if len(paired):
            adjust_rate(entry, list(paired["baseline"]), list(paired["candidate"]), judge)
    else:
        metrics.remove(entry)
    if judge.pairwise_rel is not None:
        wide = _per_case(frame, "pairwise")
        col = wide["candidate"].dropna() if "candidate" in wide else pd.Series(dtype=float)
        scores = {str(k): float(v) for k, v in col.items()}
        metrics.append(preference_metric(scores, judge, by_name("pairwise_net").label, settings.confidence))


def slice_tables(
    frame: pd.DataFrame, by: str, settings: CompareSettings, samples: int, critical: Sequence[str] = (),
    judge: JudgeEvidence | None = None,
) -> dict[str, Any]:
    """Metrics per value of ``by`` (kind or cohort); exploratory p-values get BH q-values."""
    out: dict[str, Any] = {}
    for value in sorted(frame[by].dropna().unique()):
        sub = frame[frame[by] == value]
        out[str(value)] = {
            "n_cases": int(sub["case_id"].nunique()),
            "critical": str(value) in critical,
            "metrics": metric_table(sub, settings, samples, with_latency=True, judge=judge),
        }
    # Benjamini–Hochberg across the exploratory slices, per metric: many slices, many chances
    # to see a "significant" difference by luck.
    for name in [*(m.name for m in RATE_METRICS), "pairwise_net"]:
        keys, pvals = [], []
        for value, entry in out.items():
            if entry["critical"]:
                continue
            for m in entry["metrics"]:
                if m["metric"] == name and m.get("p_value") is not None:
                    keys.append((value, m))
                    pvals.append(float(m["p_value"]))
        if pvals:
            for (_, m), q in zip(keys, stats.benjamini_hochberg(pvals), strict=True):
                m["q_value"] = _clean(q)
    return out


def case_outcomes(frame: pd.DataFrame) -> pd.DataFrame:
    """Per case: mean pass per side (over samples) and whether samples disagreed."""
    sub = frame.dropna(subset=["passed"])
    if sub.empty:
        return pd.DataFrame(columns=["baseline", "candidate"])
    sub = sub.astype({"passed": float})
    return sub.groupby(["case_id", "side"])["passed"].mean().unstack("side").reindex(columns=["baseline", "candidate"])


def flips(frame: pd.DataFrame, cases: Sequence[Case]) -> dict[str, list[dict[str, Any]]]:
    """Cases whose pass outcome changed: regressions (passed → fails) first, then improvements."""
    outcomes = case_outcomes(frame).dropna()
    meta = {c.id: c for c in cases}
    regressions: list[dict[str, Any]] = []
    improvements: list[dict[str, Any]] = []
    for case_id, b_val, c_val in zip(
        outcomes.index, outcomes["baseline"].to_numpy(dtype=float), outcomes["candidate"].to_numpy(dtype=float),
        strict=True,
    ):
        b, c = float(b_val), float(c_val)
        if b == c:
            continue
        case = meta[str(case_id)]
        item = {"case_id": str(case_id), "kind": case.kind, "cohort": case.cohort, "baseline": b, "candidate": c}
        (regressions if c < b else improvements).append(item)
    regressions.sort(key=lambda x: (x["candidate"] - x["baseline"], x["case_id"]))
    improvements.sort(key=lambda x: (x["baseline"] - x["candidate"], x["case_id"]))
    return {"regressions": regressions, "improvements": improvements}


def flaky_cases(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Cases whose K samples disagree on pass, per side, with pass@k / pass^k."""
    sub = frame.dropna(subset=["passed"])
    out: list[dict[str, Any]] = []
    if sub.empty or sub["sample"].max() == 0:
        return out
    for (case_id, side), grp in sub.groupby(["case_id", "side"]):
        outcomes = [bool(x) for x in grp.sort_values("sample")["passed"]]
        if len(outcomes) > 1 and stats.flaky(outcomes):
            out.append(
                {
                    "case_id": str(case_id),
                    "side": str(side),
                    "passes": sum(outcomes),
                    "samples": len(outcomes),
                    "pass_at_k": stats.pass_at_k(outcomes),
                    "pass_hat_k": stats.pass_hat_k(outcomes),
                }
            )
    out.sort(key=lambda x: (x["case_id"], x["side"]))
    return out


def consistency(frame: pd.DataFrame) -> dict[str, Any]:
    """pass@k (any sample passed) and pass^k (all passed) rates per side."""
    sub = frame.dropna(subset=["passed"])
    out: dict[str, Any] = {}
    for side in ("baseline", "candidate"):
        s = sub[sub["side"] == side]
        if s.empty:
            out[side] = {"pass_at_k": None, "pass_hat_k": None, "n": 0}
            continue
        g = s.astype({"passed": bool}).groupby("case_id")["passed"]
        out[side] = {"pass_at_k": _clean(g.any().mean()), "pass_hat_k": _clean(g.all().mean()), "n": int(g.ngroups)}
    return out


def call_counts(frame: pd.DataFrame) -> dict[str, Any]:
    """Calls, errors by kind, retries and cache hits per side."""
    out: dict[str, Any] = {}
    for side in ("baseline", "candidate"):
        s = frame[frame["side"] == side]
        errors = s.loc[s["errored"].astype(bool), "error_kind"].value_counts().sort_index()
        out[side] = {
            "total": len(s),
            "ok": int(s["ok"].sum()) if len(s) else 0,
            "errors": int(s["errored"].sum()) if len(s) else 0,
            "errors_by_kind": {str(k): int(v) for k, v in errors.items()},
            "content_policy": int((s["error_kind"] == "content_policy").sum()) if len(s) else 0,
            "retried": int((s["attempts"] > 1).sum()) if len(s) else 0,
            "attempts": int(s["attempts"].sum()) if len(s) else 0,
            "cached": int(s["cached"].sum()) if len(s) else 0,
            "tokens_estimated": int(s["tokens_estimated"].sum()) if len(s) else 0,
            "responses_truncated": int(s["response_truncated"].sum()) if len(s) else 0,
        }
    return out
