"""The SDK's product-metric helpers as plain functions: a blueprint copy with other
value-model weights, and a ReadTrainingData batch's metric columns by name."""

from __future__ import annotations

import numpy as np
import pytest

from loopwise.client import metric_columns, with_value_weights
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.simulator import CheckoutUpsell
from loopwise.tensors import F32, pack


def test_with_value_weights_changes_only_the_named_weights_of_a_copy() -> None:
    blueprint = CheckoutUpsell().metrics_blueprint({"purchase": 1.0, "returns": -10.0})
    changed = with_value_weights(blueprint, {"returns": -20})
    assert dict(changed.value_model.weights) == {"purchase": 1.0, "returns": -20.0}
    assert dict(blueprint.value_model.weights) == {"purchase": 1.0, "returns": -10.0}  # the original stays
    changed.ClearField("value_model")
    blueprint.ClearField("value_model")
    assert changed == blueprint  # nothing else changed


def test_with_value_weights_refuses_a_weight_of_no_metric() -> None:
    blueprint = CheckoutUpsell().metrics_blueprint()
    with pytest.raises(ValueError, match="clicks"):
        with_value_weights(blueprint, {"clicks": 1.0})
    with pytest.raises(ValueError, match="returns"):
        with_value_weights(CheckoutUpsell().blueprint(), {"returns": -1.0})  # no metrics at all


def test_metric_columns_by_name() -> None:
    values = np.array([[3.5, 0.0], [0.0, 1.0], [7.25, 2.0]], dtype=np.float32)
    batch = fpb.ReadTrainingDataResponse(rows=3, metric_names=["purchase", "returns"],
                                         metric_values=pack(values, F32))
    columns = metric_columns(batch)
    assert list(columns) == ["purchase", "returns"]
    np.testing.assert_array_equal(columns["purchase"], [3.5, 0.0, 7.25])
    np.testing.assert_array_equal(columns["returns"], [0.0, 1.0, 2.0])
    assert metric_columns(fpb.ReadTrainingDataResponse(rows=3)) == {}
