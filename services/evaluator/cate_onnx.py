"""The effect (CATE) model as ONNX, in the decision service's action-value layout.

The decision service scores action-value use cases with rows ``features ⊕ one-hot(action)``
(input ``features``, float32 ``[n, F + A]``) and reads one value per row. The exported
graph computes ``value = τ̂(x) · onehot[treatment]``: the predicted effect for the
treatment action and 0 for every other action, so with the blueprint's
``policy.action_costs`` the greedy policy treats exactly when the predicted effect
exceeds the cost (the uplift policy).

τ̂ itself: a linear final stage goes through its coefficients (exact); a forest is
distilled into a gradient-boosted tree ensemble (histogram gradient boosting, fitted on
the estimator's CATE over a seeded sample of at most ``DISTILL_ROWS`` rows), and the
fidelity R² of the ONNX output against the estimator's effect on every row is reported. Missing
values (NaN) are imputed with the training medians inside the graph.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

INPUT_NAME = "features"
OUTPUT_NAME = "value"
DISTILL_ROWS = 50_000
DISTILL_TREES = 150
LINEAR = "linear"
DISTILLED = "distilled_trees"


@dataclass
class ExportedCate:
    """An exported effect model."""

    onnx: bytes
    family: str
    fidelity_r2: float
    input_width: int

    @property
    def sha256(self) -> str:
        """sha256 of the ONNX bytes, hex."""
        return hashlib.sha256(self.onnx).hexdigest()


def _effect_pipeline(x: np.ndarray, cate: np.ndarray, medians: np.ndarray,
                     linear: tuple[np.ndarray, float] | None, seed: int):
    """A fitted scikit-learn pipeline (median imputer → regressor) computing τ̂."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline

    imputer = SimpleImputer(strategy="median").fit(medians.reshape(1, -1))
    imputer.statistics_ = medians.astype(np.float64)
    if linear is not None:
        coef, intercept = linear
        regressor = LinearRegression().fit(np.vstack([medians, medians + 1.0]), [0.0, 1.0])
        regressor.coef_, regressor.intercept_ = coef.astype(np.float64), float(intercept)
    else:
        rows = np.random.default_rng(seed).permutation(x.shape[0])[:DISTILL_ROWS]
        regressor = HistGradientBoostingRegressor(max_iter=DISTILL_TREES, max_depth=4, learning_rate=0.1,
                                                  early_stopping=False, random_state=seed)
        regressor.fit(imputer.transform(x[rows]), cate[rows])
    return Pipeline([("impute", imputer), ("effect", regressor)])


def _gate(inner, n_features: int, n_actions: int, treatment_index: int):
    """Wrap the τ̂ graph: slice the features, multiply by the treatment's one-hot column."""
    import onnx
    from onnx import TensorProto, helper

    graph = inner.graph
    inner_input = graph.input[0].name
    inner_output = graph.output[0].name
    constants = [
        helper.make_tensor("feat_start", TensorProto.INT64, [1], [0]),
        helper.make_tensor("feat_end", TensorProto.INT64, [1], [n_features]),
        helper.make_tensor("treat_start", TensorProto.INT64, [1], [n_features + treatment_index]),
        helper.make_tensor("treat_end", TensorProto.INT64, [1], [n_features + treatment_index + 1]),
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
    ]
    head = [
        helper.make_node("Slice", [INPUT_NAME, "feat_start", "feat_end", "axis1"], [inner_input]),
        helper.make_node("Slice", [INPUT_NAME, "treat_start", "treat_end", "axis1"], ["treat_onehot"]),
    ]
    tail = [helper.make_node("Reshape", [inner_output, "effect_shape"], ["effect_column"]),
            helper.make_node("Mul", ["effect_column", "treat_onehot"], [OUTPUT_NAME])]
    constants.append(helper.make_tensor("effect_shape", TensorProto.INT64, [2], [-1, 1]))
    nodes = head + list(graph.node) + tail
    new_graph = helper.make_graph(
        nodes, "cate_uplift",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, n_features + n_actions])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [None, 1])],
        initializer=list(graph.initializer) + constants,
    )
    model = helper.make_model(new_graph, opset_imports=list(inner.opset_import))
    model.ir_version = inner.ir_version
    onnx.checker.check_model(model)
    return model


def export_cate(x: np.ndarray, cate: np.ndarray, medians: np.ndarray, linear: tuple[np.ndarray, float] | None,
                n_actions: int, treatment_index: int, seed: int) -> ExportedCate:
    """Export τ̂ as ONNX (see the module doc); ``x`` are the training rows (NaN =
    missing), ``cate`` the estimator's effects on them."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    n_features = x.shape[1]
    pipeline = _effect_pipeline(x, cate, medians, linear, seed)
    inner = convert_sklearn(pipeline, initial_types=[("tau_input", FloatTensorType([None, n_features]))],
                            target_opset=17)
    model = _gate(inner, n_features, n_actions, treatment_index)
    onnx_bytes = model.SerializeToString()
    predicted = predict_onnx(onnx_bytes, x, n_actions, treatment_index)
    residual = float(np.sum((predicted - cate) ** 2))
    total = float(np.sum((cate - cate.mean()) ** 2))
    fidelity = 1.0 - residual / total if total > 0 else (1.0 if residual < 1e-9 else 0.0)
    return ExportedCate(onnx_bytes, LINEAR if linear is not None else DISTILLED, fidelity,
                        n_features + n_actions)


def session(onnx_bytes: bytes):
    """An onnxruntime session on the exported bytes (one thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def predict_onnx(onnx_bytes: bytes, x: np.ndarray, n_actions: int, treatment_index: int,
                 sess=None) -> np.ndarray:
    """τ̂ for rows ``x`` [n, F] through the ONNX model (the treatment's one-hot set)."""
    sess = sess or session(onnx_bytes)
    onehot = np.zeros((x.shape[0], n_actions), dtype=np.float32)
    onehot[:, treatment_index] = 1.0
    rows = np.hstack([x.astype(np.float32), onehot])
    return np.asarray(sess.run([OUTPUT_NAME], {INPUT_NAME: rows})[0], dtype=np.float64).reshape(-1)
