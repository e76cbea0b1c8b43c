"""Experiments: arms sticky and split by their shares; canary within the arm with its
own salt; shadow models scored and logged, never returned; role and model version on
every record."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import pytest_asyncio
from scipy.stats import binomtest, chisquare

from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.errors import field_violations
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.services.decision.policy import arm_position, canary_position
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

N_UNITS = 20_000


def constant_model(best: int) -> bytes:
    """An action-value model whose best action is always ``best``."""
    b = np.zeros(3)
    b[best] = 1.0
    return linear_onnx([np.zeros((3, 3))], [b], n_actions=3)


@pytest_asyncio.fixture
async def stack(make_settings):
    """Decision service with a loopback trainer and a recording feedback service."""
    settings = make_settings(max_batch_rows=N_UNITS, decision_log_flush_interval_s=0.05,
                             decision_log_batch_size=2000, decision_log_queue_size=200_000)
    trainer, feedback = LoopbackTrainer(), RecordingFeedback()
    servers = [await serve(trainer, tgrpc.add_TrainerServiceServicer_to_server, settings.trainer_address),
               await serve(feedback, fgrpc.add_FeedbackServiceServicer_to_server, settings.feedback_address)]
    d = await start_decider(settings)
    try:
        yield d, trainer, feedback
    finally:
        await d.stop()
        for s in servers:
            await s.stop(0)


def _batch_request(units: list[str]) -> dpb.DecideBatchRequest:
    rows = np.zeros((len(units), 3), dtype="<f4")
    return dpb.DecideBatchRequest(use_case="offer", blueprint_version=1, rows=len(units),
                                  feature_names=["x", "y", "country"], features=rows.tobytes(), unit_ids=units)


async def _deploy(d, trainer, **kw) -> None:
    before = d.watcher.updates
    trainer.set_deployment("offer", **kw)
    await wait_until(lambda: d.watcher.updates > before)


async def test_arms_sticky_and_split_by_share_then_canary_within_arm(stack) -> None:
    d, trainer, feedback = stack
    b = blueprint(kind="action_value")
    b.arms.add(name="control", traffic_share=0.2)
    b.arms.add(name="treatment", traffic_share=0.5)
    b.arms.add(name="holdout", traffic_share=0.3)
    await d.apply(b)
    prod, canary = constant_model(0), constant_model(2)
    await _deploy(d, trainer, models={1: prod, 2: canary}, production=model_ref(1, prod, 6),
                  canary=model_ref(2, canary, 6), canary_share=0.25)
    units = [f"user-{i}" for i in range(N_UNITS)]
    first = await d.stub.DecideBatch(_batch_request(units))
    again = await d.stub.DecideBatch(_batch_request(units[::-1]))
    assert list(again.arms)[::-1] == list(first.arms)  # sticky by unit
    assert list(again.deployment_roles)[::-1] == list(first.deployment_roles)
    counts = [list(first.arms).count(a) for a in ("control", "treatment", "holdout")]
    assert chisquare(counts, [0.2 * N_UNITS, 0.5 * N_UNITS, 0.3 * N_UNITS]).pvalue > 0.001
    # arms follow the documented hash: cumulative shares over the unit's position
    for unit, arm in list(zip(units, first.arms, strict=True))[:200]:
        pos = arm_position("offer", unit)
        assert arm == ("control" if pos < 0.2 else "treatment" if pos < 0.7 else "holdout")
    roles = np.array(first.deployment_roles)
    actions = np.frombuffer(first.action_indices, "<i4")
    versions = np.frombuffer(first.model_versions, "<i8")
    assert set(roles) == {"production", "canary"}
    assert (actions[roles == "canary"] == 2).all() and (versions[roles == "canary"] == 2).all()
    assert (actions[roles == "production"] == 0).all() and (versions[roles == "production"] == 1).all()
    for arm in ("control", "treatment", "holdout"):  # the canary share holds within every arm
        in_arm = np.array(first.arms) == arm
        k = int((roles[in_arm] == "canary").sum())
        assert binomtest(k, int(in_arm.sum()), 0.25).pvalue > 0.001
    assert all((canary_position("offer", u) < 0.25) == (r == "canary") for u, r in zip(units[:200], roles[:200], strict=True))
    one = await d.stub.Decide(dpb.DecideRequest(use_case="offer", unit_id=units[0], features=features()))
    assert one.decision.arm == first.arms[0] and one.decision.deployment_role == roles[0]
    await wait_until(lambda: len(feedback.records) >= 2 * N_UNITS + 1, timeout=60)
    record = next(r for r in feedback.records if r.decision_id == first.decision_ids[0])
    assert record.arm == first.arms[0] and record.deployment_role == roles[0]
    assert record.model_version == versions[0]
    # Every served record carries its serving latency (the canary's and production's alike).
    batch_ids = set(first.decision_ids)
    logged = [r for r in feedback.records if r.decision_id in batch_ids]
    assert {r.deployment_role for r in logged} == {"production", "canary"}
    assert all(r.serving_latency_ms > 0 for r in logged)


async def test_shadow_is_logged_never_returned(stack) -> None:
    d, trainer, feedback = stack
    await d.apply(blueprint(kind="action_value"))
    prod, shadow = constant_model(1), constant_model(2)
    await _deploy(d, trainer, models={1: prod, 3: shadow}, production=model_ref(1, prod, 6),
                  shadows=(model_ref(3, shadow, 6),))
    units = [f"u{i}" for i in range(500)]
    reply = await d.stub.DecideBatch(_batch_request(units))
    assert set(np.frombuffer(reply.action_indices, "<i4")) == {1}
    assert set(np.frombuffer(reply.model_versions, "<i8")) == {1} and set(reply.deployment_roles) == {"production"}
    singles = [(await d.decide(unit_id=f"s{i}")) for i in range(20)]
    assert {s.action for s in singles} == {"a1"} and {s.model_version for s in singles} == {1}
    returned = set(reply.decision_ids) | {s.decision_id for s in singles}
    await wait_until(lambda: len(feedback.records) >= 2 * 520)
    shadows = [r for r in feedback.records if r.shadow]
    served = [r for r in feedback.records if not r.shadow]
    assert len(shadows) == 520 and len(served) == 520
    assert {r.decision_id for r in served} == returned and not returned & {r.decision_id for r in shadows}
    assert {r.action for r in shadows} == {"a2"} and {r.model_version for r in shadows} == {3}
    assert {r.deployment_role for r in shadows} == {"shadow"} and {r.deployment_role for r in served} == {"production"}
    assert sorted(r.unit_id for r in shadows) == sorted(r.unit_id for r in served)
    # Served decisions carry their serving latency; shadow scoring is off the request path.
    assert all(r.serving_latency_ms > 0 for r in served) and {r.serving_latency_ms for r in shadows} == {0.0}


async def test_forced_arm_and_unknown_arm(stack) -> None:
    d, _, _ = stack
    b = blueprint(kind="action_value", explore_without_model=True)
    b.arms.add(name="a", traffic_share=0.5)
    b.arms.add(name="b", traffic_share=0.5, epsilon=0.0)
    await d.apply(b)
    for i in range(10):
        reply = await d.stub.Decide(dpb.DecideRequest(use_case="offer", unit_id=f"u{i}", arm="b", features=features()))
        assert reply.decision.arm == "b"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await d.stub.Decide(dpb.DecideRequest(use_case="offer", arm="nope", features=features()))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field_violations(err.value)[0][0] == "arm"
