"""Small scripted servers for SDK tests: real gRPC on loopback ports, with injectable
UNAVAILABLE failures (the real services are exercised in test_real_services and
test_training_and_effects)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import numpy as np
import pytest

from loopwise.clock import Clock
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.launcher import free_port
from loopwise.tensors import F32, I32, pack, unpack_matrix
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc

ACTIONS = ["no_offer", "offer"]


def blueprint(use_case: str = "checkout_upsell") -> bp.Blueprint:
    """Blueprint the test server reports for every use case it knows."""
    return bp.Blueprint(use_case=use_case, kind=bp.DECISION_KIND_ACTION_VALUE, actions=ACTIONS,
                        default_decision=bp.DefaultDecision(action="no_offer", score=0.25))


class ScriptedDecisionServicer(dgrpc.DecisionServiceServicer):
    """Decides "offer" when basket_value < 50; fails the next ``fail_next`` calls with
    UNAVAILABLE; answers after ``delay_s``; knows only the use cases in ``known``."""

    def __init__(self) -> None:
        self.fail_next = 0
        self.delay_s = 0.0
        self.calls: dict[str, int] = {}
        self.known = {"checkout_upsell"}
        self.batches: list[np.ndarray] = []
        self.clock = Clock()
        self._lock = threading.Lock()

    def _enter(self, name: str, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            fail = self.fail_next > 0
            self.fail_next -= int(fail)
        if fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, "scripted outage")
        time.sleep(self.delay_s)

    def _check_use_case(self, use_case: str, context: grpc.ServicerContext) -> None:
        if use_case not in self.known:
            context.abort(grpc.StatusCode.NOT_FOUND, f"use case {use_case!r} not found")

    def Decide(self, request, context):
        self._enter("Decide", context)
        self._check_use_case(request.use_case, context)
        basket = request.features["basket_value"].number
        index = 1 if basket < 50 else 0
        probabilities = [0.05, 0.95] if index else [0.95, 0.05]
        return dpb.DecideResponse(decision=dpb.Decision(
            decision_id=self.clock.new_id(), use_case=request.use_case, action=ACTIONS[index],
            action_index=index, score=basket / 100, action_scores=[0.1, 0.2],
            action_probabilities=probabilities, model_version=3, blueprint_version=2,
            arm="default", explored=False, fallback=False,
        ))

    def DecideBatch(self, request, context):
        self._enter("DecideBatch", context)
        self._check_use_case(request.use_case, context)
        matrix = unpack_matrix(request.features, request.rows, len(request.feature_names), "features")
        self.batches.append(matrix.copy())
        indices = (matrix[:, 0] < 50).astype(np.int32)
        probabilities = np.where(indices[:, None] == np.arange(2), 0.9, 0.1).astype(np.float32)
        return dpb.DecideBatchResponse(
            decision_ids=[self.clock.new_id() for _ in range(request.rows)],
            action_indices=pack(indices, I32), scores=pack(matrix.sum(axis=1), F32),
            action_probabilities=pack(probabilities, F32),
            explored=bytes(request.rows), fallback=bytes(request.rows), actions=ACTIONS,
            model_version=3, blueprint_version=request.blueprint_version,
            arms=["default"] * request.rows,
        )

    def GetUseCase(self, request, context):
        self._enter("GetUseCase", context)
        self._check_use_case(request.use_case, context)
        return dpb.GetUseCaseResponse(use_case=dpb.UseCase(
            blueprint=blueprint(request.use_case), version=2, latest_version=2))


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedDecisionServicer, str]]:
    """A running scripted decision server and its address."""
    servicer = ScriptedDecisionServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)])
    dgrpc.add_DecisionServiceServicer_to_server(servicer, server)
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    server.start()
    try:
        yield servicer, address
    finally:
        server.stop(0).wait()


class ScriptedTrainerServicer(tgrpc.TrainerServiceServicer):
    """Operations that follow a script: every operation steps through ``script`` (one
    state per GetOperation or streamed update); the first ``drop_watches`` watches end
    with UNAVAILABLE after one update; every WatchOperation's deadline is recorded."""

    def __init__(self) -> None:
        self.script: list[tuple[int, str, float]] = [
            (op_pb.OPERATION_STATE_RUNNING, "reading_data", 0.1),
            (op_pb.OPERATION_STATE_RUNNING, "fitting", 0.5),
            (op_pb.OPERATION_STATE_RUNNING, "exporting", 0.9),
            (op_pb.OPERATION_STATE_SUCCEEDED, "done", 1.0),
        ]
        self.final_error = ""
        self.drop_watches = 0
        self.step_delay_s = 0.0
        self.watch_deadlines: list[float | None] = []
        self.calls: dict[str, int] = {}
        self._position = 0
        self._lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self._lock:
            self.calls[name] = self.calls.get(name, 0) + 1

    def _operation(self) -> op_pb.Operation:
        state, stage, progress = self.script[min(self._position, len(self.script) - 1)]
        operation = op_pb.Operation(id="op-1", kind="training", use_case="checkout_upsell", state=state,
                                    stage=stage, progress=progress)
        if state == op_pb.OPERATION_STATE_FAILED:
            operation.error_code = grpc.StatusCode.FAILED_PRECONDITION.value[0]
            operation.error_message = self.final_error
        if state == op_pb.OPERATION_STATE_SUCCEEDED:
            operation.result.Pack(tpb.TrainingResult(model=tpb.Model(use_case="checkout_upsell", version=1)))
        return operation

    def _advance(self) -> op_pb.Operation:
        with self._lock:
            operation = self._operation()
            self._position += 1
        return operation

    def StartTraining(self, request, context):
        self._count("StartTraining")
        return tpb.StartTrainingResponse(operation=op_pb.Operation(
            id="op-1", kind="training", use_case=request.use_case, request_id=request.request_id,
            state=op_pb.OPERATION_STATE_PENDING))

    def GetOperation(self, request, context):
        self._count("GetOperation")
        if request.id != "op-1":
            context.abort(grpc.StatusCode.NOT_FOUND, f"operation {request.id!r} not found")
        return op_pb.GetOperationResponse(operation=self._advance())

    def WatchOperation(self, request, context):
        self._count("WatchOperation")
        remaining = context.time_remaining()
        self.watch_deadlines.append(remaining if remaining is not None and remaining < 1e8 else None)
        with self._lock:
            drop = self.drop_watches > 0
            self.drop_watches -= int(drop)
        while True:
            operation = self._advance()
            yield op_pb.WatchOperationResponse(operation=operation)
            if drop:
                context.abort(grpc.StatusCode.UNAVAILABLE, "scripted restart")
            if operation.state in (op_pb.OPERATION_STATE_SUCCEEDED, op_pb.OPERATION_STATE_FAILED,
                                   op_pb.OPERATION_STATE_CANCELLED):
                return
            time.sleep(self.step_delay_s)


@pytest.fixture
def scripted_trainer() -> Iterator[tuple[ScriptedTrainerServicer, str]]:
    """A running scripted trainer and its address."""
    servicer = ScriptedTrainerServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)])
    tgrpc.add_TrainerServiceServicer_to_server(servicer, server)
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    server.start()
    try:
        yield servicer, address
    finally:
        server.stop(0).wait()
