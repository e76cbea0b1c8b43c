"""The feedback store on Cassandra (docs/architecture.md §7, docs/storage.md "## feedback").

Partitions: decisions and outcomes by ``(use_case, day, bucket)`` where ``day`` is the
UTC day (days since 1970-01-01) of the decision id's UUIDv7 timestamp and ``bucket =
crc32(decision_id) % BUCKETS``: an outcome finds its decision's partition from its
id alone. Orphan outcomes by ``(use_case, day of the event time)``. A small
``feedback_days`` table lists the days holding partitions of a use case, so scans and
stats visit only those days; ``decision_versions`` lists the blueprint versions.

Writes are upserts (idempotent by key), sent with ``USING TIMESTAMP`` (the accept time
of the request, so a spool replay never overwrites newer data) through the
connection's bounded write window. Which rows are new is found by reading the keys
of the batch's partitions first (one query per partition), with their write time: a
row whose write time is this request's accept time was written by this very request
(a first attempt that failed part way, now replayed from the spool), so it is written
again in full (with its index rows) and is not a duplicate. Two writers racing on the
same key may both report it as new; the stored data is one row either way.

Reads never block the event loop: every query is an async driver call, paged with
``paging_state``.
"""

from __future__ import annotations

import asyncio
import heapq
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loopwise.clock import uuid7_time_ms
from loopwise.store.cassandra import CassandraConnection, CassandraUrl
from loopwise.store.feedback import (
    _DECISION_COLUMNS,
    _F64,
    CountingRule,
    FeedbackStore,
    OutcomeRow,
    StoredDecision,
    StoredStats,
    _decision_from_row,
    ranking_blob,
    unit_digest,
    wall_time_us,
)

# Hash buckets per (use case, day): a busy day is spread over 16 partitions.
BUCKETS = 16
DAY_MS = 86_400_000
# Rows per page of a paged read; values per IN (...) list.
FETCH_ROWS = 2000
IN_CHUNK = 100
MIGRATIONS = Path(__file__).resolve().parent / "cql" / "feedback"

_INSERT_DECISION = (
    "INSERT INTO decisions (use_case, day, bucket, decision_time_ms, decision_id, blueprint_version, unit_id, "
    "features, action_index, action, score, action_probabilities, model_version, arm, explored, fallback, shadow, "
    "action_scores, serving_latency_ms, undelivered, ranking) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "USING TIMESTAMP ?"
)
# Column positions in _DECISION_COLUMNS rows.
_FALLBACK, _UNDELIVERED = 13, 17
_INSERT_OUTCOME = (
    "INSERT INTO outcomes (use_case, day, bucket, decision_id, outcome_name, outcome_id, value, label, "
    "event_time_ms, decision_time_ms, item_id) VALUES (?,?,?,?,?,?,?,?,?,?,?) USING TIMESTAMP ?"
)
_INSERT_ORPHAN = (
    "INSERT INTO orphan_outcomes (use_case, day, decision_id, outcome_id, outcome_name, value, label, "
    "event_time_ms, item_id) VALUES (?,?,?,?,?,?,?,?,?) USING TIMESTAMP ?"
)
_INSERT_BY_UNIT = (
    "INSERT INTO decisions_by_unit (use_case, unit_id, decision_id, decision_time_ms) VALUES (?,?,?,?) "
    "USING TIMESTAMP ?"
)
_INSERT_DAY = "INSERT INTO feedback_days (use_case, kind, day) VALUES (?,?,?) USING TIMESTAMP ?"
_INSERT_VERSION = "INSERT INTO decision_versions (use_case, blueprint_version) VALUES (?,?) USING TIMESTAMP ?"
_OUTCOME_SELECT = (
    "SELECT use_case, decision_id, outcome_id, outcome_name, value, label, event_time_ms, decision_time_ms, "
    "item_id FROM outcomes WHERE use_case = ? AND day = ? AND bucket = ?"
)


def day_of(ms: int) -> int:
    """The UTC day (days since 1970-01-01) of a time in ms."""
    return ms // DAY_MS


def bucket_of(decision_id: str) -> int:
    """The stable hash bucket of a (canonical) decision id."""
    return zlib.crc32(decision_id.encode()) % BUCKETS


def id_prefix(ms: int) -> str:
    """The text every canonical UUIDv7 of millisecond ``ms`` starts with; ids of ``ms``
    sort after it and before ``id_prefix(ms + 1)``."""
    h = f"{ms:012x}"
    return f"{h[:8]}-{h[8:12]}"


def _outcome(row: Sequence[Any]) -> OutcomeRow:
    return OutcomeRow(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                      (row[8] or "") if len(row) > 8 else "")


def _digest_bucket(digest: str) -> int:
    """The register bucket of a unit digest: its first hex digit."""
    return int(digest[0], 16)


def _interpretable(rule: CountingRule, features: bytes | None, action_index: int | None,
                   probabilities: bytes | None) -> bool:
    """A stored decision fits its version's rule: as many features, a probability for
    its action (the same test as the SQLite backend's)."""
    if rule.feature_count >= 0 and len(features or b"") != 4 * rule.feature_count:
        return False
    return action_index is not None and 0 <= action_index and 8 * action_index < len(probabilities or b"")


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class CassandraFeedbackStore(FeedbackStore):
    """Decisions, outcomes and orphan outcomes in a Cassandra keyspace."""

    def __init__(self, conn: CassandraConnection) -> None:
        self.conn = conn

    @classmethod
    def open(cls, url: str, migrate: bool = True) -> CassandraFeedbackStore:
        """Connect, create the keyspace and apply the feedback migrations (with
        ``migrate`` false, only check that ``loopwise migrate`` applied them)."""
        from cassandra.policies import ExponentialReconnectionPolicy

        conn = CassandraConnection(CassandraUrl.parse(url))
        # Find a restarted node within seconds (the default backs off to 10 minutes).
        conn.cluster.reconnection_policy = ExponentialReconnectionPolicy(0.5, 5.0)
        try:
            if migrate:
                conn.apply_migrations("feedback", MIGRATIONS)
            else:
                conn.require_migrations("feedback", MIGRATIONS)
        except BaseException:
            conn.close()
            raise
        return cls(conn)

    # ---- paged reads ------------------------------------------------------------------

    async def _pages(self, cql: str, params: Sequence[Any], fetch_size: int = FETCH_ROWS
                     ) -> AsyncIterator[list[Any]]:
        """Every page of a prepared query, as lists of rows, without blocking the loop."""
        statement = self.conn.prepare(cql)
        paging_state = None
        loop = asyncio.get_running_loop()
        while True:
            bound = statement.bind(params)
            bound.fetch_size = fetch_size
            future = self.conn.session.execute_async(bound, paging_state=paging_state)
            done: asyncio.Future = loop.create_future()

            def ok(rows: Any, future: Any = future, done: asyncio.Future = done) -> None:
                page = (list(rows or []), future._paging_state)
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(page))

            def fail(exc: BaseException, done: asyncio.Future = done) -> None:
                loop.call_soon_threadsafe(lambda: done.done() or done.set_exception(exc))

            future.add_callbacks(ok, fail)
            rows, paging_state = await done
            if rows:
                yield rows
            if not paging_state:
                return

    async def _all(self, cql: str, params: Sequence[Any]) -> list[Any]:
        out: list[Any] = []
        async for page in self._pages(cql, params):
            out.extend(page)
        return out

    async def _days(self, use_case: str, kind: str, first: int | None = None, last: int | None = None) -> list[int]:
        if first is None:
            rows = await self._all("SELECT day FROM feedback_days WHERE use_case = ? AND kind = ?", (use_case, kind))
        else:
            rows = await self._all(
                "SELECT day FROM feedback_days WHERE use_case = ? AND kind = ? AND day >= ? AND day <= ?",
                (use_case, kind, first, last),
            )
        return [r[0] for r in rows]

    # ---- writes -----------------------------------------------------------------------

    async def _insert_decisions(self, decisions: Sequence[StoredDecision], write_time_us: int | None) -> int:
        ts = write_time_us or wall_time_us()
        partitions: dict[tuple[str, int, int], dict[tuple[int, str], StoredDecision]] = defaultdict(dict)
        for d in decisions:
            key = (d.record.use_case, day_of(d.decision_time_ms), bucket_of(d.record.decision_id))
            partitions[key].setdefault((d.decision_time_ms, d.record.decision_id), d)

        async def existing(key: tuple[str, int, int], times: list[int]) -> set[tuple[int, str]]:
            """Keys stored by another write (a key written with this write's time is
            this request's own, possibly partial, first attempt: written again)."""
            found: set[tuple[int, str]] = set()
            for chunk in _chunks(times, IN_CHUNK):
                rows = await self._all(
                    "SELECT decision_time_ms, decision_id, WRITETIME(blueprint_version) FROM decisions "
                    "WHERE use_case = ? AND day = ? AND bucket = ? AND decision_time_ms IN ?", (*key, list(chunk)))
                found.update((r[0], r[1]) for r in rows if r[2] != ts)
            return found

        keys = list(partitions)
        found = await asyncio.gather(*(existing(k, sorted({t for t, _ in partitions[k]})) for k in keys))
        writes: list[tuple[str, Sequence[Any]]] = []
        days: set[tuple[str, int]] = set()
        versions: set[tuple[str, int]] = set()
        new = 0
        for key, present in zip(keys, found, strict=True):
            for (t, decision_id), d in partitions[key].items():
                r = d.record
                # The index rows of every decision of the batch (upserts of fixed keys):
                # a request that failed part way cannot leave a stored row unlisted.
                days.add((key[0], key[1]))
                versions.add((key[0], r.blueprint_version))
                if (t, decision_id) in present:
                    continue
                writes.append((_INSERT_DECISION, (
                    *key, t, decision_id, r.blueprint_version, r.unit_id, r.features, r.action_index, r.action,
                    r.score, np.asarray(r.action_probabilities, _F64).tobytes(), r.model_version, r.arm,
                    bool(r.explored), bool(r.fallback), bool(r.shadow),
                    np.asarray(r.action_scores, _F64).tobytes(), r.serving_latency_ms, bool(r.undelivered),
                    ranking_blob(r), ts)))
                new += 1
                if r.unit_id:
                    writes.append((_INSERT_BY_UNIT, (key[0], r.unit_id, decision_id, t, ts)))
        writes += [(_INSERT_DAY, (uc, "decisions", day, ts)) for uc, day in days]
        writes += [(_INSERT_VERSION, (uc, v, ts)) for uc, v in versions]
        await self.conn.write_many(writes)
        return new

    async def put_outcomes(self, outcomes: Sequence[OutcomeRow], orphans: Sequence[OutcomeRow],
                           write_time_us: int | None = None) -> tuple[list[bool], list[bool]]:
        ts = write_time_us or wall_time_us()
        by_partition: dict[tuple[str, int, int], list[int]] = defaultdict(list)
        for i, o in enumerate(outcomes):
            by_partition[(o.use_case, day_of(o.decision_time_ms), bucket_of(o.decision_id))].append(i)
        orphan_partitions: dict[tuple[str, int], list[int]] = defaultdict(list)
        for i, o in enumerate(orphans):
            orphan_partitions[(o.use_case, day_of(o.event_time_ms))].append(i)

        # Keys stored by another write; a key written with this write's time is this
        # request's own first attempt (replayed from the spool): written again, not a duplicate.
        async def outcome_keys(key: tuple[str, int, int], ids: list[str]) -> set[tuple[str, str, str]]:
            found: set[tuple[str, str, str]] = set()
            for chunk in _chunks(ids, IN_CHUNK):
                rows = await self._all(
                    "SELECT decision_id, outcome_name, outcome_id, WRITETIME(value) FROM outcomes "
                    "WHERE use_case = ? AND day = ? AND bucket = ? AND decision_id IN ?", (*key, list(chunk)))
                found.update((r[0], r[1], r[2]) for r in rows if r[3] != ts)
            return found

        async def orphan_keys(key: tuple[str, int], ids: list[str]) -> set[tuple[str, str]]:
            found: set[tuple[str, str]] = set()
            for chunk in _chunks(ids, IN_CHUNK):
                rows = await self._all(
                    "SELECT decision_id, outcome_id, WRITETIME(value) FROM orphan_outcomes WHERE use_case = ? "
                    "AND day = ? AND decision_id IN ?", (*key, list(chunk)))
                found.update((r[0], r[1]) for r in rows if r[2] != ts)
            return found

        okeys, pkeys = list(by_partition), list(orphan_partitions)
        found = await asyncio.gather(
            *(outcome_keys(k, sorted({outcomes[i].decision_id for i in by_partition[k]})) for k in okeys),
            *(orphan_keys(k, sorted({orphans[i].decision_id for i in orphan_partitions[k]})) for k in pkeys),
        )
        writes: list[tuple[str, Sequence[Any]]] = []
        days: set[tuple[str, str, int]] = set()
        new = [False] * len(outcomes)
        for key, present in zip(okeys, found[:len(okeys)], strict=True):
            for i in by_partition[key]:
                o = outcomes[i]
                row_key = (o.decision_id, o.name, o.outcome_id)
                days.add((key[0], "outcomes", key[1]))
                if row_key in present:
                    continue
                present.add(row_key)  # type: ignore[arg-type]
                new[i] = True
                writes.append((_INSERT_OUTCOME, (*key, o.decision_id, o.name, o.outcome_id, o.value, o.label,
                                                 o.event_time_ms, o.decision_time_ms, o.item_id, ts)))
        new_orphans = [False] * len(orphans)
        for key, present in zip(pkeys, found[len(okeys):], strict=True):
            for i in orphan_partitions[key]:
                o = orphans[i]
                days.add((key[0], "orphans", key[1]))
                if (o.decision_id, o.outcome_id) in present:
                    continue
                present.add((o.decision_id, o.outcome_id))  # type: ignore[arg-type]
                new_orphans[i] = True
                writes.append((_INSERT_ORPHAN, (*key, o.decision_id, o.outcome_id, o.name, o.value, o.label,
                                                o.event_time_ms, o.item_id, ts)))
        writes += [(_INSERT_DAY, (uc, kind, day, ts)) for uc, kind, day in days]
        await self.conn.write_many(writes)
        return new, new_orphans

    # ---- reads ------------------------------------------------------------------------

    async def get_decision(self, use_case: str, decision_id: str) -> StoredDecision | None:
        ms = uuid7_time_ms(decision_id)
        if ms is None:
            return None
        rows = await self.conn.execute(
            f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE use_case = ? AND day = ? AND bucket = ? "
            "AND decision_time_ms = ? AND decision_id = ?",
            (use_case, day_of(ms), bucket_of(decision_id), ms, decision_id),
        )
        return _decision_from_row(rows[0]) if rows else None

    async def outcomes_of(self, use_case: str, decision_id: str) -> list[OutcomeRow]:
        ms = uuid7_time_ms(decision_id)
        if ms is None:
            return []
        rows = await self._all(_OUTCOME_SELECT + " AND decision_id = ?",
                               (use_case, day_of(ms), bucket_of(decision_id), decision_id))
        return sorted(map(_outcome, rows), key=lambda o: (o.event_time_ms, o.outcome_id))

    async def outcomes_between(self, use_case: str, start_ms: int, end_ms: int) -> list[OutcomeRow]:
        if end_ms < start_ms:
            return []
        lo, hi = id_prefix(max(start_ms, 0)), id_prefix(end_ms + 1)
        days = await self._days(use_case, "outcomes", day_of(start_ms), day_of(end_ms))
        parts = await asyncio.gather(*(
            self._all(_OUTCOME_SELECT + " AND decision_id > ? AND decision_id < ?", (use_case, day, b, lo, hi))
            for day in days for b in range(BUCKETS)
        ))
        rows = [_outcome(r) for part in parts for r in part]
        rows = [o for o in rows if start_ms <= o.decision_time_ms <= end_ms]
        return sorted(rows, key=lambda o: (o.event_time_ms, o.outcome_id))

    async def _merged(self, use_case: str, start_ms: int, end_ms: int, include_fallback: bool,
                      after: tuple[int, str] | None, fetch_size: int,
                      include_undelivered: bool = False) -> AsyncIterator[StoredDecision]:
        """Decisions in (time, id) order: per day, a k-way merge of the bucket streams."""
        if end_ms <= start_ms:
            return
        cursor = after if after is not None and after >= (start_ms, "") else (start_ms, "")
        cql = (f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE use_case = ? AND day = ? AND bucket = ? "
               "AND (decision_time_ms, decision_id) > (?, ?) AND (decision_time_ms) < (?)")
        for day in await self._days(use_case, "decisions", day_of(cursor[0]), day_of(end_ms - 1)):
            streams = [self._pages(cql, (use_case, day, b, cursor[0], cursor[1], end_ms), fetch_size)
                       for b in range(BUCKETS)]
            try:
                firsts = await asyncio.gather(*(anext(stream, None) for stream in streams))
                heap = [(page[0][2], page[0][0], b, 0, page) for b, page in enumerate(firsts) if page]
                heapq.heapify(heap)
                while heap:
                    _, _, b, i, page = heapq.heappop(heap)
                    row = page[i]
                    if (include_fallback or not row[_FALLBACK]) and (include_undelivered or not row[_UNDELIVERED]):
                        yield _decision_from_row(row)
                    if i + 1 < len(page):
                        heapq.heappush(heap, (page[i + 1][2], page[i + 1][0], b, i + 1, page))
                    else:
                        nxt = await anext(streams[b], None)
                        if nxt:
                            heapq.heappush(heap, (nxt[0][2], nxt[0][0], b, 0, nxt))
            finally:
                for stream in streams:
                    await stream.aclose()

    async def decision_page(
        self, use_case: str, start_ms: int, end_ms: int, include_fallback: bool,
        after: tuple[int, str] | None, limit: int, include_undelivered: bool = False,
    ) -> list[StoredDecision]:
        out: list[StoredDecision] = []
        if limit <= 0:
            return out
        merged = self._merged(use_case, start_ms, end_ms, include_fallback, after, min(limit, FETCH_ROWS),
                              include_undelivered)
        try:
            async for d in merged:
                out.append(d)
                if len(out) >= limit:
                    break
        finally:
            await merged.aclose()
        return out

    async def scan_decisions(self, use_case: str, start_ms: int, end_ms: int, include_fallback: bool,
                             page_rows: int, include_undelivered: bool = False
                             ) -> AsyncIterator[list[StoredDecision]]:
        page: list[StoredDecision] = []
        fetch = max(64, min(FETCH_ROWS, 2 * page_rows // BUCKETS))
        merged = self._merged(use_case, start_ms, end_ms, include_fallback, None, fetch, include_undelivered)
        try:
            async for d in merged:
                page.append(d)
                if len(page) >= page_rows:
                    yield page
                    page = []
        finally:
            await merged.aclose()
        if page:
            yield page

    async def blueprint_versions(self, use_case: str) -> list[int]:
        rows = await self._all("SELECT blueprint_version FROM decision_versions WHERE use_case = ?", (use_case,))
        return sorted(r[0] for r in rows)

    async def orphans(self, use_case: str) -> list[OutcomeRow]:
        parts = await asyncio.gather(*(
            self._all("SELECT use_case, decision_id, outcome_id, outcome_name, value, label, event_time_ms, "
                      "item_id FROM orphan_outcomes WHERE use_case = ? AND day = ?", (use_case, day))
            for day in await self._days(use_case, "orphans")
        ))
        rows = [OutcomeRow(*r[:7], 0, r[7] or "") for part in parts for r in part]
        return sorted(rows, key=lambda o: (o.event_time_ms, o.outcome_id))

    async def stats(self, use_case: str, rules: Mapping[int, CountingRule], now_ms: int,
                    lost_before_ms: int | None = None) -> StoredStats:
        """Counts from a full read of the use case's partitions (cost: every row of
        every retained day; see docs/storage.md)."""
        days = sorted(set(await self._days(use_case, "decisions")) | set(await self._days(use_case, "outcomes")))
        totals: dict[str, int] = defaultdict(int)

        async def partition(day: int, b: int) -> None:
            stored: set[str] = set()  # every stored decision id, whatever it holds
            decisions: dict[str, tuple[int, CountingRule]] = {}  # the delivered, interpretable ones
            async for page in self._pages(
                    "SELECT decision_id, decision_time_ms, blueprint_version, fallback, undelivered, features, "
                    "action_index, action_probabilities FROM decisions WHERE use_case = ? AND day = ? AND bucket = ?",
                    (use_case, day, b)):
                for decision_id, t, version, fallback, undelivered, features, action, probabilities in page:
                    stored.add(decision_id)
                    rule = rules.get(version)
                    if rule is None or not _interpretable(rule, features, action, probabilities):
                        totals["invalid_records"] += 1
                        continue
                    if undelivered:
                        totals["undelivered_decisions"] += 1
                        continue
                    decisions[decision_id] = (t, rule)
                    totals["decisions"] += 1
                    totals["fallback_decisions"] += bool(fallback)
                    if t + rule.window_ms <= now_ms:
                        totals["closed_windows"] += 1
            joined: set[str] = set()
            async for page in self._pages(
                    "SELECT decision_id, outcome_name, event_time_ms, decision_time_ms FROM outcomes "
                    "WHERE use_case = ? AND day = ? AND bucket = ?", (use_case, day, b)):
                for decision_id, name, event_ms, decision_ms in page:
                    totals["outcomes"] += 1
                    if decision_id not in stored:
                        totals["unmatched_outcomes"] += 1
                        if lost_before_ms is not None and decision_ms < lost_before_ms:
                            totals["lost_decision_outcomes"] += 1
                        continue
                    d = decisions.get(decision_id)
                    if d is None:  # undelivered or not interpretable
                        continue
                    t, rule = d
                    if rule.outcome_names and name not in rule.outcome_names:
                        continue
                    if t <= event_ms <= t + rule.window_ms:
                        joined.add(decision_id)
                    elif event_ms > t + rule.window_ms:
                        totals["late_outcomes"] += 1
            totals["joined_decisions"] += len(joined)

        for day in days:
            await asyncio.gather(*(partition(day, b) for b in range(BUCKETS)))
        for day in await self._days(use_case, "orphans"):
            async for page in self._pages("SELECT outcome_id FROM orphan_outcomes WHERE use_case = ? AND day = ?",
                                          (use_case, day)):
                totals["orphan_outcomes"] += len(page)
        return StoredStats(**totals)

    # ---- privacy and retention ----------------------------------------------------------

    async def deletion_times(self, use_case: str, digests: Sequence[str]) -> dict[str, int]:
        by_bucket: dict[int, list[str]] = defaultdict(list)
        for digest in digests:
            by_bucket[_digest_bucket(digest)].append(digest)
        reads = [self._all("SELECT unit_digest, deleted_at_ms FROM unit_deletions WHERE use_case = ? "
                           "AND bucket = ? AND unit_digest IN ?", (use_case, bucket, list(chunk)))
                 for bucket, found in by_bucket.items() for chunk in _chunks(found, IN_CHUNK)]
        return {row[0]: row[1] for rows in await asyncio.gather(*reads) for row in rows}

    async def delete_unit(self, use_case: str, unit_ids: Sequence[str], deleted_at_ms: int) -> tuple[int, int]:
        # Tombstones carry the current wall time: newer than any accept-time write, so a
        # later spool replay of an older write cannot bring the data back. Deliveries
        # accepted later (the decision service's spool) are refused by the register.
        ts = wall_time_us()
        units = [u for u in dict.fromkeys(unit_ids) if u]
        await self.conn.write_many(
            ("INSERT INTO unit_deletions (use_case, bucket, unit_digest, deleted_at_ms) VALUES (?,?,?,?) "
             "USING TIMESTAMP ?", (use_case, _digest_bucket(d), d, deleted_at_ms, ts))
            for d in (unit_digest(use_case, u) for u in units))
        decisions = outcomes = 0
        for unit_id in units:
            index = await self._all("SELECT decision_id, decision_time_ms FROM decisions_by_unit "
                                    "WHERE use_case = ? AND unit_id = ?", (use_case, unit_id))
            writes: list[tuple[str, Sequence[Any]]] = []
            for decision_id, t in index:
                key = (use_case, day_of(t), bucket_of(decision_id))
                present = await self._all("SELECT decision_id FROM decisions WHERE use_case = ? AND day = ? "
                                          "AND bucket = ? AND decision_time_ms = ? AND decision_id = ?",
                                          (*key, t, decision_id))
                decisions += len(present)
                outcomes += len(await self._all(f"{_OUTCOME_SELECT} AND decision_id = ?", (*key, decision_id)))
                writes.append(("DELETE FROM decisions USING TIMESTAMP ? WHERE use_case = ? AND day = ? "
                               "AND bucket = ? AND decision_time_ms = ? AND decision_id = ?",
                               (ts, *key, t, decision_id)))
                writes.append(("DELETE FROM outcomes USING TIMESTAMP ? WHERE use_case = ? AND day = ? "
                               "AND bucket = ? AND decision_id = ?", (ts, *key, decision_id)))
            writes.append(("DELETE FROM decisions_by_unit USING TIMESTAMP ? WHERE use_case = ? AND unit_id = ?",
                           (ts, use_case, unit_id)))
            await self.conn.write_many(writes)
        return decisions, outcomes

    async def purge_before(self, use_case: str, before_ms: int) -> None:
        ts, last = wall_time_us(), day_of(before_ms)
        writes: list[tuple[str, Sequence[Any]]] = []
        for kind, table, column, bound in (("decisions", "decisions", "decision_time_ms", before_ms),
                                           ("outcomes", "outcomes", "decision_id", id_prefix(before_ms))):
            for day in await self._days(use_case, kind, 0, last):
                for b in range(BUCKETS):
                    if day < last:  # the whole partition is past retention
                        writes.append((f"DELETE FROM {table} USING TIMESTAMP ? WHERE use_case = ? AND day = ? "
                                       "AND bucket = ?", (ts, use_case, day, b)))
                    else:
                        writes.append((f"DELETE FROM {table} USING TIMESTAMP ? WHERE use_case = ? AND day = ? "
                                       f"AND bucket = ? AND {column} < ?", (ts, use_case, day, b, bound)))
                if day < last:
                    writes.append(("DELETE FROM feedback_days USING TIMESTAMP ? WHERE use_case = ? AND kind = ? "
                                   "AND day = ?", (ts, use_case, kind, day)))
        for day in await self._days(use_case, "orphans", 0, last - 1):
            writes.append(("DELETE FROM orphan_outcomes USING TIMESTAMP ? WHERE use_case = ? AND day = ?",
                           (ts, use_case, day)))
        await self.conn.write_many(writes)

    def close(self) -> None:
        self.conn.close()
