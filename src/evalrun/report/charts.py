"""Small inline SVG charts for report.html: interval strips and overlaid histograms.

Pure functions from numbers to SVG markup (strings). Coordinates are rounded to one
decimal so the same input always gives byte-identical output, and every piece of text is
escaped even though callers only pass numbers and fixed words.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

# Status colours shared with the page's CSS.
STATUS_COLOURS = {
    "pass": "#1a7f37",
    "fail": "#cf222e",
    "inconclusive": "#9a6700",
    "not_applicable": "#6e7781",
}
SIDE_COLOURS = {"baseline": "#0969da", "candidate": "#d1590f"}
_NEUTRAL = "#57606a"


def _f(x: float) -> str:
    """A coordinate with one decimal, without "-0.0"."""
    s = f"{x:.1f}"
    return "0.0" if s == "-0.0" else s


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def interval_chart(
    point: float | None,
    lo: float | None,
    hi: float | None,
    *,
    reference: float,
    margin: float | None = None,
    status: str | None = None,
    title: str = "",
    width: int = 180,
    height: int = 22,
) -> str:
    """One metric's estimate as a strip: interval bar, point dot, reference and margin lines.

    ``reference`` is the no-change value (0 for a difference, 1 for a ratio); ``margin`` is
    the gate rule's threshold, drawn dashed. The bar takes the colour of the rule's status.
    Returns "" when there is nothing to draw.
    """
    vals = _finite([point, lo, hi])
    if not vals:
        return ""
    domain = _finite([point, lo, hi, reference, margin])
    dmin, dmax = min(domain), max(domain)
    span = dmax - dmin
    if span <= 0:
        span = abs(dmax) * 0.2 or 1.0
        dmin, dmax = dmin - span / 2, dmax + span / 2
    pad = span * 0.08
    dmin, dmax = dmin - pad, dmax + pad
    left, right = 4.0, width - 4.0

    def x(v: float) -> float:
        return left + (v - dmin) / (dmax - dmin) * (right - left)

    mid = height / 2
    colour = STATUS_COLOURS.get(status or "", _NEUTRAL)
    parts = [
        f'<svg class="ic" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<line x1="{_f(x(reference))}" y1="2" x2="{_f(x(reference))}" y2="{height - 2}" stroke="#8c959f" stroke-width="1"/>',
    ]
    if margin is not None and math.isfinite(margin):
        parts.append(
            f'<line x1="{_f(x(margin))}" y1="1" x2="{_f(x(margin))}" y2="{height - 1}" stroke="{STATUS_COLOURS["fail"]}" '
            'stroke-width="1.5" stroke-dasharray="3,2"/>'
        )
    if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
        x0, x1 = sorted((x(lo), x(hi)))
        parts.append(
            f'<rect x="{_f(x0)}" y="{_f(mid - 3)}" width="{_f(max(x1 - x0, 1.5))}" height="6" rx="3" '
            f'fill="{colour}" fill-opacity="0.35" stroke="{colour}"/>'
        )
    if point is not None and math.isfinite(point):
        parts.append(f'<circle cx="{_f(x(point))}" cy="{_f(mid)}" r="3.5" fill="{colour}"/>')
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class Histogram:
    """Bin edges and per-side counts; the last bin also holds values above ``edges[-1]``."""

    edges: list[float]
    counts: dict[str, list[int]]
    overflow: bool  # whether the last bin was widened to hold the tail


def _quantile(sorted_vals: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted values (no interpolation: deterministic and exact)."""
    idx = min(len(sorted_vals) - 1, max(0, math.ceil(q * len(sorted_vals)) - 1))
    return sorted_vals[idx]


def histogram(series: Mapping[str, Sequence[float]], bins: int = 24, clip_q: float = 0.99) -> Histogram | None:
    """Shared bins for several series: equal width from the minimum to the ``clip_q`` quantile.

    Clipping at the 99th percentile keeps one slow outlier from squashing every other bar
    into the first bin; values above it are counted in the last bin (marked as overflow).
    """
    pooled = sorted(v for vals in series.values() for v in _finite(list(vals)))
    if not pooled:
        return None
    lo, top = pooled[0], _quantile(pooled, clip_q)
    overflow = top < pooled[-1]
    if top <= lo:
        top = lo + (abs(lo) * 0.1 or 1.0)
    width = (top - lo) / bins
    edges = [lo + i * width for i in range(bins + 1)]
    counts: dict[str, list[int]] = {}
    for name in sorted(series):
        c = [0] * bins
        for v in _finite(list(series[name])):
            i = min(bins - 1, max(0, int((v - lo) / width)))
            c[i] += 1
        counts[name] = c
    return Histogram(edges, counts, overflow)


def histogram_svg(
    series: Mapping[str, Sequence[float]],
    *,
    label: str,
    fmt: Callable[[float], str],
    bins: int = 24,
    width: int = 560,
    height: int = 190,
) -> str:
    """Overlaid histograms of the sides (step outlines, translucent fill) with medians dashed.

    ``series`` maps a side ("baseline"/"candidate") to its values; ``fmt`` formats an axis
    value. Returns "" when there are no values.
    """
    h = histogram(series, bins)
    if h is None:
        return ""
    ml, mr, mt, mb = 40.0, 12.0, 26.0, 34.0
    pw, ph = width - ml - mr, height - mt - mb
    peak = max((max(c) for c in h.counts.values()), default=1) or 1
    lo, hi = h.edges[0], h.edges[-1]

    def x(v: float) -> float:
        return ml + (v - lo) / (hi - lo) * pw

    def y(c: float) -> float:
        return mt + ph - c / peak * ph

    parts = [
        f'<svg class="hist" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">',
        f"<title>{escape(label)}</title>",
        f'<line x1="{_f(ml)}" y1="{_f(mt + ph)}" x2="{_f(ml + pw)}" y2="{_f(mt + ph)}" stroke="#8c959f"/>',
        f'<line x1="{_f(ml)}" y1="{_f(mt)}" x2="{_f(ml)}" y2="{_f(mt + ph)}" stroke="#8c959f"/>',
        f'<text x="{_f(ml - 4)}" y="{_f(mt + 4)}" text-anchor="end" class="ax">{peak}</text>',
        f'<text x="{_f(ml - 4)}" y="{_f(mt + ph)}" text-anchor="end" class="ax">0</text>',
    ]
    for i, v in enumerate((lo, (lo + hi) / 2, hi)):
        anchor = ("start", "middle", "end")[i]
        text = fmt(v) + ("+" if i == 2 and h.overflow else "")
        parts.append(f'<text x="{_f(x(v))}" y="{_f(mt + ph + 14)}" text-anchor="{anchor}" class="ax">{escape(text)}</text>')
    parts.append(
        f'<text x="{_f(ml + pw / 2)}" y="{_f(height - 4)}" text-anchor="middle" class="ax">{escape(label)}</text>'
    )
    legend_x = ml
    for name in sorted(h.counts):
        colour = SIDE_COLOURS.get(name, _NEUTRAL)
        counts = h.counts[name]
        # Step outline: up and across each bin, closed along the axis for the fill.
        pts = [f"{_f(x(lo))},{_f(y(0))}"]
        for i, c in enumerate(counts):
            pts.append(f"{_f(x(h.edges[i]))},{_f(y(c))}")
            pts.append(f"{_f(x(h.edges[i + 1]))},{_f(y(c))}")
        pts.append(f"{_f(x(hi))},{_f(y(0))}")
        parts.append(
            f'<polygon points="{" ".join(pts)}" fill="{colour}" fill-opacity="0.18" stroke="{colour}" '
            'stroke-width="1.5" stroke-linejoin="round"/>'
        )
        vals = sorted(_finite(list(series.get(name, []))))
        if vals:
            med = _quantile(vals, 0.5)
            mx = min(max(x(med), ml), ml + pw)
            parts.append(
                f'<line x1="{_f(mx)}" y1="{_f(mt)}" x2="{_f(mx)}" y2="{_f(mt + ph)}" stroke="{colour}" stroke-dasharray="4,3"/>'
            )
        n = sum(counts)
        med_txt = f", median {fmt(_quantile(vals, 0.5))}" if vals else ""
        parts.append(f'<rect x="{_f(legend_x)}" y="8" width="10" height="10" fill="{colour}" fill-opacity="0.5" stroke="{colour}"/>')
        text = f"{name} (n={n:,}{med_txt})"
        parts.append(f'<text x="{_f(legend_x + 14)}" y="17" class="ax">{escape(text)}</text>')
        legend_x += 14 + 7 * len(text) + 16
    parts.append("</svg>")
    return "".join(parts)
