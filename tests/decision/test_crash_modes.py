"""The decision log's crash guarantee (docs/architecture.md §7), with real processes.

A decision service and a feedback service run on loopback; eight clients decide in a
closed loop; the decision service is SIGKILLed under that load, restarted on the same
data directory, and its spool drains to feedback. Every decision a client received as
OK is then looked up, one by one, in the feedback service's store:

- ``durable``: each decision is group-committed to the fsync'd spool before its answer
  leaves, so nothing a client received is lost;
- ``interval`` (the default): the spool is written every
  ``decision_log_spool_interval_ms`` and never holds back more than
  ``decision_log_max_unspooled`` decisions, so a crash loses at most that many.

The figures of each round (received, lost, the time span of the lost decisions) are
printed (``pytest -s``) for docs/architecture.md; nothing here asserts a timing.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest

from loopwise.clock import Clock, uuid7_time_ms
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.launcher import Launcher, free_port
from loopwise.services.decision.decision_log import DecisionLog, DecisionSpool
from tests.decision.helpers import (
    RecordingFeedback,
    blueprint,
    features,
    serve,
    start_decider,
    wait_until,
)
from tests.support import new_launcher

CLIENTS = 8
KILL_AFTER = 4000  # decisions received by the clients before the SIGKILL
MAX_LOAD_S = 60.0  # the load stops by itself after this, killed or not
MAX_UNSPOOLED = 200  # the default mode's bound in decisions, for the test
USE_CASE = "crash"


@dataclass
class Load:
    """Closed-loop clients that record every decision they received as OK."""

    address: str
    received: dict[str, str] = field(default_factory=dict)  # decision id -> action
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, index: int) -> None:
        deadline = time.monotonic() + MAX_LOAD_S
        with grpc.insecure_channel(self.address) as channel:
            stub = dgrpc.DecisionServiceStub(channel)
            n = 0
            while not self.stop.is_set() and time.monotonic() < deadline:
                n += 1
                try:
                    reply = stub.Decide(dpb.DecideRequest(use_case=USE_CASE, unit_id=f"c{index}-{n}",
                                                          features=features(x=float(n))), timeout=5)
                except grpc.RpcError as error:
                    self.errors.append(error.code().name)
                    return  # the service is gone: this client stops
                with self.lock:
                    self.received[reply.decision.decision_id] = reply.decision.action

    def count(self) -> int:
        with self.lock:
            return len(self.received)


@dataclass
class Round:
    """What one crash round measured."""

    received: int
    stored: int
    lost: list[str]
    lost_span_ms: float  # from the first lost decision to the last received one (0 if none lost)
    mismatched: int  # stored decisions whose action differs from the one received
    rate: float  # decisions received per second under the load


def _stored(launcher: Launcher) -> dict[str, str]:
    """Decision id -> action of every decision in the feedback service's SQLite store."""
    with sqlite3.connect(f"file:{launcher.data_dir / 'feedback.db'}?mode=ro", uri=True) as db:
        return dict(db.execute("SELECT decision_id, action FROM decisions WHERE use_case = ?", (USE_CASE,)))


def _spool_files(launcher: Launcher) -> list[Path]:
    return sorted((launcher.data_dir / "decision" / "spool").glob("*.req"))


def _wait_drained(launcher: Launcher, timeout: float = 120.0) -> None:
    """Until the restarted decision service has shipped its whole spool."""
    deadline = time.monotonic() + timeout
    while _spool_files(launcher):
        assert time.monotonic() < deadline, f"spool not drained: {_spool_files(launcher)}"
        time.sleep(0.1)


def crash_round(root: Path, durability: str) -> Round:
    """Load, SIGKILL, restart, drain; the client-side count against the store."""
    launcher = new_launcher(root, LOOPWISE_DECISION_LOG_DURABILITY=durability,
                            LOOPWISE_DECISION_LOG_MAX_UNSPOOLED=str(MAX_UNSPOOLED),
                            LOOPWISE_CLOCK_SPEED="1", LOOPWISE_DECISION_LOG_FLUSH_INTERVAL_S="0.2")
    try:
        launcher.start_all(["feedback", "decision"])
        with grpc.insecure_channel(launcher.address("decision")) as channel:
            dgrpc.DecisionServiceStub(channel).ApplyUseCase(
                dpb.ApplyUseCaseRequest(blueprint=blueprint(name=USE_CASE)), timeout=30)
        load = Load(launcher.address("decision"))
        threads = [threading.Thread(target=load.client, args=(i,), daemon=True) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        deadline = started + MAX_LOAD_S
        while load.count() < KILL_AFTER and time.monotonic() < deadline:
            time.sleep(0.005)
        launcher.kill("decision")  # SIGKILL under load
        rate = load.count() / (time.monotonic() - started)
        load.stop.set()
        for thread in threads:
            thread.join(30)
        received = dict(load.received)
        assert len(received) >= KILL_AFTER, f"only {len(received)} decisions before the deadline"

        launcher.start("decision")  # same data directory: the spool replays
        _wait_drained(launcher)
        stored = _stored(launcher)
    finally:
        launcher.stop_all(["feedback", "decision"])
    lost = [d for d in received if d not in stored]
    last = max(uuid7_time_ms(d) or 0 for d in received)
    span = last - min(uuid7_time_ms(d) or 0 for d in lost) if lost else 0.0
    mismatched = sum(1 for d, action in received.items() if d in stored and stored[d] != action)
    result = Round(len(received), len(stored), lost, float(span), mismatched, rate)
    print(f"\n{durability}: received {result.received} at {rate:.0f}/s, stored {result.stored}, lost {len(lost)} "
          f"({100.0 * len(lost) / result.received:.2f}%), lost span {span:.0f} ms")
    return result


def test_durable_mode_loses_nothing_a_client_received(tmp_path: Path) -> None:
    result = crash_round(tmp_path, "durable")
    assert result.lost == []
    assert result.mismatched == 0  # the stored decisions are the ones the clients got


@pytest.mark.parametrize("attempt", [1, 2])
def test_default_mode_loses_no_more_than_its_bound(tmp_path: Path, attempt: int) -> None:
    result = crash_round(tmp_path, "interval")
    assert len(result.lost) <= MAX_UNSPOOLED
    assert result.mismatched == 0


# -- the spool itself, in process ---------------------------------------------------------
def _records(n: int, start: int = 0) -> list[fpb.DecisionRecord]:
    clock = Clock()
    return [fpb.DecisionRecord(decision_id=clock.new_id(), use_case=USE_CASE, blueprint_version=1,
                               unit_id=f"u{start + i}", features=np.full(3, start + i, np.float32).tobytes(),
                               action_index=i % 2, action=("no", "yes")[i % 2], score=0.25,
                               action_probabilities=[0.5, 0.5]) for i in range(n)]


def _crash(decision_log: DecisionLog) -> None:
    """What a SIGKILL leaves: the tasks gone, the spool as written, nothing drained."""
    for task in (decision_log._committer, decision_log._shipper):
        if task is not None:
            task.cancel()
    if decision_log._active is not None and decision_log._active.fd is not None:
        os.close(decision_log._active.fd)


async def test_the_spool_replays_in_order_with_the_original_decisions(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # feedback is down while the decisions are made
    spool = tmp_path / "spool"
    channel = grpc.aio.insecure_channel(address)
    first = DecisionLog(channel, spool, Clock(), batch_size=7, spool_interval_s=0.001)
    first.start()
    sent: list[fpb.DecisionRecord] = []
    for k in range(6):  # several commits, several frames each
        batch = _records(10 + k, start=len(sent))
        first.submit(batch)
        sent += batch
        await wait_until(lambda: first.queued == 0)
    assert first.counters.spooled == len(sent) and first.counters.acked == 0
    _crash(first)
    await channel.close()
    # A crash during a later write leaves a torn frame at the end: never acknowledged, ignored.
    last = DecisionSpool(spool).files()[-1]
    with open(last, "ab") as f:
        f.write(DecisionSpool.frame(b"\x0a\x01x" * 40, 3)[:50])

    feedback = RecordingFeedback()
    server = await serve(feedback, fgrpc.add_FeedbackServiceServicer_to_server, address)
    channel = grpc.aio.insecure_channel(address)
    second = DecisionLog(channel, spool, Clock(), batch_size=7)
    try:
        assert second.counters.spool_depth == len(sent)
        second.start()
        await wait_until(lambda: second.counters.spool_depth == 0 and not DecisionSpool(spool).files())
        assert feedback.ids == [r.decision_id for r in sent]  # in order, each once
        assert [r.SerializeToString() for r in feedback.records] == [r.SerializeToString() for r in sent]
        assert second.counters.replayed == len(sent) and not list(spool.glob("*.damaged"))
    finally:
        await second.stop()
        await channel.close()
        await server.stop(0)


async def test_durable_answers_share_commits(make_settings) -> None:
    """Concurrent Decide calls share fsyncs; every answer, unary or streamed, leaves
    after the commit of its decision."""
    settings = make_settings(decision_log_durability="durable", decision_log_commit_window_ms=2.0)
    feedback = RecordingFeedback()
    server = await serve(feedback, fgrpc.add_FeedbackServiceServicer_to_server, settings.feedback_address)
    d = await start_decider(settings)
    try:
        await d.apply(blueprint())
        log = d.core.log

        answered: list[str] = []

        async def decide(i: int) -> str:
            decision = await d.decide(unit_id=f"u{i}")
            answered.append(decision.decision_id)
            assert log.counters.spooled >= len(answered)  # every answer left after its commit
            return decision.decision_id

        served = await asyncio.gather(*(decide(i) for i in range(24)))
        assert log.counters.spooled == 24
        assert log.counters.commits < 24  # concurrent requests shared fsyncs
        # A stream's answers too, each after its own commit.
        requests = [dpb.DecideRequest(use_case="offer", unit_id=f"s{i}", features=features()) for i in range(20)]
        async for reply in d.stub.DecideStream(iter(requests), timeout=30):
            served.append(reply.decision.decision_id)
            assert log.counters.spooled >= len(served)  # this answer left after its commit
        assert len(served) == 44
        await wait_until(lambda: set(served) <= set(feedback.ids))
    finally:
        await d.stop()
        await server.stop(0)


async def test_durable_answer_is_unavailable_when_the_spool_cannot_be_written(make_settings, monkeypatch) -> None:
    settings = make_settings(decision_log_durability="durable")
    feedback = RecordingFeedback()
    server = await serve(feedback, fgrpc.add_FeedbackServiceServicer_to_server, settings.feedback_address)
    d = await start_decider(settings)
    try:
        await d.apply(blueprint())

        def broken(fd: int, data: bytes) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(DecisionSpool, "append", staticmethod(broken))
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await d.decide(unit_id="full-disk")
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        # A stream's answer the same way: the stream ends with UNAVAILABLE.
        call = d.stub.DecideStream(iter([dpb.DecideRequest(use_case="offer", unit_id="full-disk-stream",
                                                           features=features())]), timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            async for _ in call:
                pass
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert d.core.log.counters.spool_failures == 2
        monkeypatch.undo()
        ok = await d.decide(unit_id="disk-back")
        # The refused decisions are still sent from memory, marked undelivered (their
        # callers got UNAVAILABLE); the next one went through the spool, delivered.
        await wait_until(lambda: ok.decision_id in feedback.ids and len(feedback.ids) == 3)
        marks = {r.unit_id: r.undelivered for r in feedback.records}
        assert marks == {"full-disk": True, "full-disk-stream": True, "disk-back": False}
    finally:
        await d.stop()
        await server.stop(0)


async def test_interval_mode_answers_at_once_below_its_bound_and_commits_past_it(make_settings) -> None:
    settings = make_settings(decision_log_spool_interval_ms=60_000.0, decision_log_max_unspooled=5,
                             decision_log_batch_size=1000)
    d = await start_decider(settings)  # feedback is down: nothing is acknowledged
    try:
        await d.apply(blueprint())
        log = d.core.log
        for i in range(5):
            await d.decide(unit_id=f"u{i}")
        await wait_until(lambda: log.queued == 5)
        assert log.counters.spooled == 0  # answered, and not committed before the interval
        await d.decide(unit_id="u5")  # past the bound: committed at once
        await wait_until(lambda: log.queued == 0 and log.counters.spooled == 6)
    finally:
        await d.stop()


async def test_past_the_bound_an_answer_waits_for_the_commit(tmp_path: Path) -> None:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}")
    decision_log = DecisionLog(channel, tmp_path / "spool", Clock(), spool_interval_s=60.0, max_unspooled=5)
    decision_log.start()
    try:
        decision_log.submit(_records(3))
        assert decision_log.spooled() is None  # below the bound: answer at once
        decision_log.submit(_records(3, start=3))
        waiting = decision_log.spooled()
        assert waiting is not None
        await asyncio.wait_for(waiting, 30)
        assert decision_log.queued == 0 and decision_log.counters.spooled == 6
    finally:
        await decision_log.stop()
        await channel.close()


async def test_a_damaged_spool_file_sends_what_precedes_the_damage_and_is_kept(tmp_path: Path) -> None:
    spool = DecisionSpool(tmp_path / "spool")
    batches = [_records(4, start=4 * k) for k in range(3)]
    path, fd = spool.create()
    for batch in batches:
        DecisionSpool.append(fd, DecisionSpool.frame(
            fpb.LogDecisionsRequest(request_id=f"r{len(batch)}", decisions=batch).SerializeToString(), len(batch)))
    os.close(fd)
    data = bytearray(path.read_bytes())
    second = len(DecisionSpool.frame(fpb.LogDecisionsRequest(request_id="r4", decisions=batches[0])
                                     .SerializeToString(), 4))
    data[second + 20] ^= 0xFF  # a flipped byte in the second frame's payload
    path.write_bytes(bytes(data))

    feedback = RecordingFeedback()
    address = f"127.0.0.1:{free_port()}"
    server = await serve(feedback, fgrpc.add_FeedbackServiceServicer_to_server, address)
    channel = grpc.aio.insecure_channel(address)
    decision_log = DecisionLog(channel, spool.dir, Clock())
    try:
        assert decision_log.counters.spool_depth == 12  # counted from the headers
        decision_log.start()
        # The file leaves the spool, then its decisions leave the depth (after the rename).
        await wait_until(lambda: decision_log.counters.spool_files == 0 and decision_log.counters.spool_depth == 0)
        assert feedback.ids == [r.decision_id for r in batches[0]]
        assert [p.name for p in spool.dir.iterdir()] == [path.with_suffix(".damaged").name]
    finally:
        await decision_log.stop()
        await channel.close()
        await server.stop(0)
