"""The outcome spool: acknowledgement from disk when the store fails, ordered replay with
the original write time, restart with a non-empty spool, damaged files set aside."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from loopwise.services.feedback.spool import DurableWrites, Entry
from loopwise.store.feedback import OutcomeRow, SqliteFeedbackStore, StoredDecision
from loopwise.store.sqlite import SqliteDatabase
from tests.feedback.helpers import id_at, record


class FlakyStore(SqliteFeedbackStore):
    """A SQLite store whose writes fail (like a store that is down) while ``down``;
    records the write timestamps it was given."""

    def __init__(self, path: Path) -> None:
        super().__init__(SqliteDatabase(path))
        self.down = False
        self.timestamps: list[int | None] = []

    async def put_decisions(self, decisions, write_time_us=None):
        if self.down:
            raise ConnectionRefusedError("store down")
        self.timestamps.append(write_time_us)
        return await super().put_decisions(decisions, write_time_us)

    async def put_outcomes(self, outcomes, orphans, write_time_us=None):
        if self.down:
            raise ConnectionRefusedError("store down")
        self.timestamps.append(write_time_us)
        return await super().put_outcomes(outcomes, orphans, write_time_us)


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def rows(uc: str, n: int, t: int) -> tuple[list[StoredDecision], list[OutcomeRow]]:
    ids = [id_at(t + i) for i in range(n)]
    return ([StoredDecision(record(uc, d), t + i) for i, d in enumerate(ids)],
            [OutcomeRow(uc, d, f"o{i}", "purchase", 1.0, "", t + i + 5, t + i) for i, d in enumerate(ids)])


async def test_spooled_when_down_then_replayed_in_order(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "f.db")
    durable = DurableWrites(store, tmp_path / "spool", timeout_s=2)
    durable.start()
    t = int(time.time() * 1000) - 60_000
    decisions, outcomes = rows("uc", 30, t)
    try:
        assert await durable.decisions(decisions[:10]) == 10  # store up: written, new count
        store.down = True
        assert await durable.decisions(decisions[10:]) is None  # spooled
        assert await durable.outcomes(outcomes, [OutcomeRow("uc", "bad", "x", "purchase", 1.0, "", t, 0)]) is None
        assert durable.counters.depth == 20 + 31 and durable.counters.spooled == 51
        files = sorted((tmp_path / "spool").glob("*.spool"))
        assert len(files) == 2
        accept_times = [Entry.decode(p.read_bytes()).accept_us for p in files]
        store.down = False
        # While the spool is not empty, new writes queue behind it (acceptance order).
        assert await durable.outcomes(outcomes[:3], []) is None
        await wait_until(lambda: durable.counters.depth == 0)
        assert durable.counters.replayed == 54
        assert list((tmp_path / "spool").glob("*.spool")) == []
        assert store.timestamps[1:3] == accept_times  # replayed oldest first, original times
        assert len(await store.outcomes_between("uc", 0, t + 100)) == 30  # the repeat did not double
        assert len(await store.orphans("uc")) == 1
        assert (await store.get_decision("uc", decisions[29].record.decision_id)) is not None
    finally:
        await durable.stop()
        store.close()


async def test_a_restart_replays_what_the_spool_holds(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "f.db")
    store.down = True
    first = DurableWrites(store, tmp_path / "spool", timeout_s=2)
    t = int(time.time() * 1000) - 60_000
    _, outcomes = rows("uc", 12, t)
    assert await first.outcomes(outcomes, []) is None
    assert await first.outcomes(outcomes[:5], []) is None
    # A new process finds the files; the store answers again.
    store.down = False
    second = DurableWrites(store, tmp_path / "spool", timeout_s=2)
    assert second.counters.depth == 17
    second.start()
    try:
        await wait_until(lambda: second.counters.depth == 0)
        assert second.counters.replayed == 17
        assert len(await store.outcomes_between("uc", 0, t + 100)) == 12
    finally:
        await second.stop()
        store.close()


async def test_damaged_files_are_set_aside(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "f.db")
    store.down = True
    durable = DurableWrites(store, tmp_path / "spool", timeout_s=2)
    t = int(time.time() * 1000) - 60_000
    decisions, _ = rows("uc", 4, t)
    assert await durable.decisions(decisions[:2]) is None
    assert await durable.decisions(decisions[2:]) is None
    first = sorted((tmp_path / "spool").glob("*.spool"))[0]
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF
    first.write_bytes(bytes(data))
    store.down = False
    durable.start()
    try:
        await wait_until(lambda: durable.counters.depth == 0)
        assert (durable.counters.damaged, durable.counters.replayed) == (2, 2)
        assert [p.suffix for p in (tmp_path / "spool").iterdir()] == [".damaged"]
        assert await store.get_decision("uc", decisions[3].record.decision_id) is not None
        assert await store.get_decision("uc", decisions[0].record.decision_id) is None
    finally:
        await durable.stop()
        store.close()


class FailingOnceStore(FlakyStore):
    """Fails the ``fail_at``-th decision write once (a group partly stored)."""

    def __init__(self, path: Path, fail_at: int) -> None:
        super().__init__(path)
        self.fail_at, self.calls = fail_at, 0

    async def put_decisions(self, decisions, write_time_us=None):
        self.calls += 1
        if self.calls == self.fail_at:
            raise ConnectionResetError("store went away mid-group")
        return await super().put_decisions(decisions, write_time_us)


async def test_entries_replay_in_groups_and_a_repeated_outcome_keeps_the_first(tmp_path: Path) -> None:
    store = FailingOnceStore(tmp_path / "f.db", fail_at=40)
    store.down = True
    durable = DurableWrites(store, tmp_path / "spool", timeout_s=2)
    t = int(time.time() * 1000) - 60_000
    decisions, outcomes = rows("uc", 80, t)
    for d in decisions[:70]:  # 70 entries of one decision: groups of up to REPLAY_GROUP
        assert await durable.decisions([d]) is None
    assert await durable.outcomes(outcomes[:70], []) is None
    # The same outcomes again (a retried request) with other values: the first stay.
    again = [o._replace(value=2.0) for o in outcomes[:5]]
    assert await durable.outcomes(again, []) is None
    for d in decisions[70:]:
        assert await durable.decisions([d]) is None
    store.down = False
    durable.start()
    try:
        await wait_until(lambda: durable.counters.depth == 0)
        assert durable.counters.replayed == 155
        assert list((tmp_path / "spool").glob("*.spool")) == []
        assert store.calls > 81  # the group with the failed write was written again, whole
        stored = await store.outcomes_between("uc", 0, t + 100)
        assert len(stored) == 70 and {o.value for o in stored} == {1.0}
        for d in decisions:
            assert await store.get_decision("uc", d.record.decision_id) is not None
    finally:
        await durable.stop()
        store.close()


class SlowStore(FlakyStore):
    """Each write takes ``delay_s`` (a store that answers, slowly)."""

    def __init__(self, path: Path, delay_s: float) -> None:
        super().__init__(path)
        self.delay_s = delay_s

    async def put_outcomes(self, outcomes, orphans, write_time_us=None):
        await asyncio.sleep(self.delay_s)
        return await super().put_outcomes(outcomes, orphans, write_time_us)


async def test_the_spool_empties_while_requests_keep_arriving(tmp_path: Path) -> None:
    # Requests arrive faster than one replay round (each store write takes 50 ms): if
    # they kept joining the spool, it would never be empty. The tail of the backlog is
    # replayed while they wait; then they go to the store.
    store = SlowStore(tmp_path / "f.db", delay_s=0.05)
    store.down = True
    durable = DurableWrites(store, tmp_path / "spool", timeout_s=2)
    t = int(time.time() * 1000) - 60_000
    _, outcomes = rows("uc", 150, t)
    for o in outcomes[:20]:
        assert await durable.outcomes([o], []) is None
    store.down = False
    await durable.outcomes(outcomes[20:21], [])  # spooled behind the backlog
    durable.start()
    emptied_at: int | None = None
    try:
        for i, o in enumerate(outcomes[21:], start=21):
            await durable.outcomes([o], [])
            if emptied_at is None and durable.counters.depth == 0:
                emptied_at = i
            await asyncio.sleep(0.01)
        assert emptied_at is not None, f"the spool never emptied (depth {durable.counters.depth})"
        spooled = durable.counters.spooled
        assert spooled < 150, spooled  # the later requests went to the store
        assert durable.counters.depth == 0
        stored = await store.outcomes_between("uc", 0, t + 1000)
        assert len(stored) == 150
    finally:
        await durable.stop()
        store.close()


def test_entry_round_trip() -> None:
    t = int(time.time() * 1000)
    decisions, outcomes = rows("uc", 3, t)
    entry = Entry(123, decisions=decisions)
    assert Entry.decode(entry.encode()).decisions == decisions
    orphan = OutcomeRow("uc", "nope", "z", "click", 2.5, "lab", t, 0)
    back = Entry.decode(Entry(456, outcomes=outcomes, orphans=[orphan]).encode())
    assert (back.accept_us, back.outcomes, back.orphans) == (456, outcomes, [orphan])
    with pytest.raises(Exception, match="checksum"):
        Entry.decode(entry.encode()[:-1])
