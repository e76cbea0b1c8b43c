"""The self-contained HTML report of an effect analysis (jinja2 + matplotlib PNGs).

Runs in the analysis worker process. The page opens with the verdict; every section has
an id (``verdict``, ``warnings``, ``data-quality``, ``overlap``, ``nuisance``, ``ate``,
``cate-distribution``, ``effect-modifier``, ``intervals``, ``segments``, ``validation``,
``policy``, ``refutation``, ``cate-model``, ``reproducibility``) and every plot is an
embedded PNG data URI. Numbers go through :mod:`.formatting`; names, never enum constants.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.services.evaluator import formatting as F
from loopwise.services.evaluator.verdict import POLICY_NAMES, gain_text

if TYPE_CHECKING:
    from loopwise.services.evaluator.analysis import Plots

TEMPLATE = "report.html.j2"
BLUE, RED, GREY = "#3b75af", "#c03030", "#888888"
ESTIMATOR_LABELS = {epb.ESTIMATOR_LINEAR_DML: "LinearDML", epb.ESTIMATOR_CAUSAL_FOREST_DML: "CausalForestDML",
                    epb.ESTIMATOR_DR_LEARNER: "DRLearner (linear final stage)", epb.ESTIMATOR_AUTO: "automatic choice",
                    epb.ESTIMATOR_UNSPECIFIED: "LinearDML"}
REFUTATION_LABELS = {"placebo_treatment": "placebo treatment (treatment randomly permuted)",
                     "random_common_cause": "random common cause (a noise column added as a control)"}
# The QINI plot's legend and the page's alt text name the random-targeting line.
RANDOM_LINE_LABEL = "random targeting"
QINI_ALT = "QINI curve: cumulative effect when treating the highest predicted effects first, with the random-targeting line"


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
    ax.axvline(result.ate, color=RED, label=f"ATE {F.num(result.ate)}")
    ax.axvline(result.policy.treatment_cost, color=GREY, linestyle="--",
               label=f"cost {F.num(result.policy.treatment_cost)}")
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

    out["qini"] = _png(qini_figure(plots.qini_curve, plots.held_out_ate))

    fig, ax = plt.subplots(figsize=(7, 3.5))
    if plots.toc_curve is not None:
        order = np.argsort(plots.toc_curve[0])
        ax.plot(plots.toc_curve[0][order], plots.toc_curve[1][order], color=BLUE, marker="o", markersize=3)
    ax.axhline(0.0, color=GREY, linewidth=0.8, label="average effect (no targeting)")
    ax.set_xlabel("% treated (highest predicted effect first)")
    ax.set_ylabel("effect of the treated minus ATE")
    ax.set_title("TOC")
    ax.legend()
    out["toc"] = _png(fig)

    values = list(result.policy.values)
    if values:
        out["policy"] = _interval_plot([POLICY_NAMES.get(v.name, v.name)[:60] for v in values],
                                       [v.value for v in values],
                                       [v.ci_lower for v in values], [v.ci_upper for v in values],
                                       "value per decision, net of cost (95% CI)")
    return out


def _when(stamp) -> str:
    """A timestamp for people: "2026-11-23 12:00 UTC"."""
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M UTC")


def qini_points(curve: tuple[np.ndarray, np.ndarray] | None,
                held_out_ate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(share treated in %, cumulative effect per decision of treating the highest
    predicted effects first, the same for random targeting) from DRTester's QINI curve,
    which is the gain over random targeting: the cumulative effect of treating a share
    q at random is q·ATE, a straight line from 0 to the held-out ATE."""
    if curve is None or not np.size(curve[0]):
        return np.array([0.0, 100.0]), np.array([0.0, held_out_ate]), np.array([0.0, held_out_ate])
    order = np.argsort(curve[0])
    share = np.concatenate([[0.0], np.asarray(curve[0], dtype=np.float64)[order], [100.0]])
    random = share / 100.0 * held_out_ate
    gain = np.concatenate([[0.0], np.asarray(curve[1], dtype=np.float64)[order], [0.0]])
    return share, random + gain, random


def qini_figure(curve: tuple[np.ndarray, np.ndarray] | None, held_out_ate: float):
    """The QINI figure: the cumulative effect of targeting by the predicted effect, and
    the random-targeting line (labelled RANDOM_LINE_LABEL); the area between them is the
    QINI coefficient."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    share, targeted, random = qini_points(curve, held_out_ate)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(share, targeted, color=BLUE, marker="o", markersize=3, label="targeting by predicted effect")
    ax.plot(share, random, color=GREY, linestyle="--", label=RANDOM_LINE_LABEL)
    ax.fill_between(share, random, targeted, color=BLUE, alpha=0.12)
    ax.set_xlabel("% treated (highest predicted effect first)")
    ax.set_ylabel("cumulative effect per decision")
    ax.set_title("QINI")
    ax.legend()
    return fig


def render_report(result: epb.EstimateEffectsResult, plots: Plots, meta: dict[str, Any]) -> bytes:
    """The HTML page of an analysis. ``meta`` holds use_case, report_id, treatment,
    control and create_time."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    estimator = ESTIMATOR_LABELS.get(result.estimator, "LinearDML")
    data_range = ""
    repro = result.reproducibility
    for name in ("num", "signed", "pct", "count", "p_value", "with_ci", "pct_with_ci"):
        env.filters[name] = getattr(F, name)
    env.globals.update(with_ci=F.with_ci, pct_with_ci=F.pct_with_ci, ci=F.ci, point=F.point, gain_text=gain_text, policy_name=POLICY_NAMES.get,
                       refutation_name=REFUTATION_LABELS.get, qini_alt=QINI_ALT, random_line=RANDOM_LINE_LABEL,
                       treated_word="arm" if result.treatment_source == epb.TREATMENT_SOURCE_ARMS else "action")
    if repro.HasField("data_start_time"):
        data_range = f"{_when(repro.data_start_time)} to {_when(repro.data_end_time)}"
    html = env.get_template(TEMPLATE).render(
        **meta, r=result, estimator=estimator, data_range=data_range, made=_when(result.create_time),
        quantiles=[(q.level, q.value) for q in result.cate_quantiles],
        top_feature=result.feature_names[plots.top_feature] if result.feature_names else "",
        plots=_plots(result, plots), versions=sorted(repro.versions.items()),
        estimator_scores=sorted(result.estimator_scores.items()),
    )
    return html.encode("utf-8")
