"""The decision process: store, use cases, decision log, model watcher, core and
servicer on one ServiceHost."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc

from loopwise import security, tracing
from loopwise.clock import Clock
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.grpc_options import channel_options
from loopwise.seeds import process_seed
from loopwise.server import Registration, ServiceHost
from loopwise.services.decision.core import DecisionCore
from loopwise.services.decision.decision_log import DecisionLog, spooled_answers
from loopwise.services.decision.models import ModelWatcher
from loopwise.services.decision.servicer import DecisionServicer
from loopwise.services.decision.use_cases import UseCases
from loopwise.services.decision.workers import DecisionMetrics, instrument, serve_single, supervise
from loopwise.settings import Settings
from loopwise.store.decision import open_decision_store

SERVICE_NAME = "loopwise.decision.v1.DecisionService"
# Reconnect quickly once a peer is back (gRPC's default backoff grows to 120 s, which
# would keep the spool from draining long after the feedback service returned).
_RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def peer_channel(settings: Settings, address: str) -> grpc.aio.Channel:
    """An aio channel to another service with short reconnect backoff (traced when
    tracing is on)."""
    return security.aio_channel(settings, address, [*channel_options(settings), *_RECONNECT_OPTIONS],
                                tracing.client_interceptors())


@dataclass
class DecisionProcess:
    """One decision process as :func:`start_process` wired it: the started host and the
    parts that the worker loop and in-process tests reach."""

    host: ServiceHost
    core: DecisionCore
    watcher: ModelWatcher
    metrics: DecisionMetrics
    servicer: DecisionServicer


async def start_server(settings: Settings, worker: int | None = None) -> ServiceHost:
    """Build and start the decision service; returns the started host (see
    :func:`start_process`)."""
    return (await start_process(settings, worker)).host


async def start_process(settings: Settings, worker: int | None = None) -> DecisionProcess:
    """Build and start the decision service (shutdown hooks registered on its host: stop
    the model watcher, drain the decision log, close the store).
    ``worker``: the index of a multi-worker process (SO_REUSEPORT on, own spool)."""
    clock = Clock.from_settings(settings)
    store = open_decision_store(settings)
    use_cases = UseCases(store, clock)
    feedback = peer_channel(settings, settings.feedback_address)
    trainer = peer_channel(settings, settings.trainer_address)
    service_dir = settings.service_dir("decision")
    spool_dir = service_dir / "spool" if not worker else service_dir / "spool" / f"w{worker}"
    decision_log = DecisionLog(
        feedback, spool_dir, clock, enabled=settings.decision_log_enabled,
        queue_size=settings.decision_log_queue_size, batch_size=settings.decision_log_batch_size,
        flush_interval_s=settings.decision_log_flush_interval_s,
        durability=settings.decision_log_durability,
        spool_interval_s=settings.decision_log_spool_interval_ms / 1000.0,
        commit_window_s=settings.decision_log_commit_window_ms / 1000.0,
        max_unspooled=settings.decision_log_max_unspooled,
    )
    watcher = ModelWatcher(trainer, service_dir / "models", use_cases.find)
    core = DecisionCore(use_cases, clock, process_seed(settings, "decision", worker), decision_log, watcher.scorers,
                        settings.max_batch_rows, settings.max_candidates,
                        pii_key=settings.pii_hash_key.get_secret_value())
    # A worker's metrics are served by its supervisor (merged), not by the worker.
    host = ServiceHost("decision", settings, settings.decision_address, reuse_port=worker is not None,
                       serve_metrics=worker is None, max_connection_age=True)
    servicer = DecisionServicer(core, use_cases, host.stopping, settings.decide_queue_turns)
    metrics = DecisionMetrics(host.registry)
    metrics.watch_decision_log(decision_log)
    metrics.watch_models(watcher.scorers)
    metrics.watch_undelivered(core)
    metrics.watch_decide_queue(servicer.queue)
    # Answers leave once the decision log allows it (durable mode: once spooled).
    answering = spooled_answers(servicer, decision_log)
    host.add([Registration(dgrpc.add_DecisionServiceServicer_to_server, instrument(answering, metrics),
                           SERVICE_NAME)])

    syncing: list[asyncio.Task] = []  # the store's periodic re-read, once started

    async def close() -> None:
        for task in syncing:
            task.cancel()
        await asyncio.gather(*syncing, return_exceptions=True)
        await watcher.stop()
        await decision_log.stop()
        await feedback.close()
        await trainer.close()
        store.close()

    async def load() -> None:
        await use_cases.load()
        await watcher.restore()  # the last good models, before and without the trainer

    await host.start_or_close(close, before=load)
    decision_log.start()
    watcher.start()
    # Other pods and workers write use cases, kill switches and archive flags too.
    syncing.append(asyncio.ensure_future(use_cases.sync_forever()))
    return DecisionProcess(host, core, watcher, metrics, servicer)


async def main(settings: Settings) -> None:
    """Run the decision service until SIGTERM/SIGINT (``decision_workers`` > 1: a
    supervisor of that many worker processes, see workers.py)."""
    if settings.decision_workers > 1:
        await supervise(settings)
    else:
        await serve_single(settings, start_server)
