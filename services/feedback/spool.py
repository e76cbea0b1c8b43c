"""Durable acknowledgements: the store, or an fsync'd local spool replayed in order.

``LogDecisions`` / ``LogOutcomes`` are acknowledged only once their validated rows are
in the store, or appended to the spool in ``<data_dir>/feedback/spool``: one file per
request, ``<sequence>.spool``, holding a header (magic, kind, payload length, crc32,
accept time in µs, record count) and the serialized rows; written to a temporary
name, fsync'd, renamed into place, directory fsync'd (loopwise.spool). A write goes to the spool when
the store fails or times out, and also while the spool is not empty (so that the
store sees requests in acceptance order). The last group of a backlog is replayed
while new requests wait to join the spool; they then go to the store, so the spool
empties even when requests keep arriving as fast as it is replayed.

A background replayer writes spooled requests oldest first with their original
accept time as write timestamp (Cassandra ``USING TIMESTAMP``), and removes a file
only after the store acknowledged it. Writes are idempotent by key, so a replay of a
request that had in fact reached the store never double counts, and the accept time is
the write's identity: a row the same request stored before is not a duplicate. A
restart replays whatever the spool holds; SIGTERM leaves it on disk.

A request whose records could not be validated against their blueprints (the decision
service could not be reached) is spooled marked *unchecked*, whatever the store's
state, and validated before it is replayed (``validate``); the replay waits while the
decision service stays unreachable. Records found invalid then are not stored: they
are kept beside the spool file as ``<sequence>.invalid`` (same format) and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loopwise.clock import uuid7_time_ms
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.spool import SpoolDirectory
from loopwise.store.failures import store_failure
from loopwise.store.feedback import FeedbackStore, OutcomeRow, StoredDecision, wall_time_us

log = logging.getLogger("loopwise.feedback.spool")

_MAGIC = b"LWFS"
_HEADER = struct.Struct("<4sBIIQI")  # magic, kind, payload length, crc32, accept µs, records
_DECISIONS, _OUTCOMES = 1, 2
# Set in the kind byte of a request whose records still need validating.
_UNCHECKED = 0x80
_LEN = struct.Struct("<I")
# A store write that has not answered after this long is treated as failed (spooled).
STORE_TIMEOUT_S = 10.0
RETRY_MIN_S, RETRY_MAX_S = 0.2, 5.0
# Consecutive spooled entries replayed together (one store call each, at once): at most
# this many entries, and no entry joins a group that holds this many records already
# (each store call must still finish within its timeout when they share the store).
REPLAY_GROUP, REPLAY_GROUP_RECORDS = 32, 1000


class DamagedEntry(Exception):
    """A spool file whose header or checksum does not match."""


@dataclass
class Entry:
    """One acknowledged request: its validated rows and accept time."""

    accept_us: int
    decisions: list[StoredDecision] = field(default_factory=list)
    outcomes: list[OutcomeRow] = field(default_factory=list)
    orphans: list[OutcomeRow] = field(default_factory=list)
    # The records still need validating against their blueprints (replay validates).
    unchecked: bool = False

    @property
    def records(self) -> int:
        """Rows in the request."""
        return len(self.decisions) + len(self.outcomes) + len(self.orphans)

    def outcome_keys(self) -> set[tuple[str, ...]]:
        """The store keys of the entry's outcomes and orphans (empty for decisions)."""
        return ({("outcome", o.use_case, o.decision_id, o.name, o.outcome_id) for o in self.outcomes}
                | {("orphan", o.use_case, o.decision_id, o.outcome_id) for o in self.orphans})

    def encode(self) -> bytes:
        """Header and payload."""
        if self.decisions:
            kind = _DECISIONS
            payload = fpb.LogDecisionsRequest(decisions=[d.record for d in self.decisions]).SerializeToString()
        else:
            kind = _OUTCOMES
            rows = fpb.LogOutcomesRequest(outcomes=[_outcome_proto(o) for o in self.outcomes]).SerializeToString()
            orphans = fpb.LogOutcomesRequest(outcomes=[_outcome_proto(o) for o in self.orphans]).SerializeToString()
            payload = _LEN.pack(len(rows)) + rows + orphans
        if self.unchecked:
            kind |= _UNCHECKED
        return _HEADER.pack(_MAGIC, kind, len(payload), zlib.crc32(payload), self.accept_us, self.records) + payload

    @classmethod
    def decode(cls, data: bytes) -> Entry:
        """Parse a spool file; DamagedEntry when it is not intact."""
        if len(data) < _HEADER.size:
            raise DamagedEntry("short header")
        magic, kind, length, crc, accept_us, records = _HEADER.unpack_from(data)
        payload = data[_HEADER.size:]
        if magic != _MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
            raise DamagedEntry("bad magic, length or checksum")
        unchecked, kind = bool(kind & _UNCHECKED), kind & ~_UNCHECKED
        if kind == _DECISIONS:
            request = fpb.LogDecisionsRequest.FromString(payload)
            decisions = [StoredDecision(r, uuid7_time_ms(r.decision_id) or 0) for r in request.decisions]
            entry = cls(accept_us, decisions=decisions)
        elif kind == _OUTCOMES:
            (n,) = _LEN.unpack_from(payload)
            rows = fpb.LogOutcomesRequest.FromString(payload[_LEN.size:_LEN.size + n]).outcomes
            orphans = fpb.LogOutcomesRequest.FromString(payload[_LEN.size + n:]).outcomes
            entry = cls(accept_us, outcomes=[_outcome_row(o, True) for o in rows],
                        orphans=[_outcome_row(o, False) for o in orphans])
        else:
            raise DamagedEntry(f"unknown kind {kind}")
        if entry.records != records:
            raise DamagedEntry("record count does not match")
        entry.unchecked = unchecked
        return entry

    @staticmethod
    def unchecked_in(data: bytes) -> bool:
        """Whether a header marks its entry unchecked (False when unreadable)."""
        return len(data) >= _HEADER.size and bool(_HEADER.unpack_from(data)[1] & _UNCHECKED)

    @staticmethod
    def records_in(data: bytes) -> int:
        """The record count from a header (0 when unreadable)."""
        if len(data) < _HEADER.size:
            return 0
        return _HEADER.unpack_from(data)[5]


def _outcome_proto(o: OutcomeRow) -> fpb.Outcome:
    out = fpb.Outcome(use_case=o.use_case, decision_id=o.decision_id, outcome_id=o.outcome_id, name=o.name,
                      value=o.value, label=o.label, item_id=o.item_id)
    out.event_time.FromMilliseconds(o.event_time_ms)
    return out


def _outcome_row(o: fpb.Outcome, joinable: bool) -> OutcomeRow:
    decision_ms = (uuid7_time_ms(o.decision_id) or 0) if joinable else 0
    return OutcomeRow(o.use_case, o.decision_id, o.outcome_id, o.name, o.value, o.label,
                      o.event_time.ToMilliseconds(), decision_ms, o.item_id)


@dataclass
class SpoolCounters:
    """Spool activity: totals since start (records) and the current depth."""

    spooled: int = 0
    replayed: int = 0
    damaged: int = 0
    depth: int = 0
    # Records of unchecked requests found invalid when replayed (kept as *.invalid).
    invalid: int = 0


# Validation of an unchecked entry: (valid part, invalid part, reasons); raises a store
# failure (e.g. Unavailable) when it cannot be done now.
Validate = Callable[[Entry], Awaitable[tuple[Entry, Entry, list[str]]]]


@dataclass
class _Spooled:
    """A spool file being replayed: its entry (validated part), the records it held."""

    path: Path
    entry: Entry
    records: int
    invalid: Entry | None = None


class DurableWrites:
    """Writes to the store, or to the spool when the store fails; replays the spool."""

    def __init__(self, store: FeedbackStore, directory: Path, timeout_s: float = STORE_TIMEOUT_S,
                 on_replayed: Callable[[Entry, object], None] | None = None, validate: Validate | None = None,
                 on_store_state: Callable[[bool], None] | None = None) -> None:
        self.store = store
        self.spool = SpoolDirectory(directory, ".spool", 16)
        self.timeout_s = timeout_s
        self.on_replayed = on_replayed
        self.validate = validate
        self.on_store_state = on_store_state
        # Whether the last store write succeeded (None: none tried yet).
        self.store_ok: bool | None = None
        self.counters = SpoolCounters()
        for path in self.spool.files():
            self.counters.depth += Entry.records_in(path.read_bytes()[:_HEADER.size])
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()  # something was spooled
        self._kick = asyncio.Event()  # retry now (the store or the decision service is back)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the replayer (it first replays what an earlier process spooled)."""
        if self._task is None:
            self._task = asyncio.create_task(self._replay_loop(), name="feedback-spool-replayer")
            if self.counters.depth:
                log.info("spool holds %d records from an earlier run: replaying", self.counters.depth)
                self._wake.set()

    async def stop(self) -> None:
        """Stop the replayer; the spool stays on disk for the next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.counters.depth:
            log.info("stopping with %d records in the spool", self.counters.depth)

    def set_store(self, store: FeedbackStore) -> None:
        """Write to ``store`` from now on (it connected) and retry the spool at once."""
        self.store = store
        self.kick()

    def kick(self) -> None:
        """Retry the spool now instead of after the current backoff."""
        self._kick.set()
        self._wake.set()

    def _store_state(self, ok: bool) -> None:
        if ok != self.store_ok:
            self.store_ok = ok
            if self.on_store_state is not None:
                self.on_store_state(ok)

    async def decisions(self, rows: Sequence[StoredDecision], unchecked: bool = False) -> int | None:
        """Store decisions; the number of new ones, or None when spooled (always when
        ``unchecked``: they are validated on replay)."""
        if not rows:
            return 0
        return await self._write(Entry(wall_time_us(), decisions=list(rows), unchecked=unchecked))

    async def outcomes(self, rows: Sequence[OutcomeRow], orphans: Sequence[OutcomeRow], unchecked: bool = False
                       ) -> tuple[list[bool], list[bool]] | None:
        """Store outcomes and orphans; which this request stored (False: a duplicate),
        or None when spooled (always when ``unchecked``)."""
        if not rows and not orphans:
            return [], []
        return await self._write(Entry(wall_time_us(), outcomes=list(rows), orphans=list(orphans),
                                       unchecked=unchecked))

    async def _apply(self, entry: Entry):
        if not entry.records:
            return None
        if entry.decisions:
            work = self.store.put_decisions(entry.decisions, entry.accept_us)
        else:
            work = self.store.put_outcomes(entry.outcomes, entry.orphans, entry.accept_us)
        return await asyncio.wait_for(work, self.timeout_s + entry.records / 1000)

    async def _write(self, entry: Entry):
        while True:
            if self.counters.depth == 0 and not entry.unchecked:
                try:
                    result = await self._apply(entry)
                except Exception as exc:
                    if not store_failure(exc):
                        raise
                    self._store_state(False)
                    log.warning("store write of %d records failed (%s: %s): spooling", entry.records,
                                type(exc).__name__, exc)
                else:
                    self._store_state(True)
                    return result
                await self._append(entry, behind_spool_only=False)
                return None
            if await self._append(entry, behind_spool_only=not entry.unchecked):
                return None
            # The spool emptied while this request waited to join it: to the store.

    async def _append(self, entry: Entry, behind_spool_only: bool) -> bool:
        """Spool ``entry``; with ``behind_spool_only``, only while the spool is not empty
        (False, nothing written, once it is)."""
        data = entry.encode()
        async with self._lock:
            if behind_spool_only and self.counters.depth == 0:
                return False
            self.counters.depth += entry.records
            seq = self.spool.take_seq()
            try:
                await asyncio.to_thread(self.spool.write, data, seq)
            except BaseException:
                self.counters.depth -= entry.records
                raise
        self.counters.spooled += entry.records
        self._wake.set()
        return True

    async def _replay_loop(self) -> None:
        delay = RETRY_MIN_S
        while True:
            if self.counters.depth == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 5.0)
                continue
            self._kick.clear()
            if await self._replay_files():
                delay = RETRY_MIN_S
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def _replay_files(self) -> bool:
        """Replay spool files oldest first; False at the first store failure (or when an
        unchecked entry cannot be validated yet).

        Consecutive entries are stored together, up to REPLAY_GROUP entries (or about
        REPLAY_GROUP_RECORDS records) at a time, each with its own write time:
        decisions are idempotent on their id and outcomes do not depend on them. An
        outcome entry that repeats an outcome key of an earlier entry in the group (a
        retried request) starts a new group, so that the first one stored stays, as in
        acceptance order."""
        async with self._lock:  # files listed after every append begun so far completed
            files = await asyncio.to_thread(self.spool.files)
            if self.store_ok and len(files) <= REPLAY_GROUP and self.counters.depth <= REPLAY_GROUP_RECORDS:
                # The tail of the backlog: replayed while new requests wait to join the
                # spool (they then go to the store), so that the spool empties even when
                # requests arrive as fast as it is replayed. Not with an unchecked
                # entry, whose validation may wait for the decision service.
                loaded = await asyncio.to_thread(lambda: [(path, path.read_bytes()) for path in files])
                if not any(Entry.unchecked_in(data) for _, data in loaded):
                    return await self._replay(loaded)
        return await self._replay([(path, None) for path in files])

    async def _replay(self, files: Sequence[tuple[Path, bytes | None]]) -> bool:
        """Replay ``files`` (contents read here when None) in order; see _replay_files."""
        group: list[_Spooled] = []
        keys: set[tuple[str, ...]] = set()
        for path, data in files:
            if data is None:
                data = await asyncio.to_thread(path.read_bytes)
            try:
                entry = Entry.decode(data)
            except DamagedEntry as exc:
                records = Entry.records_in(data)
                log.error("damaged feedback spool file %s (%s): set aside, %d records", path, exc, records)
                await asyncio.to_thread(self.spool.set_aside, path)
                self.counters.depth -= records
                self.counters.damaged += records
                continue
            item = _Spooled(path, entry, entry.records)
            if entry.unchecked and self.validate is not None:
                try:
                    item.entry, item.invalid, reasons = await self.validate(entry)
                except Exception as exc:  # any failure: keep the file, retry later
                    log.warning("spooled request %s cannot be validated yet (%s: %s)", path.name,
                                type(exc).__name__, exc)
                    if group:
                        await self._replay_group(group)
                    return False
                if item.invalid.records:
                    log.error("spooled request %s: %d invalid records not stored (kept in %s): %s", path.name,
                              item.invalid.records, path.with_suffix(".invalid").name, "; ".join(reasons[:5]))
            entry_keys = item.entry.outcome_keys()
            if (len(group) >= REPLAY_GROUP or sum(g.entry.records for g in group) >= REPLAY_GROUP_RECORDS
                    or not keys.isdisjoint(entry_keys)):
                if not await self._replay_group(group):
                    return False
                group, keys = [], set()
            group.append(item)
            keys |= entry_keys
        if group and not await self._replay_group(group):
            return False
        if files:
            log.info("spool replayed up to %s; %d records left", files[-1][0].name, self.counters.depth)
        return True

    async def _replay_group(self, group: Sequence[_Spooled]) -> bool:
        """Store the entries of ``group`` (concurrently), then delete their files; False,
        keeping every file, when any of them fails."""
        results = await asyncio.gather(*(self._apply(item.entry) for item in group), return_exceptions=True)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            if store_failure(failed):
                self._store_state(False)
            log.warning("spool replay of %s waits for the store (%s: %s)", group[0].path.name,
                        type(failed).__name__, failed)
            return False
        self._store_state(True)
        for item in group:
            if item.invalid is not None and item.invalid.records:
                await asyncio.to_thread(self.spool.keep_beside, item.path, ".invalid", item.invalid.encode())
        await asyncio.to_thread(self.spool.remove, [item.path for item in group])
        for item, result in zip(group, results, strict=True):
            self.counters.depth -= item.records
            self.counters.replayed += item.entry.records
            self.counters.invalid += item.records - item.entry.records
            if self.on_replayed is not None:
                self.on_replayed(item.entry, result)
        return True
