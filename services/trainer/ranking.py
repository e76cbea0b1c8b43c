"""The ranking kind: a per-item click model with the position as a feature.

Training rows are shown items (ReadTrainingData's per-item rows of a ranking use
case): the candidate's row (request features overlaid with the item's), the position
it was shown at (1 = top) and whether it was clicked (its reward). Position bias is
handled by giving the model the position as one more input column: the click
probability it learns is ``P(click | x, position)``, and at serving time every
candidate is scored at the same fixed position (``SERVING_POSITION``), so the
ranking compares items, not the places they happened to be shown in.

The exported ONNX model takes the blueprint's features ``[N, F]`` like every other
kind: a small prefix graph appends the constant position column before the
scikit-learn graph (docs/ranking.md). Parity and loading reuse the trainer's checks
(services/trainer/models.py) through :class:`AtPosition`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from loopwise.services.trainer.models import (
    BINARY,
    REGRESSION,
    ParityReport,
    TrainingSet,
    check_parity,
    export_onnx,
    fit_weighted,
    make_estimator,
)

RANKING = "ranking"
# The position every candidate is scored at when serving (the top).
SERVING_POSITION = 1.0
# Name of the position input column in the ranking model (after the blueprint's features).
POSITION_FEATURE = "__position"


def with_position(x: np.ndarray, positions: np.ndarray | float) -> np.ndarray:
    """``x`` [N, F] with the position column appended ([N, F + 1], float64)."""
    x = np.asarray(x, dtype=np.float64)
    column = np.broadcast_to(np.asarray(positions, dtype=np.float64), (x.shape[0],)).reshape(-1, 1)
    return np.hstack([x, column])


def target_kind(labels: np.ndarray) -> str:
    """``binary`` when every label is 0 or 1 (clicks), else ``regression``."""
    return BINARY if np.isin(np.asarray(labels), (0.0, 1.0)).all() else REGRESSION


@dataclass
class AtPosition:
    """A fitted per-item model seen as a model of the features alone: every row is
    scored at ``position`` (what the exported ONNX model computes)."""

    estimator: Any
    position: float = SERVING_POSITION

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities at the fixed position."""
        return self.estimator.predict_proba(with_position(x, self.position))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions at the fixed position."""
        return self.estimator.predict(with_position(x, self.position))


def fit_ranking(family: str, x: np.ndarray, positions: np.ndarray, labels: np.ndarray, seed: int,
                weights: np.ndarray | None = None) -> tuple[Any, str]:
    """Fit the per-item model of ``family`` ("linear", "hist_gradient_boosting",
    "random_forest") on shown items: features ``x`` [N, F], ``positions`` [N] (1 = top),
    ``labels`` [N] (clicks or rewards). Returns (estimator on [x, position], kind)."""
    from threadpoolctl import threadpool_limits

    kind = target_kind(labels)
    estimator = make_estimator(kind, family, seed)
    y = np.asarray(labels)
    with threadpool_limits(1):  # one thread: the caller's cores are shared with the services
        fit_weighted(estimator, with_position(x, positions), y.astype(np.int64) if kind == BINARY else y, weights)
    return estimator, kind


def item_scores(estimator: Any, kind: str, x: np.ndarray, position: float = SERVING_POSITION) -> np.ndarray:
    """The serving score of candidate rows ``x`` [N, F] (P(click) at ``position`` for
    click models, the predicted reward otherwise)."""
    from threadpoolctl import threadpool_limits

    at = AtPosition(estimator, position)
    with threadpool_limits(1):
        if kind == BINARY:
            return np.asarray(at.predict_proba(x), dtype=np.float64)[:, 1]
        return np.asarray(at.predict(x), dtype=np.float64).reshape(-1)


def export_ranking_onnx(estimator: Any, kind: str, width: int, position: float = SERVING_POSITION) -> bytes:
    """The per-item model as ONNX taking the blueprint's ``features`` [N, width]: the
    fixed position column is appended inside the graph."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load_from_string(export_onnx(estimator, kind, width + 1))
    graph = model.graph
    inner = "features_at_position"
    for node in graph.node:
        node.input[:] = [inner if name == "features" else name for name in node.input]
    prefix = [
        helper.make_node("Shape", ["features"], ["__shape"]),
        helper.make_node("Slice", ["__shape", "__zero", "__one"], ["__rows"]),
        helper.make_node("Concat", ["__rows", "__one"], ["__column_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["__column_shape"], ["__position"],
                         value=helper.make_tensor("value", TensorProto.FLOAT, [1], [position])),
        helper.make_node("Concat", ["features", "__position"], [inner], axis=1),
    ]
    graph.initializer.extend([
        helper.make_tensor("__zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("__one", TensorProto.INT64, [1], [1]),
    ])
    nodes = prefix + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input[0].type.tensor_type.shape.dim[1].dim_value = width
    onnx.checker.check_model(model)
    return model.SerializeToString()


def ranking_parity(onnx_model: bytes, estimator: Any, kind: str, x_holdout: np.ndarray,
                   position: float = SERVING_POSITION) -> ParityReport:
    """The trainer's parity check of the exported model against the estimator scored
    at the fixed position, on holdout candidate rows ``x_holdout`` [N, F]."""
    data = TrainingSet(kind=kind, n_actions=1, x_train=x_holdout[:1], y_train=np.zeros(1),
                       x_holdout=np.asarray(x_holdout, dtype=np.float32), y_holdout=np.zeros(len(x_holdout)))
    return check_parity(onnx_model, AtPosition(estimator, position), data)
