"""The self-contained HTML scorecard (jinja2 + matplotlib PNGs), rendered in the
scorecard's worker process from :class:`.scorecard.Scorecard`.

Sections (ids): ``summary``, ``warnings``, ``sample-ratio``, ``metrics``, ``lifts``,
``sequential``, ``cuped``, ``method``. Plots: per metric, the relative lift of every
group with its 95% CI (CUPED and unadjusted); per comparison, the confidence sequence
of the difference over the looks with the always-valid p-value below it.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from loopwise.services.evaluator.scorecard import Scorecard

TEMPLATE = "scorecard.html.j2"
BLUE, RED, GREY = "#3b75af", "#c03030", "#888888"


def _png(fig: Any) -> str:
    """A figure as a base64 PNG (for a data URI)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float, height: float, rows: int = 1) -> tuple[Any, Any]:
    """A figure of the object-oriented API (no pyplot state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    axes = fig.subplots(rows, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]} if rows == 2 else None)
    return fig, axes


def _lift_plot(card: Scorecard, metric: str) -> str:
    """Relative lift (%) of every group against the control, with 95% CIs."""
    rows = [c for c in card.comparisons if c.metric == metric and math.isfinite(c.relative_lift)]
    fig, ax = _figure(7, 0.55 * max(len(rows), 1) + 1.3)
    ys = np.arange(len(rows))[::-1].astype(float)
    for y, c in zip(ys, rows, strict=True):
        if c.adjusted:
            ax.errorbar([100 * c.unadjusted_relative_lift], [y - 0.18],
                        xerr=[[100 * (c.unadjusted_relative_lift - c.unadjusted_lift_ci_lower)],
                              [100 * (c.unadjusted_lift_ci_upper - c.unadjusted_relative_lift)]],
                        fmt="s", color=GREY, capsize=3, label="unadjusted" if y == ys[0] else None)
        ax.errorbar([100 * c.relative_lift], [y + (0.18 if c.adjusted else 0.0)],
                    xerr=[[100 * (c.relative_lift - c.lift_ci_lower)], [100 * (c.lift_ci_upper - c.relative_lift)]],
                    fmt="o", color=BLUE, capsize=3,
                    label=("CUPED" if c.adjusted else "lift") if y == ys[0] else None)
    ax.axvline(0.0, color=RED, linestyle="--", linewidth=1)
    ax.set_yticks(ys, [f"{c.group} vs {c.control}" for c in rows], fontsize=8)
    ax.set_xlabel(f"relative lift of {metric} (%, 95% CI)")
    if rows:
        ax.legend(fontsize=8)
    return _png(fig)


def _sequence_plot(comparison: Any, alpha: float) -> str:
    """The confidence sequence of the difference over time, and the always-valid p-value."""
    looks = comparison.looks
    times = [dt.datetime.fromtimestamp(look.time_ms / 1000, dt.UTC) for look in looks]
    diff = np.array([look.difference for look in looks])
    lower = np.array([look.cs_lower for look in looks])
    upper = np.array([look.cs_upper for look in looks])
    p = np.array([look.p_value for look in looks])
    fig, (top, bottom) = _figure(7, 4.2, rows=2)
    bounded = np.isfinite(lower) & np.isfinite(upper)
    top.plot(times, diff, color=BLUE, marker="." if len(looks) < 60 else None, label="difference so far")
    if bounded.any():
        top.fill_between(np.array(times, dtype=object)[bounded], lower[bounded], upper[bounded], color=BLUE,
                         alpha=0.2, step="post", label=f"{100 * (1 - alpha):g}% confidence sequence")
    top.axhline(0.0, color=RED, linestyle="--", linewidth=1)
    top.set_ylabel(f"{comparison.metric}: {comparison.group} − {comparison.control}", fontsize=8)
    top.legend(fontsize=8)
    bottom.plot(times, np.maximum(p, 1e-12), color=BLUE, drawstyle="steps-post")
    bottom.axhline(alpha, color=RED, linestyle="--", linewidth=1)
    bottom.set_yscale("log")
    bottom.set_ylim(min(1e-4, max(p.min(), 1e-12)) if p.size else 1e-4, 1.5)
    bottom.set_ylabel("always-valid p", fontsize=8)
    fig.autofmt_xdate()
    return _png(fig)


def render_scorecard(card: Scorecard, meta: dict[str, Any]) -> bytes:
    """The HTML page of a scorecard. ``meta`` holds use_case, comparison ("arms" or
    "canary"), create_time, model versions and revision (canary), rows_read and
    extra_warnings."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    metrics = list(dict.fromkeys(c.metric for c in card.comparisons))
    lift_plots = {m: _lift_plot(card, m) for m in metrics}
    sequence_plots = [(c, _sequence_plot(c, card.alpha)) for c in card.comparisons if c.looks]

    def when(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    html = env.get_template(TEMPLATE).render(
        **meta, card=card, control=card.groups[0].name, metrics=metrics, lift_plots=lift_plots,
        sequence_plots=sequence_plots, start=when(card.data_start_ms), end=when(card.data_end_ms),
        look_hours=card.look_interval_ms / 3.6e6, warnings=list(meta.get("extra_warnings", [])) + card.warnings,
        coefficients=[(m, list(zip(card.covariate_columns, theta, strict=True)))
                      for m, theta in card.coefficients.items()],
        pct=lambda v: "n/a" if not math.isfinite(v) else f"{100 * v:+.2f}%",
        num=lambda v: "n/a" if isinstance(v, float) and math.isnan(v) else (
            "−∞" if v == -math.inf else "+∞" if v == math.inf else f"{v:.4g}"),
    )
    return html.encode("utf-8")
