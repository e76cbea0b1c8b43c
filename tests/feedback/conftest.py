"""Fixtures for the feedback service: an in-process feedback server, plus scripted
decision (``GetUseCase``) and trainer (``GetModel``) servers on its settings' addresses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest_asyncio

from loopwise.clock import Clock
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.services.feedback.server import start_process
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.feedback.helpers import FeedbackEnv, ScriptedDecision, ScriptedTrainer, serve


@pytest_asyncio.fixture
async def env(make_settings) -> AsyncIterator[FeedbackEnv]:
    """A feedback service (in-process) with test decision and trainer services."""
    settings = make_settings()
    decision, trainer = ScriptedDecision(), ScriptedTrainer()
    decision_server = await serve(settings.decision_address, dgrpc.add_DecisionServiceServicer_to_server, decision)
    trainer_server = await serve(settings.trainer_address, tgrpc.add_TrainerServiceServicer_to_server, trainer)
    process = await start_process(settings)
    channel = grpc.aio.insecure_channel(settings.feedback_address)
    try:
        yield FeedbackEnv(settings, process, fgrpc.FeedbackServiceStub(channel), decision, trainer, decision_server,
                          trainer_server, Clock.from_settings(settings), [channel])
    finally:
        await channel.close()
        await process.host.stop(0)
        await decision_server.stop(0)
        await trainer_server.stop(0)


