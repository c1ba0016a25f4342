"""Charts drawn on the server as SVG: no JavaScript, no chart library, readable on a phone.

A chart is a few polylines over a shared time axis, with a hover title per bucket listing every
series' value there. Colours come from CSS classes (``s0``..``s5``), so the page's strict
Content-Security-Policy holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 180
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 22


def _label(ms: int, bucket_ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%H:%M" if bucket_ms < 3_600_000 else "%d %b %H:00")


def _nice_max(value: int) -> int:
    if value <= 5:
        return 5
    magnitude = 10 ** (len(str(value)) - 1)
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return value


def line_chart(title: str, series: Sequence[tuple[str, Sequence[int]]], start_ms: int,
               bucket_ms: int, chart_id: str) -> Markup:
    """An SVG line chart; ``series`` is (label, one value per bucket)."""
    buckets = max((len(v) for _, v in series), default=0)
    top = _nice_max(max((max(v, default=0) for _, v in series), default=0))
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = inner_w / max(1, buckets - 1)
    scale = inner_h / top
    base = TOP + inner_h
    # each bucket's x and label, formatted once for every series and hover box
    xs = [f"{LEFT + i * step:.1f}" for i in range(buckets)]
    labels = [_label(start_ms + i * bucket_ms, bucket_ms) for i in range(buckets)]

    def x(i: int) -> float:
        return LEFT + i * step

    parts = [f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'role="img" aria-labelledby="{escape(chart_id)}-t">',
             f'<title id="{escape(chart_id)}-t">{escape(title)}</title>']
    for frac in (0, 0.5, 1):
        gy = TOP + inner_h * (1 - frac)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{gy:.1f}" '
                     f'y2="{gy:.1f}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 4}" y="{gy + 4:.1f}" text-anchor="end">'
                     f'{int(top * frac):,}</text>')
    for i in sorted({0, buckets // 2, buckets - 1}) if buckets else []:
        anchor = "start" if i == 0 else "end" if i == buckets - 1 else "middle"
        parts.append(f'<text class="axis" x="{x(i):.1f}" y="{HEIGHT - 6}" '
                     f'text-anchor="{anchor}">{labels[i]}</text>')
    for n, (_, values) in enumerate(series):
        points = " ".join([f"{xs[i]},{base - v * scale:.1f}" for i, v in enumerate(values)])
        parts.append(f'<polyline class="line s{n % 6}" points="{points}"/>')
    width = f"{step:.1f}"
    for i in range(buckets):
        text = ", ".join([f"{label} {values[i]:,}" for label, values in series
                          if i < len(values)])
        parts.append(f'<rect class="hover" x="{x(i) - step / 2:.1f}" y="{TOP}" '
                     f'width="{width}" height="{inner_h}"><title>'
                     f'{labels[i]}: {escape(text)}</title></rect>')
    parts.append("</svg>")
    return Markup("".join(parts))


def sparkline(values: Sequence[int], label: str) -> Markup:
    """A small inline trend for a table cell."""
    w, h = 120, 24
    top = max(1, max(values, default=0))
    step = w / max(1, len(values) - 1)
    scale = (h - 4) / top
    points = " ".join([f"{i * step:.1f},{h - 2 - v * scale:.1f}" for i, v in enumerate(values)])
    return Markup(f'<svg class="spark" viewBox="0 0 {w} {h}" role="img" '
                  f'aria-label="{escape(label)}"><polyline class="line s0" points="{points}"/>'
                  '</svg>')
