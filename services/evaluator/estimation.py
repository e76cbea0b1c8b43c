"""The pieces every effect estimator shares: the logged-propensity treatment model and
the fitted effect model kept with a report (see :mod:`.estimators` and :mod:`.analysis`).

EconML takes no "known propensity" argument, so the treatment nuisance is
:class:`LoggedPropensityClassifier`, which reads the logged propensity from the last
column of what EconML passes it (features ⊕ controls, and the logged propensity is the
last control column of ``W``). The outcome nuisance is HistGradientBoosting; never ``'auto'``.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None):
        """Record the classes; nothing is learned."""
        self.classes_ = np.unique(np.asarray(y))
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """[n, 2]: probability of control and of treatment, read from the propensity column."""
        e = np.asarray(X, dtype=np.float64)[:, self.column]
        return np.column_stack([1.0 - e, e])

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The more likely class per row."""
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


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
