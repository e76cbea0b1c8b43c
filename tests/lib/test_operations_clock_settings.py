"""Operations (start, watch, cancel, request-id retries, recovery), the clock and settings."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from loopwise.clock import (
    Clock,
    canonical_uuid,
    plausible_decision_key,
    plausible_decision_keys,
    plausible_decision_time_ms,
    uuid7_run,
    uuid7_time_ms,
)
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.errors import FailedPrecondition, NotFound
from loopwise.operations import OperationRunner, Progress
from loopwise.settings import Settings
from loopwise.store.operations import SqliteOperationStore
from loopwise.store.sqlite import SqliteDatabase, parse_store_url

State = op_pb.OperationState


def _runner(path) -> tuple[SqliteDatabase, OperationRunner]:
    db = SqliteDatabase(path)
    return db, OperationRunner(SqliteOperationStore(db), Clock(), "training")


async def _job(progress: Progress) -> op_pb.Operation:
    await progress.stage("fitting", 0.5, "candidate 1 of 1")
    await asyncio.sleep(0.2)
    return op_pb.Operation(id="result-payload")


async def test_operation_runs_through_stages_and_keeps_its_result(tmp_path) -> None:
    db, runner = _runner(tmp_path / "ops.db")
    operation = await runner.start("uc", "req-1", _job)
    seen = [(o.state, o.stage) async for o in runner.watch(operation.id)]
    assert (State.OPERATION_STATE_RUNNING, "fitting") in seen
    final = await runner.get(operation.id)
    assert final.state == State.OPERATION_STATE_SUCCEEDED and final.progress == 1.0
    result = op_pb.Operation()
    assert final.result.Unpack(result) and result.id == "result-payload"
    assert final.HasField("end_time")
    # a retry with the same request id returns the same operation, no new job
    again = await runner.start("uc", "req-1", _job)
    assert again.id == operation.id
    page, token = await runner.list("uc", 10, "")
    assert [o.id for o in page] == [operation.id] and token == ""
    db.close()


async def test_exclusive_jobs_cancel_and_unknown_ids(tmp_path) -> None:
    db, runner = _runner(tmp_path / "ops.db")

    async def slow(progress: Progress) -> op_pb.Operation:
        await asyncio.sleep(30)
        return op_pb.Operation()

    first = await runner.start("uc", "", slow, exclusive=True)
    with pytest.raises(FailedPrecondition):
        await runner.start("uc", "", slow, exclusive=True)
    other = await runner.start("other", "", _job, exclusive=True)  # another use case is fine
    # Named with the wrong use case, an operation is not found (nor cancelled, nor watched).
    with pytest.raises(NotFound):
        await runner.cancel(first.id, "other")
    with pytest.raises(NotFound):
        _ = [o async for o in runner.watch(first.id, "other")]
    assert (await runner.get(first.id, "uc")).state == State.OPERATION_STATE_RUNNING
    cancelled = await runner.cancel(first.id, "uc")
    assert cancelled.state == State.OPERATION_STATE_CANCELLED
    assert (await runner.wait(other.id)).state == State.OPERATION_STATE_SUCCEEDED
    with pytest.raises(NotFound):
        await runner.get("no-such-operation")
    db.close()


async def test_failed_job_reports_its_error_and_restart_recovers_hanging_jobs(tmp_path) -> None:
    db, runner = _runner(tmp_path / "ops.db")

    async def failing(progress: Progress) -> op_pb.Operation:
        raise FailedPrecondition("only 12 rows, need 200")

    failed = await runner.wait((await runner.start("uc", "", failing)).id)
    assert failed.state == State.OPERATION_STATE_FAILED
    assert failed.error_code == 9 and "12 rows" in failed.error_message

    async def slow(progress: Progress) -> op_pb.Operation:
        await asyncio.sleep(30)
        return op_pb.Operation()

    hanging = await runner.start("uc", "", slow)
    await asyncio.sleep(0.05)
    db.close()  # the process "dies" with the job running; the task is abandoned
    for task in list(runner._tasks.values()):
        task.cancel()
    db2, runner2 = _runner(tmp_path / "ops.db")
    assert await runner2.recover() == 1
    recovered = await runner2.get(hanging.id)
    assert recovered.state == State.OPERATION_STATE_FAILED
    assert "restarted" in recovered.error_message
    db2.close()


def test_sped_up_clock_and_uuid7_ids() -> None:
    anchor = time.time()
    clock = Clock(anchor=anchor, speed=60.0)
    time.sleep(0.05)
    elapsed = clock.now() - anchor
    assert 2.5 < elapsed < 60  # ~3 simulated seconds for 50 real ms
    decision_id = clock.new_id()
    ms = uuid7_time_ms(decision_id)
    assert ms is not None and abs(ms - clock.now_ms()) < 5000
    assert plausible_decision_time_ms(decision_id, clock.now_ms()) == ms
    assert uuid7_time_ms("not-a-uuid") is None
    assert uuid7_time_ms("6ba7b810-9dad-11d1-80b4-00c04fd430c8") is None  # v1
    assert plausible_decision_time_ms("00000000-0000-7000-8000-000000000000", clock.now_ms()) is None


@pytest.mark.parametrize("n", [0, 1, 2, 1024, 5000])
def test_a_run_of_ids_is_canonical_distinct_ascending_and_of_its_millisecond(n) -> None:
    """DecideBatch's ids (uuid7_run): each a UUIDv7 in canonical form (what uuid.UUID
    prints) with the given timestamp, all distinct, ascending, and two runs of the same
    millisecond share no id."""
    time_ms = Clock().now_ms()
    ids = uuid7_run(time_ms, n)
    again = uuid7_run(time_ms, n)
    assert len(ids) == n and len(set(ids) | set(again)) == 2 * n
    assert ids == sorted(ids)
    for value in ids:
        parsed = uuid.UUID(value)
        assert str(parsed) == value and parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert uuid7_time_ms(value) == time_ms
        assert plausible_decision_key(value, time_ms) == (value, time_ms)
    assert [uuid7_time_ms(i) for i in uuid7_run(0, 2) + uuid7_run((1 << 48) - 1, 2)] == [0, 0, (1 << 48) - 1, (1 << 48) - 1]
    with pytest.raises(ValueError, match="48-bit"):
        uuid7_run(1 << 48, 1)


def test_sped_up_clock_ids_come_in_runs_of_its_time() -> None:
    """``Clock.new_ids`` on a sped-up clock stamps its ids with that clock's now."""
    clock = Clock(anchor=time.time() - 3600, speed=60.0)
    before, ids, after = clock.now_ms(), clock.new_ids(3), clock.now_ms()
    assert all(before <= uuid7_time_ms(i) <= after for i in ids)
    assert clock.new_ids(0) == []


@pytest.mark.parametrize("speed", [1.0, 60.0])
def test_an_id_comes_with_its_own_millisecond(speed) -> None:
    clock = Clock(time.time() - 3600, speed)
    for _ in range(200):
        before = clock.now_ms()
        decision_id, ms = clock.new_id_ms()
        assert ms == uuid7_time_ms(decision_id) and before <= ms <= clock.now_ms()


def test_plausible_decision_key_agrees_with_the_time_and_the_canonical_form() -> None:
    """LogOutcomes reads an id once (plausible_decision_key); it must say what the two
    functions it replaces say, for canonical ids, other spellings and non-ids."""
    clock = Clock()
    now = clock.now_ms()
    made = [clock.new_id() for _ in range(50)]
    spellings = [*made, *(i.upper() for i in made[:10]), *("{" + i + "}" for i in made[:5]),
                 *(i.replace("-", "") for i in made[:5]), "not-a-uuid", "", "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
                 "00000000-0000-7000-8000-000000000000", "ffffffff-ffff-7fff-bfff-ffffffffffff"]
    for value in spellings:
        ms = plausible_decision_time_ms(value, now)
        expected = None if ms is None else (canonical_uuid(value), ms)
        assert plausible_decision_key(value, now) == expected, value
    assert plausible_decision_key(made[0].upper(), now) == (made[0], uuid7_time_ms(made[0]))
    assert plausible_decision_key("ffffffff-ffff-7fff-bfff-ffffffffffff", now) is None  # far in the future

    # Many at once: the same answers, whether every id is canonical (read together) or not.
    canonical = [*made, "00000000-0000-7000-8000-000000000000", "ffffffff-ffff-7fff-bfff-ffffffffffff"]
    # Ids whose characters add up to a run of canonical ids without being ones each.
    misaligned = ["", made[0] + made[1], made[2]], [made[0][:10], made[1][10:] + made[0][:10] + made[2][10:]]
    for values in (canonical, spellings, made, [], *misaligned):
        keys = [plausible_decision_key(value, now) for value in values]
        assert plausible_decision_keys(values, now) == (
            [value if key is None else key[0] for value, key in zip(values, keys, strict=True)],
            [0 if key is None else key[1] for key in keys]), values


def test_settings_from_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LOOPWISE_FEEDBACK_ADDRESS", "127.0.0.1:6000")
    monkeypatch.setenv("LOOPWISE_CLOCK_SPEED", "120")
    monkeypatch.setenv("LOOPWISE_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.address_of("feedback") == "127.0.0.1:6000"
    assert settings.clock_speed == 120.0
    assert settings.store_url("trainer") == f"sqlite:///{tmp_path}/trainer.db"
    assert parse_store_url(settings.store_url("trainer")) == ("sqlite", f"{tmp_path}/trainer.db")
    with pytest.raises(ValueError):
        parse_store_url("mysql://x/y")
