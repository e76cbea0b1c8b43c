"""Charts drawn on the server with matplotlib (object API, no pyplot state), as SVG.

The pages embed them as ``data:`` images, so no script runs in the browser and
nothing is fetched from elsewhere.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text (the page's font)
matplotlib.rcParams["svg.hashsalt"] = "loopwise-console"  # stable ids

from matplotlib.figure import Figure  # noqa: E402

COLOURS = ("#1f5fa8", "#d1495b", "#2e933c", "#edae49", "#7a4eab", "#00798c")


@dataclass(frozen=True)
class Line:
    """One series: a label and y values (None for a gap) at the chart's x values."""

    label: str
    values: Sequence[float | None]


def _clean(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None or not math.isfinite(v) else float(v) for v in values]


def line_chart(title: str, x_minutes: Sequence[float], lines: Sequence[Line], *,
               y_label: str = "", percent: bool = False, thresholds: Sequence[tuple[str, float]] = (),
               y_min: float | None = 0.0) -> str:
    """An SVG line chart over "minutes ago" (x ≤ 0), as a ``data:`` URI."""
    figure = Figure(figsize=(6.4, 2.4), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    scale = 100.0 if percent else 1.0
    drawn = False
    for index, line in enumerate(lines):
        values = [v * scale for v in _clean(line.values)]
        if any(math.isfinite(v) for v in values):
            drawn = True
        axes.plot(list(x_minutes), values, label=line.label, color=COLOURS[index % len(COLOURS)],
                  linewidth=1.6, marker="o" if len(values) < 30 else None, markersize=3)
    for label, value in thresholds:
        axes.axhline(value * scale, color="#888888", linestyle="--", linewidth=1, label=label)
    axes.set_title(title, fontsize=11, loc="left")
    axes.set_xlabel("minutes ago", fontsize=9)
    if y_label:
        axes.set_ylabel(y_label + (" (%)" if percent else ""), fontsize=9)
    axes.grid(True, color="#e5e5e5", linewidth=0.8)
    axes.tick_params(labelsize=8)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    if x_minutes:
        left = min(x_minutes)
        axes.set_xlim(min(left, -1.0), 0.0)
    if y_min is not None:
        axes.set_ylim(bottom=y_min)
    if not drawn:
        axes.text(0.5, 0.5, "no data yet", transform=axes.transAxes, ha="center", va="center",
                  color="#777777", fontsize=10)
    if len(lines) > 1 or thresholds:
        axes.legend(fontsize=8, frameon=False, loc="upper left")
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue().encode()).decode()
