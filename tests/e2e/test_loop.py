"""End-to-end tests against the four real services on loopback."""

from __future__ import annotations

import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.evaluator.v1 import evaluator_service_pb2_grpc as egrpc
from loopwise.launcher import Launcher
from loopwise.settings import SERVICES
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.e2e.driver import Product, treatment_blueprint
from tests.support import launcher_settings, new_launcher

FINAL = (op_pb.OPERATION_STATE_SUCCEEDED, op_pb.OPERATION_STATE_FAILED, op_pb.OPERATION_STATE_CANCELLED)


def _poll_health(stack: Launcher, stop: threading.Event, seen: dict[str, list[int]]) -> None:
    channels = {s: grpc.insecure_channel(stack.address(s)) for s in SERVICES}
    stubs = {s: health_pb2_grpc.HealthStub(c) for s, c in channels.items()}
    while not stop.is_set():
        for service, stub in stubs.items():
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
            except grpc.RpcError as error:
                status = error.code().name  # type: ignore[assignment]
            seen[service].append(status)
        time.sleep(0.02)
    for channel in channels.values():
        channel.close()


def test_health_answers_while_training_and_effects_jobs_run(stack: Launcher, stack_settings) -> None:
    product = Product(stack_settings, "e2e_health_jobs", seed=1)
    version = product.apply(treatment_blueprint("e2e_health_jobs"))
    for _ in range(4):
        x, served = product.decide_batch(500, version)
        product.log_outcomes(x, served)
    product.wait_logged_and_closed(2000)

    seen: dict[str, list[int]] = {s: [] for s in SERVICES}
    stop = threading.Event()
    poller = threading.Thread(target=_poll_health, args=(stack, stop, seen), daemon=True)
    with grpc.insecure_channel(stack.address("trainer")) as tch, grpc.insecure_channel(
        stack.address("evaluator")
    ) as ech:
        trainer = tgrpc.TrainerServiceStub(tch)
        evaluator = egrpc.EvaluatorServiceStub(ech)
        poller.start()
        training = trainer.StartTraining(tpb.StartTrainingRequest(use_case="e2e_health_jobs"), timeout=10).operation
        effects = evaluator.EstimateEffects(epb.EstimateEffectsRequest(use_case="e2e_health_jobs"), timeout=10).operation
        running_seen = {"training": False, "effects": False}
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            training = trainer.GetOperation(op_pb.GetOperationRequest(id=training.id), timeout=30).operation
            effects = evaluator.GetOperation(op_pb.GetOperationRequest(id=effects.id), timeout=30).operation
            running_seen["training"] |= training.state == op_pb.OPERATION_STATE_RUNNING
            running_seen["effects"] |= effects.state == op_pb.OPERATION_STATE_RUNNING
            if training.state in FINAL and effects.state in FINAL:
                break
            time.sleep(0.05)
        stop.set()
        poller.join()
    product.close()
    assert training.state == op_pb.OPERATION_STATE_SUCCEEDED, training.error_message
    assert effects.state == op_pb.OPERATION_STATE_SUCCEEDED, effects.error_message
    assert running_seen == {"training": True, "effects": True}
    serving = health_pb2.HealthCheckResponse.SERVING
    for service, statuses in seen.items():
        assert len(statuses) >= 5, f"{service}: too few health checks while the jobs ran"
        assert all(s == serving for s in statuses), f"{service} not SERVING during the jobs: {set(statuses)}"


def test_decisions_flow_and_are_logged_later_while_feedback_is_down(tmp_path) -> None:
    launcher = new_launcher(tmp_path / "var")
    settings = launcher_settings(launcher)
    try:
        launcher.start_all(["decision"])  # feedback and trainer are not running
        product = Product(settings, "e2e_feedback_down", seed=2)
        version = product.apply(treatment_blueprint("e2e_feedback_down"))
        for _ in range(6):
            product.decide_batch(250, version)
        assert product.served == 1500
        launcher.start("feedback")
        deadline = time.monotonic() + 60
        while product.stats().decisions < product.served and time.monotonic() < deadline:
            time.sleep(0.2)
        stats = product.stats()
        assert stats.decisions == product.served == 1500
        product.close()
    finally:
        launcher.stop_all()
