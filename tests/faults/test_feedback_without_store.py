"""The feedback service starts without its store and keeps acknowledging writes, and
duplicate counts stay honest through store failures.

(c) Cassandra down, feedback SIGKILLed and restarted: it starts (overall health
SERVING, its read side NOT_SERVING), acknowledges decisions and outcomes into its spool,
answers reads UNAVAILABLE; once Cassandra is back it connects and drains the spool, and
raw CQL counts exactly what was acknowledged.
(d) Cassandra SIGKILLed while outcomes stream in, none sent twice: after the restart and
the drain, GetStats reports no duplicate although requests were replayed from the spool.
Real processes on 127.0.0.1; bounded waits; no timing is asserted."""

from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.launcher import Launcher
from tests.faults.conftest import USE_CASE
from tests.faults.test_feedback_durability import (
    BATCH,
    Sender,
    _log_decisions,
    _outcomes,
    _stats,
    _stub,
    _wait_drained,
)
from tests.feedback.helpers import id_at
from tests.support import CassandraInstance

N = 6000
READS = "loopwise.feedback.v1.FeedbackService/reads"


def _ids(n: int) -> list[str]:
    t = int(time.time() * 1000) - 3_600_000
    return [id_at(t + i) for i in range(n)]


def _health(launcher: Launcher, service: str) -> str:
    with grpc.insecure_channel(launcher.address("feedback")) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                           timeout=5).status
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


def _cql_counts(instance: CassandraInstance, keyspace: str) -> tuple[int, int, int, int]:
    """(decision rows, distinct decision ids, outcome rows, outcomes whose decision is stored)."""
    from cassandra.cluster import Cluster

    cluster = Cluster(["127.0.0.1"], port=instance.cql_port, protocol_version=5)
    try:
        session = cluster.connect(keyspace)
        decisions = [r.decision_id for r in session.execute("SELECT decision_id FROM decisions", timeout=60)]
        outcomes = [r.decision_id for r in session.execute("SELECT decision_id FROM outcomes", timeout=60)]
    finally:
        cluster.shutdown()
    stored = set(decisions)
    return len(decisions), len(stored), len(outcomes), sum(1 for d in outcomes if d in stored)


def _wait(predicate, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def test_feedback_restarted_while_cassandra_is_down_acknowledges_and_drains(
        own_cassandra: CassandraInstance, feedback_on: tuple[Launcher, str]) -> None:
    launcher, keyspace = feedback_on
    channel, stub = _stub(launcher)
    ids = _ids(N)
    outcomes = _outcomes(ids)
    _log_decisions(stub, ids[: N // 2])
    before = Sender(stub, outcomes[: N // 3])
    before.run()
    assert not before.errors, before.errors
    own_cassandra.stop()
    channel.close()
    launcher.kill("feedback")  # SIGKILL, then a start while the store is down
    launcher.start("feedback")  # waits for overall SERVING
    assert (_health(launcher, ""), _health(launcher, READS)) == ("SERVING", "NOT_SERVING")

    channel, stub = _stub(launcher)
    _log_decisions(stub, ids[N // 2:])  # acknowledged from the spool
    during = Sender(stub, outcomes[N // 3:])
    during.run()
    assert not during.errors, during.errors
    stats = _stats(stub)
    assert stats.store_unavailable and stats.spool_depth == stats.spooled_records == N - N // 2 + N - N // 3
    for read in (lambda: list(stub.ReadTrainingData(fpb.ReadTrainingDataRequest(use_case=USE_CASE), timeout=30)),
                 lambda: stub.GetDecision(fpb.GetDecisionRequest(use_case=USE_CASE, decision_id=ids[0]), timeout=30)):
        with pytest.raises(grpc.RpcError) as err:
            read()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    own_cassandra.start()  # same directory and ports
    after = _wait_drained(stub, timeout=180)
    _wait(lambda: _health(launcher, READS) == "SERVING", "the read side did not turn SERVING")
    rows, distinct, outcome_rows, joinable = _cql_counts(own_cassandra, keyspace)
    print(f"\nfault (c): acknowledged decisions={N} outcomes={before.sent + during.sent} while down: "
          f"spooled={stats.spooled_records} replayed={after.replayed_records}; stored decisions={rows} "
          f"distinct={distinct} outcomes={outcome_rows} joinable={joinable}; GetStats decisions={after.decisions} "
          f"outcomes={after.outcomes} duplicates={after.duplicate_outcomes}")
    channel.close()
    assert before.sent + during.sent == N
    assert after.replayed_records == stats.spooled_records
    assert rows == distinct == outcome_rows == joinable == N
    assert (after.decisions, after.outcomes, after.unmatched_outcomes, after.duplicate_outcomes) == (N, N, 0, 0)


def test_no_duplicates_counted_when_cassandra_dies_under_load(own_cassandra: CassandraInstance,
                                                               feedback_on: tuple[Launcher, str]) -> None:
    launcher, keyspace = feedback_on
    channel, stub = _stub(launcher)
    ids = _ids(N)
    _log_decisions(stub, ids)
    sender = Sender(stub, _outcomes(ids))
    sender.start()
    _wait(lambda: sender.sent >= N // 4 or not sender.is_alive(), "the sender did not get going", 60)
    own_cassandra.kill()  # while requests are in flight
    sender.join(300)
    assert not sender.is_alive() and not sender.errors, sender.errors
    own_cassandra.start()
    after = _wait_drained(stub, timeout=180)
    rows, distinct, outcome_rows, joinable = _cql_counts(own_cassandra, keyspace)
    print(f"\nfault (d): sent={sender.sent} in batches of {BATCH} spooled={after.spooled_records} "
          f"replayed={after.replayed_records} stored outcomes={outcome_rows} joinable={joinable} "
          f"duplicates={after.duplicate_outcomes}")
    channel.close()
    assert sender.sent == N and outcome_rows == joinable == N and rows == distinct == N
    assert (after.outcomes, after.decisions, after.duplicate_outcomes) == (N, N, 0)
