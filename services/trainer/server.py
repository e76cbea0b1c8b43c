"""The trainer process: store, process pool, registry, trainer and servicer on one ServiceHost."""

from __future__ import annotations

import asyncio

from loopwise.channels import ServiceChannels
from loopwise.clock import Clock
from loopwise.jobs import ProcessPool
from loopwise.metrics import observe_jobs
from loopwise.operations import OperationRunner
from loopwise.seeds import process_seed
from loopwise.server import Registration, ServiceHost
from loopwise.services.trainer.candidates import LatencyProbe
from loopwise.services.trainer.core import KIND, Trainer
from loopwise.services.trainer.registry import Registry
from loopwise.services.trainer.rollout import RolloutController
from loopwise.services.trainer.schedule import Scheduler
from loopwise.services.trainer.servicer import TrainerServicer
from loopwise.settings import Settings
from loopwise.store.trainer import open_trainer_store
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from loopwise.upstream import DecisionUseCases, FeedbackStats, FeedbackTrainingData

SERVICE_NAME = "loopwise.trainer.v1.TrainerService"


async def start_server(settings: Settings, latency_probe: LatencyProbe | None = None) -> ServiceHost:
    """Build and start the trainer; returns the started host (shutdown hooks registered).

    ``latency_probe`` replaces the ONNX Runtime timing of candidates (tests)."""
    clock = Clock.from_settings(settings)
    store = open_trainer_store(settings)
    runner = OperationRunner(store.operations, clock, KIND)
    await runner.recover()
    pool = ProcessPool(settings.max_workers_processes)
    channels = ServiceChannels(settings)
    registry = Registry(store.registry, pool, clock, settings.model_chunk_bytes)
    use_cases = DecisionUseCases(channels)
    training_data = FeedbackTrainingData(channels, batch_rows=8192)
    rollouts = RolloutController(registry, store.registry, use_cases, training_data, pool, clock,
                                 settings.trainer_rollout_interval_s)
    trainer = Trainer(registry, runner, pool, use_cases, training_data, clock, process_seed(settings, "trainer"),
                      rollouts=rollouts, stats=FeedbackStats(channels), latency_probe=latency_probe)
    scheduler = Scheduler(trainer.start_training, runner, use_cases, FeedbackStats(channels), clock,
                          settings.trainer_schedule_interval_s)
    host = ServiceHost("trainer", settings, settings.trainer_address)
    servicer = TrainerServicer(trainer, registry, host.stopping)
    observe_jobs(runner, host.registry)  # job durations and spans
    host.add([Registration(tgrpc.add_TrainerServiceServicer_to_server, servicer, SERVICE_NAME)])
    loops = [asyncio.create_task(rollouts.run(), name="trainer-rollouts")]
    if settings.trainer_schedule_interval_s > 0:
        loops.append(asyncio.create_task(scheduler.run(), name="trainer-schedules"))

    async def close() -> None:
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await runner.close()
        pool.shutdown()
        await channels.close()
        store.close()

    await host.start_or_close(close)
    return host


async def main(settings: Settings) -> None:
    """Run the trainer until SIGTERM/SIGINT."""
    host = await start_server(settings)
    await host.serve_until_signal()
