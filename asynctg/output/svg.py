"""Inline SVG charts for self-contained HTML reports (no plotting library, no script).

Run reports (``asynctg.runs.report``) and load-test reports (``asynctg.loadtest.report``) draw
their plots with these two functions; every label is HTML-escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

__all__ = ["line_chart_svg", "xy_chart_svg"]

_COLORS = ("#1f6feb", "#d9480f", "#2f9e44", "#9c36b5", "#495057")


def line_chart_svg(
    series: Mapping[str, Sequence[float | None]],
    *,
    x_labels: Sequence[str],
    y_label: str = "accuracy",
    width: int = 720,
    height: int = 320,
    y_range: tuple[float, float] = (0.0, 1.0),
) -> str:
    """An inline SVG line chart, one line per series over the labelled x positions, points
    where known; values are clipped to ``y_range`` (default: [0, 1], accuracies)."""
    xy = {
        name: [(float(i), v) for i, v in enumerate(values) if v is not None]
        for name, values in series.items()
    }
    return xy_chart_svg(
        xy,
        x_ticks=[(float(i), label) for i, label in enumerate(x_labels)],
        x_range=(0.0, float(max(1, len(x_labels) - 1))),
        y_range=y_range,
        y_label=y_label,
        width=width,
        height=height,
        center_single=len(x_labels) <= 1,
    )


def xy_chart_svg(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    x_ticks: Sequence[tuple[float, str]] | None = None,
    x_label: str = "",
    y_label: str = "",
    width: int = 720,
    height: int = 320,
    markers: bool = True,
    center_single: bool = False,
) -> str:
    """An inline SVG chart of (x, y) lines, e.g. dose-volume histograms; ranges default to the
    data's. ``x_ticks``: (position, label) pairs, else five evenly spaced numbers."""
    left, right, top, bottom = 56, 150, 16, 44 + (16 if x_label else 0)
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [p[0] for points in series.values() for p in points] or [0.0, 1.0]
    ys = [p[1] for points in series.values() for p in points] or [0.0, 1.0]
    x0, x1 = x_range or (min(xs), max(xs))
    y0, y1 = y_range or (min(ys), max(ys))
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x0 + 0.5
    if y1 <= y0:
        y0, y1 = y0 - 0.5, y0 + 0.5

    def x(v: float) -> float:
        if center_single:
            return left + plot_w / 2
        return left + plot_w * (v - x0) / (x1 - x0)

    def y(v: float) -> float:
        return top + plot_h * (1 - max(0.0, min(1.0, (v - y0) / (y1 - y0))))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(y_label)} chart">'
    ]
    for k in range(5):
        v = y0 + (y1 - y0) * k / 4
        parts.append(
            f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + plot_w}" y2="{y(v):.1f}" '
            'stroke="#e9ecef"/>'
            f'<text x="{left - 8}" y="{y(v) + 4:.1f}" font-size="12" text-anchor="end" '
            f'fill="#495057">{_tick(v)}</text>'
        )
    ticks = (
        list(x_ticks)
        if x_ticks is not None
        else [(x0 + (x1 - x0) * k / 4, _tick(x0 + (x1 - x0) * k / 4)) for k in range(5)]
    )
    step = max(1, len(ticks) // 12)
    for i, (position, label) in enumerate(ticks):
        if i % step == 0 or i == len(ticks) - 1:
            parts.append(
                f'<text x="{x(position):.1f}" y="{top + plot_h + 18}" font-size="12" '
                f'text-anchor="middle" fill="#495057">{html.escape(label)}</text>'
            )
    if x_label:
        parts.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 38}" font-size="12" '
            f'text-anchor="middle" fill="#495057">{html.escape(x_label)}</text>'
        )
    parts.append(
        f'<text x="14" y="{top + plot_h / 2:.1f}" font-size="12" fill="#495057" '
        f'transform="rotate(-90 14 {top + plot_h / 2:.1f})" text-anchor="middle">'
        f"{html.escape(y_label)}</text>"
    )
    for s, (name, values) in enumerate(series.items()):
        color = _COLORS[s % len(_COLORS)]
        points = [(x(px), y(py)) for px, py in values]
        if not points:
            continue
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>'
            )
        if markers:
            for px, py in points:
                parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3.5" fill="{color}"/>')
        ly = top + 14 + 20 * s
        parts.append(
            f'<rect x="{left + plot_w + 16}" y="{ly - 9}" width="12" height="12" '
            f'fill="{color}"/><text x="{left + plot_w + 34}" y="{ly + 2}" font-size="13" '
            f'fill="#212529">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _tick(v: float) -> str:
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}"
