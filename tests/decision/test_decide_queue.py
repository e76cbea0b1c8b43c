"""Decide calls decided together (the servicer's ``DecideQueue``) answer and log exactly
what the same calls decided one after another would, and a call's error or cancellation
touches no other call."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import grpc
import numpy as np
import pytest

from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.errors import LoopwiseError
from loopwise.services.decision.decide_queue import DecideQueue
from loopwise.services.decision.models import Serving
from loopwise.services.decision.servicer import READ_AHEAD, StreamReader
from tests.decision.helpers import blueprint, features, linear_onnx, start_decider
from tests.decision.test_lean_path import _cores, _plain, _scorer


@pytest.fixture(autouse=True)
def _unhurried_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passes never run out of time here, however slow the machine: which calls share a
    pass then depends only on the turns (the budget has its own test)."""
    monkeypatch.setattr("loopwise.services.decision.decide_queue.PASS_BUDGET_S", 60.0)


def _random_request(draw: np.random.Generator) -> dpb.DecideRequest:
    """A request of one of the three use cases of ``_cores`` (now and then a bad one:
    an unknown use case, a wrong feature type, candidates for a binary use case)."""
    use_case = ["lr", "lin", "reg", "tree"][int(draw.integers(4))]
    x = float(draw.normal()) if draw.random() > 0.05 else 3.0e38  # non-finite score: the default decision
    request = dpb.DecideRequest(use_case=use_case, unit_id=f"u{draw.integers(50)}" if draw.random() < 0.8 else "",
                                features=features(x=x, y=None if draw.random() < 0.2 else float(draw.normal()),
                                                  country=["fr", "de", "it"][int(draw.integers(3))]),
                                disable_exploration=bool(draw.random() < 0.2),
                                blueprint_version=int(draw.integers(2)))
    bad = draw.random()
    if bad < 0.03:
        request.use_case = "missing"
    elif bad < 0.06:
        request.features["x"].category = "not a number"
    elif bad < 0.08:
        request.candidates.add(id="c1")
    return request


def _outcome(result) -> object:
    """An answer without its ids and times, or an error's type and message."""
    if isinstance(result, Exception):
        return type(result).__name__, str(result)
    return _plain(result)


def _one_after_another(core, requests: list[dpb.DecideRequest], started: float) -> list[object]:
    """The outcomes of ``requests`` decided by ``core`` one after another, without a queue."""
    outcomes = []
    for request in requests:
        try:
            outcomes.append(_outcome(core.decide_response(request, started)))
        except LoopwiseError as error:
            outcomes.append(_outcome(error))
    return outcomes


async def test_calls_decided_together_answer_and_log_what_one_call_after_another_does(tmp_path, make_settings
                                                                                        ) -> None:
    together, _ = await _cores(tmp_path / "together", make_settings, seed=41)
    alone, _ = await _cores(tmp_path / "alone", make_settings, seed=41)
    queue = DecideQueue(together, turns=8)
    runs: dict[str, list[int]] = {}  # rows per session run of the passes, by use case
    together.scorers["reg"].production.rows_score_alike = False  # as if its probe had failed
    for name, serving in together.scorers.items():
        assert serving.production.rows_score_alike == (name != "reg"), name

        def recorded(uc, rows, score_rows=serving.production.score_rows, name=name):
            runs.setdefault(name, []).append(len(rows))
            return score_rows(uc, rows)

        serving.production.score_rows = recorded
    draw = np.random.default_rng(43)
    sizes, errors = [], 0
    while sum(sizes) < 600:
        sizes.append(int(draw.integers(1, 17)))
    for size in sizes:
        requests = [_random_request(draw) for _ in range(size)]
        started = time.perf_counter()
        passes = queue.passes
        results = await asyncio.gather(*(queue.decide(r, started, None) for r in requests), return_exceptions=True)
        assert queue.passes == passes + 1  # one pass for the calls of one turn
        assert [_outcome(r) for r in results] == _one_after_another(alone, requests, started), requests
        errors += sum(isinstance(r, Exception) for r in results)
    records = [[_plain(r) for r in core.log._materialize()] for core in (together, alone)]
    assert len(records[0]) == sum(sizes) - errors
    assert records[0] == records[1]
    assert errors > 0 and max(sizes) > 8, (errors, sizes)
    # Every model whose rows score alike scored several of a pass's rows in one run (and
    # rows alone); the other only ever one row at a time.
    assert all(max(r) > 1 and min(r) == 1 for name, r in runs.items() if name != "reg") and len(runs) == 4, runs
    assert set(runs["reg"]) == {1}, runs["reg"]
    fallbacks = sum(r.get("fallback", False) for r in records[0])
    explored = sum(r.get("explored", False) for r in records[0])
    assert fallbacks > 0 and explored > 0, (fallbacks, explored)


async def test_a_pass_scored_together_follows_the_kill_switch_and_the_archive(tmp_path, make_settings) -> None:
    together, _ = await _cores(tmp_path / "together", make_settings, seed=5)
    alone, _ = await _cores(tmp_path / "alone", make_settings, seed=5)
    queue = DecideQueue(together, turns=8)
    requests = [dpb.DecideRequest(use_case="lr", unit_id=f"u{i}", features=features(x=i - 2.0, y=0.5))
                for i in range(5)]
    outcomes = []
    for step in ("served", "kill switch", "archived"):
        for core in (together, alone):
            if step == "kill switch":
                await core.use_cases.set_kill_switch("lr", True)
            elif step == "archived":
                await core.use_cases.set_archived("lr", True)
        started = time.perf_counter()
        got = await asyncio.gather(*(queue.decide(r, started, None) for r in requests), return_exceptions=True)
        assert [_outcome(g) for g in got] == _one_after_another(alone, requests, started), step
        outcomes.append(got)
    served, killed, archived = outcomes
    assert not any(a.decision.fallback for a in served) and all(a.decision.fallback for a in killed)
    assert all(type(a).__name__ == "FailedPrecondition" for a in archived), archived


async def test_the_queue_decides_calls_of_one_turn_together_and_skips_cancelled_ones(tmp_path, make_settings) -> None:
    core, _ = await _cores(tmp_path, make_settings, seed=3)
    queue = DecideQueue(core, turns=8)
    requests = [dpb.DecideRequest(use_case="lr", unit_id=f"u{i}", features=features(x=i - 2.0, y=0.5))
                for i in range(5)]
    deliveries = [core.delivery() for _ in requests]
    futures = [queue.decide(r, time.perf_counter(), d) for r, d in zip(requests, deliveries, strict=True)]
    futures[2].cancel()  # its caller went away before the pass
    done = await asyncio.gather(*futures, return_exceptions=True)
    assert queue.passes == 1 and queue.decided == 4
    assert isinstance(done[2], asyncio.CancelledError) and not deliveries[2].held
    for i in (0, 1, 3, 4):
        assert done[i].decision.model_version == 1 and len(deliveries[i].held) == 1


async def test_a_pass_over_its_time_budget_leaves_the_rest_to_the_next_turn(tmp_path, make_settings,
                                                                            monkeypatch) -> None:
    core, _ = await _cores(tmp_path, make_settings, seed=3)
    monkeypatch.setattr("loopwise.services.decision.decide_queue.PASS_BUDGET_S", 0.0)
    queue = DecideQueue(core, turns=8)
    requests = [dpb.DecideRequest(use_case="lr", unit_id=f"u{i}", features=features(x=float(i), y=0.5),
                                  disable_exploration=True) for i in range(6)]
    answers = await asyncio.gather(*(queue.decide(r, time.perf_counter(), None) for r in requests))
    assert queue.passes == 6 and queue.decided == 6  # one decision per pass, none lost
    assert [a.decision.score for a in answers] == sorted(a.decision.score for a in answers)  # each its own


@pytest.mark.parametrize("turns", [0, 1, 8])
async def test_the_queue_lets_other_ready_work_go_first_at_most_turns_times(tmp_path, make_settings, turns) -> None:
    core, _ = await _cores(tmp_path, make_settings, seed=3)
    queue = DecideQueue(core, turns=turns)
    request = dpb.DecideRequest(use_case="lr", unit_id="u1", features=features(x=1.0, y=0.5))
    # Idle loop: the call is decided at the queue's first turn.
    assert (await queue.decide(request, time.perf_counter(), core.delivery())).decision.model_version == 1
    # A task always ready: the queue lets it run `turns` times, then decides.
    answer = queue.decide(request, time.perf_counter(), core.delivery())
    spins = 0
    while not answer.done():
        spins += 1
        await asyncio.sleep(0)
    assert spins == turns + 1 and queue.passes == 2 and queue.decided == 2



async def _linear_decider(tmp_path, make_settings):
    """A decision service whose use case ``lin`` scores 10 × the request's x (a binary
    use case, threshold 0.2)."""
    decider = await start_decider(make_settings())
    await decider.apply(blueprint("lin", kind="binary", threshold=0.2))
    model = linear_onnx([np.array([10.0, 0.0, 0.0])], [np.zeros(1)])
    decider.watcher.scorers["lin"] = Serving(production=_scorer(tmp_path, decider.core.use_cases.get("lin"),
                                                                model, "variable"))
    return decider


async def test_concurrent_calls_over_grpc_get_their_own_answers(tmp_path, make_settings) -> None:
    """48 Decide calls and 8 streams in flight at once on a real server: the queue
    decides many of them per pass, and each caller gets the answer to its own request
    (the model's score is 10 × the request's x, a value no other request has)."""
    decider = await _linear_decider(tmp_path, make_settings)
    try:
        queue = decider.servicer.queue

        def request(i: int) -> dpb.DecideRequest:
            return dpb.DecideRequest(use_case="lin" if i % 5 else "missing", unit_id=f"u{i}",
                                     features=features(x=i / 1000.0, y=0.0), disable_exploration=True)

        def check(i: int, decision: dpb.Decision) -> None:
            assert decision.model_version == 1 and not decision.fallback, (i, decision)
            assert decision.score == pytest.approx(i / 100.0, abs=1e-5), (i, decision)
            assert decision.action_index == int(decision.score >= 0.2), (i, decision)

        async def unary(i: int) -> None:
            try:
                check(i, (await decider.stub.Decide(request(i), timeout=30)).decision)
            except grpc.aio.AioRpcError as error:
                assert i % 5 == 0 and error.code() == grpc.StatusCode.NOT_FOUND, (i, error)

        async def stream(first: int) -> int:
            call = decider.stub.DecideStream(timeout=30)
            numbers = [i for i in range(first, first + 25) if i % 5]  # an unknown use case would end the stream
            for i in numbers:
                await call.write(request(i))
                check(i, (await call.read()).decision)
            await call.done_writing()
            return len(numbers)

        results = await asyncio.gather(*(unary(i) for i in range(48)), *(stream(1000 + 100 * s) for s in range(8)))
        assert queue.decided == 48 + sum(results[48:]) == 208
        assert queue.passes < queue.decided, (queue.passes, queue.decided)
    finally:
        await decider.stop()


@pytest.mark.parametrize("turns", [0, 8])
async def test_the_queue_setting_reaches_the_servicer(make_settings, turns) -> None:
    decider = await start_decider(make_settings(decide_queue_turns=turns))
    try:
        assert decider.servicer.queue.turns == turns
    finally:
        await decider.stop()


async def test_a_stream_sent_ahead_is_answered_in_order(tmp_path, make_settings) -> None:
    """A caller that writes 200 requests on one stream before reading any answer (as
    loopwise's client streams an iterable) gets each answer in its request's place."""
    decider = await _linear_decider(tmp_path, make_settings)
    try:
        queue = decider.servicer.queue
        requests = [dpb.DecideRequest(use_case="lin", unit_id=f"u{i}", features=features(x=i / 1000.0, y=0.0),
                                      disable_exploration=True) for i in range(200)]
        answers = [reply.decision async for reply in decider.stub.DecideStream(iter(requests), timeout=30)]
        assert [round(a.score * 100) for a in answers] == list(range(200))
        assert all(a.action_index == int(a.score >= 0.2) and not a.fallback for a in answers)
        assert queue.decided == 200
    finally:
        await decider.stop()


async def _settle() -> None:
    """Let the event loop run the reader and the queue's passes for a while."""
    for _ in range(50):
        await asyncio.sleep(0)


async def test_a_stream_reads_at_most_read_ahead_requests_before_their_answers(make_settings) -> None:
    """The reader stops READ_AHEAD requests ahead of the answers taken (grpc's flow
    control then holds the caller), the requests read together are decided in one
    pass, one more is read per answer taken, and when the stream ends the decisions
    read ahead are logged as never sent."""
    decider = await start_decider(make_settings(decision_log_enabled=False))
    try:
        await decider.apply(blueprint())
        sent = 0

        async def requests():
            nonlocal sent
            for _ in range(100):
                sent += 1
                yield dpb.DecideRequest(use_case="offer", features=features())

        queue = decider.servicer.queue
        reader = StreamReader(decider.servicer, requests())
        await _settle()
        assert sent == READ_AHEAD
        assert queue.decided == READ_AHEAD and queue.passes == 1  # read together, decided together
        answer, _ = await reader.next()
        assert answer.decision.decision_id
        await _settle()
        assert sent == READ_AHEAD + 1
        reader.close()
        assert decider.core.unsent == {"offer": READ_AHEAD}
    finally:
        await decider.stop()


async def test_a_stream_ended_early_leaves_no_unretrieved_errors(make_settings, caplog) -> None:
    """Requests read ahead and failed (an unknown use case) that the stream never
    answers, because it ended first, are not reported by asyncio as lost errors."""
    decider = await start_decider(make_settings(decision_log_enabled=False))
    try:
        await decider.apply(blueprint())

        async def requests():
            yield dpb.DecideRequest(use_case="offer", features=features())
            for _ in range(3):
                yield dpb.DecideRequest(use_case="missing", features=features())

        reader = StreamReader(decider.servicer, requests())
        answer, _ = await reader.next()
        assert answer.decision.decision_id
        # each unknown name is looked up in the store before it is refused
        for _ in range(500):
            if len(reader._pending) == 3 and all(f.done() for f, _ in reader._pending):
                break
            await asyncio.sleep(0.02)
        assert len(reader._pending) == 3 and all(f.done() for f, _ in reader._pending)  # decided: failed
        reader.close()
        del reader
        gc.collect()
        await asyncio.sleep(0)
        assert "never retrieved" not in caplog.text
    finally:
        await decider.stop()


def _fed() -> tuple[asyncio.Queue, Any]:
    """A request stream fed by the test: put requests in the queue, None to end it."""
    arrive: asyncio.Queue = asyncio.Queue()

    async def requests():
        while (request := await arrive.get()) is not None:
            yield request

    return arrive, requests


async def _waiting_stream(decider) -> tuple[asyncio.Queue, DecideQueue, StreamReader, asyncio.Future]:
    """A stream fed by the test (:func:`_fed`) whose task waits for its first answer."""
    arrive, requests = _fed()
    reader = StreamReader(decider.servicer, requests())
    waiting = asyncio.ensure_future(reader.next())
    await _settle()
    return arrive, decider.servicer.queue, reader, waiting


async def test_a_stream_waiting_for_its_answer_is_handed_the_decision(make_settings) -> None:
    """With nothing read ahead, the request read next is decided straight into the
    stream's own wait (no future of its own, no second wake-up); a request's error
    reaches the stream the same way, and the answers stay in order when more requests
    arrive meanwhile (the first handed over, the others read ahead)."""
    decider = await start_decider(make_settings(decision_log_enabled=False))
    try:
        await decider.apply(blueprint())
        arrive, requests = _fed()
        queue = decider.servicer.queue
        decide, handed = queue.decide, []

        def recording(request, started, delivery, future=None):
            handed.append(future is not None)
            return decide(request, started, delivery, future)

        queue.decide = recording
        reader = StreamReader(decider.servicer, requests())
        waiting = asyncio.ensure_future(reader.next())
        await _settle()
        assert reader._waiter is not None and not waiting.done()  # waits with nothing read
        await arrive.put(dpb.DecideRequest(use_case="offer", unit_id="a", features=features(x=1.0)))
        answer, delivery = await waiting
        assert answer.decision.decision_id and not reader._pending and queue.decided == 1
        delivery.settle(delivered=True)
        # A bad request handed over: its error, its delivery not sent.
        waiting = asyncio.ensure_future(reader.next())
        await _settle()
        await arrive.put(dpb.DecideRequest(use_case="offer", unit_id="b", features={"nope": features()["x"]}))
        with pytest.raises(LoopwiseError, match="features.nope"):
            await waiting
        # One handed over, two read ahead behind it: answered in order.
        waiting = asyncio.ensure_future(reader.next())
        await _settle()
        for unit in ("c", "d", "e"):
            await arrive.put(dpb.DecideRequest(use_case="offer", unit_id=unit, features=features(x=2.0)))
        await _settle()
        units = []
        for _ in range(3):
            answer, delivery = await (waiting if not units else reader.next())
            units.append(answer.decision.decision_id)
            delivery.settle(delivered=True)
        assert len(set(units)) == 3 and units == sorted(units)  # ids are UUIDv7s: made in order
        assert handed == [True, True, True, False, False]  # a, the bad one, c handed over; d, e read ahead
        await arrive.put(None)
        assert await reader.next() is None  # the caller half-closed
        reader.close()
        assert decider.core.unsent == {}
    finally:
        await decider.stop()


async def test_a_stream_cancelled_while_waiting_for_a_handed_decision_logs_it_unsent(make_settings) -> None:
    """The call ends (cancelled) after its next request was handed to its wait and
    before the queue's pass: the pass skips it, and nothing is logged as served."""
    decider = await start_decider(make_settings(decision_log_enabled=False))
    try:
        await decider.apply(blueprint())
        arrive, queue, reader, waiting = await _waiting_stream(decider)
        decide = queue.decide
        handed = []

        def decide_then_cancel(request, started, delivery, future=None):
            result = decide(request, started, delivery, future)
            handed.append(future is not None)
            waiting.cancel()  # the call ends before the pass
            return result

        queue.decide = decide_then_cancel
        await arrive.put(dpb.DecideRequest(use_case="offer", unit_id="a", features=features()))
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await _settle()
        assert handed == [True] and queue.decided == 0  # handed over; its pass skipped it
        reader.close()
        assert decider.core.undelivered == {} and decider.servicer.core.served == 0
    finally:
        await decider.stop()


async def test_a_stream_cancelled_after_its_handed_decision_was_made_logs_it_unsent(make_settings) -> None:
    """The decision handed to the stream's wait is made, and the call ends (cancelled)
    before the stream's task resumes: that decision is logged as never sent."""
    decider = await start_decider(make_settings(decision_log_enabled=False))
    try:
        await decider.apply(blueprint())
        arrive, queue, reader, waiting = await _waiting_stream(decider)
        turn = queue._turn

        def turn_then_cancel(deferred: int) -> None:
            decided = queue.decided
            turn(deferred)
            if queue.decided > decided:
                waiting.cancel()  # the call ends before the stream's task resumes with its answer

        queue._turn = turn_then_cancel
        await arrive.put(dpb.DecideRequest(use_case="offer", unit_id="a", features=features()))
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert queue.decided == 1 and decider.core.unsent == {"offer": 1}
        reader.close()
    finally:
        await decider.stop()


async def test_a_stream_cancelled_while_its_answers_are_held_by_flow_control_ends_cancelled(make_settings,
                                                                                             caplog) -> None:
    """A caller that sends far ahead and reads nothing, then cancels: the server's
    writes wait on HTTP/2 flow control when the call ends under them. The stream ends
    as a cancellation (the RPC counted CANCELLED, no error logged), its unwritten
    decisions logged as undelivered."""
    decider = await start_decider(make_settings(decision_log_enabled=False))
    try:
        await decider.apply(blueprint())
        request = dpb.DecideRequest(use_case="offer", features=features())

        async def requests():
            for _ in range(200_000):
                yield request

        call = decider.stub.DecideStream(requests())
        queue = decider.servicer.queue
        for _ in range(1000):  # until the answers stop leaving: flow control holds them
            before = queue.decided
            await asyncio.sleep(0.05)
            if queue.decided > 1000 and queue.decided == before:
                break
        assert 1000 < queue.decided < 200_000
        call.cancel()
        await asyncio.sleep(0.5)
        series = {tuple(labels): value for labels, value in
                  decider.host.registry.snapshot()["loopwise_rpc_requests_total"]["series"]}
        codes = {labels[-1] for labels in series if "DecideStream" in labels}
        assert codes == {"CANCELLED"}, series
        assert "unexpected error in RPC" not in caplog.text
        assert sum(decider.core.undelivered.values()) > 0
    finally:
        await decider.stop()
