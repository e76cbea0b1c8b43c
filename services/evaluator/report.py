"""The self-contained HTML report of an effect estimation (jinja2 + matplotlib PNGs).

Runs in the process pool (:func:`render_report` is top-level and picklable).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np

from loopwise.services.evaluator.estimation import EffectFit

TEMPLATE = "report.html.j2"


def _png(fig: Any) -> str:
    """A figure as a base64 PNG (for a data URI); closes the figure."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _plots(fit: EffectFit) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {}
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.hist(fit.cate, bins=40, color="#3b75af")
    ax.axvline(fit.ate, color="#c03030", label=f"ATE {fit.ate:.3f}")
    ax.set_xlabel("CATE (reward units)")
    ax.set_ylabel("rows")
    ax.legend()
    plots["cate_histogram"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    bins = np.linspace(0.0, 1.0, 41)
    ax.hist(fit.propensity[fit.treated == 1], bins=bins, alpha=0.6, label="treated", color="#c03030")
    ax.hist(fit.propensity[fit.treated == 0], bins=bins, alpha=0.6, label="control", color="#3b75af")
    ax.set_xlabel("logged propensity of treatment")
    ax.set_ylabel("rows")
    ax.legend()
    plots["overlap"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7, 3.5))
    column = fit.x[:, fit.top_feature] if fit.x.size else np.zeros(0)
    centers, means = binned_means(column, fit.cate, 10)
    ax.plot(centers, means, marker="o", color="#3b75af")
    ax.set_xlabel(fit.feature_names[fit.top_feature] if fit.feature_names else "feature")
    ax.set_ylabel("mean CATE")
    plots["modifier"] = _png(fig)
    return plots


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


def render_report(fit: EffectFit, meta: dict[str, Any]) -> bytes:
    """The HTML page: summary, warnings, CATE distribution, overlap, effect modifier and
    the final stage's coefficient table. ``meta`` holds use_case, report_id, treatment,
    control and create_time."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    treated_rows = int(fit.treated.sum())
    html = env.get_template(TEMPLATE).render(
        **meta,
        ate=fit.ate, ate_lower=fit.ate_lower, ate_upper=fit.ate_upper,
        rows=int(fit.treated.size), treated_rows=treated_rows,
        min_propensity=float(fit.propensity.min()), max_propensity=float(fit.propensity.max()),
        warnings=fit.warnings, quantiles=fit.quantiles, coefficients=fit.coefficients,
        top_feature=fit.feature_names[fit.top_feature] if fit.feature_names else "",
        plots=_plots(fit),
    )
    return html.encode("utf-8")
