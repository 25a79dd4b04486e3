"""Number formatting shared by every report format, so HTML, markdown and terminal agree.

Conventions: rates as percentages, differences of rates in percentage points ("pts"),
ratios as multipliers ("×1.07"), latencies in seconds, cost in USD with 6 significant
digits — and an unpriced cost is the word "unpriced", never "$0". ``ascii=True`` gives
output for terminals whose encoding may lack "−" and "×".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from evalrun import catalogue
from evalrun.analysis.summary_model import (
    MetricResult,
    QuantileMetric,
    RateMetric,
    RatioMetric,
    RuleResult,
    Side,
)

NA = "n/a"
AA_NOTE = "A/A run: both sides use the same configuration; differences measure the noise floor"
"""Said by every report format of an A/A run."""


def finite(x: Any) -> float | None:
    """A finite float, or None for anything else (None, NaN, strings, booleans)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    xf = float(x)
    return xf if math.isfinite(xf) else None


def _minus(s: str, ascii: bool) -> str:
    return s if ascii else s.replace("-", "\u2212")


def signed(x: Any, digits: int = 1, *, ascii: bool = False) -> str:
    """``+1.2`` / ``−3.0`` (true minus sign unless ``ascii``)."""
    v = finite(x)
    if v is None:
        return NA
    if round(v, digits) == 0:
        v = 0.0  # never "−0.0"
    return _minus(f"{v:+.{digits}f}", ascii)


def pct(x: Any, digits: int = 1) -> str:
    """A rate as a percentage: ``0.875`` → ``87.5%``."""
    v = finite(x)
    return NA if v is None else f"{v * 100:.{digits}f}%"


def pts(x: Any, *, ascii: bool = False) -> str:
    """A difference of rates in percentage points: ``-0.03`` → ``−3.0 pts``."""
    v = finite(x)
    return NA if v is None else f"{signed(v * 100, 1, ascii=ascii)} pts"


def pts_ci(ci: Any, *, ascii: bool = False) -> str:
    """An interval of rate differences in points: ``[−7.1, +1.2]`` ("" when absent)."""
    lo, hi = _pair(ci)
    if lo is None or hi is None:
        return ""
    return f"[{signed(lo * 100, 1, ascii=ascii)}, {signed(hi * 100, 1, ascii=ascii)}]"


def times(x: Any, *, ascii: bool = False) -> str:
    """A ratio as a multiplier: ``1.0712`` → ``×1.07``."""
    v = finite(x)
    if v is None:
        return NA
    return f"{'x' if ascii else '×'}{v:.2f}"


def times_ci(ci: Any, *, ascii: bool = False) -> str:
    """An interval of ratios: ``[×0.98, ×1.15]`` ("" when absent)."""
    lo, hi = _pair(ci)
    if lo is None or hi is None:
        return ""
    return f"[{times(lo, ascii=ascii)}, {times(hi, ascii=ascii)}]"


def rate_ci(ci: Any) -> str:
    """An interval of rates: ``[76.5%, 93.8%]`` ("" when absent)."""
    lo, hi = _pair(ci)
    if lo is None or hi is None:
        return ""
    return f"[{pct(lo)}, {pct(hi)}]"


def seconds(x: Any, *, unit: bool = True) -> str:
    """A duration with sensible precision: ``1.27 s``, ``0.177 s``, ``123 s``."""
    v = finite(x)
    if v is None:
        return NA
    a = abs(v)
    text = f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 1 else f"{v:.3f}"
    return f"{text} s" if unit else text


def seconds_ci(ci: Any) -> str:
    """An interval of durations: ``[1.02, 1.47] s`` ("" when absent)."""
    lo, hi = _pair(ci)
    if lo is None or hi is None:
        return ""
    return f"[{seconds(lo, unit=False)}, {seconds(hi, unit=False)}] s"


def signed_seconds_ci(ci: Any, *, ascii: bool = False) -> str:
    """An interval of latency differences: ``[−0.55, +0.08] s`` ("" when absent)."""
    lo, hi = _pair(ci)
    if lo is None or hi is None:
        return ""
    ends = [signed_seconds(v, ascii=ascii).removesuffix(" s") for v in (lo, hi)]
    return f"[{ends[0]}, {ends[1]}] s"


def signed_seconds(x: Any, *, ascii: bool = False) -> str:
    """A latency difference: ``+0.12 s``."""
    v = finite(x)
    if v is None:
        return NA
    s = seconds(v)
    return _minus(s if v < 0 else "+" + s, ascii)


def count(x: Any) -> str:
    """An integer count with thousands separators."""
    v = finite(x)
    return NA if v is None else f"{round(v):,}"


def tokens(x: Any) -> str:
    """A mean token count: ``30.3``."""
    v = finite(x)
    return NA if v is None else f"{v:,.1f}"


def usd(x: Any) -> str:
    """USD with 6 significant digits, positional (``$0.0000123457``, never ``1.2e-05``)."""
    v = finite(x)
    if v is None:
        return NA
    return "$" + format(Decimal(f"{v:.6g}"), "f")


def p_value(x: Any) -> str:
    """A p- or q-value: 3 significant digits, ``<0.0001`` below that."""
    v = finite(x)
    if v is None:
        return NA
    return "<0.0001" if v < 0.0001 else f"{v:.3g}"


def _pair(ci: Any) -> tuple[float | None, float | None]:
    if not isinstance(ci, Sequence) or isinstance(ci, str) or len(ci) != 2:
        return None, None
    return finite(ci[0]), finite(ci[1])


def cost_label(statuses: Sequence[str] | None, value: Any) -> str:
    """One side's cost: "unpriced", "local (free)", "n/a" or dollars.

    ``statuses`` are the cost statuses of that side's successful calls (summary
    ``metrics[cost].cost_status[side]``); a value is shown in dollars only when every call
    was priced, so an unpriced model never reads as free.
    """
    st = set(statuses or ())
    if "unpriced" in st:
        return "unpriced"
    if st and st <= {"local"}:
        return "local (free)"
    if not st:
        return NA
    return usd(value)


def call_cost(status: Any, value: Any) -> str:
    """One call's cost (a results row's ``cost_status`` and ``cost_usd``)."""
    if status == "unpriced":
        return "unpriced"
    if status == "local":
        return "local (free)"
    return usd(value)


def rule_kind(rule: RuleResult) -> str:
    """How a gate rule's numbers read: ``delta`` (points), ``ratio``, ``rate`` or ``other``."""
    metric = catalogue.RULES.get(rule.rule)
    if metric is not None and metric.rule is not None:
        return metric.rule.kind
    if rule.rule == "error_rate":
        return "rate"  # observed = the worse side's error rate, margin = the tolerance
    return "other"


def rule_observed(rule: RuleResult, *, ascii: bool = False) -> str:
    """A rule's observed value and interval: ``−3.0 pts [−7.1, +1.2]`` / ``×1.07 [×0.98, ×1.17]``."""
    kind = rule_kind(rule)
    obs, ci = rule.observed, rule.ci
    if finite(obs) is None:
        return "—" if not ascii else "-"
    if kind == "delta":
        return f"{pts(obs, ascii=ascii)} {pts_ci(ci, ascii=ascii)}".strip()
    if kind == "ratio":
        return f"{times(obs, ascii=ascii)} {times_ci(ci, ascii=ascii)}".strip()
    if kind == "rate":
        return f"{pct(obs)} (worse side)"
    return str(obs)


def rule_margin(rule: RuleResult, *, ascii: bool = False) -> str:
    """A rule's thresholds: the PASS margin, the FAIL threshold when it differs, a bound.

    ``−3.0 pts (fails on any evident drop)``, ``×1.15``, ``−3.0 pts, floor 99.0%``.
    """
    kind = rule_kind(rule)
    parts: list[str] = []
    margin, floor, ceiling, fail_at = rule.margin, rule.floor, rule.ceiling, rule.fail_margin
    if finite(margin) is not None:
        if kind == "delta":
            text = pts(margin, ascii=ascii)
            if finite(fail_at) is not None and fail_at != margin:
                worse = "rise" if rule.rule == "over_refusal" else "drop"
                text += (f" (fails on any evident {worse})" if fail_at == 0
                         else f" (fails beyond {pts(fail_at, ascii=ascii)})")
            parts.append(text)
        elif kind == "ratio":
            text = times(margin, ascii=ascii)
            if finite(fail_at) is not None and fail_at != margin:
                text += f" (fails beyond {times(fail_at, ascii=ascii)})"
            parts.append(text)
        elif kind == "rate":
            parts.append(f"{'<=' if ascii else '≤'} {pct(margin, 1)}")
        else:
            parts.append(str(margin))
    if finite(floor) is not None:
        parts.append(f"floor {pct(floor, 1)}")
    if finite(ceiling) is not None:
        parts.append(f"ceiling {pct(ceiling, 1)}")
    if not parts:
        return "—" if not ascii else "-"
    return ", ".join(parts)


def rule_p(rule: RuleResult) -> str:
    """A rule's FAIL test: ``p 0.012, Holm 0.094`` (raw and family-wise adjusted p-value).

    Only FAIL and INCONCLUSIVE rules show it: a PASS rule is decided by its interval, and
    the p-value of a test for harm on an evidently better candidate ("1") only confuses.
    """
    if rule.status not in ("fail", "inconclusive"):
        return ""
    raw = [x for x in (finite(rule.p_value), finite(rule.p_bound)) if x is not None]
    if not raw:
        return ""
    text = f"p {p_value(min(raw))}"
    adj = finite(rule.p_adjusted)
    if adj is not None:
        text += f", Holm {p_value(adj)}"
    return text


def rule_settle(rule: RuleResult, *, ascii: bool = False) -> str:
    """How many paired cases would settle an INCONCLUSIVE rule, either way (80 % power).

    ``cases_needed`` is the fewer of the cases to clear the margin and the cases to show a
    regression at the observed change; the report does not say which, so it never reads as
    if the tool wanted the rule to fail. "" when not inconclusive or not computable.
    """
    if rule.status != "inconclusive" or rule.cases_needed is None:
        return ""
    return f"{'~' if ascii else '≈'}{rule.cases_needed:,} cases would settle it"


def rule_mde(rule: RuleResult, *, ascii: bool = False) -> str:
    """Smallest regression detected (80 % power), cases that would settle it, cases to pass at all."""
    kind = rule_kind(rule)
    parts: list[str] = []
    mde = finite(rule.mde)
    if mde is not None:
        parts.append(f"MDE {times(mde, ascii=ascii)}" if kind == "ratio" else f"MDE {abs(mde) * 100:.1f} pts")
    settle = rule_settle(rule, ascii=ascii)
    if settle:
        parts.append(settle)
    if rule.cases_to_pass is not None and rule.paired_n < rule.cases_to_pass:
        parts.append(f"can pass only with {'>=' if ascii else '≥'}{rule.cases_to_pass:,} cases")
    return "; ".join(parts)


def metric_change(m: MetricResult, *, ascii: bool = False) -> str:
    """A metric's change with its interval, in the metric's own units."""
    if isinstance(m, RateMetric):
        if finite(m.delta) is None:
            return NA
        return f"{pts(m.delta, ascii=ascii)} {pts_ci(m.delta_ci, ascii=ascii)}".strip()
    if isinstance(m, RatioMetric | QuantileMetric):
        if finite(m.ratio) is None:
            return str(m.note or NA) if isinstance(m, RatioMetric) else NA
        return f"{times(m.ratio, ascii=ascii)} {times_ci(m.ratio_ci, ascii=ascii)}".strip()
    return ""


def metric_side(m: MetricResult, side: Side, *, with_ci: bool = True) -> str:
    """One side's value of a metric, in its units (with its interval when it has one)."""
    if isinstance(m, RateMetric):
        r = m.baseline if side == "baseline" else m.candidate
        value = pct(r.value)
        ci = rate_ci(r.ci) if with_ci else ""
        return f"{value} {ci}".strip()
    if isinstance(m, RatioMetric):
        mean = (m.baseline if side == "baseline" else m.candidate).mean
        if m.metric == "cost":
            return cost_label((m.cost_status or {}).get(side), mean)
        return tokens(mean)
    if isinstance(m, QuantileMetric):
        q = m.baseline if side == "baseline" else m.candidate
        if q.enough is False:
            return f"{seconds(q.value)} (not enough calls)"
        ci = seconds_ci(q.ci) if with_ci else ""
        return f"{seconds(q.value)} {ci}".strip()
    return seconds((m.baseline if side == "baseline" else m.candidate).value)
