"""Fixtures for the trainer: test decision and feedback servers and an in-process trainer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2_grpc

from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.server import ServiceHost
from loopwise.services.trainer.server import start_server
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.trainer.worlds import World, trainer_settings, world_servicers


@pytest_asyncio.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """Test decision and feedback servers on loopback for the module."""
    decision, feedback = world_servicers()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    dgrpc.add_DecisionServiceServicer_to_server(decision, server)
    fgrpc.add_FeedbackServiceServicer_to_server(feedback, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    settings = trainer_settings(tmp_path_factory.mktemp("trainer") / "var", f"127.0.0.1:{port}")
    try:
        yield World(settings, feedback, decision)
    finally:
        await server.stop(0)


@dataclass
class RunningTrainer:
    """An in-process trainer and stubs to it."""

    host: ServiceHost
    stub: tgrpc.TrainerServiceStub
    health: health_pb2_grpc.HealthStub


@pytest_asyncio.fixture(scope="module")
async def trainer(world: World) -> AsyncIterator[RunningTrainer]:
    """The trainer in-process for the module."""
    host = await start_server(world.settings)
    async with grpc.aio.insecure_channel(world.settings.trainer_address) as channel:
        yield RunningTrainer(host, tgrpc.TrainerServiceStub(channel), health_pb2_grpc.HealthStub(channel))
    await host.stop(0)
