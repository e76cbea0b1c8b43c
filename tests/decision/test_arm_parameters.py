"""Experiment arms that override blueprint numbers (``ExperimentArm.parameters``): each
arm's rows follow its own costs and thresholds, arms without overrides the blueprint's,
and ApplyUseCase refuses overrides that are not numbers of the blueprint, naming the field."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import numpy as np
import pytest
import pytest_asyncio

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.errors import field_violations
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.services.decision.arm_parameters import arm_views
from loopwise.services.decision.encoding import UseCaseVersion
from loopwise.services.decision.models import OnnxScorer
from loopwise.store.decision import BlueprintVersion
from loopwise.tensors import I32, unpack_vector
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.decision.helpers import (
    LoopbackTrainer,
    RecordingFeedback,
    blueprint,
    features,
    linear_onnx,
    model_ref,
    serve,
    start_decider,
    wait_until,
)

UNITS = [f"unit-{i}" for i in range(600)]


@pytest_asyncio.fixture
async def stack(make_settings):
    """Decision service with a loopback trainer and a recording feedback service."""
    settings = make_settings(decision_log_flush_interval_s=0.05)
    trainer, feedback = LoopbackTrainer(), RecordingFeedback()
    servers = [await serve(trainer, tgrpc.add_TrainerServiceServicer_to_server, settings.trainer_address),
               await serve(feedback, fgrpc.add_FeedbackServiceServicer_to_server, settings.feedback_address)]
    d = await start_decider(settings)
    try:
        yield d, trainer
    finally:
        await d.stop()
        for s in servers:
            await s.stop(0)


async def test_each_arm_decides_with_its_own_costs(stack) -> None:
    d, trainer = stack
    b = blueprint(kind="action_value")
    b.arms.add(name="plain", traffic_share=0.5)
    costly = b.arms.add(name="costly", traffic_share=0.5)
    costly.parameters["policy.action_costs[a0]"] = 0.5  # 1.0 - 0.5 < 0.9: a1 wins there
    await d.apply(b)
    # Values a0 = 1.0, a1 = 0.9, a2 = 0 for every row.
    model = linear_onnx([np.zeros((3, 3))], [np.array([1.0, 0.9, 0.0])], n_actions=3)
    before = d.watcher.updates
    trainer.set_deployment("offer", models={1: model}, production=model_ref(1, model, 6))
    await wait_until(lambda: d.watcher.updates > before)
    rows = np.zeros((len(UNITS), 3), dtype="<f4")
    reply = await d.stub.DecideBatch(dpb.DecideBatchRequest(
        use_case="offer", blueprint_version=1, rows=len(UNITS), feature_names=["x", "y", "country"],
        features=rows.tobytes(), unit_ids=UNITS))
    arms = np.array(list(reply.arms))
    actions = unpack_vector(reply.action_indices, I32)
    assert {"plain", "costly"} == set(arms)
    assert (actions[arms == "plain"] == 0).all()
    assert (actions[arms == "costly"] == 1).all()
    one = await d.stub.Decide(dpb.DecideRequest(use_case="offer", unit_id="someone", arm="costly",
                                                features=features(x=0.0, y=0.0)))
    assert one.decision.action == "a1" and one.decision.arm == "costly" and not one.decision.fallback


@pytest.mark.parametrize(("path", "value", "field"), [
    ("policy.nope", 1.0, "blueprint.arms[1].parameters[policy.nope]"),
    ("policy.action_costs[zz]", 1.0, "blueprint.arms[1].parameters[policy.action_costs[zz]]"),
    ("policy.epsilon", 0.1, "blueprint.arms[1].parameters[policy.epsilon]"),
    ("policy.threshold", 1.5, "blueprint.arms[1].parameters"),
    ("use_case", 1.0, "blueprint.arms[1].parameters[use_case]"),
])
async def test_apply_refuses_overrides_that_are_not_numbers_of_the_blueprint(stack, path, value, field) -> None:
    d, _ = stack
    b = blueprint(kind="binary")
    b.arms.add(name="a", traffic_share=0.5)
    b.arms.add(name="b", traffic_share=0.5).parameters[path] = value
    with pytest.raises(grpc.RpcError) as refused:
        await d.apply(b)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(refused.value)] == [field]


async def test_arms_of_a_ranking_use_case_cannot_override_parameters(stack) -> None:
    d, _ = stack
    b = blueprint(name="feed", kind="action_value")
    b.kind = bp.DECISION_KIND_RANKING
    del b.actions[:]
    b.default_decision.action = ""
    b.arms.add(name="a", traffic_share=0.5)
    b.arms.add(name="b", traffic_share=0.5).parameters["policy.temperature"] = 2.0
    with pytest.raises(grpc.RpcError) as refused:
        await d.apply(b)
    assert [f for f, _ in field_violations(refused.value)] == ["blueprint.arms[1].parameters"]
    assert "ranking" in refused.value.details()


async def test_value_model_weights_per_arm(stack) -> None:
    """An arm that overrides ``value_model.weights[m]`` is accepted, and a metric model
    weighs its metric columns with the arm's weights, the other arm with the version's."""
    d, _ = stack
    b = blueprint(kind="action_value")
    b.metrics.add(name="purchase")
    b.metrics.add(name="returns")
    b.value_model.weights["purchase"] = 1.0
    b.value_model.weights["returns"] = -1.0
    b.arms.add(name="plain", traffic_share=0.5)
    b.arms.add(name="lenient", traffic_share=0.5).parameters["value_model.weights[returns]"] = -0.25
    await d.apply(b)
    bad = blueprint(kind="action_value")
    bad.metrics.add(name="purchase")
    bad.value_model.weights["purchase"] = 1.0
    bad.arms.add(name="a", traffic_share=0.5)
    bad.arms.add(name="b", traffic_share=0.5).parameters["value_model.weights[nope]"] = 1.0
    with pytest.raises(grpc.RpcError) as refused:
        await d.apply(bad)
    assert [f for f, _ in field_violations(refused.value)] == ["blueprint.arms[1].parameters"]
    assert "value_model.weights[nope]" in refused.value.details()

    uc = UseCaseVersion(BlueprintVersion("offer", 1, b, 0))
    views = arm_views(uc)
    assert set(views) == {"lenient"} and views["lenient"].version == 1
    scorer = SimpleNamespace(metric_names=("purchase", "returns"), model_uc=None, _weights={})
    plain = OnnxScorer.metric_weights(scorer, uc)  # type: ignore[arg-type]
    lenient = OnnxScorer.metric_weights(scorer, views["lenient"])  # type: ignore[arg-type]
    assert plain.ravel().tolist() == [1.0, -1.0] and lenient.ravel().tolist() == [1.0, -0.25]
    assert OnnxScorer.metric_weights(scorer, uc).ravel().tolist() == [1.0, -1.0]  # type: ignore[arg-type]
