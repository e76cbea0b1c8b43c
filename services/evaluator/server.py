"""The evaluator process: store, process pool, core and servicer on one ServiceHost."""

from __future__ import annotations

from loopwise.channels import ServiceChannels
from loopwise.clock import Clock
from loopwise.evaluator.v1 import evaluator_service_pb2_grpc as egrpc
from loopwise.metrics import observe_jobs
from loopwise.operations import OperationRunner
from loopwise.seeds import process_seed
from loopwise.server import Registration, ServiceHost
from loopwise.services.evaluator.core import KIND, Evaluator
from loopwise.services.evaluator.registry import TrainerDeployments, TrainerRegistry
from loopwise.services.evaluator.servicer import EvaluatorServicer
from loopwise.services.evaluator.tuning_requests import TUNING_KIND, DecisionBlueprints, Tuning
from loopwise.settings import Settings
from loopwise.store.evaluator import open_evaluator_store
from loopwise.upstream import DecisionUseCases, FeedbackStats, FeedbackTrainingData

SERVICE_NAME = "loopwise.evaluator.v1.EvaluatorService"


async def start_server(settings: Settings) -> ServiceHost:
    """Build and start the evaluator; returns the started host (shutdown hooks registered)."""
    clock = Clock.from_settings(settings)
    store = open_evaluator_store(settings)
    runner = OperationRunner(store.operations, clock, KIND)
    await runner.recover()
    channels = ServiceChannels(settings)
    # Each job runs in a process of its own; ``max_workers_processes`` bounds its native
    # threads (OpenMP, BLAS).
    evaluator = Evaluator(
        store.reports, runner, TrainerRegistry(channels), DecisionUseCases(channels),
        FeedbackTrainingData(channels), clock, process_seed(settings, "evaluator"), max_rows=settings.max_batch_rows,
        threads=settings.max_workers_processes, deployments=TrainerDeployments(channels), stats=FeedbackStats(channels),
    )
    # Tuning jobs are operations of their own kind in the same store.
    tuning_runner = OperationRunner(store.operations, clock, TUNING_KIND)
    tuning = Tuning(evaluator, tuning_runner, DecisionBlueprints(channels), clock)
    servicer = EvaluatorServicer(evaluator, tuning)
    host = ServiceHost("evaluator", settings, settings.evaluator_address)
    observe_jobs(runner, host.registry)  # job durations and spans
    host.add([Registration(egrpc.add_EvaluatorServiceServicer_to_server, servicer, SERVICE_NAME)])

    async def close() -> None:
        await tuning_runner.close()
        await runner.close()
        await channels.close()
        store.close()

    await host.start_or_close(close)
    return host


async def main(settings: Settings) -> None:
    """Run the evaluator until SIGTERM/SIGINT."""
    host = await start_server(settings)
    await host.serve_until_signal()
