"""Online tuning acts with its caller's rights, on real servers with tokens on.

StartTuning needs ``admin`` on the use case, as ApplyUseCase does; the evaluator's own
token holds ``report`` and ``train`` only. The tuning's blueprint versions (its rounds'
arms, and the starting blueprint applied again when it ends) are applied with the
caller's token, so an admin of one use case can tune it and nothing else.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.evaluator.v1 import evaluator_service_pb2_grpc as egrpc
from tests.e2e.driver import treatment_blueprint
from tests.security.helpers import bearer

USE_CASE = "team_b"


async def _changes(decision: dgrpc.DecisionServiceStub, metadata) -> list[dpb.UseCaseChange]:
    response = await decision.ListUseCaseChanges(dpb.ListUseCaseChangesRequest(use_case=USE_CASE),
                                                 metadata=metadata, timeout=30)
    return list(response.changes)


async def test_tuning_applies_versions_with_the_callers_token(auth_stack) -> None:
    admin = bearer(auth_stack.secret("admin-team-b"))
    decision = dgrpc.DecisionServiceStub(auth_stack.channel("decision"))
    evaluator = egrpc.EvaluatorServiceStub(auth_stack.channel("evaluator"))
    await decision.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=treatment_blueprint(USE_CASE)),
                                metadata=admin, timeout=30)
    before = len(await _changes(decision, admin))
    request = epb.StartTuningRequest(
        use_case=USE_CASE, rounds=2, batch_size=2, min_rows_per_arm=100, author="tester",
        parameters=[epb.TunedParameter(path="policy.epsilon", low=0.0, high=0.3)])
    # An admin of another use case may not tune this one.
    try:
        await evaluator.StartTuning(request, metadata=bearer(auth_stack.secret("admin-team-a")), timeout=30)
        raise AssertionError("StartTuning with another use case's admin token was accepted")
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.PERMISSION_DENIED, exc
    operation = (await evaluator.StartTuning(request, metadata=admin, timeout=30)).operation
    # The first round is applied as a new version (no traffic: it then waits for rows).
    deadline = time.monotonic() + 60
    while True:
        op = (await evaluator.GetOperation(op_pb.GetOperationRequest(id=operation.id, use_case=USE_CASE),
                                           metadata=admin, timeout=30)).operation
        changes = await _changes(decision, admin)
        assert op.state not in (op_pb.OPERATION_STATE_FAILED, op_pb.OPERATION_STATE_CANCELLED), op
        if len(changes) > before:
            break
        assert time.monotonic() < deadline, f"no round applied: {op}"
        await asyncio.sleep(0.2)
    assert f"tuning {operation.id}" in changes[-1].author and "round 1" in changes[-1].reason
    # Cancelled, it applies the starting blueprint again, with the caller's token too.
    await evaluator.CancelOperation(op_pb.CancelOperationRequest(id=operation.id, use_case=USE_CASE),
                                    metadata=admin, timeout=30)
    deadline = time.monotonic() + 60
    while "applied again" not in (await _changes(decision, admin))[-1].reason:
        assert time.monotonic() < deadline, "the starting blueprint was not applied again"
        await asyncio.sleep(0.2)
