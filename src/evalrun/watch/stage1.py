"""The watch engine in Stage 1: `evalrun compare --sequential` stops calling once decided.

Cases run in a seeded random order (known-bad cases first: under the strict ``any_flip``
policy a single one that stops refusing fails the gate, so they are all needed anyway), a
batch at a time. After each
batch every gate rule gets an anytime-valid confidence sequence on its *paired* contrast
(one value per case: candidate − baseline, or candidate − k·baseline for the cost and
token ratio rules, samples averaged within the case), and the run stops as soon as

* a rule's sequence lies wholly beyond its FAIL threshold → FAIL, or
* every applicable rule's sequence lies wholly on its PASS side (after ``MIN_CASES``) → PASS.

Otherwise the whole suite runs and the ordinary fixed-sample gate decides. Optional
stopping is safe because the sequences are valid at every look at once.

Latency rules read the same parameter as the main gate: the ratio of the per-call p50 /
p95 latencies (not of means, which a tail can move while the median stays). Each side's
quantile gets a distribution-free confidence sequence (``quantile_cs``: the count of calls
below the true quantile is binomial, so a beta-binomial sequence on that count brackets the
quantile between two order statistics at every look), the ratio's bounds are the ratio of
those bounds (alpha split between the sides), and a latency rule decides only once each
side has its ``min_n`` calls, as in the main gate. With K > 1 samples, one call per case and
side (the first sample) enters, because calls of one case are not independent; it has the
same distribution as any call, so the quantile is the same one.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from evalrun import catalogue
from evalrun.records import CallResult, Score
from evalrun.watch.sequential import beta_binomial_acceptance, beta_prior, normal_mixture_radius

MIN_CASES = 20
"""Paired cases needed before an early PASS (an early FAIL needs only its evidence)."""

HIGHER_IS_BETTER = tuple(n for n, m in catalogue.RULES.items() if m.higher_is_better)
"""Rate rules where a drop is harm."""
QUANTILE_RULES = tuple(n for n, m in catalogue.RULES.items() if m.kind == "quantile")
"""Latency rules: a ratio of per-call quantiles (``quantile_cs`` on each side)."""
RATIO_RULES = tuple(n for n, m in catalogue.RULES.items()
                    if m.rule is not None and m.rule.kind == "ratio" and n not in QUANTILE_RULES)
"""Rules on a ratio of means (cost and tokens per call)."""


def sequential_order(case_ids: list[str], kinds: Mapping[str, str], seed: int) -> list[str]:
    """Known-bad cases first, then the rest; each group shuffled with ``seed``."""
    rng = random.Random(seed)
    bad = sorted(c for c in case_ids if kinds.get(c) == "known_bad")
    rest = sorted(c for c in case_ids if kinds.get(c) != "known_bad")
    rng.shuffle(bad)
    rng.shuffle(rest)
    return bad + rest


@dataclass(frozen=True)
class RuleLook:
    """One rule's sequence at the current look."""

    rule: str
    status: Literal["pass", "fail", "undecided", "not_applicable"]
    n: int
    estimate: float | None
    low: float | None
    high: float | None
    pass_threshold: float | None
    fail_threshold: float | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (summary.json's ``sequential.rules``)."""
        return {k: getattr(self, k) for k in ("rule", "status", "n", "estimate", "low", "high",
                                              "pass_threshold", "fail_threshold", "note")}


def per_case_values(results: Sequence[CallResult], scores: Sequence[Score]) -> dict[str, dict[str, dict[str, float]]]:
    """rule → case → side → mean over the case's samples of the rule's metric (errors excluded).

    Each rule's value is its catalogue metric's extractor. A latency quantile rule gets one
    call per case and side instead: the latency of its lowest sample (every call with a
    latency counts, as in the main gate's quantiles).
    """
    acc: dict[str, dict[tuple[str, str], list[float]]] = defaultdict(lambda: defaultdict(list))
    extractors = {name: m.extract for name, m in catalogue.RULES.items() if name not in QUANTILE_RULES}
    first: dict[tuple[str, str], tuple[int, float]] = {}
    for r in results:
        key = (r.case_id, r.side)
        if r.latency_s is not None and math.isfinite(r.latency_s) and (key not in first or r.sample < first[key][0]):
            first[key] = (r.sample, float(r.latency_s))
    for r, sc in zip(results, scores, strict=True):
        if not r.ok:
            continue
        key = (r.case_id, r.side)
        for name, extract in extractors.items():
            assert extract is not None
            value = extract(r, sc)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                acc[name][key].append(float(value))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, by_key in acc.items():
        cases: dict[str, dict[str, float]] = defaultdict(dict)
        for (case_id, side), values in by_key.items():
            cases[case_id][side] = sum(values) / len(values)
        out[name] = dict(cases)
    latency: dict[str, dict[str, float]] = defaultdict(dict)
    for (case_id, side), (_, value) in first.items():
        latency[case_id][side] = value
    for name in QUANTILE_RULES:
        if latency:
            out[name] = dict(latency)
    return out


def quantile_cs(values: np.ndarray, q: float, *, alpha: float, n_opt: float) -> tuple[float, float, float]:
    """Empirical q-quantile and a distribution-free anytime-valid sequence for the true one.

    The number of values at or below the true quantile ξ is Binomial(n, q) at every n (for a
    continuous distribution), so the beta-binomial mixture's acceptance region for that count,
    ``[k_lo, k_hi]``, holds it at every look at once with probability 1 − alpha; then
    ``x_(k_lo) <= ξ < x_(k_hi + 1)`` (order statistics; 0 and ∞ beyond the ends).
    """
    x = np.sort(values[np.isfinite(values)])
    n = x.size
    if n == 0:
        return math.nan, 0.0, math.inf
    a, b = beta_prior(q, n_opt, alpha)
    est = float(np.quantile(x, q))
    accepted = beta_binomial_acceptance(q, n, alpha=alpha, a=a, b=b)
    if accepted is None:  # cannot happen for 0 < q < 1 (the mixture is smallest near k = nq)
        return est, 0.0, math.inf
    k_lo, k_hi = accepted
    low = float(x[k_lo - 1]) if k_lo >= 1 else 0.0
    high = float(x[k_hi]) if k_hi + 1 <= n else math.inf
    return est, low, high


def _quantile_look(name: str, spec: Any, vals: dict[str, dict[str, float]], alpha: float,
                   n_opt: float) -> RuleLook:
    """A latency rule: candidate/baseline per-call quantile, bounded by the two sides' sequences."""
    margin = getattr(spec, "margin", None)
    fail_margin = getattr(spec, "fail_margin", None)
    fail_at = fail_margin if fail_margin is not None else margin
    metric = catalogue.RULES[name]
    q = float(metric.quantile or 0.5)
    rule_def = metric.rule
    min_n = getattr(spec, "min_n", None) or (rule_def.min_n if rule_def is not None else None) or 2
    sides = {s: np.array([v[s] for v in vals.values() if s in v], dtype=float) for s in ("baseline", "candidate")}
    n = min(sides["baseline"].size, sides["candidate"].size)
    if margin is None or n == 0:
        return RuleLook(name, "not_applicable", n, None, None, None, margin, fail_at)
    est_b, lo_b, hi_b = quantile_cs(sides["baseline"], q, alpha=alpha / 2, n_opt=n_opt)
    est_c, lo_c, hi_c = quantile_cs(sides["candidate"], q, alpha=alpha / 2, n_opt=n_opt)
    est = est_c / est_b if est_b > 0 else None
    low = lo_c / hi_b if hi_b > 0 and math.isfinite(hi_b) else 0.0
    high = hi_c / lo_b if lo_b > 0 and math.isfinite(hi_c) else math.inf
    note = f"candidate/baseline per-call p{round(q * 100)}, one call per case and side"
    if n < min_n:
        status: Literal["pass", "fail", "undecided", "not_applicable"] = "undecided"
        note += f"; {n} of min_n {min_n} calls per side"
    elif fail_at is not None and low > float(fail_at):
        status = "fail"
    elif high <= float(margin):
        status = "pass"
    else:
        status = "undecided"
    return RuleLook(name, status, n, est, low, high if math.isfinite(high) else None, margin, fail_at, note)


def _paired(values: dict[str, dict[str, float]], k: float = 1.0) -> np.ndarray:
    return np.array([v["candidate"] - k * v["baseline"] for v in values.values()
                     if "candidate" in v and "baseline" in v], dtype=float)


def _cs(d: np.ndarray, alpha: float, n_opt: float, spread: float) -> tuple[float, float, float]:
    """Mean of paired contrasts and its normal-mixture sequence.

    The variance gets one pseudo-pair of size ``spread`` (1 for rates: one discordant
    pair), so identical early cases never produce a zero-width interval.
    """
    n = d.size
    mean = float(d.mean())
    var = (float(((d - mean) ** 2).sum()) + spread**2) / n
    r = normal_mixture_radius(var / n, alpha, n, n_opt)
    return mean, mean - r, mean + r


def look(rules: dict[str, Any], values: dict[str, dict[str, dict[str, float]]], *, alpha: float, n_opt: float,
         known_bad_done: bool) -> list[RuleLook]:
    """Every enabled rule's standing at this look.

    ``rules``: name → spec with ``enabled``, ``margin``, ``floor`` and optionally
    ``fail_margin`` (the FAIL threshold; default: the margin itself); ``values``: from
    ``per_case_values``.
    """
    enabled = {n: s for n, s in rules.items() if getattr(s, "enabled", True) and n != "error_rate"}
    applicable = [n for n in enabled if values.get(n)]
    a = alpha / max(len(applicable), 1)
    out: list[RuleLook] = []
    for name, spec in sorted(enabled.items()):
        margin = getattr(spec, "margin", None)
        fail_margin = getattr(spec, "fail_margin", None)
        fail_at = fail_margin if fail_margin is not None else margin
        vals = values.get(name) or {}
        if name in QUANTILE_RULES:
            out.append(_quantile_look(name, spec, vals, a, n_opt))
            continue
        if name == "known_bad_refusal" and (margin is None or getattr(spec, "any_flip", False)):
            flips = sum(1 for v in vals.values() if v.get("baseline", 0) >= 0.5 > v.get("candidate", 1))
            status: Literal["pass", "fail", "undecided", "not_applicable"]
            status = "fail" if flips else ("pass" if known_bad_done else "undecided")
            if not vals:
                status = "pass" if known_bad_done else "not_applicable"
            out.append(RuleLook(name, status, len(vals), float(flips), None, None, None, None,
                                "any known-bad case that stops refusing fails"))
            continue
        ratio = name in RATIO_RULES
        d = _paired(vals, k=float(margin) if ratio and margin is not None else 1.0)
        if d.size == 0 or margin is None:
            out.append(RuleLook(name, "not_applicable", int(d.size), None, None, None, margin, fail_at))
            continue
        scale = float(np.mean([abs(v.get("baseline", 0.0)) for v in vals.values()]) or 1.0) if ratio else 1.0
        est, lo, hi = _cs(d, a, n_opt, scale)
        if ratio:
            # Contrast c - k b: harm above 0 at the FAIL multiplier, safe below 0 at the PASS one.
            d_fail = _paired(vals, k=float(fail_at)) if fail_at is not None else d
            _, lo_f, _ = _cs(d_fail, a, n_opt, scale)
            status = "fail" if lo_f > 0 else ("pass" if hi <= 0 else "undecided")
            out.append(RuleLook(name, status, int(d.size), est, lo, hi, 0.0, 0.0,
                                f"candidate − {margin}×baseline per case, mean"))
            continue
        if name in HIGHER_IS_BETTER:
            status = "fail" if fail_at is not None and hi < fail_at else ("pass" if lo >= margin else "undecided")
        else:
            status = "fail" if fail_at is not None and lo > fail_at else ("pass" if hi <= margin else "undecided")
        floor = getattr(spec, "floor", None)
        note = ""
        if floor is not None and status != "fail":
            cand = np.array([v["candidate"] for v in vals.values() if "candidate" in v])
            if cand.size:
                _, _, c_hi = _cs(cand - floor, a, n_opt, 1.0)
                if c_hi < 0:
                    status, note = "fail", f"candidate rate below the floor {floor:g}"
        out.append(RuleLook(name, status, int(d.size), est, lo, hi, margin, fail_at, note))
    return out


def decision(looks: list[RuleLook], n_cases: int) -> Literal["FAIL", "PASS"] | None:
    """FAIL when any rule failed; PASS when all applicable rules passed (after MIN_CASES)."""
    if any(r.status == "fail" for r in looks):
        return "FAIL"
    decided = [r for r in looks if r.status != "not_applicable"]
    if decided and n_cases >= MIN_CASES and all(r.status == "pass" for r in decided):
        return "PASS"
    return None
