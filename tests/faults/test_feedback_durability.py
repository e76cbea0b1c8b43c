"""Nothing acknowledged is lost: SIGKILL Cassandra while outcomes stream in (a), and
SIGKILL the feedback service with a non-empty spool (b). Counted with raw CQL: exactly
N distinct outcomes stored, each joinable to a stored decision."""

from __future__ import annotations

import threading
import time

import grpc

from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.launcher import Launcher
from tests.faults.conftest import USE_CASE
from tests.feedback.helpers import id_at, outcome, record
from tests.support import CassandraInstance

N = 20_000
BATCH = 500


def _ids() -> list[str]:
    t = int(time.time() * 1000) - 3_600_000
    return [id_at(t + i) for i in range(N)]


def _stub(launcher: Launcher) -> tuple[grpc.Channel, fgrpc.FeedbackServiceStub]:
    channel = grpc.insecure_channel(launcher.address("feedback"))
    return channel, fgrpc.FeedbackServiceStub(channel)


def _log_decisions(stub: fgrpc.FeedbackServiceStub, ids: list[str]) -> None:
    for i in range(0, len(ids), 2000):
        reply = stub.LogDecisions(fpb.LogDecisionsRequest(decisions=[record(USE_CASE, d) for d in ids[i:i + 2000]]),
                                  timeout=60)
        assert reply.accepted == len(ids[i:i + 2000])


def _outcomes(ids: list[str]) -> list[fpb.Outcome]:
    return [outcome(USE_CASE, d, f"o-{k}", value=1.0, event_ms=int(d[:8] + d[9:13], 16) + 1000)
            for k, d in enumerate(ids)]


class Sender(threading.Thread):
    """Sends outcomes through LogOutcomes in batches; every batch must be acknowledged.
    With ``pause_at``, it stops once that many are sent until ``resume`` is set."""

    def __init__(self, stub: fgrpc.FeedbackServiceStub, outcomes: list[fpb.Outcome], pause_at: int = 0) -> None:
        super().__init__(daemon=True)
        self.stub, self.outcomes = stub, outcomes
        self.sent = 0
        self.errors: list[BaseException] = []
        self.pause_at = pause_at
        self.paused, self.resume = threading.Event(), threading.Event()

    def run(self) -> None:
        try:
            for i in range(0, len(self.outcomes), BATCH):
                if self.pause_at and self.sent >= self.pause_at and not self.resume.is_set():
                    self.paused.set()
                    self.resume.wait(60)
                batch = self.outcomes[i:i + BATCH]
                reply = self.stub.LogOutcomes(fpb.LogOutcomesRequest(outcomes=batch), timeout=60)
                assert reply.accepted + reply.duplicates == len(batch)
                self.sent += len(batch)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)


def _stats(stub: fgrpc.FeedbackServiceStub) -> fpb.GetStatsResponse:
    return stub.GetStats(fpb.GetStatsRequest(use_case=USE_CASE), timeout=30)


def _wait_drained(stub: fgrpc.FeedbackServiceStub, timeout: float = 180.0) -> fpb.GetStatsResponse:
    deadline = time.monotonic() + timeout
    while True:
        stats = _stats(stub)
        if stats.spool_depth == 0 and not stats.store_unavailable:
            return stats
        assert time.monotonic() < deadline, f"spool not drained: {stats}"
        time.sleep(0.5)


def _raw_counts(instance: CassandraInstance, keyspace: str) -> tuple[int, int, int, int, str]:
    """With cassandra-driver directly: (outcome rows, distinct outcome keys, distinct
    outcome ids, outcomes whose decision is stored, the missing outcome numbers)."""
    from cassandra.cluster import Cluster

    cluster = Cluster(["127.0.0.1"], port=instance.cql_port, protocol_version=5)
    try:
        session = cluster.connect(keyspace)
        outcomes = list(session.execute("SELECT use_case, decision_id, outcome_name, outcome_id FROM outcomes",
                                        timeout=60))
        decisions = {r.decision_id for r in session.execute("SELECT decision_id FROM decisions", timeout=60)}
        print(f"decisions stored: {len(decisions)}")
    finally:
        cluster.shutdown()
    keys = {(r.use_case, r.decision_id, r.outcome_name, r.outcome_id) for r in outcomes}
    joinable = sum(1 for r in outcomes if r.decision_id in decisions)
    missing = sorted(set(range(N)) - {int(r.outcome_id[2:]) for r in outcomes})
    missing_text = f"{len(missing)} missing" + (f" ({missing[0]}..{missing[-1]})" if missing else "")
    return len(outcomes), len(keys), len({r.outcome_id for r in outcomes}), joinable, missing_text


def test_cassandra_killed_while_outcomes_stream_in(own_cassandra: CassandraInstance,
                                                  feedback_on: tuple[Launcher, str]) -> None:
    launcher, keyspace = feedback_on
    channel, stub = _stub(launcher)
    ids = _ids()
    _log_decisions(stub, ids)
    sender = Sender(stub, _outcomes(ids), pause_at=int(0.3 * N))
    sender.start()
    assert sender.paused.wait(60), sender.errors
    own_cassandra.kill()  # 70% still unsent
    sent_at_kill = sender.sent
    sender.resume.set()
    assert sent_at_kill == 0.3 * N
    seen_depth = 0
    while sender.is_alive():
        seen_depth = max(seen_depth, _stats(stub).spool_depth)
        time.sleep(0.2)
    assert not sender.errors, sender.errors
    during = _stats(stub)
    assert during.store_unavailable and during.spool_depth > 0
    seen_depth = max(seen_depth, during.spool_depth)

    own_cassandra.start()  # same directory and ports
    after = _wait_drained(stub)
    rows, keys, outcome_ids, joinable, missing = _raw_counts(own_cassandra, keyspace)
    print(f"\nfault (a): sent={sender.sent} sent_at_kill={sent_at_kill} spooled={after.spooled_records} "
          f"max_spool_depth_seen={seen_depth} replayed={after.replayed_records} stored_rows={rows} "
          f"distinct={keys} joinable={joinable} {missing}")
    channel.close()
    assert sender.sent == N
    assert seen_depth > 0 and after.spooled_records > 0 and after.replayed_records == after.spooled_records
    assert rows == keys == outcome_ids == joinable == N  # none lost, none doubled, all joinable
    assert (after.outcomes, after.decisions, after.unmatched_outcomes, after.joined_decisions) == (N, N, 0, N)


def test_feedback_killed_with_a_full_spool(own_cassandra: CassandraInstance,
                                         feedback_on: tuple[Launcher, str]) -> None:
    launcher, keyspace = feedback_on
    channel, stub = _stub(launcher)
    ids = _ids()
    _log_decisions(stub, ids)
    outcomes = _outcomes(ids)
    first = Sender(stub, outcomes[: int(0.3 * N)])
    first.run()
    own_cassandra.kill()
    rest = Sender(stub, outcomes[int(0.3 * N):])
    rest.run()
    assert not first.errors and not rest.errors, first.errors + rest.errors
    before_kill = _stats(stub)
    assert before_kill.store_unavailable and before_kill.spool_depth > 0
    channel.close()
    launcher.kill("feedback")  # SIGKILL with the spool on disk

    own_cassandra.start()
    launcher.start("feedback")  # replays the spool of the killed process
    channel, stub = _stub(launcher)
    after = _wait_drained(stub)
    rows, keys, outcome_ids, joinable, missing = _raw_counts(own_cassandra, keyspace)
    print(f"\nfault (b): sent={first.sent + rest.sent} spooled={before_kill.spooled_records} "
          f"spool_depth_at_kill={before_kill.spool_depth} replayed_after_restart={after.replayed_records} "
          f"stored_rows={rows} distinct={keys} joinable={joinable}")
    channel.close()
    assert first.sent + rest.sent == N
    assert before_kill.spooled_records == before_kill.spool_depth > 0
    assert after.replayed_records == before_kill.spool_depth
    assert rows == keys == outcome_ids == joinable == N
    assert (after.outcomes, after.decisions, after.unmatched_outcomes) == (N, N, 0)
