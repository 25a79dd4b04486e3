"""report.html: one self-contained page a reviewer opens offline.

The page is server-rendered from ``summary`` (header, rules, labels and config diff,
metrics, slices, flips, distributions) so it reads without JavaScript; the per-case
browser is a small inline script that pages through a JSON blob of every case and builds
the DOM with ``textContent`` only.

Safety model: every value is untrusted. jinja2 autoescapes, a ``finalize`` hook strips
control characters from every printed string, the JSON blob is escaped so no string in it
can close its ``<script>`` element, and a Content-Security-Policy allows only this page's
own script and style (by hash) and no network access at all.

Determinism: the same summary and rows give byte-identical HTML — everything is sorted,
nothing random, and the only wall-clock value is ``summary["created"]``.
"""

from __future__ import annotations

import base64
import difflib
import functools
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from evalrun.analysis.summary_model import (
    Familywise,
    MetricResult,
    QuantileMetric,
    RateMetric,
    RatioMetric,
    RuleResult,
    Summary,
    VariantInfo,
    as_summary,
)
from evalrun.catalogue import METRICS
from evalrun.records import SIDES
from evalrun.report import charts, fmt
from evalrun.report import digest as digest_mod
from evalrun.report.fmt import AA_NOTE
from evalrun.report.sanitize import json_for_script, strip_control, truncate

if TYPE_CHECKING:
    from jinja2 import Environment

    from evalrun.project.loader import Project

TEMPLATE_DIR = Path(__file__).parent / "templates"
PAGE_SIZE = 50
# Server-rendered lists are capped so a 10,000-case suite stays a reasonable page; the
# case browser below them holds everything.
MAX_FLIPS_SHOWN = 500
MAX_DIFF_LINES = 2000
MAX_DETAIL_CHARS = 2000

STATUS_ORDER = ("regressed", "improved", "errors", "mixed", "both_fail", "both_pass")
STATUS_LABELS = {
    "regressed": "regressed",
    "improved": "improved",
    "errors": "errors",
    "mixed": "mixed",
    "both_fail": "both fail",
    "both_pass": "both pass",
}
VERDICT_CLASSES = {"PASS": "pass", "FAIL": "fail", "INCONCLUSIVE": "inconclusive", "COULD_NOT_MEASURE": "cnm"}
SLICE_METRICS: tuple[tuple[str, str], ...] = tuple((m.name, m.slice_label) for m in METRICS if m.slice_label)
"""Columns of the per-kind / per-cohort table (the catalogue's slice metrics)."""


def _pretty_json(value: Any) -> str:
    """The text of ``json.dumps(value, sort_keys=True, ensure_ascii=False, indent=1, default=str)``.

    ``indent`` makes json fall back to its pure-Python encoder (a third of the report's time
    at 10,000 cases); this walks dicts and lists itself and encodes leaves with the C
    encoder. Keys that are not strings are written as json writes them (``1`` → ``"1"``,
    ``True`` → ``"true"``) and sorted as text, where json itself would refuse mixed keys.
    """
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = sorted((_json_key(k), v) for k, v in value.items())
        return _pretty_block("{", "}", [f"{json.dumps(k, ensure_ascii=False)}: {_pretty_json(v)}" for k, v in items])
    if isinstance(value, list | tuple):
        return _pretty_block("[", "]", [_pretty_json(v) for v in value]) if value else "[]"
    if isinstance(value, str | int | float | bool) or value is None:
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(str(value), ensure_ascii=False)  # default=str


def _pretty_block(open_: str, close: str, items: list[str]) -> str:
    """Items one per line, each indented one space deeper (json's ``indent=1``)."""
    body = ",\n".join(items).replace("\n", "\n ")
    return f"{open_}\n {body}\n{close}"


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool):
        return json.dumps(key)
    return str(key) if isinstance(key, int) else repr(key) if isinstance(key, float) else str(key)


# --------------------------------------------------------------------------- environment


def _finalize(value: Any) -> Any:
    """Applied to every ``{{ }}`` value: strip controls from plain strings, keep Markup."""
    from markupsafe import Markup

    if value is None:
        return ""
    if isinstance(value, Markup):
        return value
    if isinstance(value, str):
        return strip_control(value)
    return value


@functools.lru_cache(maxsize=1)
def _environment() -> Environment:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        # Autoescape by the .html suffix; anything else (strings included) escapes too.
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True, default=True),
        undefined=StrictUndefined,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _asset(name: str) -> str:
    return (TEMPLATE_DIR / name).read_text(encoding="utf-8")


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


# --------------------------------------------------------------------------- small helpers


def _s(value: Any, limit: int = MAX_DETAIL_CHARS) -> str:
    """Untrusted value → display string (controls stripped, capped)."""
    text = strip_control("" if value is None else str(value))
    text, cut = truncate(text, limit)
    return text + f"… (truncated: {cut:,} more characters)" if cut else text


def _ci(ci: Any) -> tuple[float | None, float | None]:
    if isinstance(ci, Sequence) and not isinstance(ci, str) and len(ci) == 2:
        return fmt.finite(ci[0]), fmt.finite(ci[1])
    return None, None


def _overall_rules(summary: Summary) -> dict[str, RuleResult]:
    """Overall-scope rules by the metric they read."""
    out: dict[str, RuleResult] = {}
    for r in summary.verdict.rules:
        if r.scope == "overall" and r.metric:
            out.setdefault(r.metric, r)
    return out


# --------------------------------------------------------------------------- sections


def _header(summary: Summary) -> dict[str, Any]:
    verdict, run = summary.verdict, summary.run
    b, c = summary.variants.get("baseline"), summary.variants.get("candidate")
    return {
        "suite": _s(run.suite, 200),
        "created": _s(summary.created, 100),
        "status": verdict.status,
        "status_class": VERDICT_CLASSES.get(verdict.status, "cnm"),
        "exit_code": verdict.exit_code,
        "on_inconclusive": verdict.on_inconclusive,
        "reasons": [_s(r) for r in verdict.reasons],
        "warnings": [_s(w) for w in verdict.warnings],
        "familywise": _familywise_text(verdict.familywise),
        "aa_note": AA_NOTE if run.aa_mode else "",
        # a subset's verdict is not the suite's: said in the open, not among collapsed warnings
        "subset": _s(verdict.warnings[0], 500) if run.subset and verdict.warnings else "",
        "baseline": _side_short(b, "baseline"),
        "candidate": _side_short(c, "candidate"),
        "size": f"{fmt.count(run.n_cases)} cases × {fmt.count(run.samples)} sample(s)",
        "label_changes": [
            (_s(k, 100), _s(v[0], 100) if len(v) > 0 else fmt.NA, _s(v[1], 100) if len(v) > 1 else fmt.NA)
            for k, v in sorted(summary.label_changes.items())
        ],
        "facts": [
            ("Cases", fmt.count(run.n_cases)),
            ("Samples per case", fmt.count(run.samples)),
            ("Confidence", fmt.pct(run.confidence, 0) + f" (one-sided α = {run.alpha})"),
            ("Baseline", _side_name(b)),
            ("Candidate", _side_name(c)),
            ("Fingerprint", _s(run.fingerprint, 100)),
            ("evalrun", _s(summary.evalrun_version, 50)),
            ("Created", _s(summary.created, 100)),
        ],
    }


def _side_short(v: VariantInfo | None, side: str) -> str:
    """``baseline (model)`` / ``baseline my-name (model)``: never the side's name twice."""
    if v is None:
        return f"{side} {fmt.NA}"
    return _s(f"{side} ({v.model})" if v.name == side else f"{side} {v.name} ({v.model})", 300)


def _familywise_text(fw: Familywise | Mapping[str, Any]) -> str:
    """How FAILs were corrected for multiplicity, in one sentence ("" for old summaries)."""
    if not isinstance(fw, Familywise):
        return ""
    return (f"FAIL tests corrected together (Holm): {fw.hypotheses} hypotheses at family-wise α = {fw.alpha}; "
            "an unchanged candidate fails any of them at most that often.")


def _side_name(v: VariantInfo | None) -> str:
    if v is None:
        return fmt.NA
    return _s(f"{v.name} · {v.model} · {v.config_file}", 400)


def _rules(summary: Summary) -> dict[str, Any]:
    """The full rule table; the version-label rules fold into one line when they all pass."""
    labels = [r for r in summary.verdict.rules if r.rule.startswith("label_")]
    fold = bool(labels) and all(r.status == "pass" for r in labels)
    rows = [
        {
            "rule": _s(r.rule, 200),
            "scope": "" if r.scope == "overall" else _s(r.scope, 200),
            "trigger": _s(r.trigger, 500),
            "observed": fmt.rule_observed(r),
            "margin": fmt.rule_margin(r),
            "status": r.status,
            "reason": _s(r.reason),
            "power": fmt.rule_mde(r),
            "p": fmt.rule_p(r),
            "warnings": [_s(w, 500) for w in r.warnings],
        }
        for r in summary.verdict.rules
        if not (fold and r.rule.startswith("label_"))
    ]
    return {"rows": rows, "labels_folded": len(labels) if fold else 0}


def _labels(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    from evalrun.project.config import VERSION_LABELS

    labels = summary.get("labels") or {}
    b, c = labels.get("baseline") or {}, labels.get("candidate") or {}
    keys = list(VERSION_LABELS) + sorted((set(b) | set(c)) - set(VERSION_LABELS))
    return [
        {"label": k, "baseline": _s(b.get(k), 200), "candidate": _s(c.get(k), 200), "changed": b.get(k) != c.get(k)}
        for k in keys
    ]


def _yaml(data: Any) -> str:
    import yaml

    return str(yaml.safe_dump(data, sort_keys=True, allow_unicode=True, default_flow_style=False, width=100))


def _diff(title: str, a: str | None, b: str | None, from_name: str, to_name: str) -> dict[str, Any]:
    a_lines = strip_control(a or "").splitlines()
    b_lines = strip_control(b or "").splitlines()
    lines: list[tuple[str, str]] = []
    for line in difflib.unified_diff(a_lines, b_lines, fromfile=from_name, tofile=to_name, lineterm="", n=3):
        if line.startswith(("+++", "---")):
            cls = "dh"
        elif line.startswith("@@"):
            cls = "hunk"
        elif line.startswith("+"):
            cls = "add"
        elif line.startswith("-"):
            cls = "del"
        else:
            cls = "ctx"
        lines.append((cls, line))
    hidden = max(0, len(lines) - MAX_DIFF_LINES)
    return {
        "title": title,
        "identical": not lines,
        "absent": a is None and b is None,
        "lines": lines[:MAX_DIFF_LINES],
        "hidden": hidden,
    }


def _config_section(project: Project) -> dict[str, Any]:
    b, c = project.baseline, project.candidate
    b_name, c_name = _s(str(b.path), 300), _s(str(c.path), 300)
    b_yaml = _yaml(b.config.model_dump(mode="json"))
    c_yaml = _yaml(c.config.model_dump(mode="json"))
    return {
        "diffs": [
            _diff("Config (sorted YAML)", b_yaml, c_yaml, b_name, c_name),
            _diff("System template", b.system_template, c.system_template, f"{b_name} (system)", f"{c_name} (system)"),
            _diff("User template", b.user_template, c.user_template, f"{b_name} (user)", f"{c_name} (user)"),
        ],
        "baseline_yaml": _s(b_yaml, 50_000),
        "candidate_yaml": _s(c_yaml, 50_000),
        "baseline_name": b_name,
        "candidate_name": c_name,
    }


def _metric_chart(m: MetricResult, rule: RuleResult | None) -> str:
    status = rule.status if rule else None
    kind = fmt.rule_kind(rule) if rule else None
    margin = fmt.finite(rule.margin) if rule else None
    if isinstance(m, RateMetric):
        point = fmt.finite(m.delta)
        lo, hi = _ci(m.delta_ci)

        def scale(v: float | None) -> float | None:
            return None if v is None else v * 100  # the axis is in points

        title = f"Δ {fmt.pts(point)} {fmt.pts_ci(m.delta_ci)}"
        if kind == "delta" and margin is not None:
            title += f"; margin {fmt.pts(margin)}"
        return charts.interval_chart(
            scale(point), scale(lo), scale(hi), reference=0.0,
            margin=scale(margin) if kind == "delta" else None, status=status, title=title,
        )
    if isinstance(m, RatioMetric | QuantileMetric):
        point = fmt.finite(m.ratio)
        lo, hi = _ci(m.ratio_ci)
        title = f"ratio {fmt.times(point)} {fmt.times_ci(m.ratio_ci)}"
        if kind == "ratio" and margin is not None:
            title += f"; margin {fmt.times(margin)}"
        return charts.interval_chart(
            point, lo, hi, reference=1.0, margin=margin if kind == "ratio" else None, status=status, title=title
        )
    return ""


def _metric_notes(m: MetricResult) -> list[str]:
    notes: list[str] = []
    if isinstance(m, QuantileMetric) and any(m.cached_calls.get(s) for s in SIDES):
        notes.append("includes cached calls (latency recorded earlier): "
                     + ", ".join(f"{s} {fmt.count(m.cached_calls.get(s, 0))}" for s in SIDES))
    if isinstance(m, RatioMetric):
        totals = []
        for side, s in zip(SIDES, (m.baseline, m.candidate), strict=True):
            if m.metric == "cost":
                totals.append(f"{side} total {fmt.cost_label((m.cost_status or {}).get(side), s.total)}")
            else:
                totals.append(f"{side} total {fmt.count(s.total)}")
        notes.append("; ".join(totals))
        if m.excluded:
            notes.append(f"{fmt.count(m.excluded)} case(s) excluded from the ratio (no value on one side)")
        if m.note:
            notes.append(_s(m.note, 300))
    return notes


def _metrics(summary: Summary) -> list[dict[str, Any]]:
    from markupsafe import Markup

    rules = _overall_rules(summary)
    out = []
    for m in summary.metrics:
        rule = rules.get(m.metric)
        change = fmt.metric_change(m)
        extra = ""
        if isinstance(m, QuantileMetric) and fmt.finite(m.delta_s) is not None:
            extra = f"Δ {fmt.signed_seconds(m.delta_s)} {fmt.signed_seconds_ci(m.delta_ci)}".strip()
        if isinstance(m, RatioMetric) and fmt.finite(m.ratio) is None:
            change = fmt.NA
        paired_n = getattr(m, "paired_n", None)
        out.append(
            {
                "metric": m.metric,
                "label": _s(m.label, 200),
                "baseline": fmt.metric_side(m, "baseline"),
                "candidate": fmt.metric_side(m, "candidate"),
                "change": change,
                "extra": extra,
                "p": fmt.p_value(m.p_value) if isinstance(m, RateMetric) else "",
                "n": fmt.count(paired_n) if paired_n is not None else "",
                "chart": Markup(_metric_chart(m, rule)),
                "status": rule.status if rule else "",
                "gated": rule is not None,
                "method": _s(getattr(m, "method", None) or "", 300),
                "notes": _metric_notes(m),
            }
        )
    return out


def _calls(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    calls = summary.get("calls") or {}
    out = []
    for side in SIDES:
        c = calls.get(side) or {}
        by_kind = c.get("errors_by_kind") or {}
        out.append(
            {
                "side": side,
                "total": fmt.count(c.get("total")),
                "ok": fmt.count(c.get("ok")),
                "errors": fmt.count(c.get("errors")),
                "errors_by_kind": ", ".join(f"{_s(k, 100)} {fmt.count(v)}" for k, v in sorted(by_kind.items())),
                "content_policy": fmt.count(c.get("content_policy")),
                "retried": fmt.count(c.get("retried")),
                "attempts": fmt.count(c.get("attempts")),
                "cached": f"{fmt.count(c.get('cached'))} cached (latency recorded earlier)",
                "tokens_estimated": fmt.count(c.get("tokens_estimated")),
            }
        )
    return out


def _latency_measurement(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """How latency was measured per side, and the client's own overhead (None: old summary)."""
    lm = summary.get("latency_measurement")
    if not isinstance(lm, Mapping):
        return None
    labels = lm.get("clock_labels") or {}
    sides = []
    for side in SIDES:
        s = lm.get(side) or {}
        clocks = s.get("clocks") or {}
        client, overhead = s.get("client") or {}, s.get("overhead") or {}
        share = fmt.finite(overhead.get("share"))
        sides.append(
            {
                "side": side,
                "clocks": "; ".join(
                    f"{_s(labels.get(k, k), 80)} {fmt.count(v)}" for k, v in sorted(clocks.items()) if v
                ) or fmt.NA,
                "client": f"{fmt.seconds(client.get('p50'))} / {fmt.seconds(client.get('p95'))}",
                "overhead": f"{fmt.seconds(overhead.get('p50'))} / {fmt.seconds(overhead.get('p95'))}",
                "share": fmt.pct(share) if share is not None else fmt.NA,
                "n": fmt.count(overhead.get("n")),
                "warmup": fmt.count(s.get("warmup")),
                "cached": fmt.count(s.get("cached")),
            }
        )
    ratio = lm.get("client_ratio") or {}
    return {
        "sides": sides,
        "client_ratio": f"{fmt.times(ratio.get('p50'))} / {fmt.times(ratio.get('p95'))}",
        "notes": [_s(n, 300) for n in lm.get("notes") or []],
    }


def _consistency(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    run = summary.get("run") or {}
    if int(run.get("samples") or 1) <= 1:
        return None
    cons = summary.get("consistency") or {}
    flaky = summary.get("flaky") or []
    return {
        "sides": [
            {
                "side": side,
                "pass_at_k": fmt.pct((cons.get(side) or {}).get("pass_at_k")),
                "pass_hat_k": fmt.pct((cons.get(side) or {}).get("pass_hat_k")),
            }
            for side in SIDES
        ],
        "flaky": [
            {
                "case_id": _s(f.get("case_id"), 200),
                "side": _s(f.get("side"), 20),
                "passes": f"{fmt.count(f.get('passes'))}/{fmt.count(f.get('samples'))}",
            }
            for f in flaky[:MAX_FLIPS_SHOWN]
        ],
        "flaky_hidden": max(0, len(flaky) - MAX_FLIPS_SHOWN),
        "flaky_total": len(flaky),
    }


def _slice_cell(m: MetricResult | None, critical: bool, level: float) -> dict[str, Any]:
    if isinstance(m, RateMetric):
        if not m.paired_n:
            return {"empty": True}
        return {
            "empty": False,
            "main": f"{fmt.pct(m.baseline.value)} → {fmt.pct(m.candidate.value)}",
            "change": fmt.metric_change(m),
            "status": digest_mod.direction(m),
            "sig": digest_mod.is_significant(m, level),
            "p": "" if critical or m.q_value is None else f"q {fmt.p_value(m.q_value)}",
            "p_crit": f"p {fmt.p_value(m.p_value)}" if critical and m.p_value is not None else "",
        }
    if not isinstance(m, RatioMetric) or fmt.finite(m.ratio) is None:
        return {"empty": True}
    return {
        "empty": False,
        "main": f"{fmt.tokens(m.baseline.mean)} → {fmt.tokens(m.candidate.mean)}",
        "change": fmt.metric_change(m),
        "status": digest_mod.direction(m),
        "sig": digest_mod.is_significant(m, level),
        "p": "",
        "p_crit": "",
    }


def _slices(summary: Summary) -> list[dict[str, Any]]:
    level = 1.0 - float(summary.run.confidence)
    out = []
    dims: tuple[tuple[Literal["kind", "cohort"], str], ...] = (("kind", "By kind"), ("cohort", "By cohort"))
    for dim, title in dims:
        entries = summary.slices.get(dim) or {}
        rows = []
        for value in sorted(entries):
            e = entries[value]
            by = {m.metric: m for m in e.metrics}
            rows.append(
                {
                    "value": _s(value, 200),
                    "n_cases": fmt.count(e.n_cases),
                    "critical": e.critical,
                    "cells": [_slice_cell(by.get(name), e.critical, level) for name, _ in SLICE_METRICS],
                }
            )
        out.append({"dim": dim, "title": title, "rows": rows})
    return out


def _flips(summary: Mapping[str, Any], samples: int) -> dict[str, Any]:
    flips = summary.get("flips") or {}

    def show(x: Any) -> str:
        v = fmt.finite(x)
        if v is None:
            return fmt.NA
        if samples <= 1:
            return "pass" if v >= 1 else "fail"
        return fmt.pct(v, 0) + " pass"

    out: dict[str, Any] = {}
    for key in ("regressions", "improvements"):
        items = flips.get(key) or []
        out[key] = [
            {
                "case_id": _s(f.get("case_id"), 200),
                "href": digest_mod.case_anchor(f.get("case_id")),
                "kind": _s(f.get("kind"), 200),
                "cohort": _s(f.get("cohort"), 200),
                "baseline": show(f.get("baseline")),
                "candidate": show(f.get("candidate")),
            }
            for f in items[:MAX_FLIPS_SHOWN]
        ]
        out[key + "_hidden"] = max(0, len(items) - MAX_FLIPS_SHOWN)
        out[key + "_total"] = len(items)
    return out


def _distributions(rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    from markupsafe import Markup

    latency: dict[str, list[float]] = {s: [] for s in SIDES}
    completion: dict[str, list[float]] = {s: [] for s in SIDES}
    for r in rows:
        side = r.get("side")
        if side not in latency or r.get("error_kind") is not None:
            continue
        lat, ct = fmt.finite(r.get("latency_s")), fmt.finite(r.get("completion_tokens"))
        if lat is not None:
            latency[side].append(lat)
        if ct is not None:
            completion[side].append(ct)
    out = []
    svg = charts.histogram_svg(latency, label="latency per call (s)", fmt=lambda v: fmt.seconds(v))
    if svg:
        out.append(Markup(svg))
    svg = charts.histogram_svg(completion, label="completion tokens per call", fmt=lambda v: f"{v:,.0f}")
    if svg:
        out.append(Markup(svg))
    return out


def _example_inputs(project: Project | None, first: digest_mod.Digest) -> dict[str, str]:
    """The input of each first-screen example, one short line (the case card has it all)."""
    if project is None:
        return {}
    by_id = {c.id: c for c in project.cases}
    out = {}
    for ex in first.examples:
        case = by_id.get(ex.case_id)
        if case is None:
            continue
        if case.messages:
            text = str(case.messages[-1].get("content") if isinstance(case.messages[-1], Mapping) else case.messages[-1])
        else:
            strings = [str(v) for _, v in sorted(case.vars.items()) if isinstance(v, str)]
            text = strings[0] if len(strings) == 1 else _pretty_json(dict(case.vars)) if case.vars else ""
        out[ex.case_id] = _s(" ".join(text.split()), digest_mod.EXAMPLE_CHARS)
    return out


# --------------------------------------------------------------------------- case data


def _side_entry(r: Mapping[str, Any], limit: int) -> dict[str, Any]:
    """One call as the case browser shows it (strings stripped and capped, numbers formatted)."""
    score = r.get("score") or {}
    output = r.get("output")
    out_text, cut = truncate(strip_control(output), limit) if isinstance(output, str) else (None, 0)
    tools = []
    for tc in r.get("tool_calls") or []:
        args, acut = truncate(strip_control(str(tc.get("arguments") or "")), limit)
        tools.append([_s(tc.get("name"), 200), args, acut])
    checks = [
        [_s(c.get("check"), 200), bool(c.get("passed")), _s(c.get("detail"))] for c in score.get("checks") or []
    ]
    pt, ct = r.get("prompt_tokens"), r.get("completion_tokens")
    meta: list[list[str]] = [
        ["tokens", f"{fmt.count(pt)} in / {fmt.count(ct)} out" + (" (estimated)" if r.get("tokens_estimated") else "")],
        ["latency", fmt.seconds(r.get("latency_s"))],
        ["cost", fmt.call_cost(r.get("cost_status"), r.get("cost_usd"))],
        ["finish", _s(r.get("finish_reason") or fmt.NA, 100)
         + (" (answer over max_response_mb: cut there)" if r.get("response_truncated") else "")],
    ]
    if (r.get("attempts") or 0) > 1:
        meta.append(["attempts", fmt.count(r.get("attempts"))])
    if r.get("cached"):
        meta.append(["cached", "yes (latency recorded earlier)"])
    if score.get("refused"):
        meta.append(["refused", _s(score.get("refusal_source") or "yes", 100)])
    error = None
    if r.get("error_kind") is not None:
        error = _s(f"{r.get('error_kind')}: {r.get('error_message') or ''}".rstrip(": "))
    refusal = r.get("refusal")
    return {
        "out": out_text,
        "cut": cut,
        "pass": score.get("passed"),
        "checks": checks,
        "tools": tools,
        "meta": meta,
        "err": error,
        "ref": _s(refusal) if refusal else None,
    }


def _case_status(b: list[bool], c: list[bool], regressed: bool, improved: bool, errors: bool) -> str:
    if regressed:
        return "regressed"
    if improved:
        return "improved"
    if errors:
        return "errors"
    if b and c and all(b) and all(c):
        return "both_pass"
    if b and c and not any(b) and not any(c):
        return "both_fail"
    return "mixed"


def build_case_data(project: Project | None, summary: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The case browser's data: every case with its samples side by side, sorted for review.

    Order: regressed, improved, errored, mixed, both fail, both pass; by case id within.
    Outputs are capped at the suite's ``max_response_chars`` (``cut`` counts the rest).
    """
    limit = project.suite.config.max_response_chars if project is not None else 20_000
    meta = {c.id: c for c in project.cases} if project is not None else {}
    flips = summary.get("flips") or {}
    regressed = {str(f.get("case_id")) for f in flips.get("regressions") or []}
    improved = {str(f.get("case_id")) for f in flips.get("improvements") or []}
    by_case: dict[str, dict[int, dict[str, Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    first_row: dict[str, Mapping[str, Any]] = {}
    for r in rows:
        cid = str(r.get("case_id"))
        side = str(r.get("side"))
        if side not in SIDES:
            continue
        by_case[cid][int(r.get("sample") or 0)][side] = r
        first_row.setdefault(cid, r)
    cases = []
    for cid in sorted(by_case):
        samples = by_case[cid]
        passes: dict[str, list[bool]] = {s: [] for s in SIDES}
        errors = False
        sample_list = []
        for n in sorted(samples):
            entry: dict[str, Any] = {"n": n}
            for side, key in (("baseline", "b"), ("candidate", "c")):
                call = samples[n].get(side)
                if call is None:
                    entry[key] = None
                    continue
                entry[key] = _side_entry(call, limit)
                ek = call.get("error_kind")
                if ek is not None and ek != "content_policy":
                    errors = True  # an outage: the pass flag is not a measurement
                else:
                    passes[side].append(bool((call.get("score") or {}).get("passed")))
            sample_list.append(entry)
        case = meta.get(cid)
        row0 = first_row[cid]
        inputs: dict[str, Any] = {}
        if case is not None:
            inputs = dict(case.vars)
            if case.messages is not None:
                inputs["messages"] = case.messages
        vars_text, vars_cut = truncate(
            strip_control(_pretty_json(inputs)) if inputs else "",
            limit,
        )
        status = _case_status(passes["baseline"], passes["candidate"], cid in regressed, cid in improved, errors)
        cases.append(
            {
                "id": _s(cid, 300),
                "kind": _s(case.kind if case else row0.get("kind"), 200),
                "cohort": _s(case.cohort if case else row0.get("cohort"), 200),
                "tags": sorted(_s(t, 200) for t in ((case.tags if case else row0.get("tags")) or [])),
                "desc": _s(case.description) if case and case.description else "",
                "vars": vars_text,
                "vars_cut": vars_cut,
                "st": status,
                "err": errors,
                "samples": sample_list,
            }
        )
    rank = {s: i for i, s in enumerate(STATUS_ORDER)}
    cases.sort(key=lambda c: (rank.get(str(c["st"]), len(rank)), str(c["id"])))
    return {"cases": cases, "page_size": PAGE_SIZE, "status_labels": STATUS_LABELS}


# --------------------------------------------------------------------------- render


def render_html(project: Project, summary: Summary | Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """The full report page as a string (see the module docstring for its guarantees)."""
    from markupsafe import Markup

    typed = as_summary(summary)
    summary = typed.to_json()  # the sections not yet typed read summary.json's content

    env = _environment()
    css, js = _asset("report.css"), _asset("report.js")
    data = build_case_data(project, summary, rows)
    cases = data["cases"]
    status_counts = {s: sum(1 for c in cases if c["st"] == s) for s in STATUS_ORDER}
    samples = int((summary.get("run") or {}).get("samples") or 1)
    csp = (
        "default-src 'none'; "
        f"script-src {_csp_hash(js)}; style-src {_csp_hash(css)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    first = digest_mod.digest(typed, rows)
    context = {
        "h": _header(typed),
        "d": first,
        "inputs": _example_inputs(project, first),
        "rules": _rules(typed),
        "labels": _labels(summary),
        "config": _config_section(project),
        "metrics": _metrics(typed),
        "calls": _calls(summary),
        "latency": _latency_measurement(summary),
        "consistency": _consistency(summary),
        "slices": _slices(typed),
        "flips": _flips(summary, samples),
        "distributions": _distributions(rows),
        "n_cases": len(cases),
        "n_errors": sum(1 for c in cases if c["err"]),
        "status_counts": [(s, STATUS_LABELS[s], status_counts[s]) for s in STATUS_ORDER],
        "kinds": sorted({str(c["kind"]) for c in cases}),
        "cohorts": sorted({str(c["cohort"]) for c in cases}),
        "case_json": Markup(json_for_script(data)),
        "css": Markup(css),
        "js": Markup(js),
        "csp": csp,
    }
    return env.get_template("report.html").render(context)
