"""The self-contained HTML report of an effect analysis (jinja2 + matplotlib PNGs).

Runs in the analysis worker process. Every section has an id (``summary``, ``warnings``,
``overlap``, ``nuisance``, ``ate``, ``cate-distribution``, ``effect-modifier``,
``segments``, ``validation``, ``policy``, ``refutation``, ``cate-model``,
``reproducibility``) and every plot is an embedded PNG data URI.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from loopwise.evaluator.v1 import evaluator_service_pb2 as epb

if TYPE_CHECKING:
    from loopwise.services.evaluator.analysis import Plots

TEMPLATE = "report.html.j2"
BLUE, RED, GREY = "#3b75af", "#c03030", "#888888"


def _png(fig: Any) -> str:
    """A figure as a base64 PNG (for a data URI); closes the figure."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def binned_means(values: np.ndarray, target: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``target`` within quantile bins of ``values``: (bin centres, means)."""
    if values.size == 0:
        return np.zeros(0), np.zeros(0)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:
        return np.array([values.mean()]), np.array([target.mean()])
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, edges.size - 2)
    centers, means = [], []
    for b in range(edges.size - 1):
        mask = index == b
        if mask.any():
            centers.append(values[mask].mean())
            means.append(target[mask].mean())
    return np.array(centers), np.array(means)


def _interval_plot(labels: list[str], values: list[float], lows: list[float], highs: list[float],
                   xlabel: str, ref: float | None = None) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.2))
    ys = np.arange(len(labels))[::-1]
    values_a = np.array(values)
    errors = np.vstack([values_a - np.array(lows), np.array(highs) - values_a])
    ax.errorbar(values_a, ys, xerr=errors, fmt="o", color=BLUE, capsize=3)
    if ref is not None:
        ax.axvline(ref, color=RED, linestyle="--", linewidth=1)
    ax.axvline(0.0, color=GREY, linewidth=0.8)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_xlabel(xlabel)
    return _png(fig)


def _plots(result: epb.EstimateEffectsResult, plots: Plots) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(plots.cate, bins=40, color=BLUE)
    ax.axvline(result.ate, color=RED, label=f"ATE {result.ate:.3f}")
    ax.axvline(result.policy.treatment_cost, color=GREY, linestyle="--",
               label=f"cost {result.policy.treatment_cost:g}")
    ax.set_xlabel("CATE (reward units)")
    ax.set_ylabel("rows")
    ax.legend()
    out["cate_histogram"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    bins = np.linspace(0.0, 1.0, 41)
    ax.hist(plots.propensity[plots.treated == 1], bins=bins, alpha=0.6, label="treated", color=RED)
    ax.hist(plots.propensity[plots.treated == 0], bins=bins, alpha=0.6, label="control", color=BLUE)
    ax.set_xlabel("logged propensity of treatment")
    ax.set_ylabel("rows")
    ax.legend()
    out["overlap"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    column = plots.x[:, plots.top_feature] if plots.x.size else np.zeros(0)
    centers, means = binned_means(column, plots.cate, 10)
    ax.plot(centers, means, marker="o", color=BLUE)
    ax.set_xlabel(result.feature_names[plots.top_feature] if result.feature_names else "feature")
    ax.set_ylabel("mean CATE")
    out["modifier"] = _png(fig)

    segments = list(result.segments)
    if segments:
        out["segments"] = _interval_plot([f"[{s.source}] {s.rule}"[:70] for s in segments],
                                         [s.effect for s in segments], [s.ci_lower for s in segments],
                                         [s.ci_upper for s in segments], "average effect (95% CI)", result.ate)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    if plots.calibration:
        predicted, observed, se = (np.array(v) for v in zip(*plots.calibration, strict=True))
        ax.errorbar(predicted, observed, yerr=1.96 * se, fmt="o", color=BLUE, capsize=3)
        span = [min(predicted.min(), observed.min()), max(predicted.max(), observed.max())]
        ax.plot(span, span, color=GREY, linestyle="--", label="perfect calibration")
        ax.legend()
    ax.set_xlabel("mean predicted CATE (quartile group)")
    ax.set_ylabel("doubly robust effect")
    out["calibration"] = _png(fig)

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, curve, title in ((axes[0], plots.qini_curve, "QINI"), (axes[1], plots.toc_curve, "TOC")):
        if curve is not None:
            ax.plot(curve[0], curve[1], color=BLUE)
        ax.axhline(0.0, color=GREY, linewidth=0.8)
        ax.set_xlabel("% treated (highest CATE first)")
        ax.set_title(title)
    out["uplift"] = _png(fig)

    values = list(result.policy.values)
    if values:
        out["policy"] = _interval_plot([v.name for v in values], [v.value for v in values],
                                       [v.ci_lower for v in values], [v.ci_upper for v in values],
                                       "value per decision, net of cost (95% CI)")
    return out


def render_report(result: epb.EstimateEffectsResult, plots: Plots, meta: dict[str, Any]) -> bytes:
    """The HTML page of an analysis. ``meta`` holds use_case, report_id, treatment,
    control and create_time."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    estimator = epb.Estimator.Name(result.estimator).removeprefix("ESTIMATOR_")
    data_range = ""
    repro = result.reproducibility
    if repro.HasField("data_start_time"):
        data_range = f"{repro.data_start_time.ToJsonString()} … {repro.data_end_time.ToJsonString()}"
    html = env.get_template(TEMPLATE).render(
        **meta, r=result, estimator=estimator, data_range=data_range,
        quantiles=[(q.level, q.value) for q in result.cate_quantiles],
        top_feature=result.feature_names[plots.top_feature] if result.feature_names else "",
        plots=_plots(result, plots), versions=sorted(repro.versions.items()),
        estimator_scores=sorted(result.estimator_scores.items()),
    )
    return html.encode("utf-8")
