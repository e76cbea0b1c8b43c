"""Fixtures for the evaluator: test decision, feedback and trainer servers on loopback,
the evaluator in-process, and the estimations the service tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2_grpc

from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.evaluator.v1 import evaluator_service_pb2_grpc as egrpc
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.services.evaluator.server import start_server
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.evaluator.service import Estimated, Evaluator, estimate_watching_health, wait_final
from tests.evaluator.simulation import (
    SimulatedDecision,
    SimulatedFeedback,
    SimulatedTrainer,
    World,
    evaluator_settings,
    world_data,
)

# The uplift test's treatment cost (reward units per treated unit).
UPLIFT_COST = 1.5


@pytest_asyncio.fixture(scope="package")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """Test decision, feedback and trainer servers on loopback for the package."""
    hte, data = world_data()
    feedback = SimulatedFeedback(data)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    dgrpc.add_DecisionServiceServicer_to_server(SimulatedDecision(set(data)), server)
    fgrpc.add_FeedbackServiceServicer_to_server(feedback, server)
    trainer = SimulatedTrainer()
    tgrpc.add_TrainerServiceServicer_to_server(trainer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    address = f"127.0.0.1:{port}"
    settings = evaluator_settings(tmp_path_factory.mktemp("evaluator") / "var", address, address, address)
    try:
        yield World(settings, hte, feedback, trainer)
    finally:
        await server.stop(0)


@pytest_asyncio.fixture(scope="package")
async def evaluator(world: World) -> AsyncIterator[Evaluator]:
    """The evaluator in-process for the package."""
    host = await start_server(world.settings)
    address = world.settings.evaluator_address
    async with grpc.aio.insecure_channel(address) as channel:
        yield Evaluator(host, egrpc.EvaluatorServiceStub(channel), health_pb2_grpc.HealthStub(channel), address)
    await host.stop(0)


@pytest_asyncio.fixture(scope="package")
async def estimated(evaluator: Evaluator) -> Estimated:
    """LinearDML on ``hte`` (cost 0), polling Health and the operation while it runs."""
    return await estimate_watching_health(
        evaluator, epb.EstimateEffectsRequest(use_case="hte", request_id="hte-1", segment_features=["x0"]))


@pytest_asyncio.fixture(scope="package")
async def registered(evaluator: Evaluator, estimated: Estimated) -> epb.EstimateEffectsResult:
    """DRLearner on ``hte`` at a nonzero cost, its effect model exported to ONNX and
    registered with the (test) trainer."""
    started = (await evaluator.stub.EstimateEffects(epb.EstimateEffectsRequest(
        use_case="hte", estimator=epb.ESTIMATOR_DR_LEARNER, treatment_cost=UPLIFT_COST,
        register_cate_model=True, seed=3), timeout=60)).operation
    final = await wait_final(evaluator, started.id)
    assert final.state == op_pb.OPERATION_STATE_SUCCEEDED, final.error_message
    result = epb.EstimateEffectsResult()
    assert final.result.Unpack(result)
    return result
