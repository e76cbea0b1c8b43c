"""Use-case lifecycle: validate_only diff, rollback, kill switch on every path,
archive, and the audit trail."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import pytest_asyncio

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.decision.helpers import (
    LoopbackTrainer,
    blueprint,
    features,
    linear_onnx,
    model_ref,
    serve,
    start_decider,
    wait_until,
)


@pytest_asyncio.fixture
async def served(make_settings):
    settings = make_settings(decision_log_enabled=False)
    trainer = LoopbackTrainer()
    server = await serve(trainer, tgrpc.add_TrainerServiceServicer_to_server, settings.trainer_address)
    d = await start_decider(settings)
    try:
        yield d, trainer
    finally:
        await d.stop()
        await server.stop(0)


async def test_validate_only_returns_a_readable_diff(served) -> None:
    d, _ = served
    await d.apply(blueprint(kind="action_value", type=bp.POLICY_TYPE_EPSILON_GREEDY, epsilon=0.1))
    changed = blueprint(kind="action_value", type=bp.POLICY_TYPE_SOFTMAX, temperature=0.5)
    changed.features[2].vocabulary.append("es")
    changed.description = "new"
    reply = await d.stub.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=changed, validate_only=True))
    assert not reply.created and reply.use_case.version == 2 and reply.use_case.latest_version == 1
    diff = {c.path: (c.old_value, c.new_value) for c in reply.diff}
    assert diff == {
        "description": ("''", "'new'"),
        "features[2].vocabulary": ("['fr', 'de', 'it']", "['fr', 'de', 'it', 'es']"),
        "policy.type": ("POLICY_TYPE_EPSILON_GREEDY", "POLICY_TYPE_SOFTMAX"),
        "policy.epsilon": ("0.1", "0.0"),
        "policy.temperature": ("0.0", "0.5"),
    }
    assert list(reply.changed_fields) == ["description", "features", "policy"]
    assert (await d.stub.GetUseCase(dpb.GetUseCaseRequest(use_case="offer"))).use_case.version == 1
    first = await d.stub.ApplyUseCase(dpb.ApplyUseCaseRequest(
        blueprint=blueprint("fresh"), validate_only=True))
    assert any(c.path == "use_case" and c.new_value == "'fresh'" for c in first.diff)


async def test_rollback_kill_switch_archive_and_audit(served) -> None:
    d, trainer = served
    await d.stub.ApplyUseCase(dpb.ApplyUseCaseRequest(
        blueprint=blueprint(kind="action_value"), author="ana", reason="launch"))
    v2 = blueprint(kind="action_value", type=bp.POLICY_TYPE_EPSILON_GREEDY, epsilon=0.5)
    await d.stub.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=v2, author="bo", reason="explore more"))
    onnx = linear_onnx([np.zeros((3, 3))], [np.array([0.0, 0.0, 1.0])], n_actions=3)
    before = d.watcher.updates
    trainer.set_deployment("offer", {1: onnx}, production=model_ref(1, onnx, 6))
    await wait_until(lambda: d.watcher.updates > before)
    assert (await d.decide()).action_probabilities == pytest.approx([0.5 / 3, 0.5 / 3, 1 - 1 / 3])

    # rollback: v1's blueprint becomes v3
    reply = await d.stub.RollbackUseCase(dpb.RollbackUseCaseRequest(
        use_case="offer", to_version=1, author="cy", reason="too much exploration", request_id="rb-1"))
    assert reply.use_case.version == 3 and reply.use_case.blueprint.policy.epsilon == 0.0
    again = await d.stub.RollbackUseCase(dpb.RollbackUseCaseRequest(
        use_case="offer", to_version=1, author="cy", request_id="rb-1"))
    assert again.use_case.version == 3  # idempotent retry
    dec = await d.decide()
    assert dec.blueprint_version == 3 and dec.action_probabilities == [0.0, 0.0, 1.0]
    for to_version, code in ((9, grpc.StatusCode.NOT_FOUND), (0, grpc.StatusCode.INVALID_ARGUMENT),
                             (3, grpc.StatusCode.FAILED_PRECONDITION)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await d.stub.RollbackUseCase(dpb.RollbackUseCaseRequest(use_case="offer", to_version=to_version))
        assert err.value.code() == code

    # kill switch: the default decision at once on Decide, DecideBatch and DecideStream
    ks = await d.stub.SetKillSwitch(dpb.SetKillSwitchRequest(use_case="offer", enabled=True, author="dee",
                                                             reason="incident"))
    assert ks.use_case.kill_switch
    dec = await d.decide()
    assert dec.fallback and dec.action == "a0" and dec.model_version == 0 and dec.deployment_role == "default"
    batch = await d.stub.DecideBatch(dpb.DecideBatchRequest(
        use_case="offer", blueprint_version=3, rows=4, feature_names=["x", "y", "country"],
        features=np.zeros((4, 3), "<f4").tobytes()))
    assert np.frombuffer(batch.fallback, np.uint8).all() and set(batch.deployment_roles) == {"default"}

    async def two():
        for _ in range(2):
            yield dpb.DecideRequest(use_case="offer", features=features())
    assert all([r.decision.fallback async for r in d.stub.DecideStream(two())])
    await d.stub.SetKillSwitch(dpb.SetKillSwitchRequest(use_case="offer", enabled=False, author="dee"))
    dec = await d.decide()
    assert not dec.fallback and dec.action == "a2" and dec.deployment_role == "production"

    # archive: decisions refused, hidden from the list unless asked, restorable
    await d.apply(blueprint("other"))
    archived = await d.stub.ArchiveUseCase(dpb.ArchiveUseCaseRequest(use_case="offer", archived=True,
                                                                     author="eve", reason="retired"))
    assert archived.use_case.archived
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await d.decide()
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await d.apply(v2)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    listed = await d.stub.ListUseCases(dpb.ListUseCasesRequest())
    assert [u.blueprint.use_case for u in listed.use_cases] == ["other"]
    listed = await d.stub.ListUseCases(dpb.ListUseCasesRequest(include_archived=True))
    assert [(u.blueprint.use_case, u.archived) for u in listed.use_cases] == [("offer", True), ("other", False)]
    assert (await d.stub.GetUseCase(dpb.GetUseCaseRequest(use_case="offer"))).use_case.archived
    await d.stub.ArchiveUseCase(dpb.ArchiveUseCaseRequest(use_case="offer", archived=False, author="eve"))
    assert not (await d.decide()).fallback

    # the audit trail: who, what, when, why
    changes = (await d.stub.ListUseCaseChanges(dpb.ListUseCaseChangesRequest(use_case="offer"))).changes
    assert [(c.change, c.version, c.author) for c in changes] == [
        ("create", 1, "ana"), ("apply", 2, "bo"), ("rollback", 3, "cy"), ("kill_switch_on", 3, "dee"),
        ("kill_switch_off", 3, "dee"), ("archive", 3, "eve"), ("unarchive", 3, "eve"),
    ]
    assert changes[0].reason == "launch" and changes[2].reason.startswith("rollback to v1")
    assert changes[3].reason == "incident" and all(c.change_time.seconds > 0 for c in changes)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await d.stub.ListUseCaseChanges(dpb.ListUseCaseChangesRequest(use_case="missing"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_lifecycle_state_survives_a_restart(make_settings) -> None:
    settings = make_settings(decision_log_enabled=False)
    d = await start_decider(settings)
    await d.apply(blueprint())
    await d.apply(blueprint("gone"))
    await d.stub.SetKillSwitch(dpb.SetKillSwitchRequest(use_case="offer", enabled=True))
    await d.stub.ArchiveUseCase(dpb.ArchiveUseCaseRequest(use_case="gone", archived=True))
    await d.stop()
    d = await start_decider(settings)
    try:
        assert (await d.decide()).fallback
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await d.decide("gone")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await d.stop()
