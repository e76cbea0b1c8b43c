"""Training schedules fire, and a trainer killed mid-job leaves no job hanging.

Schedules run against the scripted decision and feedback servers with an in-process
trainer looking every 0.3 s; the clock runs 60× (so ``retrain_every`` = 120 s is
2 s of real time). The restart test runs the trainer as a real process (SIGKILL,
then a new process on the same store): the job of the killed process is marked
FAILED once its lease (30 s) lapses, and a new job of the use case can start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest_asyncio
from google.protobuf.duration_pb2 import Duration

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.launcher import Launcher, free_port
from loopwise.services.trainer.candidates import fixed_latency_probe
from loopwise.services.trainer.schedule import result_of
from loopwise.services.trainer.server import start_server
from loopwise.settings import SERVICES
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.support import stack_env
from tests.trainer.worlds import World, binary_blueprint, plain_binary_batches

WAIT_S = 120.0


@pytest_asyncio.fixture(scope="module")
async def scheduled(world: World) -> AsyncIterator[tgrpc.TrainerServiceStub]:
    """An in-process trainer whose schedule loop looks every 0.3 s."""
    assert world.decision is not None
    training = bp.TrainingSpec(candidate_families=["linear"])
    every = bp.TrainingSpec(candidate_families=["linear"], retrain_every=Duration(seconds=120))
    count = bp.TrainingSpec(candidate_families=["linear"], retrain_after_labelled=500)
    world.decision.blueprints["every"] = {1: binary_blueprint("every", 2, training=every)}
    world.decision.blueprints["count"] = {1: binary_blueprint("count", 2, training=count)}
    world.decision.blueprints["never"] = {1: binary_blueprint("never", 2, training=training)}
    for name, seed in (("every", 30), ("count", 31), ("never", 32)):
        world.feedback.data[name] = plain_binary_batches(600, 2, seed)
    settings = world.settings.model_copy(update={"trainer_schedule_interval_s": 0.3})
    host = await start_server(settings, latency_probe=fixed_latency_probe({}))
    async with grpc.aio.insecure_channel(settings.trainer_address) as channel:
        yield tgrpc.TrainerServiceStub(channel)
    await host.stop(0)


async def scheduled_jobs(stub: tgrpc.TrainerServiceStub, use_case: str) -> list[op_pb.Operation]:
    listed = await stub.ListOperations(op_pb.ListOperationsRequest(use_case=use_case), timeout=5)
    return list(listed.operations)


async def wait_for(stub: tgrpc.TrainerServiceStub, use_case: str, count: int) -> list[op_pb.Operation]:
    """Until ``count`` jobs of the use case have finished."""
    deadline = time.monotonic() + WAIT_S
    while True:
        jobs = await scheduled_jobs(stub, use_case)
        done = [j for j in jobs if j.state == op_pb.OPERATION_STATE_SUCCEEDED]
        if len(done) >= count and all(j.state == op_pb.OPERATION_STATE_SUCCEEDED for j in jobs):
            return jobs
        assert time.monotonic() < deadline, [(j.state, j.error_message) for j in jobs]
        await asyncio.sleep(0.2)


async def test_schedules_fire_by_time_and_by_new_labelled_decisions(scheduled, world: World) -> None:
    every = await wait_for(scheduled, "every", 2)
    results = [result_of(j) for j in every]
    assert all(r is not None and r.trigger == "schedule" for r in results)
    starts = sorted(j.create_time.ToMilliseconds() for j in every)
    assert starts[1] - starts[0] >= 120_000  # simulated ms: not before retrain_every

    first = await wait_for(scheduled, "count", 1)
    assert result_of(first[0]).closed_windows_at_start == 600
    await asyncio.sleep(2.0)  # many looks: nothing new labelled, nothing started
    assert len(await scheduled_jobs(scheduled, "count")) == 1
    world.feedback.data["count"] = plain_binary_batches(600, 2, 31) + plain_binary_batches(600, 2, 33)
    jobs = await wait_for(scheduled, "count", 2)
    assert len(jobs) == 2 and result_of(jobs[0]).closed_windows_at_start == 1200
    assert result_of(jobs[0]).trigger == "schedule"
    assert not await scheduled_jobs(scheduled, "never")  # no schedule in its blueprint


async def test_a_killed_trainer_leaves_no_job_hanging(world: World, tmp_path) -> None:
    shared = world.settings.decision_address.rsplit(":", 1)[1]
    ports = {s: free_port() for s in SERVICES}
    ports.update(decision=int(shared), feedback=int(shared))
    launcher = Launcher(tmp_path / "var", env={**stack_env(time.time()),
                                               "LOOPWISE_TRAINER_SCHEDULE_INTERVAL_S": "0"}, ports=ports)
    await asyncio.to_thread(launcher.start, "trainer")
    try:
        async with grpc.aio.insecure_channel(launcher.address("trainer")) as channel:
            stub = tgrpc.TrainerServiceStub(channel)
            started = (await stub.StartTraining(tpb.StartTrainingRequest(use_case="big"), timeout=10)).operation
            deadline = time.monotonic() + WAIT_S
            operation = started
            while operation.stage != "fitting":
                assert operation.state in (op_pb.OPERATION_STATE_PENDING, op_pb.OPERATION_STATE_RUNNING), \
                    operation.error_message
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
                operation = (await stub.GetOperation(op_pb.GetOperationRequest(id=started.id), timeout=5)).operation
        await asyncio.to_thread(launcher.kill, "trainer")
        await asyncio.to_thread(launcher.start, "trainer")
        async with grpc.aio.insecure_channel(launcher.address("trainer")) as channel:
            stub = tgrpc.TrainerServiceStub(channel)
            deadline = time.monotonic() + WAIT_S
            while True:
                operation = (await stub.GetOperation(op_pb.GetOperationRequest(id=started.id), timeout=5)).operation
                if operation.state != op_pb.OPERATION_STATE_RUNNING:
                    break
                assert time.monotonic() < deadline, "the killed job is still RUNNING"
                await asyncio.sleep(0.5)
            assert operation.state == op_pb.OPERATION_STATE_FAILED
            assert "restarted" in operation.error_message and operation.HasField("end_time")
            again = (await stub.StartTraining(tpb.StartTrainingRequest(use_case="big"), timeout=10)).operation
            assert again.id != started.id
            await stub.CancelOperation(op_pb.CancelOperationRequest(id=again.id), timeout=30)
    finally:
        await asyncio.to_thread(launcher.stop_all, ["trainer"])
