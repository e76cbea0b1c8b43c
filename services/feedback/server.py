"""The feedback process: store, core and servicer on one ServiceHost."""

from __future__ import annotations

import asyncio

from loopwise.channels import ServiceChannels
from loopwise.clock import Clock
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.server import Registration, ServiceHost
from loopwise.services.feedback.core import Feedback
from loopwise.services.feedback.monitoring import FeedbackMonitor
from loopwise.services.feedback.privacy import RetentionSweeper
from loopwise.services.feedback.servicer import FeedbackServicer
from loopwise.settings import Settings
from loopwise.store.feedback import open_feedback_store
from loopwise.upstream import DecisionUseCases, TrainerModels

SERVICE_NAME = "loopwise.feedback.v1.FeedbackService"


async def start_server(settings: Settings) -> ServiceHost:
    """Build and start the feedback service; returns the started host (shutdown hooks registered)."""
    store = await asyncio.to_thread(open_feedback_store, settings)  # may connect to Cassandra
    channels = ServiceChannels(settings)
    feedback = Feedback(store, DecisionUseCases(channels, timeout_s=5.0), TrainerModels(channels),
                        Clock.from_settings(settings), settings.service_dir("feedback") / "spool",
                        max_batch_rows=settings.max_batch_rows)
    host = ServiceHost("feedback", settings, settings.feedback_address)
    monitor = FeedbackMonitor(host.registry, feedback, settings)
    servicer = FeedbackServicer(feedback, host.stopping, monitor,
                                pii_key=settings.pii_hash_key.get_secret_value())
    host.monitor = monitor  # type: ignore[attr-defined]  # for in-process tests
    host.add([Registration(fgrpc.add_FeedbackServiceServicer_to_server, servicer, SERVICE_NAME)])
    sweeper = RetentionSweeper(store, feedback.blueprints, feedback.clock,
                               settings.retention_sweep_interval_s)
    host.retention = sweeper  # type: ignore[attr-defined]  # for in-process tests

    async def close() -> None:
        await sweeper.stop()
        await monitor.stop()
        await feedback.durable.stop()  # the spool stays on disk; the next start replays it
        await channels.close()
        store.close()

    await host.start_or_close(close)
    feedback.durable.start()
    monitor.start()
    sweeper.start()
    return host


async def main(settings: Settings) -> None:
    """Run the feedback service until SIGTERM/SIGINT."""
    host = await start_server(settings)
    await host.serve_until_signal()
