"""The feedback process: store, core and servicer on one ServiceHost.

The service starts even when its store cannot be reached (services/feedback/connect.py):
writes are acknowledged into the spool, reads are UNAVAILABLE, and the store is opened
in the background until it answers."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from grpc_health.v1 import health_pb2

from loopwise.channels import ServiceChannels
from loopwise.clock import Clock
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.server import Registration, ServiceHost
from loopwise.services.feedback.connect import (
    READS_HEALTH_SUFFIX,
    StoreConnector,
    UnconnectedStore,
    retryable,
)
from loopwise.services.feedback.core import Feedback
from loopwise.services.feedback.monitoring import FeedbackMonitor
from loopwise.services.feedback.privacy import RetentionSweeper
from loopwise.services.feedback.servicer import FeedbackServicer
from loopwise.settings import Settings
from loopwise.store.feedback import FeedbackStore, SqliteFeedbackStore, open_feedback_store
from loopwise.store.sqlite import favour_database_thread
from loopwise.upstream import DecisionUseCases, TrainerModels

SERVICE_NAME = "loopwise.feedback.v1.FeedbackService"
# Health of the read side: SERVING only while the store answers.
READS_HEALTH_NAME = SERVICE_NAME + READS_HEALTH_SUFFIX

log = logging.getLogger("loopwise.feedback")


@dataclass
class FeedbackProcess:
    """One feedback process as :func:`start_process` wired it: the started host and the
    parts that in-process tests reach."""

    host: ServiceHost
    feedback: Feedback
    monitor: FeedbackMonitor
    retention: RetentionSweeper
    connector: StoreConnector


async def start_server(settings: Settings) -> ServiceHost:
    """Build and start the feedback service; returns the started host (see
    :func:`start_process`)."""
    return (await start_process(settings)).host


async def start_process(settings: Settings) -> FeedbackProcess:
    """Build and start the feedback service (shutdown hooks registered on its host)."""
    store: FeedbackStore
    try:
        store = await asyncio.to_thread(open_feedback_store, settings)  # may connect to Cassandra
        if isinstance(store, SqliteFeedbackStore):
            favour_database_thread()  # outcomes and decisions are written in bulk on its thread
    except Exception as exc:
        if not retryable(exc):
            raise
        log.warning("the feedback store cannot be reached (%s: %s): starting without it; writes go to the "
                    "spool, reads are UNAVAILABLE until it connects", type(exc).__name__, exc)
        store = UnconnectedStore(type(exc).__name__)
    channels = ServiceChannels(settings)
    feedback = Feedback(store, DecisionUseCases(channels, timeout_s=5.0), TrainerModels(channels),
                        Clock.from_settings(settings), settings.service_dir("feedback") / "spool",
                        max_batch_rows=settings.max_batch_rows,
                        lost_decision_after_s=settings.decision_log_arrival_bound_s)
    host = ServiceHost("feedback", settings, settings.feedback_address)
    monitor = FeedbackMonitor(host.registry, feedback, settings)
    servicer = FeedbackServicer(feedback, host.stopping, monitor,
                                pii_key=settings.pii_hash_key.get_secret_value())
    host.add([Registration(fgrpc.add_FeedbackServiceServicer_to_server, servicer, SERVICE_NAME)])
    sweeper = RetentionSweeper(store, feedback.blueprints, feedback.clock,
                               settings.retention_sweep_interval_s)

    def set_reads(serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        asyncio.ensure_future(host.health.set(READS_HEALTH_NAME, status))

    def connected(opened: FeedbackStore) -> None:
        feedback.attach_store(opened)
        sweeper.store = opened
        feedback.durable.store_ok = True
        set_reads(True)

    connector = StoreConnector(lambda: open_feedback_store(settings), connected)
    feedback.durable.on_store_state = set_reads

    async def close() -> None:
        await connector.stop()
        await sweeper.stop()
        await monitor.stop()
        await feedback.durable.stop()  # the spool stays on disk; the next start replays it
        await channels.close()
        feedback.store.close()

    await host.start_or_close(close)
    set_reads(not isinstance(store, UnconnectedStore))
    if isinstance(store, UnconnectedStore):
        connector.start()
    feedback.durable.start()
    monitor.start()
    sweeper.start()
    return FeedbackProcess(host, feedback, monitor, sweeper, connector)


async def main(settings: Settings) -> None:
    """Run the feedback service until SIGTERM/SIGINT."""
    host = await start_server(settings)
    await host.serve_until_signal()
