"""Channels and stubs for calling other loopwise services (through the protos only).

When tracing is on, every channel carries the client interceptor: a client span per
call and the W3C trace context in the call's metadata (see loopwise.tracing).
"""

from __future__ import annotations

import grpc

from loopwise import security, tracing
from loopwise.decision.v1 import decision_service_pb2_grpc
from loopwise.evaluator.v1 import evaluator_service_pb2_grpc
from loopwise.feedback.v1 import feedback_service_pb2_grpc
from loopwise.grpc_options import channel_options
from loopwise.settings import ServiceName, Settings
from loopwise.trainer.v1 import trainer_service_pb2_grpc


class ServiceChannels:
    """Lazily opened aio channels to the other services, one per service."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, service: ServiceName) -> grpc.aio.Channel:
        """The aio channel to ``service`` (created on first use)."""
        if service not in self._channels:
            self._channels[service] = security.aio_channel(
                self.settings, self.settings.address_of(service),
                options=channel_options(self.settings),
                interceptors=tracing.client_interceptors(),
            )
        return self._channels[service]

    def decision(self) -> decision_service_pb2_grpc.DecisionServiceStub:
        """Stub for the decision service."""
        return decision_service_pb2_grpc.DecisionServiceStub(self.channel("decision"))

    def feedback(self) -> feedback_service_pb2_grpc.FeedbackServiceStub:
        """Stub for the feedback service."""
        return feedback_service_pb2_grpc.FeedbackServiceStub(self.channel("feedback"))

    def trainer(self) -> trainer_service_pb2_grpc.TrainerServiceStub:
        """Stub for the trainer service."""
        return trainer_service_pb2_grpc.TrainerServiceStub(self.channel("trainer"))

    def evaluator(self) -> evaluator_service_pb2_grpc.EvaluatorServiceStub:
        """Stub for the evaluator service."""
        return evaluator_service_pb2_grpc.EvaluatorServiceStub(self.channel("evaluator"))

    async def close(self) -> None:
        """Close every open channel."""
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
