"""The trainer process: store, process pool, registry, trainer and servicer on one ServiceHost."""

from __future__ import annotations

from loopwise.channels import ServiceChannels
from loopwise.clock import Clock
from loopwise.jobs import ProcessPool
from loopwise.metrics import observe_jobs
from loopwise.operations import OperationRunner
from loopwise.server import Registration, ServiceHost
from loopwise.services.trainer.core import KIND, Trainer
from loopwise.services.trainer.registry import Registry
from loopwise.services.trainer.servicer import TrainerServicer
from loopwise.settings import Settings
from loopwise.store.trainer import open_trainer_store
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from loopwise.upstream import DecisionUseCases, FeedbackTrainingData

SERVICE_NAME = "loopwise.trainer.v1.TrainerService"


async def start_server(settings: Settings) -> ServiceHost:
    """Build and start the trainer; returns the started host (shutdown hooks registered)."""
    clock = Clock.from_settings(settings)
    store = open_trainer_store(settings)
    runner = OperationRunner(store.operations, clock, KIND)
    await runner.recover()
    pool = ProcessPool(settings.max_workers_processes)
    channels = ServiceChannels(settings)
    registry = Registry(store.registry, pool, clock, settings.model_chunk_bytes)
    trainer = Trainer(registry, runner, pool, DecisionUseCases(channels), FeedbackTrainingData(channels, batch_rows=8192),
                      clock, settings.seed)
    servicer = TrainerServicer(trainer, registry)
    host = ServiceHost("trainer", settings, settings.trainer_address)
    observe_jobs(runner, host.registry)  # job durations and spans
    servicer.stopping = host.stopping
    host.add([Registration(tgrpc.add_TrainerServiceServicer_to_server, servicer, SERVICE_NAME)])

    async def close() -> None:
        await runner.close()
        pool.shutdown()
        await channels.close()
        store.close()

    host.on_shutdown(close)
    try:
        await host.start()
    except BaseException:
        await close()
        raise
    return host


async def main(settings: Settings) -> None:
    """Run the trainer until SIGTERM/SIGINT."""
    host = await start_server(settings)
    await host.serve_until_signal()
