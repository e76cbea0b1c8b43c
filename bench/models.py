"""The benchmark models (docs/architecture.md §10): logistic regression and HistGradientBoosting with
100 trees on 20 features, exported to ONNX the way the trainer does, and pickled with
joblib for MLServer's scikit-learn runtime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.blueprints import N_FEATURES


@dataclass
class BenchModel:
    """One fitted model: its ONNX bytes and its joblib file."""

    name: str
    family: str
    onnx: bytes
    joblib_path: Path


def training_data(n: int = 4000, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """A fixed binary problem with interactions."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    w = rng.normal(size=N_FEATURES)
    logit = x @ w + 0.8 * x[:, 0] * x[:, 1] - 0.5 * np.abs(x[:, 2])
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return x, y


def fit_models(directory: Path) -> dict[str, BenchModel]:
    """Fit, export and pickle both models under ``directory``."""
    import joblib
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    from loopwise.services.trainer.models import BINARY, export_onnx

    directory.mkdir(parents=True, exist_ok=True)
    x, y = training_data()
    estimators = {
        "lr": ("logistic", LogisticRegression(max_iter=1000)),
        "hgb": ("hist_gradient_boosting", HistGradientBoostingClassifier(max_iter=100, early_stopping=False,
                                                                         random_state=7)),
    }
    out = {}
    for name, (family, est) in estimators.items():
        est.fit(x, y)
        path = directory / f"{name}.joblib"
        joblib.dump(est, path)
        out[name] = BenchModel(name, family, export_onnx(est, BINARY, N_FEATURES), path)
    return out
