"""A decision is logged as served only if its answer could reach the caller: a decision
ready after its call's deadline, or whose stream ended before it was written, is logged
with ``DecisionRecord.undelivered`` and counted in
``loopwise_decisions_undelivered_total`` (Decide, DecideBatch, DecideStream)."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import numpy as np
import pytest

from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.errors import field_violations
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.services.decision.core import DecisionCore, Delivery
from tests.decision.helpers import (
    RecordingFeedback,
    blueprint,
    features,
    serve,
    start_decider,
    wait_until,
)

LATE_S = 0.6  # how long a slowed decision takes
DEADLINE_S = 0.3  # the deadline of the calls that get a slowed decision


def _settings(make_settings, **kw):
    return make_settings(decision_log_flush_interval_s=0.05, decision_log_batch_size=50,
                         admission_min_deadline_ms=0, **kw)


def _slow_down(d, monkeypatch, unit_prefix: str = "late") -> None:
    """Decisions for units named ``late…`` take LATE_S (blocking, as heavy scoring would)."""
    decide, decide_batch = d.core.decide_response, d.core.decide_batch

    def slow_decide(request, *args, **kwargs):
        if request.unit_id.startswith(unit_prefix):
            time.sleep(LATE_S)
        return decide(request, *args, **kwargs)

    def slow_batch(request, *args, **kwargs):
        if request.unit_ids and request.unit_ids[0].startswith(unit_prefix):
            time.sleep(LATE_S)
        return decide_batch(request, *args, **kwargs)

    monkeypatch.setattr(d.core, "decide_response", slow_decide)
    monkeypatch.setattr(d.core, "decide_batch", slow_batch)


def _batch_request(units: list[str]) -> dpb.DecideBatchRequest:
    rows = np.ones((len(units), 3), np.float32)
    return dpb.DecideBatchRequest(use_case="offer", blueprint_version=1, rows=len(units),
                                  feature_names=["x", "y", "country"], features=rows.tobytes(), unit_ids=units)


def _undelivered_metric(d) -> dict[tuple[str, ...], float]:
    snapshot = d.host.registry.snapshot()["loopwise_decisions_undelivered_total"]
    return {tuple(labels): value for labels, value in snapshot["series"]}


@pytest.fixture
async def logged(make_settings, monkeypatch):
    """A decision service logging to a recording feedback double; yields both."""
    settings = _settings(make_settings)
    feedback = RecordingFeedback()
    server = await serve(feedback, fgrpc.add_FeedbackServiceServicer_to_server, settings.feedback_address)
    d = await start_decider(settings)
    await d.apply(blueprint())
    _slow_down(d, monkeypatch)
    try:
        yield d, feedback
    finally:
        await d.stop()
        await server.stop(0)


def _by_unit(feedback: RecordingFeedback) -> dict[str, bool]:
    return {r.unit_id: r.undelivered for r in feedback.records}


async def test_decide_and_decide_batch_ready_after_the_deadline_are_logged_undelivered(logged) -> None:
    d, feedback = logged
    reply = await d.stub.Decide(dpb.DecideRequest(use_case="offer", unit_id="on-time", features=features()),
                                timeout=30)
    assert reply.decision.decision_id
    batch = await d.stub.DecideBatch(_batch_request(["b-on-time-0", "b-on-time-1"]), timeout=30)
    assert len(batch.decision_ids) == 2
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await d.stub.Decide(dpb.DecideRequest(use_case="offer", unit_id="late-1", features=features()),
                            timeout=DEADLINE_S)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await d.stub.DecideBatch(_batch_request(["late-b0", "late-b1", "late-b2"]), timeout=DEADLINE_S)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    await wait_until(lambda: len(feedback.records) == 7)
    assert _by_unit(feedback) == {"on-time": False, "b-on-time-0": False, "b-on-time-1": False,
                                  "late-1": True, "late-b0": True, "late-b1": True, "late-b2": True}
    assert _undelivered_metric(d) == {("offer",): 4.0}
    assert d.core.served == 7  # every decision made is logged, delivered or not


async def test_decide_stream_logs_what_was_written_and_what_was_not(logged) -> None:
    d, feedback = logged
    stream = d.stub.DecideStream(timeout=LATE_S / 2)
    await stream.write(dpb.DecideRequest(use_case="offer", unit_id="s-on-time", features=features()))
    assert (await stream.read()).decision.decision_id
    await stream.write(dpb.DecideRequest(use_case="offer", unit_id="late-s", features=features()))
    await asyncio.sleep(LATE_S)  # the stream's deadline passes while the decision is made
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stream.read()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    # A client in another thread cancels its stream while the server is deciding
    # (this test's loop is blocked then), so the answer is never written.
    await asyncio.to_thread(_cancel_while_deciding, d.settings.decision_address)

    await wait_until(lambda: len(feedback.records) == 3)
    assert _by_unit(feedback) == {"s-on-time": False, "late-s": True, "late-cancelled": True}
    assert _undelivered_metric(d) == {("offer",): 2.0}


async def test_a_bad_request_ends_a_stream_sent_ahead_after_the_answers_before_it(logged) -> None:
    """30 requests written before any answer is read, the 11th of an unknown use case:
    the 10 answers before it arrive, then NOT_FOUND. Every decision made is logged
    once: the 10 written as delivered, any read ahead past the bad request as
    undelivered (never sent)."""
    d, feedback = logged
    requests = [dpb.DecideRequest(use_case="missing" if i == 10 else "offer", unit_id=f"ahead-{i}",
                                  features=features()) for i in range(30)]
    # A blocking client: grpcio's asyncio client reports INTERNAL in place of the status
    # when it arrives while the client is still writing (grpc/grpc#36066).
    answers, error = await asyncio.to_thread(_stream_all, d.settings.decision_address, requests)
    assert error is not None and error.code() == grpc.StatusCode.NOT_FOUND and len(answers) == 10
    await wait_until(lambda: len(feedback.records) == d.core.served)
    logged_units = _by_unit(feedback)
    assert {f"ahead-{i}" for i in range(10)} <= set(logged_units)
    assert all(logged_units[unit] == (int(unit.split("-")[1]) > 10) for unit in logged_units)
    unsent = d.core.served - 10
    assert _undelivered_metric(d) == ({("offer",): float(unsent)} if unsent else {})


async def test_a_request_refused_by_the_limits_ends_a_stream_sent_ahead_after_the_answers_before_it(
        make_settings) -> None:
    """11 requests written before any answer is read, the last with a category over the
    string limit: the call guard refuses it while the 10 before it are still being
    answered, and the stream ends with INVALID_ARGUMENT naming the field only after
    those 10 answers."""
    d = await start_decider(make_settings(max_string_bytes=64, decision_log_enabled=False))
    try:
        await d.apply(blueprint())
        requests = [dpb.DecideRequest(use_case="offer", unit_id=f"ahead-{i}", features=features())
                    for i in range(10)]
        requests.append(dpb.DecideRequest(use_case="offer", features=features(country="x" * 100)))
        answers, error = await asyncio.to_thread(_stream_all, d.settings.decision_address, requests)
        assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert field_violations(error)[0][0] == "features[country].category", field_violations(error)
        assert len(answers) == 10 and all(a.decision.decision_id for a in answers)
    finally:
        await d.stop()


async def test_durable_log_marks_decisions_when_they_are_ready(make_settings, monkeypatch) -> None:
    """With the log's ``durable`` mode a decision is logged before its answer leaves,
    so it is marked when it is ready: late ones are still never sent."""
    settings = _settings(make_settings, decision_log_durability="durable")
    feedback = RecordingFeedback()
    server = await serve(feedback, fgrpc.add_FeedbackServiceServicer_to_server, settings.feedback_address)
    d = await start_decider(settings)
    try:
        await d.apply(blueprint())
        _slow_down(d, monkeypatch)
        await d.stub.Decide(dpb.DecideRequest(use_case="offer", unit_id="on-time", features=features()),
                            timeout=30)
        assert d.core.log.counters.submitted == 1  # before the answer left
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await d.stub.Decide(dpb.DecideRequest(use_case="offer", unit_id="late-1", features=features()),
                                timeout=DEADLINE_S)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await wait_until(lambda: len(feedback.records) == 2)
        assert _by_unit(feedback) == {"on-time": False, "late-1": True}
    finally:
        await d.stop()
        await server.stop(0)


def _stream_all(address: str, requests: list[dpb.DecideRequest]) -> tuple[list[dpb.DecideResponse],
                                                                            grpc.RpcError | None]:
    """All of ``requests`` on one DecideStream from a blocking client: the answers
    read, and the error the stream ended with (None: OK)."""
    answers = []
    with grpc.insecure_channel(address) as channel:
        try:
            for reply in dgrpc.DecisionServiceStub(channel).DecideStream(iter(requests), timeout=30):
                answers.append(reply)
        except grpc.RpcError as error:
            return answers, error
    return answers, None


def _cancel_while_deciding(address: str) -> None:
    stop = threading.Event()

    def requests():
        yield dpb.DecideRequest(use_case="offer", unit_id="late-cancelled", features=features())
        stop.wait(10)

    with grpc.insecure_channel(address) as channel:
        call = dgrpc.DecisionServiceStub(channel).DecideStream(requests())
        time.sleep(LATE_S / 3)
        call.cancel()
        stop.set()


class _Log:
    enabled = True

    def __init__(self) -> None:
        self.submitted: list[int] = []

    def submit_lazy(self, count, build) -> None:
        self.submitted.append(count)
        self.built = build()


class _Core:
    """What a Delivery needs of DecisionCore."""

    def __init__(self) -> None:
        self.log = _Log()
        self.undelivered: dict[str, int] = {}

    _submit = DecisionCore._submit


@pytest.mark.parametrize("deadline, delivered", [(None, True), (3600.0, True), (-0.001, False), (-1.0, False)])
def test_delivery_settles_once_when_the_call_ends(deadline, delivered) -> None:
    core = _Core()
    delivery = Delivery(core)  # type: ignore[arg-type]
    delivery.hold("uc", 2, 3, lambda: [fpb.DecisionRecord(decision_id=str(i)) for i in range(3)])
    assert core.log.submitted == []  # held until the call ends
    delivery.deadline = None if deadline is None else time.monotonic() + deadline
    delivery.on_done()
    delivery.settle(delivered=not delivered)  # later calls change nothing
    assert core.log.submitted == [3]
    assert [r.undelivered for r in core.log.built] == [not delivered] * 3
    assert core.undelivered == ({} if delivered else {"uc": 2})
