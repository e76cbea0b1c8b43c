"""One model per product metric, combined by the value model (docs/blueprints.md,
"Product metrics").

A blueprint with metrics is trained as one regressor per metric on the same inputs
(features ⊕ one-hot(action)). :class:`MetricValueModel` holds them with the weights of
the blueprint version trained against; its ``predict`` is the weighted value, so
candidate search, evaluation and parity treat it like any action-value model.

Its ONNX artifact is one graph: every metric's regressor reads the shared input
``features``; their outputs are concatenated into ``metric_values`` ``[N, M]`` (one
column per metric, in blueprint order) and ``variable`` ``[N, 1]`` is
``metric_values`` × the trained weights. The decision service runs ``metric_values``
(one session run per request) and applies the weights of the blueprint version in
force, so new weights change decisions without retraining; the trainer's own checks
(blessing, drift profile, latency) read ``variable``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

METRIC_OUTPUT = "metric_values"
VALUE_OUTPUT = "variable"
INPUT = "features"


@dataclass
class MetricValueModel:
    """Per-metric fitted regressors and the value model's weights."""

    names: tuple[str, ...]
    estimators: list[Any]
    weights: np.ndarray  # float64 [M]

    def predict_metrics(self, x: np.ndarray) -> np.ndarray:
        """Every metric's prediction, ``[N, M]``."""
        return np.column_stack([np.asarray(e.predict(x), dtype=np.float64).reshape(-1) for e in self.estimators])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The value: the weighted sum of the metric predictions, ``[N]``."""
        return self.predict_metrics(x) @ self.weights


def blueprint_weights(blueprint, names: tuple[str, ...] | list[str]) -> np.ndarray:
    """The value model's weight of every metric in ``names`` (0 when it has none)."""
    weights = blueprint.value_model.weights
    return np.array([float(weights.get(name, 0.0)) for name in names], dtype=np.float64)


def fit_metric_models(make: Any, x: np.ndarray, targets: np.ndarray, sample_weight: np.ndarray | None,
                      names: tuple[str, ...], weights: np.ndarray, fit: Any) -> MetricValueModel:
    """Fit ``make()`` once per metric column of ``targets`` ``[N, M]`` with ``fit(estimator,
    x, y, sample_weight)``."""
    estimators = [fit(make(), x, targets[:, j], sample_weight) for j in range(targets.shape[1])]
    return MetricValueModel(tuple(names), estimators, np.asarray(weights, dtype=np.float64))


def prefixed_graph(graph, prefix: str) -> tuple[list, list, str]:
    """The graph's nodes and initializers with every name but the shared input
    prefixed, and its (renamed) first output (also used for ensemble members,
    services/trainer/ensemble.py)."""
    keep = {INPUT, ""}

    def name(value: str) -> str:
        return value if value in keep else prefix + value

    nodes = []
    for node in graph.node:
        copy = type(node)()
        copy.CopyFrom(node)
        copy.name = prefix + (node.name or node.op_type)
        del copy.input[:]
        copy.input.extend(name(v) for v in node.input)
        del copy.output[:]
        copy.output.extend(name(v) for v in node.output)
        nodes.append(copy)
    initializers = []
    for tensor in graph.initializer:
        copy = type(tensor)()
        copy.CopyFrom(tensor)
        copy.name = prefix + tensor.name
        initializers.append(copy)
    return nodes, initializers, name(graph.output[0].name)


def stacked_graph(models: list[bytes], prefix: str, stacked_output: str, head_nodes: list,
                  head_initializers: list, name: str, input_width: int) -> bytes:
    """One ONNX graph from single-output graphs (each with input ``features`` and an
    ``[N, 1]`` output): their outputs side by side as ``stacked_output`` ``[N, len(models)]``,
    then ``head_nodes`` (with ``head_initializers``) computing ``variable`` ``[N, 1]``
    from it. Each graph's names get the prefix ``<prefix><index>_``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list = []
    initializers: list = []
    columns: list[str] = []
    opsets: dict[str, int] = {}
    shape = f"{prefix}_column_shape"
    for j, data in enumerate(models):
        model = onnx.load_from_string(data)
        for opset in model.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
        own_nodes, own_initializers, output = prefixed_graph(model.graph, f"{prefix}{j}_")
        nodes += own_nodes
        initializers += own_initializers
        column = f"{prefix}{j}_column"
        nodes.append(helper.make_node("Reshape", [output, shape], [column], name=f"{prefix}{j}_as_column"))
        columns.append(column)
    initializers.append(numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), shape))
    nodes.append(helper.make_node("Concat", columns, [stacked_output], axis=1, name=f"{stacked_output}_concat"))
    graph = helper.make_graph(
        nodes + head_nodes, name,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [None, input_width])],
        [helper.make_tensor_value_info(stacked_output, TensorProto.FLOAT, [None, len(models)]),
         helper.make_tensor_value_info(VALUE_OUTPUT, TensorProto.FLOAT, [None, 1])],
        initializers + head_initializers,
    )
    combined = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())])
    combined.ir_version = onnx.load_from_string(models[0]).ir_version
    onnx.checker.check_model(combined)
    return combined.SerializeToString()


def combine_onnx(models: list[bytes], weights: np.ndarray, input_width: int) -> bytes:
    """One ONNX graph from per-metric regressors (each with input ``features`` and one
    ``[N, 1]`` output): outputs ``metric_values`` ``[N, M]`` and ``variable`` ``[N, 1]``,
    their weighted sum."""
    from onnx import helper, numpy_helper

    weights_init = numpy_helper.from_array(np.asarray(weights, dtype=np.float32).reshape(-1, 1),
                                           "value_model_weights")
    head = [helper.make_node("MatMul", [METRIC_OUTPUT, "value_model_weights"], [VALUE_OUTPUT], name="value_model")]
    return stacked_graph(models, "metric", METRIC_OUTPUT, head, [weights_init], "metric_value_model", input_width)
