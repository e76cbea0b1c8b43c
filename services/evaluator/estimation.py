"""Heterogeneous treatment effects with EconML LinearDML and logged propensities.

Runs in the process pool (:func:`fit_effects` is a top-level, picklable function):
nothing here touches the event loop or gRPC.

EconML takes no "known propensity" argument, so the treatment nuisance is
:class:`LoggedPropensityClassifier`, which reads the logged propensity from the last
column of what EconML passes it (features ⊕ controls, and the controls ``W`` are that
one column). The outcome nuisance is HistGradientBoosting; never ``'auto'``.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

QUANTILE_LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)
POOR_OVERLAP_LOW = 0.02
POOR_OVERLAP_HIGH = 0.98
MIN_ROWS = 100
# Each cross-fitting fold must see both treated and control rows.
MIN_ROWS_PER_ARM = 10


class LoggedPropensityClassifier(ClassifierMixin, BaseEstimator):
    """A treatment "model" that returns the logged propensities it is given.

    ``predict_proba(X)`` returns ``[1 − e, e]`` with ``e = X[:, column]``; ``fit`` only
    records the classes. Used as LinearDML's ``model_t`` with the propensity passed as
    the one control column (EconML concatenates features and controls, controls last).
    """

    def __init__(self, column: int = -1) -> None:
        self.column = column

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None):  # noqa: N803
        """Record the classes; nothing is learned."""
        self.classes_ = np.unique(np.asarray(y))
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """[n, 2]: probability of control and of treatment, read from the propensity column."""
        e = np.asarray(X, dtype=np.float64)[:, self.column]
        return np.column_stack([1.0 - e, e])

    def predict(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """The more likely class per row."""
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


def make_linear_dml(seed: int, cv: int = 3):
    """LinearDML with a HistGradientBoosting outcome model and the logged-propensity
    treatment model."""
    from econml.dml import LinearDML
    from sklearn.ensemble import HistGradientBoostingRegressor

    return LinearDML(
        model_y=HistGradientBoostingRegressor(max_iter=100, learning_rate=0.1, random_state=seed),
        model_t=LoggedPropensityClassifier(),
        discrete_treatment=True,
        cv=cv,
        random_state=seed,
    )


def fit_linear_dml(x: np.ndarray, t: np.ndarray, y: np.ndarray, propensity: np.ndarray,
                   seed: int, cache_values: bool = False):
    """Fit LinearDML on imputed features ``x`` [n, F], treatment ``t`` (0/1), reward ``y``
    and logged propensities [n]; returns the fitted estimator."""
    est = make_linear_dml(seed)
    est.fit(y, t, X=x, W=propensity.reshape(-1, 1), cache_values=cache_values)
    return est


@dataclass
class EffectModel:
    """A fitted estimator with what it needs to predict for new rows."""

    estimator: object
    feature_names: list[str]
    medians: np.ndarray
    # Columns the estimator takes (constant features are left out); None: all.
    columns: list[int] | None = None

    def impute(self, x: np.ndarray) -> np.ndarray:
        """Missing values (NaN) replaced by the training medians."""
        x = np.array(x, dtype=np.float64, copy=True)
        rows, cols = np.where(np.isnan(x))
        x[rows, cols] = self.medians[cols]
        return x

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CATE per row and its 95% interval (lower, upper)."""
        x = self.impute(x)
        if self.columns is not None:
            x = x[:, self.columns]
        effects = np.asarray(self.estimator.effect(x), dtype=np.float64).reshape(-1)
        lower, upper = self.estimator.effect_interval(x, alpha=0.05)
        return (effects, np.asarray(lower, dtype=np.float64).reshape(-1),
                np.asarray(upper, dtype=np.float64).reshape(-1))


@dataclass
class Coefficient:
    """One row of the final stage's coefficient table."""

    name: str
    value: float
    lower: float
    upper: float


@dataclass
class EffectFit:
    """What a fit produced, for the result message and the HTML report."""

    ate: float
    ate_lower: float
    ate_upper: float
    cate: np.ndarray
    quantiles: list[tuple[float, float]]
    propensity: np.ndarray
    treated: np.ndarray
    x: np.ndarray
    feature_names: list[str]
    coefficients: list[Coefficient]
    top_feature: int
    warnings: list[str] = field(default_factory=list)
    nuisance_max_error: float = 0.0
    model: bytes = b""


def fit_effects(x: np.ndarray, t: np.ndarray, y: np.ndarray, propensity: np.ndarray,
                feature_names: list[str], seed: int) -> EffectFit:
    """Estimate ATE, CATE and the final-stage coefficients; pickle the estimator.

    Top-level and picklable: runs in the process pool."""
    warnings: list[str] = []
    medians = np.zeros(x.shape[1])
    for j in range(x.shape[1]):
        present = x[~np.isnan(x[:, j]), j]
        medians[j] = float(np.median(present)) if present.size else 0.0
    missing = int(np.isnan(x).sum())
    model = EffectModel(None, list(feature_names), medians)
    x_imp = model.impute(x)
    if missing:
        warnings.append(f"{missing} missing feature values were imputed with column medians")

    est = fit_linear_dml(x_imp, t, y, propensity, seed)
    model.estimator = est

    # The treatment nuisance must be exactly the logged propensities (docs/internals.md).
    xw = np.column_stack([x_imp, propensity])
    nuisance_error = max(
        float(np.max(np.abs(m.predict_proba(xw)[:, 1] - propensity)))
        for fold in est.models_t for m in fold
    )
    if nuisance_error > 1e-9:
        warnings.append(f"treatment model deviates from logged propensities by {nuisance_error:.3g}")

    ate = float(np.asarray(est.ate(x_imp)).reshape(-1)[0])
    lower, upper = est.ate_interval(x_imp, alpha=0.05)
    cate = np.asarray(est.effect(x_imp), dtype=np.float64).reshape(-1)
    quantiles = [(q, float(np.quantile(cate, q))) for q in QUANTILE_LEVELS]

    coefficients = _coefficients(est, feature_names)
    spread = np.nanstd(x_imp, axis=0) if x_imp.size else np.zeros(len(feature_names))
    strength = np.array([abs(c.value) for c in coefficients[1:]]) * spread
    top = int(np.argmax(strength)) if strength.size else 0

    low, high = float(propensity.min()), float(propensity.max())
    if low < POOR_OVERLAP_LOW or high > POOR_OVERLAP_HIGH:
        warnings.append(
            f"poor overlap: logged propensity of treatment ranges {low:.3f}..{high:.3f} "
            f"(outside [{POOR_OVERLAP_LOW}, {POOR_OVERLAP_HIGH}]); effects there rest on extrapolation"
        )
    return EffectFit(
        ate=ate, ate_lower=float(np.asarray(lower).reshape(-1)[0]),
        ate_upper=float(np.asarray(upper).reshape(-1)[0]), cate=cate, quantiles=quantiles,
        propensity=propensity, treated=t, x=x_imp, feature_names=list(feature_names),
        coefficients=coefficients, top_feature=top, warnings=warnings,
        nuisance_max_error=nuisance_error, model=pickle.dumps(model),
    )


def _coefficients(est, feature_names: list[str]) -> list[Coefficient]:
    """Intercept then one row per feature, with 95% intervals."""
    coef = np.asarray(est.coef_, dtype=np.float64).reshape(-1)
    coef_lo, coef_hi = (np.asarray(a, dtype=np.float64).reshape(-1) for a in est.coef__interval(alpha=0.05))
    intercept = float(np.asarray(est.intercept_).reshape(-1)[0])
    int_lo, int_hi = (float(np.asarray(a).reshape(-1)[0]) for a in est.intercept__interval(alpha=0.05))
    rows = [Coefficient("(intercept)", intercept, int_lo, int_hi)]
    rows += [Coefficient(name, float(coef[j]), float(coef_lo[j]), float(coef_hi[j]))
             for j, name in enumerate(feature_names)]
    return rows


def predict_effects(model_bytes: bytes, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unpickle a stored :class:`EffectModel` and predict CATE with 95% intervals."""
    model: EffectModel = pickle.loads(model_bytes)
    return model.predict(x)
