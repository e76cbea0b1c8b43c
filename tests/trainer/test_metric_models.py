"""Per-metric models as plain functions: one ONNX graph with a column per metric and
their weighted sum (real skl2onnx export, real ONNX Runtime), blessing guardrails
on a holdout with known metric effects, and the canary's guardrail test."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.services.trainer.blessing import GuardrailRule, bless
from loopwise.services.trainer.models import (
    ACTION_VALUE,
    TrainingSet,
    check_parity,
    export_onnx,
    fit_model,
)
from loopwise.services.trainer.rollout import metric_guardrails
from loopwise.services.trainer.value_model import METRIC_OUTPUT, VALUE_OUTPUT, MetricValueModel

N_TRAIN, N_HOLDOUT = 3000, 1500
WEIGHTS = np.array([1.0, -5.0])


def _world(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One feature x; uniform logging over two actions. Metric 0 (purchase) gains 1 + x
    from action 1; metric 1 (returns) gains 0.3 from action 1."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1)).astype(np.float32)
    actions = rng.integers(0, 2, n)
    purchase = 2.0 + actions * (1.0 + x[:, 0]) + rng.normal(0, 0.3, n)
    returns = 0.1 + 0.3 * actions + rng.normal(0, 0.05, n)
    return x, actions, np.column_stack([purchase, returns]), np.full(n, 0.5)


def _training() -> TrainingSet:
    x, a, metrics, p = _world(N_TRAIN + N_HOLDOUT, seed=3)
    xa = np.hstack([x, np.eye(2, dtype=np.float32)[a]])
    train, hold = slice(0, N_TRAIN), slice(N_TRAIN, None)
    return TrainingSet(
        kind=ACTION_VALUE, n_actions=2, x_train=xa[train], y_train=metrics[train] @ WEIGHTS, x_holdout=xa[hold],
        y_holdout=metrics[hold] @ WEIGHTS, holdout_features=x[hold], holdout_actions=a[hold],
        holdout_propensities=p[hold], w_train=np.ones(N_TRAIN), metric_names=("purchase", "returns"),
        metric_weights=WEIGHTS, metrics_train=metrics[train], metrics_holdout=metrics[hold])


@pytest.fixture(scope="module")
def fitted() -> tuple[TrainingSet, MetricValueModel, bytes]:
    data = _training()
    model = fit_model(data, "linear", seed=0)
    assert isinstance(model, MetricValueModel)
    return data, model, export_onnx(model, ACTION_VALUE, data.input_width)


def test_one_graph_has_a_column_per_metric_and_their_weighted_sum(fitted) -> None:
    data, model, onnx = fitted
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [METRIC_OUTPUT, VALUE_OUTPUT]
    x = data.x_holdout[:50]
    metrics, value = session.run([METRIC_OUTPUT, VALUE_OUTPUT], {"features": x})
    assert metrics.shape == (50, 2) and value.shape == (50, 1)
    np.testing.assert_allclose(metrics, model.predict_metrics(x.astype(np.float64)), atol=1e-4)
    np.testing.assert_allclose(value[:, 0], metrics @ WEIGHTS.astype(np.float32), rtol=1e-5, atol=1e-4)
    # The returns model learnt the action's effect (+0.3), the purchase model 1 + x.
    one = np.array([[0.0, 0.0, 1.0]], np.float32)
    zero = np.array([[0.0, 1.0, 0.0]], np.float32)
    effect = session.run([METRIC_OUTPUT], {"features": one})[0] - session.run([METRIC_OUTPUT], {"features": zero})[0]
    assert effect[0, 0] == pytest.approx(1.0, abs=0.1) and effect[0, 1] == pytest.approx(0.3, abs=0.03)
    assert check_parity(onnx, model, data).ok


def test_a_guardrail_fails_blessing_only_beyond_its_tolerance(fitted) -> None:
    data, _, onnx = fitted
    # Value 1 + x - 1.5 > 0: the candidate takes action 1 when x > 0.5 (31% of units),
    # which adds 0.3 × 0.31 ≈ 0.09 returns per decision over the default policy (action 0).
    tight = bless(onnx, data, None, [], 0.01, (GuardrailRule("returns", 0.03, True),))
    assert not tight.blessed and "guardrail returns" in tight.reason
    [check] = tight.guardrails
    assert check.name == "guardrail:returns" and check.value == pytest.approx(0.093, abs=0.03)
    assert tight.slices[0].candidate > tight.slices[0].serving  # the value itself is better
    loose = bless(onnx, data, None, [], 0.01, (GuardrailRule("returns", 0.2, True),))
    assert loose.blessed and loose.guardrails[0].passed, loose.reason
    # Purchases rise under the candidate: a higher-is-better guardrail on them holds.
    purchases = bless(onnx, data, None, [], 0.01, (GuardrailRule("purchase", 0.0, False),))
    assert purchases.blessed and purchases.guardrails[0].value < 0


def test_the_canary_guardrail_rolls_back_only_when_significantly_worse_than_the_tolerance() -> None:
    rng = np.random.default_rng(5)
    blueprint = bp.Blueprint(metrics=[bp.Metric(name="purchase"), bp.Metric(name="returns")],
                             guardrails=[bp.Guardrail(metric="returns", tolerance=0.05, lower_is_better=True)])
    n = 2000
    canary = np.arange(n) % 2 == 0
    purchases = rng.normal(10.0, 1.0, n)
    worse = np.column_stack([purchases, (rng.random(n) < np.where(canary, 0.35, 0.1)).astype(float)])
    [check] = metric_guardrails(blueprint, worse, canary, ~canary, 0.05)
    assert check.name == "guardrail:returns" and not check.passed
    assert check.value == pytest.approx(0.25, abs=0.05) and "returns" in check.detail
    within = np.column_stack([purchases, (rng.random(n) < np.where(canary, 0.12, 0.1)).astype(float)])
    [held] = metric_guardrails(blueprint, within, canary, ~canary, 0.05)
    assert held.passed
