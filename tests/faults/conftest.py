"""Fixtures for fault tests: a Cassandra of the test's own (killed at the end), a
feedback service as a real process on it, and a test decision server for blueprints."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.launcher import Launcher
from tests.feedback.helpers import blueprint
from tests.support import CassandraInstance, java_available, new_launcher

USE_CASE = "fault_outcomes"


class BlueprintServer(dgrpc.DecisionServiceServicer):
    """Answers ``GetUseCase`` with one blueprint (version 1) of ``USE_CASE``."""

    def GetUseCase(self, request, context):
        if request.use_case != USE_CASE or request.version > 1:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no use case {request.use_case!r}")
        return dpb.GetUseCaseResponse(use_case=dpb.UseCase(
            blueprint=blueprint(USE_CASE, window_s=60), version=1, latest_version=1))


@pytest.fixture
def own_cassandra(tmp_path: Path) -> Iterator[CassandraInstance]:
    """A Cassandra started for this test only (SIGKILLed at the end: its data is scratch)."""
    if not java_available():
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs Java to run Cassandra")
        pytest.skip("no java on this machine: Cassandra fault tests need Java 17")
    instance = CassandraInstance(tmp_path / "cassandra")
    instance.start()
    try:
        yield instance
    finally:
        instance.kill()


@pytest.fixture
def feedback_on(own_cassandra: CassandraInstance, tmp_path: Path) -> Iterator[tuple[Launcher, str]]:
    """The feedback service (a process) on ``own_cassandra`` and a blueprint server on
    the decision address; yields the launcher and the keyspace."""
    keyspace = "faults"
    launcher = new_launcher(tmp_path / "stack",
                            LOOPWISE_FEEDBACK_STORE_URL=f"{own_cassandra.url}/{keyspace}",
                            LOOPWISE_LOG_LEVEL="INFO")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 0)])
    dgrpc.add_DecisionServiceServicer_to_server(BlueprintServer(), server)
    assert server.add_insecure_port(launcher.address("decision"))
    server.start()
    try:
        launcher.start("feedback")
        yield launcher, keyspace
    finally:
        if launcher.pid("feedback"):
            print(launcher.log_tail("feedback", 15))
        launcher.stop("feedback", timeout=10)
        server.stop(0)
