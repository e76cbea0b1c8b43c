"""Models from a loopback trainer: decisions follow them, propensities, hot swap."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
import pytest_asyncio
from sklearn.linear_model import LinearRegression, LogisticRegression

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.decision.helpers import (
    LoopbackTrainer,
    blueprint,
    features,
    onnx_model,
    serve,
    start_decider,
    wait_until,
)

WIDTH = 3  # x, y, country


def _x(n: int = 300) -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.column_stack([rng.normal(size=n), rng.normal(size=n), rng.integers(0, 3, n)]).astype(np.float32)


def binary_model() -> tuple[LogisticRegression, bytes]:
    x = _x()
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    return model, onnx_model(model, WIDTH)


def action_value_model(values: list[float]) -> bytes:
    """Reward of action a is values[a], whatever the features."""
    x = _x(60)
    onehot = np.eye(3, dtype=np.float32)[np.arange(60) % 3]
    y = onehot @ np.array(values)
    return onnx_model(LinearRegression().fit(np.hstack([x, onehot]), y), WIDTH + 3)


@pytest_asyncio.fixture
async def served(make_settings):
    """A decision service and a loopback trainer it watches."""
    settings = make_settings(decision_log_enabled=False)
    trainer = LoopbackTrainer(chunk_bytes=300)
    server = await serve(trainer, tgrpc.add_TrainerServiceServicer_to_server, settings.trainer_address)
    d = await start_decider(settings)
    try:
        yield d, trainer
    finally:
        await d.stop()
        await server.stop(0)


async def _deploy(d, trainer, use_case, version, onnx, **kw) -> None:
    before = d.watcher.updates
    trainer.deploy(use_case, version, onnx, **kw)
    await wait_until(lambda: d.watcher.updates > before)


async def test_binary_follows_the_model(served) -> None:
    d, trainer = served
    await d.apply(blueprint())
    model, onnx = binary_model()
    await _deploy(d, trainer, "offer", 1, onnx, input_width=WIDTH, score_output="probabilities")
    assert trainer.downloads == 1
    assert (d.settings.data_dir / "decision" / "models" / "offer-v1.onnx").read_bytes() == onnx
    for x in (-2.0, -0.5, 0.7, 2.5):
        dec = await d.decide(x=x, y=0.0, country="de")
        expected = model.predict_proba(np.array([[x, 0.0, 1.0]], dtype=np.float32))[0, 1]
        assert dec.score == pytest.approx(expected, abs=1e-5)
        assert dec.action == ("yes" if expected >= 0.5 else "no")
        assert dec.model_version == 1 and not dec.fallback and dec.action_probabilities == [
            0.0 if expected >= 0.5 else 1.0, 1.0 if expected >= 0.5 else 0.0]

    rows = _x(50)
    reply = await d.stub.DecideBatch(dpb.DecideBatchRequest(
        use_case="offer", blueprint_version=1, rows=50, feature_names=["x", "y", "country"],
        features=rows.tobytes()))
    scores = np.frombuffer(reply.scores, "<f4")
    assert np.allclose(scores, model.predict_proba(rows)[:, 1], atol=1e-5)
    assert (np.frombuffer(reply.action_indices, "<i4") == (scores >= 0.5)).all()
    assert reply.model_version == 1

    await _deploy(d, trainer, "offer", 0, None)  # production removed: default again
    assert (await d.decide()).fallback


async def test_multiclass_and_regression(served) -> None:
    d, trainer = served
    x = _x()
    classes = np.digitize(x[:, 0], [-0.5, 0.5])
    clf = LogisticRegression().fit(x, classes)
    reg = LinearRegression().fit(x, 2 * x[:, 0] + 1)
    await d.apply(blueprint("colour", "multiclass"))
    await d.apply(blueprint("price", "regression"))
    await _deploy(d, trainer, "colour", 1, onnx_model(clf, WIDTH), score_output="probabilities")
    await _deploy(d, trainer, "price", 1, onnx_model(reg, WIDTH), score_output="variable")
    for value in (-2.0, 0.0, 2.0):
        dec = await d.decide("colour", x=value, y=0.0, country="fr")
        proba = clf.predict_proba(np.array([[value, 0, 0]], dtype=np.float32))[0]
        assert dec.action_index == int(np.argmax(proba)) and dec.action_scores == pytest.approx(proba, abs=1e-5)
        pred = await d.decide("price", x=value, y=0.0, country="fr")
        assert pred.score == pytest.approx(2 * value + 1, abs=1e-3) and pred.action == "predict"
        assert pred.action_probabilities == [1.0]


async def test_action_value_greedy_and_epsilon_propensities(served) -> None:
    d, trainer = served
    await d.apply(blueprint(kind="action_value", type=bp.POLICY_TYPE_EPSILON_GREEDY, epsilon=0.3))
    await _deploy(d, trainer, "offer", 1, action_value_model([0.0, 1.0, 2.0]), input_width=WIDTH + 3)
    greedy = await d.stub.Decide(dpb.DecideRequest(use_case="offer", features=features(), disable_exploration=True))
    assert greedy.decision.action == "a2" and greedy.decision.action_probabilities == [0.0, 0.0, 1.0]
    assert greedy.decision.action_scores == pytest.approx([0.0, 1.0, 2.0], abs=1e-4)
    explored, counts = 0, np.zeros(3)
    for _ in range(300):
        dec = await d.decide()
        assert dec.action_probabilities == pytest.approx([0.1, 0.1, 0.8])
        assert dec.score == pytest.approx(dec.action_scores[dec.action_index])
        explored += dec.explored
        counts[dec.action_index] += 1
    assert 50 < explored < 130  # ε = 0.3 of 300
    assert 190 < counts[2] < 280 and counts[0] > 10 and counts[1] > 10


async def test_exploration_floor_raises_epsilon(served) -> None:
    d, trainer = served
    await d.apply(blueprint(kind="action_value", type=bp.POLICY_TYPE_EPSILON_GREEDY, epsilon=0.03,
                            exploration_floor=0.05))
    await _deploy(d, trainer, "offer", 1, action_value_model([0.0, 1.0, 2.0]), input_width=WIDTH + 3)
    dec = await d.decide()
    assert dec.action_probabilities == pytest.approx([0.05, 0.05, 0.9])


async def test_bad_artifacts_keep_the_old_model(served) -> None:
    d, trainer = served
    await d.apply(blueprint(kind="action_value"))
    await _deploy(d, trainer, "offer", 1, action_value_model([0.0, 1.0, 2.0]), input_width=WIDTH + 3)
    await _deploy(d, trainer, "offer", 2, action_value_model([2.0, 1.0, 0.0]), input_width=WIDTH + 3,
                  sha256="0" * 64)  # checksum mismatch
    await _deploy(d, trainer, "offer", 3, b"not an onnx model", input_width=WIDTH + 3)
    await _deploy(d, trainer, "offer", 4, action_value_model([2.0, 1.0, 0.0]), input_width=WIDTH)  # wrong width
    assert d.watcher.failures == 3
    dec = await d.decide()
    assert dec.model_version == 1 and dec.action == "a2"


async def test_hot_swap_without_failed_requests(served) -> None:
    d, trainer = served
    await d.apply(blueprint(kind="action_value"))
    await _deploy(d, trainer, "offer", 1, action_value_model([0.0, 1.0, 2.0]), input_width=WIDTH + 3)
    seen: dict[int, set[str]] = {}
    errors: list[BaseException] = []
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            try:
                dec = await d.decide()
                seen.setdefault(dec.model_version, set()).add(dec.action)
            except grpc.aio.AioRpcError as exc:
                errors.append(exc)

    tasks = [asyncio.ensure_future(client()) for _ in range(4)]
    await wait_until(lambda: 1 in seen)
    await _deploy(d, trainer, "offer", 2, action_value_model([2.0, 1.0, 0.0]), input_width=WIDTH + 3)
    await wait_until(lambda: 2 in seen)
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*tasks)
    assert not errors
    assert seen[1] == {"a2"} and seen[2] == {"a0"} and 0 not in seen


async def test_model_survives_a_trainer_restart_from_cache(make_settings) -> None:
    settings = make_settings(decision_log_enabled=False)
    trainer = LoopbackTrainer()
    server = await serve(trainer, tgrpc.add_TrainerServiceServicer_to_server, settings.trainer_address)
    d = await start_decider(settings)
    await d.apply(blueprint(kind="action_value"))
    await _deploy(d, trainer, "offer", 1, action_value_model([0.0, 1.0, 2.0]), input_width=WIDTH + 3)
    await d.stop()
    d = await start_decider(settings)  # the trainer announces the same deployment again
    try:
        await wait_until(lambda: "offer" in d.watcher.scorers)
        assert trainer.downloads == 1  # served from the verified disk cache
        assert (await d.decide()).model_version == 1
    finally:
        await d.stop()
        await server.stop(0)
