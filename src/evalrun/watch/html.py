"""The self-contained HTML report of a stage verdict (jinja2, autoescape, strict CSP).

No script at all: charts are inline SVG built from numbers, every text (labels, cohorts,
outputs, owner) goes through autoescaping, and the Content-Security-Policy allows only the
page's own stylesheet, so model output cannot run or load anything.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalrun.report.sanitize import strip_bidi, strip_control
from evalrun.watch.markdown import HEADER, STATUS_WORD, trigger_rows
from evalrun.watch.verdict import Look, TriggerResult

if TYPE_CHECKING:
    from jinja2 import Environment
    from markupsafe import Markup

    from evalrun.watch.run import WatchOutcome

TEMPLATE_DIR = Path(__file__).with_name("templates")
MAX_SAMPLE_CHARS = 4000
"""Sample outputs are cut to this many characters in the report."""


@functools.lru_cache(maxsize=1)
def _environment() -> Environment:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    def finalize(value: Any) -> Any:
        from markupsafe import Markup

        if isinstance(value, Markup):
            return value
        return strip_control(value) if isinstance(value, str) else value

    return Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True, default=True),
        undefined=StrictUndefined,
        finalize=finalize,
        keep_trailing_newline=True,
    )


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii") + "'"


def _f(x: float) -> str:
    return f"{x:.1f}"


def sequence_svg(looks: list[Look], boundary: float, harm_above: bool, *, width: int = 520,
                 height: int = 170, log_scale: bool = False, small: bool = False,
                 safe: float | None = None) -> Markup:
    """The CS band, the estimate and the harm boundary over time, as inline SVG; ``safe``,
    where it differs, is the safe boundary (the PASS margin), drawn dashed in green."""
    from markupsafe import Markup

    pad_l, pad_r, pad_t, pad_b = (8, 8, 6, 6) if small else (52, 10, 10, 22)
    pts = [lk for lk in looks if math.isfinite(lk.estimate)]
    if not looks:
        return Markup(f'<svg width="{width}" height="{height}" role="img"><text x="10" y="20">no data</text></svg>')

    def tr(v: float) -> float:
        return math.log(v) if log_scale else v

    finite = [tr(v) for lk in looks for v in (lk.low, lk.high, lk.estimate)
              if math.isfinite(v) and (v > 0 or not log_scale)]
    b = tr(boundary) if (boundary > 0 or not log_scale) else 0.0
    s_b = None if safe is None or safe == boundary else (tr(safe) if (safe > 0 or not log_scale) else 0.0)
    marks = [b] if s_b is None else [b, s_b]
    lo_v = min([*finite, *marks]) if finite else min(marks) - 1
    hi_v = max([*finite, *marks]) if finite else max(marks) + 1
    est = [tr(lk.estimate) for lk in pts if lk.estimate > 0 or not log_scale]
    if est:  # keep the view near the estimate: a 20-wide early interval must not flatten the rest
        span_e = max(max(est) - min(est), *(abs(m - e) for m in marks for e in (min(est), max(est))), 1e-9)
        lo_v = max(lo_v, min(*est, *marks) - 3 * span_e)
        hi_v = min(hi_v, max(*est, *marks) + 3 * span_e)
    if hi_v - lo_v < 1e-12:
        hi_v, lo_v = hi_v + 1, lo_v - 1
    t0, t1 = looks[0].t, looks[-1].t
    tspan = (t1 - t0) or 1.0
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def x(t: float) -> float:
        return pad_l + (t - t0) / tspan * w

    def y(v: float) -> float:
        v = min(max(v, lo_v), hi_v)
        return pad_t + (hi_v - v) / (hi_v - lo_v) * h

    def yv(v: float, default: float) -> float:
        if not math.isfinite(v) or (log_scale and v <= 0):
            return y(default)
        return y(tr(v))

    upper = [(x(lk.t), yv(lk.high, hi_v)) for lk in looks]
    lower = [(x(lk.t), yv(lk.low, lo_v)) for lk in reversed(looks)]
    band = " ".join(f"{_f(a)},{_f(c)}" for a, c in [*upper, *lower])
    line = " ".join(f"{_f(x(lk.t))},{_f(y(tr(lk.estimate)))}" for lk in pts if lk.estimate > 0 or not log_scale)
    harm_y0, harm_y1 = (pad_t, y(b)) if harm_above else (y(b), pad_t + h)
    parts = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
        f'<rect x="{pad_l}" y="{_f(min(harm_y0, harm_y1))}" width="{w}" height="{_f(abs(harm_y1 - harm_y0))}" fill="#fde8e7"/>',
        f'<polygon points="{band}" fill="#bcd3f2" stroke="none"/>',
        f'<polyline points="{line}" fill="none" stroke="#1849a9" stroke-width="1.5"/>' if line else "",
        f'<line x1="{pad_l}" x2="{pad_l + w}" y1="{_f(y(b))}" y2="{_f(y(b))}" stroke="#b42318" stroke-dasharray="5,3"/>',
    ]
    if s_b is not None:
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + w}" y1="{_f(y(s_b))}" y2="{_f(y(s_b))}" '
                     'stroke="#067647" stroke-dasharray="2,3"/>')
    if not small:
        def label(v: float) -> str:
            real = math.exp(v) if log_scale else v
            return f"{real:.3g}"
        parts += [
            f'<text x="2" y="{_f(pad_t + 9)}">{label(hi_v)}</text>',
            f'<text x="2" y="{_f(pad_t + h)}">{label(lo_v)}</text>',
            f'<text x="2" y="{_f(y(b) - 2)}">{label(b)}</text>',
            # The safe boundary's label, unless it would overprint the harm boundary's.
            *([f'<text x="2" y="{_f(y(s_b) - 2)}">{label(s_b)}</text>']
              if s_b is not None and abs(y(s_b) - y(b)) >= 10 else []),
            f'<text x="{pad_l}" y="{height - 4}">{_utc(t0)}</text>',
            f'<text x="{pad_l + w}" y="{height - 4}" text-anchor="end">{_utc(t1)}</text>',
        ]
    parts.append("</svg>")
    return Markup("".join(parts))


def _utc(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M")


def _tile(r: TriggerResult) -> dict[str, Any]:
    log_scale = r.test in ("rate_ratio_count", "ratio_mixture")
    above = r.harm_side == "above"
    cohorts = [
        {"name": name, "status": r.cohort_status.get(name, "no_data"),
         "svg": sequence_svg(looks, r.boundary, above, width=170, height=70, log_scale=log_scale, small=True,
                             safe=r.safe_boundary)}
        for name, looks in sorted(r.by_cohort.items())
    ]
    return {
        "title": f"{r.trigger.metric} ({r.trigger.kind}, {r.trigger.severity}): {r.trigger.title}",
        "status": r.status,
        "parameter": r.parameter,
        "side": "above" if above else "below",
        "svg": sequence_svg(r.looks, r.boundary, above, log_scale=log_scale, safe=r.safe_boundary),
        "two_boundaries": r.safe_boundary is not None and r.safe_boundary != r.boundary,
        "cohorts": cohorts,
    }


def _coverage(outcome: WatchOutcome) -> Markup:
    from markupsafe import Markup

    d = outcome.data
    if not d.cohorts or not len(d.buckets):
        return Markup("<p>No units in the window.</p>")
    cand = d.units[1].sum(axis=0)
    base = d.units[0].sum(axis=0)
    width, height = 1100, 90
    n = len(d.buckets)
    bw = width / n
    mc, mb = max(float(cand.max()), 1.0), max(float(base.max()), 1.0)
    bars = []
    for i in range(n):
        hb = float(base[i]) / mb * (height - 14)
        hc = float(cand[i]) / mc * (height - 14)
        bars.append(f'<rect x="{_f(i * bw)}" y="{_f(height - 12 - hb)}" width="{_f(max(bw - 0.5, 0.5))}" height="{_f(hb)}" fill="#d0d5dd"/>')
        bars.append(f'<rect x="{_f(i * bw + bw * 0.25)}" y="{_f(height - 12 - hc)}" width="{_f(max(bw * 0.5, 0.5))}" height="{_f(hc)}" fill="#1849a9"/>')
    t0, t1 = float(d.buckets[0]), float(d.buckets[-1] + d.bucket_s)
    return Markup(
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">{"".join(bars)}'
        f'<text x="0" y="{height - 1}">{_utc(t0)}</text><text x="{width}" y="{height - 1}" text-anchor="end">{_utc(t1)}</text></svg>'
    )


def render_html(outcome: WatchOutcome) -> str:
    """report.html for one stage verdict."""
    from markupsafe import Markup

    env = _environment()
    css = (TEMPLATE_DIR / "watch.css").read_text(encoding="utf-8")
    csp = f"default-src 'none'; style-src {_hash(css)}; img-src data:; base-uri 'none'; form-action 'none'"
    s = outcome.summary
    d = outcome.data
    cohorts = []
    for i, name in enumerate(d.cohorts):
        c, b = float(d.units[1, i].sum()), float(d.units[0, i].sum())
        cohorts.append({"name": name, "cand": int(c), "base": int(b),
                        "share": f"{c / (c + b) * 100:.1f}%" if c + b else "–"})
    srm = s["srm"]
    srm_text = ""
    if srm.get("expected") is not None:
        obs = f"{srm['observed'] * 100:.2f}%" if srm.get("observed") is not None else "–"
        srm_text = f"{obs} of units, expected {srm['expected'] * 100:g}% — {'MISMATCH' if srm['mismatch'] else 'ok'}"
    quantiles = "; ".join(
        f"{arm} p50 {q['p50']:.0f} ms, p95 {q['p95']:.0f} ms"
        for arm, q in sorted(d.quantiles.items()) if q.get("p50") is not None and q.get("p95") is not None
    )
    samples = [{"unit_id": x.unit_id, "ts": x.ts, "outcome": x.outcome,
                "output": x.output[:MAX_SAMPLE_CHARS] + ("…" if len(x.output) > MAX_SAMPLE_CHARS else "")}
               for x in outcome.samples]
    alpha_each = f"{s['triggers'][0]['alpha']:.4g}" if s["triggers"] else "–"
    html = env.get_template("watch.html").render(
        s=s,
        word=STATUS_WORD[s["verdict"]],
        csp=csp,
        css=Markup(css),
        header=HEADER,
        rows=list(zip(trigger_rows(s), s["triggers"], strict=True)),
        tests=", ".join(sorted({t["test"] for t in s["triggers"]})),
        tiles=[_tile(r) for r in outcome.verdict.triggers],
        coverage=_coverage(outcome),
        cohorts=cohorts,
        srm=srm,
        srm_text=srm_text,
        quantiles=quantiles,
        samples=samples,
        dialect="DuckDB" if "duckdb" in str(s["queries"]).lower() or outcome.plan.source.uri is None else "PostgreSQL",
        alpha_each=alpha_each,
    )
    return strip_bidi(html)
