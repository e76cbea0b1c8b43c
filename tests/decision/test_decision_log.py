"""Decision logging to a loopback feedback service: batches, spool, replay, restart."""

from __future__ import annotations

import numpy as np

from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from tests.decision.helpers import RecordingFeedback, blueprint, serve, start_decider, wait_until


def _settings(make_settings, **kw):
    values = dict(decision_log_flush_interval_s=0.05, decision_log_batch_size=50)
    values.update(kw)
    return make_settings(**values)


async def _batch(d, n: int) -> list[str]:
    rows = np.random.default_rng(n).normal(size=(n, 3)).astype(np.float32)
    rows[:, 2] = 1
    reply = await d.stub.DecideBatch(dpb.DecideBatchRequest(
        use_case="offer", blueprint_version=1, rows=n, feature_names=["x", "y", "country"],
        features=rows.tobytes(), unit_ids=[f"u{i}" for i in range(n)]))
    return list(reply.decision_ids)


async def test_every_decision_is_logged_once(make_settings) -> None:
    settings = _settings(make_settings)
    feedback = RecordingFeedback()
    server = await serve(feedback, fgrpc.add_FeedbackServiceServicer_to_server, settings.feedback_address)
    d = await start_decider(settings)
    try:
        await d.apply(blueprint(kind="action_value", explore_without_model=True))
        served = [(await d.decide(unit_id=f"u{i}")).decision_id for i in range(30)]
        served += await _batch(d, 120)
        await wait_until(lambda: len(feedback.ids) >= len(served) and d.core.log.counters.acked == 150)
        assert sorted(feedback.ids) == sorted(served) and d.core.served == 150
        # Every decision went through the spool; none had to wait there for feedback.
        counters = d.core.log.counters
        assert counters.acked == counters.spooled == 150 and counters.replayed == 0
        record = next(r for r in feedback.records if r.decision_id == served[0])
        assert record.use_case == "offer" and record.blueprint_version == 1 and record.unit_id == "u0"
        assert np.frombuffer(record.features, "<f4").tolist() == [1.0, 2.0, 0.0]
        assert record.explored and len(record.action_probabilities) == 3
        assert feedback.calls >= 3  # batches of at most 50
    finally:
        await d.stop()
        await server.stop(0)


async def test_spool_while_feedback_is_down_then_replay_exactly_once(make_settings) -> None:
    settings = _settings(make_settings)
    d = await start_decider(settings)  # nothing listens on feedback_address
    server = None
    try:
        await d.apply(blueprint())
        served = [(await d.decide(unit_id=f"u{i}")).decision_id for i in range(20)]
        served += await _batch(d, 200)
        log = d.core.log
        await wait_until(lambda: log.counters.spool_depth == len(served) and log.queued == 0
                         and log.counters.send_failures > 0)
        assert (d.settings.data_dir / "decision" / "spool").exists()
        served += await _batch(d, 30)  # decisions keep flowing while feedback is down

        feedback = RecordingFeedback()
        server = await serve(feedback, fgrpc.add_FeedbackServiceServicer_to_server, settings.feedback_address)
        await wait_until(lambda: log.counters.spool_depth == 0 and len(feedback.ids) >= len(served), timeout=30)
        assert len(feedback.ids) == len(set(feedback.ids)) == len(served)
        assert set(feedback.ids) == set(served)
        assert log.counters.dropped == 0 and log.counters.replayed > 0
        assert not list((d.settings.data_dir / "decision" / "spool").glob("*.req"))
    finally:
        await d.stop()
        if server is not None:
            await server.stop(0)


async def test_overflow_goes_to_the_spool_and_arrives(make_settings) -> None:
    settings = _settings(make_settings, decision_log_queue_size=40)
    feedback = RecordingFeedback()
    server = await serve(feedback, fgrpc.add_FeedbackServiceServicer_to_server, settings.feedback_address)
    d = await start_decider(settings)
    try:
        await d.apply(blueprint())
        served = await _batch(d, 300)  # 260 beyond the queue bound
        # handed to the log when the call has ended, which may be just after the reply arrived
        await wait_until(lambda: d.core.log.counters.submitted == 300)
        await wait_until(lambda: len(feedback.ids) >= 300 and d.core.log.counters.spool_depth == 0)
        assert d.core.log.counters.spooled >= 260
        assert sorted(feedback.ids) == sorted(served)
    finally:
        await d.stop()
        await server.stop(0)


async def test_shutdown_spools_and_restart_replays(make_settings) -> None:
    settings = _settings(make_settings, decision_log_flush_interval_s=5.0, decision_log_batch_size=10_000)
    d = await start_decider(settings)
    await d.apply(blueprint())
    served = await _batch(d, 70)
    # Spooled within milliseconds, not sent: the flush interval is long.
    await wait_until(lambda: d.core.log.queued == 0 and d.core.log.counters.spooled == 70)
    assert d.core.log.counters.acked == 0
    await d.stop()  # feedback is down: everything stays in the spool
    spool = settings.data_dir / "decision" / "spool"
    assert len(list(spool.glob("*.req"))) == 1

    feedback = RecordingFeedback()
    server = await serve(feedback, fgrpc.add_FeedbackServiceServicer_to_server, settings.feedback_address)
    d = await start_decider(settings)
    try:
        assert d.core.log.counters.spool_depth == 70
        await wait_until(lambda: d.core.log.counters.spool_depth == 0)
        assert sorted(feedback.ids) == sorted(served)
    finally:
        await d.stop()
        await server.stop(0)


async def test_segments_a_crash_left_without_a_whole_frame_leave_the_spool(make_settings) -> None:
    # A SIGKILL between a segment's creation and the end of its first frame leaves an
    # empty (or torn) file: nothing of it was acknowledged; it must not stay forever.
    settings = _settings(make_settings, decision_log_flush_interval_s=5.0, decision_log_batch_size=10_000)
    d = await start_decider(settings)
    await d.apply(blueprint())
    served = await _batch(d, 30)
    await wait_until(lambda: d.core.log.queued == 0 and d.core.log.counters.spooled == 30)
    await d.stop()
    spool = settings.data_dir / "decision" / "spool"
    (spool / f"{98:020d}.req").write_bytes(b"")
    (spool / f"{99:020d}.req").write_bytes(b"\x01\x02\x03")  # a torn first frame
    feedback = RecordingFeedback()
    server = await serve(feedback, fgrpc.add_FeedbackServiceServicer_to_server, settings.feedback_address)
    d = await start_decider(settings)
    try:
        await wait_until(lambda: d.core.log.counters.spool_depth == 0 and not list(spool.glob("*.req")))
        assert sorted(feedback.ids) == sorted(served)
        assert d.core.log.counters.spool_files == 0
    finally:
        await d.stop()
        await server.stop(0)


async def test_shutdown_sends_when_feedback_answers(make_settings) -> None:
    settings = _settings(make_settings, decision_log_flush_interval_s=5.0, decision_log_batch_size=10_000)
    feedback = RecordingFeedback()
    server = await serve(feedback, fgrpc.add_FeedbackServiceServicer_to_server, settings.feedback_address)
    d = await start_decider(settings)
    try:
        await d.apply(blueprint())
        served = await _batch(d, 25)
    finally:
        await d.stop()
    await server.stop(0)
    assert sorted(feedback.ids) == sorted(served)
    assert not list((settings.data_dir / "decision" / "spool").glob("*.req"))


async def test_logging_disabled(make_settings) -> None:
    d = await start_decider(make_settings(decision_log_enabled=False))
    try:
        await d.apply(blueprint())
        await _batch(d, 10)
        assert d.core.log.counters.submitted == 0 and d.core.served == 10
    finally:
        await d.stop()


class RejectingFeedback(RecordingFeedback):
    """Refuses any batch holding a decision for unit "poison" as invalid."""

    async def LogDecisions(self, request, context):
        if any(d.unit_id == "poison" for d in request.decisions):
            import grpc

            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "decisions[0]: invalid")
        return await super().LogDecisions(request, context)


async def test_rejected_batches_are_set_aside_and_counted(make_settings) -> None:
    settings = _settings(make_settings)
    feedback = RejectingFeedback()
    server = await serve(feedback, fgrpc.add_FeedbackServiceServicer_to_server, settings.feedback_address)
    d = await start_decider(settings)
    try:
        await d.apply(blueprint())
        await d.decide(unit_id="poison")
        log = d.core.log
        await wait_until(lambda: log.counters.rejected == 1)
        later = await _batch(d, 20)
        await wait_until(lambda: set(later) <= set(feedback.ids))
        await wait_until(lambda: log.counters.spool_depth == 0)  # acknowledged segments go
        assert log.counters.rejected == 1
        assert len(list((settings.data_dir / "decision" / "spool").glob("*.rejected"))) == 1
    finally:
        await d.stop()
        await server.stop(0)
