"""Helpers of the evaluator service tests: a running evaluator, following operations."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from grpc_health.v1 import health_pb2, health_pb2_grpc

from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.evaluator.v1 import evaluator_service_pb2_grpc as egrpc
from loopwise.server import ServiceHost

FINAL = (op_pb.OPERATION_STATE_SUCCEEDED, op_pb.OPERATION_STATE_FAILED, op_pb.OPERATION_STATE_CANCELLED)
SERVING = health_pb2.HealthCheckResponse.SERVING
# Generous: other test runs share the two cores.
WATCH_TIMEOUT_S = 600


@dataclass
class Evaluator:
    """A running evaluator and stubs to it."""

    host: ServiceHost
    stub: egrpc.EvaluatorServiceStub
    health: health_pb2_grpc.HealthStub
    address: str


@dataclass
class Estimated:
    """The fixture estimation of use case ``hte`` and what was seen while it ran."""

    operation: op_pb.Operation
    result: epb.EstimateEffectsResult
    health: list[int]
    states: set[int]
    stages: list[str]


async def wait_final(ev: Evaluator, operation_id: str) -> op_pb.Operation:
    """Follow WatchOperation until the operation is final."""
    last = None
    async for update in ev.stub.WatchOperation(op_pb.WatchOperationRequest(id=operation_id),
                                               timeout=WATCH_TIMEOUT_S):
        last = update.operation
    assert last is not None and last.state in FINAL
    return last


async def watched_stages(ev: Evaluator, operation_id: str) -> list[str]:
    """The distinct stages WatchOperation streams, in order."""
    stages: list[str] = []
    async for update in ev.stub.WatchOperation(op_pb.WatchOperationRequest(id=operation_id),
                                               timeout=WATCH_TIMEOUT_S):
        if not stages or stages[-1] != update.operation.stage:
            stages.append(update.operation.stage)
    return stages


async def estimate_watching_health(ev: Evaluator, request: epb.EstimateEffectsRequest) -> Estimated:
    """Run an estimation, polling Health and the operation while it runs."""
    started = (await ev.stub.EstimateEffects(request, timeout=120)).operation
    assert started.kind == "estimate_effects"
    watched = asyncio.create_task(watched_stages(ev, started.id))
    health, states = [], set()
    operation = started
    while True:
        operation = (await ev.stub.GetOperation(op_pb.GetOperationRequest(id=started.id), timeout=120)).operation
        states.add(operation.state)
        if operation.state in FINAL:
            break
        if operation.state == op_pb.OPERATION_STATE_RUNNING:
            check = await ev.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=60)
            health.append(check.status)
        await asyncio.sleep(0.05)
    assert operation.state == op_pb.OPERATION_STATE_SUCCEEDED, operation.error_message
    result = epb.EstimateEffectsResult()
    assert operation.result.Unpack(result)
    return Estimated(operation, result, health, states, await watched)


def native_thread_pools(report) -> set[tuple[str, int]]:
    """(API, threads) of every native thread pool of a worker process once scikit-learn's
    OpenMP and SciPy's OpenBLAS are loaded (a worker job: ``run_isolated`` entry point)."""
    import scipy.linalg  # noqa: F401 - SciPy's own OpenBLAS
    from sklearn.ensemble import HistGradientBoostingRegressor  # noqa: F401 - OpenMP
    from threadpoolctl import threadpool_info

    return {(pool["internal_api"], pool["num_threads"]) for pool in threadpool_info()}
