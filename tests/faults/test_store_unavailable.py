"""A store that cannot answer makes the call UNAVAILABLE (retry later), never INTERNAL.

The real FeedbackServicer on a real gRPC server, over a feedback core whose store
raises what cassandra-driver raises while Cassandra is down or restarting, or what
SQLite raises on a locked database; the one error mapping (loopwise.errors) turns
them into UNAVAILABLE on unary and streaming RPCs. Other errors stay INTERNAL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from cassandra import OperationTimedOut, ReadTimeout, Unavailable
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionShutdown

from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.server import Registration, ServiceHost
from loopwise.services.feedback.servicer import FeedbackServicer
from loopwise.store.failures import store_unavailable


def _sqlite_locked(tmp_path: Path) -> sqlite3.OperationalError:
    """The error SQLite really raises when another connection holds the write lock."""
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("INSERT INTO t VALUES (1)")
    except sqlite3.OperationalError as error:
        return error
    finally:
        other.close()
        holder.close()
    raise AssertionError("the second connection was not refused")


STORE_DOWN: list[tuple[str, Callable[[Path], BaseException]]] = [
    ("NoHostAvailable", lambda _: NoHostAvailable("Unable to connect to any servers",
                                                  {"127.0.0.1:9042": ConnectionRefusedError(111, "refused")})),
    ("OperationTimedOut", lambda _: OperationTimedOut("errors={}", "127.0.0.1:9042")),
    ("Unavailable", lambda _: Unavailable("Cannot achieve consistency level LOCAL_QUORUM", 6, 2, 1)),
    ("ReadTimeout", lambda _: ReadTimeout("Operation timed out", consistency=6, required_responses=1,
                                                          received_responses=0, data_retrieved=False)),
    ("ConnectionShutdown", lambda _: ConnectionShutdown("Connection to 127.0.0.1:9042 was closed")),
    ("sqlite locked", _sqlite_locked),
    ("wrapped", lambda _: _caused_by(NoHostAvailable("Unable to connect to any servers", {}))),
]


def _caused_by(cause: BaseException) -> RuntimeError:
    try:
        raise RuntimeError("reading the join failed") from cause
    except RuntimeError as error:
        return error


class BrokenStoreCore:
    """Stands in for the feedback core: every read hits a store raising ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def get_decision(self, use_case: str, decision_id: str) -> fpb.GetDecisionResponse:
        raise self.error

    async def read_training_data(self, request: fpb.ReadTrainingDataRequest
                                 ) -> AsyncIterator[fpb.ReadTrainingDataResponse]:
        yield fpb.ReadTrainingDataResponse()
        raise self.error


async def _codes(make_settings, error: BaseException) -> tuple[grpc.StatusCode, grpc.StatusCode, str]:
    settings = make_settings()
    host = ServiceHost("feedback", settings, "127.0.0.1:0")
    host.add([Registration(fgrpc.add_FeedbackServiceServicer_to_server,
                           FeedbackServicer(BrokenStoreCore(error)),  # type: ignore[arg-type]
                           "loopwise.feedback.v1.FeedbackService")])
    port = await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = fgrpc.FeedbackServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as unary:
                await stub.GetDecision(fpb.GetDecisionRequest(use_case="u", decision_id="d"), timeout=10)
            stream = stub.ReadTrainingData(fpb.ReadTrainingDataRequest(use_case="u"), timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as streamed:
                async for _ in stream:
                    pass
        return unary.value.code(), streamed.value.code(), unary.value.details() or ""
    finally:
        await host.stop(0)


@pytest.mark.parametrize("name,make", STORE_DOWN, ids=[n for n, _ in STORE_DOWN])
async def test_store_down_is_unavailable(make_settings, tmp_path: Path, name: str, make) -> None:
    error = make(tmp_path)
    assert store_unavailable(error) is not None, name
    unary, streamed, details = await _codes(make_settings, error)
    assert (unary, streamed) == (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE), name
    assert "retry later" in details


async def test_other_store_errors_stay_internal(make_settings, tmp_path: Path) -> None:
    error = sqlite3.OperationalError("no such table: decisions")
    assert store_unavailable(error) is None
    unary, streamed, _ = await _codes(make_settings, error)
    assert (unary, streamed) == (grpc.StatusCode.INTERNAL, grpc.StatusCode.INTERNAL)
