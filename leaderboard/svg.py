"""Line plots as inline SVG: axes, ticks, grid, legend; no JavaScript, no external assets.

The markup is written by hand (it is small) and every piece of text is XML-escaped here, so the
result can be placed in a page as trusted markup and also parses as XML on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Sequence

from markupsafe import Markup

# Okabe-Ito: distinguishable with the common colour-vision deficiencies
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
DASHES = ("", "6 3", "2 2", "8 3 2 3")  # a second cue besides colour


@dataclass(frozen=True)
class Series:
    label: str
    xs: Sequence[float]
    ys: Sequence[float]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values (steps of 1, 2, 2.5 or 5 x 10^n) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("tick range must be finite")
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks, value = [], first
    while value < hi + step * 0.5:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _fmt(value: float) -> str:
    text = f"{value:.6g}"
    return "0" if text == "-0" else text


def line_plot(series: Sequence[Series], *, title: str, x_label: str, y_label: str,
              x_ticks: Sequence[float] | None = None, y_range: tuple[float, float] | None = None,
              width: int = 560, height: int = 320) -> Markup:
    """An SVG line chart of the series (non-finite points break a line) with a legend below it."""
    finite = [(x, y) for s in series for x, y in zip(s.xs, s.ys) if math.isfinite(x) and math.isfinite(y)]
    if not finite:
        raise ValueError(f"plot {title!r} has no finite points")
    xs = [p[0] for p in finite]
    x_ticks = list(x_ticks) if x_ticks else nice_ticks(min(xs), max(xs))
    x_lo, x_hi = min(min(xs), x_ticks[0]), max(max(xs), x_ticks[-1])
    if y_range is None:
        ys = [p[1] for p in finite]
        y_ticks = nice_ticks(min(0.0, min(ys)), max(ys))
    else:
        y_ticks = nice_ticks(*y_range)
    y_lo, y_hi = y_ticks[0], y_ticks[-1]
    if x_hi == x_lo:
        x_hi = x_lo + 1

    legend_rows = math.ceil(len(series) / 4)
    left, right, top, bottom = 58, 16, 30, 44 + 20 * legend_rows
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    def sy(y: float) -> float:
        return top + (1 - (y - y_lo) / (y_hi - y_lo)) * plot_h

    out = [f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{escape(title)}" font-family="system-ui, sans-serif" font-size="11">',
           f"<title>{escape(title)}</title>",
           f'<text x="{left}" y="18" font-size="13" font-weight="600" fill="#222">{escape(title)}</text>']
    # grid and ticks
    for y in y_ticks:
        py = f"{sy(y):.2f}"
        out.append(f'<line x1="{left}" y1="{py}" x2="{left + plot_w}" y2="{py}" stroke="#e3e3e3"/>')
        out.append(f'<text x="{left - 6}" y="{py}" text-anchor="end" dominant-baseline="middle" '
                   f'fill="#444">{_fmt(y)}</text>')
    for x in x_ticks:
        px = f"{sx(x):.2f}"
        out.append(f'<line x1="{px}" y1="{top + plot_h}" x2="{px}" y2="{top + plot_h + 5}" stroke="#444"/>')
        out.append(f'<text x="{px}" y="{top + plot_h + 17}" text-anchor="middle" fill="#444">{_fmt(x)}</text>')
    # axes
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#444"/>')
    out.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#444"/>')
    out.append(f'<text x="{left + plot_w / 2:.2f}" y="{top + plot_h + 33}" text-anchor="middle" '
               f'fill="#222">{escape(x_label)}</text>')
    out.append(f'<text transform="translate(14 {top + plot_h / 2:.2f}) rotate(-90)" text-anchor="middle" '
               f'fill="#222">{escape(y_label)}</text>')
    # lines
    for i, s in enumerate(series):
        colour, dash = PALETTE[i % len(PALETTE)], DASHES[i % len(DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        for segment in _segments(s.xs, s.ys):
            points = " ".join(f"{sx(x):.2f},{sy(y):.2f}" for x, y in segment)
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash_attr} '
                       f'stroke-linejoin="round" points="{points}"><title>{escape(s.label)}</title></polyline>')
    # legend: up to four entries a row, below the x axis label
    for i, s in enumerate(series):
        colour, dash = PALETTE[i % len(PALETTE)], DASHES[i % len(DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        lx = left + (i % 4) * (plot_w / 4)
        ly = top + plot_h + 52 + 20 * (i // 4)
        out.append(f'<line x1="{lx:.2f}" y1="{ly}" x2="{lx + 22:.2f}" y2="{ly}" stroke="{colour}" '
                   f'stroke-width="2"{dash_attr}/>')
        out.append(f'<text x="{lx + 28:.2f}" y="{ly}" dominant-baseline="middle" fill="#222">'
                   f"{escape(s.label)}</text>")
    out.append("</svg>")
    return Markup("\n".join(out))


def _segments(xs: Sequence[float], ys: Sequence[float]) -> list[list[tuple[float, float]]]:
    segments, current = [], []
    for x, y in zip(xs, ys):
        if math.isfinite(x) and math.isfinite(y):
            current.append((x, y))
        elif current:
            segments.append(current)
            current = []
    if current:
        segments.append(current)
    return segments


@dataclass(frozen=True)
class DotRow:
    """One labelled row of a dot plot: a value (or None) per series, and a tooltip note per value."""

    label: str
    values: Sequence[float | None]
    notes: Sequence[str] = ()


MARKERS = ("circle", "square", "triangle", "diamond")  # a second cue besides colour


def _marker(shape: str, x: float, y: float, colour: str, tip: str) -> str:
    r = 4.2
    title = f"<title>{escape(tip)}</title>"
    if shape == "circle":
        return f'<circle cx="{x:.2f}" cy="{y:.2f}" r="{r}" fill="{colour}">{title}</circle>'
    if shape == "square":
        return (f'<rect x="{x - r:.2f}" y="{y - r:.2f}" width="{2 * r}" height="{2 * r}" fill="{colour}">'
                f"{title}</rect>")
    points = ([(x, y - r - 1), (x + r + 1, y + r), (x - r - 1, y + r)] if shape == "triangle"
              else [(x, y - r - 1), (x + r + 1, y), (x, y + r + 1), (x - r - 1, y)])
    coords = " ".join(f"{px:.2f},{py:.2f}" for px, py in points)
    return f'<polygon points="{coords}" fill="{colour}">{title}</polygon>'


def _clip(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def dot_plot(rows: Sequence[DotRow], series: Sequence[str], *, title: str, x_label: str,
             width: int = 640, row_height: int = 22) -> Markup:
    """A dot plot: one line per row (top to bottom), a marker per series on a shared x axis from 0.

    Markers of a row are nudged apart vertically so close values stay visible; each has a tooltip.
    """
    values = [v for row in rows for v in row.values if v is not None and math.isfinite(v)]
    if not values:
        raise ValueError(f"plot {title!r} has no finite values")
    ticks = nice_ticks(min(0.0, min(values)), max(values))
    x_lo, x_hi = ticks[0], ticks[-1]
    left = 14 + 6.3 * max(len(_clip(row.label)) for row in rows)
    right, top, bottom = 18, 52, 42
    plot_w, height = width - left - right, top + row_height * len(rows) + bottom
    bottom_y = top + row_height * len(rows)

    def sx(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    out = [f'<svg class="plot dots" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'aria-label="{escape(title)}" font-family="system-ui, sans-serif" font-size="11">',
           f"<title>{escape(title)}</title>",
           f'<text x="8" y="18" font-size="13" font-weight="600" fill="#222">{escape(title)}</text>']
    for i, name in enumerate(series):  # legend under the title
        lx = left + i * min(plot_w / max(len(series), 1), 150)
        out.append(_marker(MARKERS[i % len(MARKERS)], lx + 5, 38, PALETTE[i % len(PALETTE)], name))
        out.append(f'<text x="{lx + 14:.2f}" y="38" dominant-baseline="middle" fill="#222">{escape(name)}</text>')
    for x in ticks:
        px = f"{sx(x):.2f}"
        out.append(f'<line x1="{px}" y1="{top}" x2="{px}" y2="{bottom_y}" stroke="#e3e3e3"/>')
        out.append(f'<text x="{px}" y="{bottom_y + 16}" text-anchor="middle" fill="#444">{_fmt(x)}</text>')
    out.append(f'<line x1="{left}" y1="{bottom_y}" x2="{left + plot_w}" y2="{bottom_y}" stroke="#444"/>')
    out.append(f'<text x="{left + plot_w / 2:.2f}" y="{bottom_y + 33}" text-anchor="middle" '
               f'fill="#222">{escape(x_label)}</text>')
    spread = min(3.0, (row_height - 10) / max(len(series), 1))
    for r, row in enumerate(rows):
        cy = top + row_height * (r + 0.5)
        out.append(f'<line x1="{left}" y1="{cy:.2f}" x2="{left + plot_w}" y2="{cy:.2f}" stroke="#f0f0f0"/>')
        out.append(f'<text x="{left - 8:.2f}" y="{cy:.2f}" text-anchor="end" dominant-baseline="middle" '
                   f'fill="#222"><title>{escape(row.label)}</title>{escape(_clip(row.label))}</text>')
        for i, value in enumerate(row.values):
            if value is None or not math.isfinite(value):
                continue
            note = row.notes[i] if i < len(row.notes) else f"{value:.4f}"
            offset = (i - (len(series) - 1) / 2) * spread
            out.append(_marker(MARKERS[i % len(MARKERS)], sx(value), cy + offset, PALETTE[i % len(PALETTE)],
                               f"{row.label} · {series[i]}: {note}"))
    out.append("</svg>")
    return Markup("\n".join(out))
