"""Fixtures for the evaluator: test decision and feedback servers on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio

from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from tests.evaluator.simulation import (
    SimulatedDecision,
    SimulatedFeedback,
    World,
    evaluator_settings,
    world_data,
)


@pytest_asyncio.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """Test decision and feedback servers on loopback for the module."""
    hte, data = world_data()
    feedback = SimulatedFeedback(data)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    dgrpc.add_DecisionServiceServicer_to_server(SimulatedDecision(set(data)), server)
    fgrpc.add_FeedbackServiceServicer_to_server(feedback, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    address = f"127.0.0.1:{port}"
    settings = evaluator_settings(tmp_path_factory.mktemp("evaluator") / "var", address, address)
    try:
        yield World(settings, hte, feedback)
    finally:
        await server.stop(0)
