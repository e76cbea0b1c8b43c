"""Candidate models, holdout metrics, ONNX export and the parity check.

Everything here is plain CPU work on numpy arrays, meant to run in the trainer's
process pool: the functions named ``fit_candidate``, ``export_onnx`` and
``check_parity`` are top-level and take and return picklable values.
Model inputs and outputs follow docs/internals.md ("Model artifacts").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler

BINARY = "binary"
MULTICLASS = "multiclass"
REGRESSION = "regression"
ACTION_VALUE = "action_value"
CLASSIFIER_KINDS = (BINARY, MULTICLASS)

LINEAR = {
    BINARY: "logistic_regression",
    MULTICLASS: "logistic_regression",
    REGRESSION: "ridge",
    ACTION_VALUE: "ridge_interactions",
}
BOOSTING = "hist_gradient_boosting"
FOREST = "random_forest"
# Candidates in order of simplicity: on a tie the earlier one wins.
FAMILIES = ("linear", BOOSTING, FOREST)

# Parity (docs/architecture.md §8): elementwise tolerance and the share of equal decisions.
PARITY_ATOL = 1e-5
PARITY_RTOL = 1e-4
PARITY_MIN_AGREEMENT = 0.999
EPS = 1e-15


@dataclass
class TrainingSet:
    """Model-ready arrays for one training job (float32 inputs, as the model will see).

    ``x_*`` are ``[rows, input_width]``; for action-value kinds they are the features
    ⊕ one-hot(logged action) and the ``holdout_*`` fields describe the holdout units
    for policy evaluation (features only, logged action, propensity, reward)."""

    kind: str
    n_actions: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_holdout: np.ndarray
    y_holdout: np.ndarray
    threshold: float = 0.5
    default_action: int = 0
    holdout_features: np.ndarray | None = None
    holdout_actions: np.ndarray | None = None
    holdout_propensities: np.ndarray | None = None
    # Action value: importance weights of the training rows (1 / logged propensity,
    # clipped, mean 1), so the fit corrects for the policy that logged them.
    w_train: np.ndarray | None = None
    # Blueprints with metrics (services/trainer/value_model.py): metric names, the value
    # model's weights and every metric's target ``[rows, M]``; ``y_*`` is their
    # weighted sum. Empty without metrics.
    metric_names: tuple[str, ...] = ()
    metric_weights: np.ndarray | None = None
    metrics_train: np.ndarray | None = None
    metrics_holdout: np.ndarray | None = None

    @property
    def input_width(self) -> int:
        """Width of the model input."""
        return int(self.x_train.shape[1])


@dataclass
class CandidateFit:
    """A fitted candidate with its holdout metrics; ``score`` is higher-is-better."""

    family: str
    estimator: Any
    metrics: dict[str, float]
    metric: str
    score: float
    fit_seconds: float


@dataclass
class ParityReport:
    """Result of comparing ONNX Runtime with scikit-learn on the holdout."""

    ok: bool
    max_abs_diff: float
    violations: int
    agreement: float
    reason: str = ""
    details: dict[str, float] = field(default_factory=dict)


def family_name(kind: str, family: str) -> str:
    """The registered family name of a candidate (``linear`` depends on the kind)."""
    return LINEAR[kind] if family == "linear" else family


def make_estimator(kind: str, family: str, seed: int, params: dict[str, Any] | None = None) -> Any:
    """An unfitted candidate estimator with the search's ``params`` (family defaults
    otherwise); linear and forest pipelines impute NaNs first."""
    params = dict(params or {})
    imputer = SimpleImputer(strategy="median", keep_empty_features=True)
    if family == BOOSTING:
        settings = {"max_iter": 100, **params}
        if kind in CLASSIFIER_KINDS:
            return HistGradientBoostingClassifier(random_state=seed, **settings)
        return HistGradientBoostingRegressor(random_state=seed, **settings)
    if family == FOREST:
        settings = {"n_estimators": 24, "max_depth": 10, "min_samples_leaf": 20, "max_samples": 0.5, **params}
        forest = (RandomForestClassifier if kind in CLASSIFIER_KINDS else RandomForestRegressor)(
            random_state=seed, n_jobs=1, **settings)
        return Pipeline([("impute", imputer), ("forest", forest)])
    if family != "linear":
        raise ValueError(f"unknown candidate family {family!r}")
    strength = float(params.get("strength", 1.0))
    if kind in CLASSIFIER_KINDS:
        return make_pipeline(imputer, StandardScaler(), LogisticRegression(C=1.0 / strength, max_iter=1000))
    if kind == REGRESSION:
        return make_pipeline(imputer, Ridge(alpha=strength))
    # Feature × action products let a linear model learn heterogeneous effects.
    return Pipeline([
        ("impute", imputer),
        ("interact", PolynomialFeatures(degree=2, interaction_only=True, include_bias=False)),
        ("ridge", Ridge(alpha=strength)),
    ])


def predict_scores(estimator: Any, kind: str, x: np.ndarray) -> np.ndarray:
    """What the ONNX model outputs: probabilities ``[N, C]`` or values ``[N, 1]``."""
    if kind in CLASSIFIER_KINDS:
        return np.asarray(estimator.predict_proba(x), dtype=np.float64)
    return np.asarray(estimator.predict(x), dtype=np.float64).reshape(-1, 1)


def log_loss(y: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean negative log likelihood of integer labels ``y`` under ``probabilities``."""
    p = np.clip(probabilities[np.arange(y.size), y.astype(np.int64)], EPS, 1.0)
    return float(-np.mean(np.log(p)))


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (rank statistic); NaN with a single class."""
    positives, negatives = int((y == 1).sum()), int((y == 0).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(score.size)
    ranks[order] = np.arange(1, score.size + 1)
    # Average ranks of ties.
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def action_value_inputs(features: np.ndarray, n_actions: int) -> np.ndarray:
    """Every unit repeated once per action with that action's one-hot: ``[N·A, F+A]``."""
    n = features.shape[0]
    repeated = np.repeat(features, n_actions, axis=0)
    onehot = np.tile(np.eye(n_actions, dtype=features.dtype), (n, 1))
    return np.hstack([repeated, onehot]).astype(np.float32)


def ips_value(chosen: np.ndarray, data: TrainingSet) -> float:
    """Inverse-propensity estimate of a policy's value from the logged holdout."""
    assert data.holdout_actions is not None and data.holdout_propensities is not None
    p = data.holdout_propensities
    valid = p > 0
    match = (chosen == data.holdout_actions) & valid
    weights = np.where(match, 1.0 / np.where(valid, p, 1.0), 0.0)
    return float(np.mean(weights * data.y_holdout)) if data.y_holdout.size else float("nan")


def greedy_actions(values: np.ndarray, n_actions: int) -> np.ndarray:
    """The best action per unit from action values of shape ``[N·A, 1]``."""
    return np.argmax(values.reshape(-1, n_actions), axis=1)


def evaluate(estimator: Any, data: TrainingSet) -> tuple[dict[str, float], str, float]:
    """Holdout metrics of a fitted estimator, the selection metric and its score."""
    if data.kind in CLASSIFIER_KINDS:
        proba = predict_scores(estimator, data.kind, data.x_holdout)
        y = data.y_holdout.astype(np.int64)
        metrics = {"log_loss": log_loss(y, proba), "accuracy": float(np.mean(np.argmax(proba, 1) == y))}
        if data.kind == BINARY:
            metrics["auc"] = auc(y, proba[:, 1])
        return metrics, "log_loss", -metrics["log_loss"]
    if data.kind == REGRESSION:
        pred = predict_scores(estimator, data.kind, data.x_holdout)[:, 0]
        rmse = float(np.sqrt(np.mean((pred - data.y_holdout) ** 2)))
        return {"rmse": rmse}, "rmse", -rmse
    assert data.holdout_features is not None
    values = predict_scores(estimator, data.kind, action_value_inputs(data.holdout_features, data.n_actions))
    chosen = greedy_actions(values, data.n_actions)
    logged = predict_scores(estimator, data.kind, data.x_holdout)[:, 0]
    metrics = {
        "policy_value_ips": ips_value(chosen, data),
        "rmse": float(np.sqrt(np.mean((logged - data.y_holdout) ** 2))),
    }
    return metrics, "policy_value_ips", metrics["policy_value_ips"]


def baseline_metrics(data: TrainingSet) -> dict[str, float]:
    """The metrics of the baseline the model must beat (docs/internals.md)."""
    if data.kind in CLASSIFIER_KINDS:
        counts = np.bincount(data.y_train.astype(np.int64), minlength=data.n_actions).astype(np.float64)
        freq = (counts + 1e-3) / (counts + 1e-3).sum()
        proba = np.tile(freq, (data.y_holdout.size, 1))
        return {"log_loss": log_loss(data.y_holdout.astype(np.int64), proba)}
    if data.kind == REGRESSION:
        mean = float(np.mean(data.y_train))
        return {"rmse": float(np.sqrt(np.mean((mean - data.y_holdout) ** 2)))}
    default = np.full(data.y_holdout.size, data.default_action)
    return {"policy_value_ips": ips_value(default, data)}


def beats_baseline(kind: str, metrics: dict[str, float], baseline: dict[str, float]) -> tuple[bool, str]:
    """Whether a model beats its baseline, and a sentence saying by how much."""
    if kind in CLASSIFIER_KINDS:
        ok = metrics["log_loss"] < baseline["log_loss"]
        return ok, f"holdout log loss {metrics['log_loss']:.4f} vs constant predictor {baseline['log_loss']:.4f}"
    if kind == REGRESSION:
        ok = metrics["rmse"] < baseline["rmse"]
        return ok, f"holdout RMSE {metrics['rmse']:.4f} vs constant mean {baseline['rmse']:.4f}"
    ok = metrics["policy_value_ips"] > baseline["policy_value_ips"]
    return ok, (f"holdout IPS policy value {metrics['policy_value_ips']:.4f} vs default policy "
                f"{baseline['policy_value_ips']:.4f}")


def fit_weighted(estimator: Any, x: np.ndarray, y: np.ndarray, weights: np.ndarray | None) -> Any:
    """Fit with per-row weights (routed to a pipeline's last step), or unweighted."""
    if weights is None:
        return estimator.fit(x, y)
    if isinstance(estimator, Pipeline):
        return estimator.fit(x, y, **{f"{estimator.steps[-1][0]}__sample_weight": weights})
    return estimator.fit(x, y, sample_weight=weights)


def fit_model(data: TrainingSet, family: str, seed: int, params: dict[str, Any] | None = None) -> Any:
    """A candidate fitted on every training row: one estimator, or with metrics one
    per metric combined by the value model (services/trainer/value_model.py)."""
    x = data.x_train.astype(np.float64)
    if data.metric_names:
        from loopwise.services.trainer.value_model import fit_metric_models

        assert data.metrics_train is not None and data.metric_weights is not None
        return fit_metric_models(lambda: make_estimator(data.kind, family, seed, params), x, data.metrics_train,
                                 data.w_train, data.metric_names, data.metric_weights, fit_weighted)
    return fit_weighted(make_estimator(data.kind, family, seed, params), x, data.y_train, data.w_train)


def fit_candidate(family: str, data: TrainingSet, seed: int) -> CandidateFit:
    """Fit one candidate on the training rows and score it on the holdout (pool function)."""
    started = time.perf_counter()
    estimator = fit_model(data, family, seed)
    seconds = time.perf_counter() - started
    metrics, metric, score = evaluate(estimator, data)
    return CandidateFit(family_name(data.kind, family), estimator, metrics, metric, score, seconds)


def score_output(kind: str) -> str:
    """The ONNX output holding the scores for a kind."""
    return "probabilities" if kind in CLASSIFIER_KINDS else "variable"


def export_onnx(estimator: Any, kind: str, input_width: int) -> bytes:
    """The estimator as ONNX: one float32 input ``features`` ``[N, input_width]`` (pool function)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    from loopwise.services.trainer.value_model import MetricValueModel, combine_onnx

    if isinstance(estimator, MetricValueModel):
        return combine_onnx([export_onnx(e, kind, input_width) for e in estimator.estimators],
                            estimator.weights, input_width)
    options = {id(estimator): {"zipmap": False}} if kind in CLASSIFIER_KINDS else None
    onx = to_onnx(
        estimator, initial_types=[("features", FloatTensorType([None, input_width]))],
        options=options, target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return onx.SerializeToString()


def run_onnx(onnx: bytes, output: str, x: np.ndarray) -> np.ndarray:
    """Score float32 rows with ONNX Runtime; returns the named output as float64 2-d."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    if output not in names:
        raise ValueError(f"the model has no output {output!r} (outputs: {names})")
    values = session.run([output], {"features": x.astype(np.float32)})[0]
    values = np.asarray(values, dtype=np.float64)
    return values.reshape(values.shape[0], -1)


def decisions(kind: str, scores: np.ndarray, threshold: float, n_actions: int) -> np.ndarray:
    """The decision a policy would take from the scores (for the agreement check)."""
    if kind == BINARY:
        return (scores[:, 1] >= threshold).astype(np.int64)
    if kind == MULTICLASS:
        return np.argmax(scores, axis=1)
    if kind == ACTION_VALUE:
        return greedy_actions(scores, n_actions)
    return np.zeros(scores.shape[0], dtype=np.int64)


def check_parity(onnx: bytes, estimator: Any, data: TrainingSet) -> ParityReport:
    """Compare ONNX Runtime with scikit-learn on the holdout (pool function, docs/architecture.md §8)."""
    if data.kind == ACTION_VALUE:
        assert data.holdout_features is not None
        x = action_value_inputs(data.holdout_features, data.n_actions)
    else:
        x = data.x_holdout.astype(np.float32)
    expected = predict_scores(estimator, data.kind, x.astype(np.float64))
    try:
        got = run_onnx(onnx, score_output(data.kind), x)
    except Exception as exc:  # any runtime failure is a parity failure
        return ParityReport(False, float("inf"), x.shape[0], 0.0, f"ONNX Runtime failed: {exc}")
    if got.shape != expected.shape:
        return ParityReport(False, float("inf"), x.shape[0], 0.0,
                            f"ONNX output shape {got.shape} differs from scikit-learn {expected.shape}")
    diff = np.abs(got - expected)
    bad = int(np.sum(diff > PARITY_ATOL + PARITY_RTOL * np.abs(expected)))
    same = decisions(data.kind, got, data.threshold, data.n_actions) == decisions(
        data.kind, expected, data.threshold, data.n_actions)
    agreement = float(np.mean(same)) if same.size else 1.0
    max_diff = float(diff.max()) if diff.size else 0.0
    reasons = []
    if bad:
        reasons.append(f"{bad} of {diff.size} values differ by more than "
                       f"{PARITY_ATOL:g} + {PARITY_RTOL:g}·|sklearn| (max {max_diff:.3g})")
    if agreement < PARITY_MIN_AGREEMENT:
        reasons.append(f"same decision on only {agreement:.2%} of rows (need {PARITY_MIN_AGREEMENT:.1%})")
    if hasattr(estimator, "predict_metrics"):  # every metric's output, not only their weighted sum
        from loopwise.services.trainer.value_model import METRIC_OUTPUT

        metrics_expected = estimator.predict_metrics(x.astype(np.float64))
        metrics_got = run_onnx(onnx, METRIC_OUTPUT, x)
        metric_diff = np.abs(metrics_got - metrics_expected)
        metric_bad = int(np.sum(metric_diff > PARITY_ATOL + PARITY_RTOL * np.abs(metrics_expected)))
        max_diff = max(max_diff, float(metric_diff.max()) if metric_diff.size else 0.0)
        if metric_bad:
            reasons.append(f"{metric_bad} of {metric_diff.size} metric values differ by more than "
                           f"{PARITY_ATOL:g} + {PARITY_RTOL:g}·|sklearn|")
    return ParityReport(not reasons, max_diff, bad, agreement, "; ".join(reasons))


def check_loads(onnx: bytes) -> tuple[list[str], list[str]]:
    """Load an ONNX model in ONNX Runtime; returns its input and output names (raises if invalid)."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    return [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
