"""Propensities: for every policy, action frequencies over ≥ 20,000 decisions per
context bucket agree with the logged probabilities (chi-square, p > 0.001); Thompson's
probabilities are exactly the share of ensemble members choosing each action."""

from __future__ import annotations

import numpy as np
import pytest
import pytest_asyncio
from scipy.stats import chisquare

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.decision.helpers import (
    LoopbackTrainer,
    blueprint,
    linear_onnx,
    model_ref,
    serve,
    start_decider,
    wait_until,
)

PER_BUCKET = 20_000
# Action values by country code (the context bucket): fr → B, de → B + W.
B = np.array([0.0, 0.5, 1.0])
W = np.array([1.0, -0.3, -1.0])


def member(b: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One action-value member: values depend only on the country code."""
    weights = np.zeros((3, 3))
    weights[2] = w
    return weights, b


# Thompson ensemble: 5 members; their best actions per bucket are known.
MEMBERS = [member(B, W), member(B[::-1], W), member(np.array([0.0, 2.0, 1.0]), np.zeros(3)),
           member(B, -W), member(np.array([0.3, 0.1, 0.2]), np.array([0.0, 3.0, 0.0]))]


def member_values(code: int) -> np.ndarray:
    """[A, K] values of the ensemble for a country code."""
    return np.array([b + code * w[2] for w, b in MEMBERS]).T


@pytest_asyncio.fixture
async def served(make_settings):
    settings = make_settings(decision_log_enabled=False, max_batch_rows=2 * PER_BUCKET)
    trainer = LoopbackTrainer()
    server = await serve(trainer, tgrpc.add_TrainerServiceServicer_to_server, settings.trainer_address)
    d = await start_decider(settings)
    try:
        yield d, trainer
    finally:
        await d.stop()
        await server.stop(0)


async def _run(d, trainer, members, **policy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    await d.apply(blueprint(kind="action_value", **policy))
    onnx = linear_onnx([w for w, _ in members], [b for _, b in members], n_actions=3)
    before = d.watcher.updates
    trainer.set_deployment("offer", {1: onnx}, production=model_ref(1, onnx, 6))
    await wait_until(lambda: d.watcher.updates > before)
    codes = np.repeat([0.0, 1.0], PER_BUCKET)
    rows = np.column_stack([np.zeros(codes.size), np.zeros(codes.size), codes]).astype("<f4")
    reply = await d.stub.DecideBatch(dpb.DecideBatchRequest(
        use_case="offer", blueprint_version=1, rows=codes.size, feature_names=["x", "y", "country"],
        features=rows.tobytes()))
    actions = np.frombuffer(reply.action_indices, "<i4")
    probs = np.frombuffer(reply.action_probabilities, "<f4").reshape(-1, 3).astype(np.float64)
    assert reply.model_version == 1 and not np.frombuffer(reply.fallback, np.uint8).any()
    assert set(reply.deployment_roles) == {"production"}
    return codes, actions, probs


def _check(codes, actions, probs, expected_by_code) -> None:
    for code, expected in expected_by_code.items():
        in_bucket = codes == code
        assert in_bucket.sum() >= PER_BUCKET
        logged = probs[in_bucket]
        assert np.allclose(logged, expected, atol=1e-6)  # every row logs the policy's probabilities
        observed = np.bincount(actions[in_bucket], minlength=3)
        positive = expected > 0
        assert observed[~positive].sum() == 0  # never an action of probability 0
        exp = logged.sum(axis=0)[positive]
        exp *= observed[positive].sum() / exp.sum()
        p = chisquare(observed[positive], exp).pvalue
        assert p > 0.001, (code, observed, exp, p)


def _softmax(v: np.ndarray, t: float) -> np.ndarray:
    z = np.exp((v - v.max()) / t)
    return z / z.sum()


async def test_epsilon_greedy(served) -> None:
    d, trainer = served
    codes, actions, probs = await _run(d, trainer, [member(B, W)], type=bp.POLICY_TYPE_EPSILON_GREEDY,
                                       epsilon=0.3)
    _check(codes, actions, probs, {0: np.array([0.1, 0.1, 0.8]), 1: np.array([0.8, 0.1, 0.1])})


async def test_softmax(served) -> None:
    d, trainer = served
    codes, actions, probs = await _run(d, trainer, [member(B, W)], type=bp.POLICY_TYPE_SOFTMAX,
                                       temperature=0.5)
    _check(codes, actions, probs, {0: _softmax(B, 0.5), 1: _softmax(B + W, 0.5)})


async def test_thompson_propensity_is_the_member_share(served) -> None:
    d, trainer = served
    codes, actions, probs = await _run(d, trainer, MEMBERS, type=bp.POLICY_TYPE_THOMPSON)
    expected = {}
    for code in (0, 1):
        best = member_values(code).argmax(axis=0)
        expected[code] = np.bincount(best, minlength=3) / len(MEMBERS)
    assert not np.allclose(expected[0], expected[1])
    assert (expected[0] > 0).sum() >= 2 and (expected[1] > 0).sum() >= 2  # real randomisation
    _check(codes, actions, probs, expected)


async def test_thompson_with_floor_and_greedy_without_exploration(served) -> None:
    d, trainer = served
    codes, actions, probs = await _run(d, trainer, MEMBERS, type=bp.POLICY_TYPE_THOMPSON,
                                       exploration_floor=0.05)
    for code in (0, 1):
        share = np.bincount(member_values(code).argmax(axis=0), minlength=3) / len(MEMBERS)
        expected = 0.85 * share + 0.05
        assert np.allclose(probs[codes == code], expected, atol=1e-6)
    reply = await d.stub.Decide(dpb.DecideRequest(
        use_case="offer", disable_exploration=True,
        features={"x": dpb.FeatureValue(number=0), "y": dpb.FeatureValue(number=0),
                  "country": dpb.FeatureValue(category="fr")}))
    mean = member_values(0).mean(axis=1)
    assert reply.decision.action_index == int(mean.argmax())
    assert reply.decision.action_probabilities[reply.decision.action_index] == 1.0
    assert reply.decision.action_scores == pytest.approx(mean.tolist(), abs=1e-5)


async def test_greedy_is_deterministic(served) -> None:
    d, trainer = served
    codes, actions, probs = await _run(d, trainer, [member(B, W)])
    assert (actions[codes == 0] == 2).all() and (actions[codes == 1] == 0).all()
    assert np.array_equal(probs[codes == 0][0], [0.0, 0.0, 1.0])
