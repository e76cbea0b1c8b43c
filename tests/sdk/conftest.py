"""A small decision server for SDK tests: real gRPC on a loopback port, with
injectable UNAVAILABLE failures (the real services are exercised in test_real_services)."""

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
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.launcher import free_port
from loopwise.tensors import F32, I32, pack, unpack_matrix

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

    def Decide(self, request, context):  # noqa: N802 - gRPC method name
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

    def DecideBatch(self, request, context):  # noqa: N802
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

    def GetUseCase(self, request, context):  # noqa: N802
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
