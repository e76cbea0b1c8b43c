"""The feedback service's store: decisions, outcomes and orphan outcomes.

A small backend-neutral interface (:class:`FeedbackStore`) with the embedded SQLite
backend. The shape follows the Cassandra model of docs/architecture.md §7 so that a Cassandra
backend can implement the same methods:

- decisions keyed by ``(use_case, decision_id)``, read in ``(decision_time_ms,
  decision_id)`` order (the clustering order);
- outcomes keyed by ``(use_case, decision_id, outcome_id)`` and carrying the decision
  time derived from the UUIDv7 id, so they can be read by decision-time range
  without a lookup;
- orphan outcomes (ids that are not a plausible UUIDv7) in their own table.

Every write is an ``INSERT OR IGNORE``: retries are no-ops, and the number of rows
actually inserted tells duplicates apart. Writes take the request's accept time in µs
(``write_time_us``): Cassandra writes with ``USING TIMESTAMP`` so that a spool replay
never overwrites newer data; SQLite keeps the first stored row. The accept time is also
the write's identity: an outcome already stored with the same accept time was stored by
the same request (a spool replay of a request whose first attempt reached the store),
so it counts as stored by this request, not as a duplicate.

Decisions flagged ``undelivered`` (made, but the answer never reached the caller) are
stored and counted apart; scans (training data) leave them out.

``open_feedback_store`` picks the backend by URL scheme: ``sqlite:///…`` (default) or
``cassandra://…`` (:mod:`loopwise.store.feedback_cassandra`).
"""

from __future__ import annotations

import abc
import hashlib
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.settings import Settings
from loopwise.store.sqlite import SqliteDatabase, insert_rows, parse_store_url

_F64 = np.dtype("<f8")


@dataclass(frozen=True)
class StoredDecision:
    """A stored decision: the record as logged and its decision time (from the id)."""

    record: fpb.DecisionRecord
    decision_time_ms: int


@dataclass
class DecisionColumns:
    """A page of decisions as columns: what a training read needs, without building
    a record per row. Blobs are as stored (features little-endian float32,
    action probabilities little-endian float64)."""

    decision_ids: list[str]
    times_ms: np.ndarray  # int64
    blueprint_versions: np.ndarray  # int64
    features: list[bytes]
    action_indices: np.ndarray  # int64
    action_probabilities: list[bytes]
    model_versions: np.ndarray  # int64
    arms: list[str]
    explored: np.ndarray  # bool
    latencies_ms: np.ndarray  # float64 serving latency, 0 where not measured

    def __len__(self) -> int:
        return len(self.decision_ids)

    @classmethod
    def of(cls, decisions: Sequence[StoredDecision]) -> DecisionColumns:
        """Columns of stored decisions (backends without a columnar read)."""
        records = [d.record for d in decisions]
        return cls(
            [r.decision_id for r in records],
            np.array([d.decision_time_ms for d in decisions], dtype=np.int64),
            np.array([r.blueprint_version for r in records], dtype=np.int64),
            [r.features for r in records],
            np.array([r.action_index for r in records], dtype=np.int64),
            [np.asarray(r.action_probabilities, _F64).tobytes() for r in records],
            np.array([r.model_version for r in records], dtype=np.int64),
            [r.arm for r in records],
            np.array([r.explored for r in records], dtype=bool),
            np.array([r.serving_latency_ms for r in records], dtype=np.float64),
        )

    @classmethod
    def concat(cls, parts: Sequence[DecisionColumns]) -> DecisionColumns:
        """One page from several, in order."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            [i for p in parts for i in p.decision_ids],
            np.concatenate([p.times_ms for p in parts]),
            np.concatenate([p.blueprint_versions for p in parts]),
            [b for p in parts for b in p.features],
            np.concatenate([p.action_indices for p in parts]),
            [b for p in parts for b in p.action_probabilities],
            np.concatenate([p.model_versions for p in parts]),
            [a for p in parts for a in p.arms],
            np.concatenate([p.explored for p in parts]),
            np.concatenate([p.latencies_ms for p in parts]),
        )

    def take(self, index: np.ndarray) -> DecisionColumns:
        """The rows at ``index`` (int positions), in that order."""
        at = index.tolist()
        return DecisionColumns(
            [self.decision_ids[i] for i in at], self.times_ms[index], self.blueprint_versions[index],
            [self.features[i] for i in at], self.action_indices[index],
            [self.action_probabilities[i] for i in at], self.model_versions[index],
            [self.arms[i] for i in at], self.explored[index], self.latencies_ms[index],
        )


class OutcomeRow(NamedTuple):
    """One outcome as stored: a tuple of the ``outcomes`` table's columns in order
    (without the write time), so that a store binds it without copying its fields."""

    use_case: str
    decision_id: str
    outcome_id: str
    name: str
    value: float
    label: str
    event_time_ms: int
    # Derived from the decision id (UUIDv7), or 0 for an orphan.
    decision_time_ms: int
    # Ranking: the shown item the outcome belongs to (Outcome.item_id); "" otherwise.
    item_id: str = ""


@dataclass(frozen=True)
class CountingRule:
    """What the stats need of one blueprint version's reward spec: the window and
    the outcome names that count (empty: all)."""

    window_ms: int
    outcome_names: frozenset[str]
    # Features of the version: a decision whose features blob holds another number of
    # float32 values cannot be interpreted (-1: not checked).
    feature_count: int = -1


@dataclass(frozen=True)
class StoredStats:
    """Counts computed from the stored rows of one use case."""

    decisions: int = 0
    fallback_decisions: int = 0
    closed_windows: int = 0
    outcomes: int = 0
    joined_decisions: int = 0
    late_outcomes: int = 0
    unmatched_outcomes: int = 0
    orphan_outcomes: int = 0
    # Decisions whose answer never reached the caller (not in ``decisions``).
    undelivered_decisions: int = 0
    # Stored decisions that cannot be interpreted: a blueprint version without a rule
    # (unknown to the decision service), features that do not fit their version, an
    # action index without a probability (not in any other count).
    invalid_records: int = 0
    # Unmatched outcomes whose decision time is before ``lost_before_ms``.
    lost_decision_outcomes: int = 0


def unit_digest(use_case: str, unit_id: str) -> str:
    """How the deletion register names a unit of a use case: a SHA-256, not the id."""
    return hashlib.sha256(f"{use_case}\0{unit_id}".encode()).hexdigest()


def wall_time_us() -> int:
    """The real wall-clock time in µs (write timestamps; not the simulated clock)."""
    return time.time_ns() // 1000


class FeedbackStore(abc.ABC):
    """Where the feedback service keeps decisions and outcomes."""

    async def put_decisions(self, decisions: Sequence[StoredDecision], write_time_us: int | None = None) -> int:
        """Store decisions (acknowledged before returning); returns how many were new.
        ``write_time_us`` is the write timestamp (default: now).

        A decision of a unit whose data was deleted at or after the decision's time is
        not stored: a late delivery (the decision service's spool, this service's
        spool, a client retry) cannot bring deleted data back."""
        kept = await self._not_deleted(decisions)
        return await self._insert_decisions(kept, write_time_us) if kept else 0

    async def _not_deleted(self, decisions: Sequence[StoredDecision]) -> list[StoredDecision]:
        keyed = [(d, unit_digest(d.record.use_case, d.record.unit_id) if d.record.unit_id else "")
                 for d in decisions]
        digests: dict[str, set[str]] = {}
        for d, digest in keyed:
            if digest:
                digests.setdefault(d.record.use_case, set()).add(digest)
        deleted = {use_case: await self.deletion_times(use_case, sorted(found))
                   for use_case, found in digests.items()}
        if not any(deleted.values()):
            return list(decisions)
        return [d for d, digest in keyed
                if not digest or deleted[d.record.use_case].get(digest, -1) < d.decision_time_ms]

    @abc.abstractmethod
    async def _insert_decisions(self, decisions: Sequence[StoredDecision], write_time_us: int | None) -> int:
        """Store decisions (no deletion check); returns how many were new."""

    @abc.abstractmethod
    async def deletion_times(self, use_case: str, digests: Sequence[str]) -> dict[str, int]:
        """The deletion time (ms) recorded for each of these unit digests that has one."""

    @abc.abstractmethod
    async def put_outcomes(self, outcomes: Sequence[OutcomeRow], orphans: Sequence[OutcomeRow],
                           write_time_us: int | None = None) -> tuple[list[bool], list[bool]]:
        """Store outcomes and orphan outcomes; returns, for each row of each list,
        whether this write stored it: new, or already stored by a write with the same
        ``write_time_us`` (the same request, replayed). False means a duplicate: the key
        was stored by another request (or earlier in the same batch). Rows already
        stored under the same key are left untouched. Outcomes are keyed by (use case,
        decision id, name, outcome id); orphans by (use case, decision id, outcome id)."""

    @abc.abstractmethod
    async def get_decision(self, use_case: str, decision_id: str) -> StoredDecision | None:
        """One decision, or None."""

    @abc.abstractmethod
    async def outcomes_of(self, use_case: str, decision_id: str) -> list[OutcomeRow]:
        """The outcomes of one decision, by event time (then outcome id)."""

    @abc.abstractmethod
    async def outcomes_between(self, use_case: str, start_ms: int, end_ms: int) -> list[OutcomeRow]:
        """Outcomes whose decision time is in [start_ms, end_ms] (both inclusive), by
        event time (then outcome id)."""

    @abc.abstractmethod
    async def decision_page(
        self, use_case: str, start_ms: int, end_ms: int, include_fallback: bool,
        after: tuple[int, str] | None, limit: int, include_undelivered: bool = False,
    ) -> list[StoredDecision]:
        """Up to ``limit`` decisions with decision time in [start_ms, end_ms), in
        (decision_time_ms, decision_id) order, strictly after the key ``after``
        (undelivered decisions only when asked)."""

    async def scan_decisions(self, use_case: str, start_ms: int, end_ms: int, include_fallback: bool,
                             page_rows: int, include_undelivered: bool = False
                             ) -> AsyncIterator[list[StoredDecision]]:
        """Every decision with decision time in [start_ms, end_ms), in (decision_time_ms,
        decision_id) order, in pages of ``page_rows`` (the last may be shorter);
        undelivered decisions only when asked."""
        after: tuple[int, str] | None = None
        while True:
            page = await self.decision_page(use_case, start_ms, end_ms, include_fallback, after, page_rows,
                                            include_undelivered)
            if page:
                yield page
                after = (page[-1].decision_time_ms, page[-1].record.decision_id)
            if len(page) < page_rows:
                return

    async def scan_decision_columns(self, use_case: str, start_ms: int, end_ms: int, include_fallback: bool,
                                    page_rows: int) -> AsyncIterator[DecisionColumns]:
        """:meth:`scan_decisions` as columns, page by page (the training read: never an
        undelivered decision). Backends with a columnar read (SQLite) override it; the
        others (Cassandra) convert pages."""
        async for page in self.scan_decisions(use_case, start_ms, end_ms, include_fallback, page_rows):
            yield DecisionColumns.of(page)

    @abc.abstractmethod
    async def blueprint_versions(self, use_case: str) -> list[int]:
        """The distinct blueprint versions of the use case's stored decisions."""

    @abc.abstractmethod
    async def orphans(self, use_case: str) -> list[OutcomeRow]:
        """The orphan outcomes stored for a use case."""

    @abc.abstractmethod
    async def stats(self, use_case: str, rules: Mapping[int, CountingRule], now_ms: int,
                    lost_before_ms: int | None = None) -> StoredStats:
        """Counts for a use case, from the stored rows, with each decision judged by
        the rule of its blueprint version. A decision whose version has no rule, whose
        features do not fit the rule's ``feature_count`` or whose action index has no
        probability is an invalid record, in no other count; undelivered decisions are
        counted apart and in no other count. Unmatched outcomes whose decision time is
        before ``lost_before_ms`` are also counted as outcomes of lost decisions."""

    @abc.abstractmethod
    async def delete_unit(self, use_case: str, unit_ids: Sequence[str], deleted_at_ms: int) -> tuple[int, int]:
        """Delete the decisions stored under any of ``unit_ids`` and their outcomes,
        through the by-unit index; returns (decisions, outcomes) deleted.

        The deletion is first recorded in the deletion register (unit digests, never the
        ids, with ``deleted_at_ms`` on the decision clock), so decisions of the unit made
        until then are refused when they arrive later (:meth:`put_decisions`)."""

    @abc.abstractmethod
    async def purge_before(self, use_case: str, before_ms: int) -> None:
        """Delete the decisions made before ``before_ms``, their outcomes and the
        orphan outcomes of events before it (retention)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the backend's resources."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    use_case TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    decision_time_ms INTEGER NOT NULL,
    blueprint_version INTEGER NOT NULL,
    unit_id TEXT NOT NULL,
    features BLOB NOT NULL,
    action_index INTEGER NOT NULL,
    action TEXT NOT NULL,
    score REAL NOT NULL,
    action_probabilities BLOB NOT NULL,
    model_version INTEGER NOT NULL,
    arm TEXT NOT NULL,
    explored INTEGER NOT NULL,
    fallback INTEGER NOT NULL,
    shadow INTEGER NOT NULL,
    action_scores BLOB NOT NULL,
    serving_latency_ms REAL NOT NULL DEFAULT 0,
    undelivered INTEGER NOT NULL DEFAULT 0,
    ranking BLOB NOT NULL DEFAULT x'',
    PRIMARY KEY (use_case, decision_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS decisions_by_time ON decisions (use_case, decision_time_ms, decision_id);
CREATE INDEX IF NOT EXISTS decisions_by_unit ON decisions (use_case, unit_id);
CREATE TABLE IF NOT EXISTS outcomes (
    use_case TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    outcome_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    label TEXT NOT NULL,
    event_time_ms INTEGER NOT NULL,
    decision_time_ms INTEGER NOT NULL,
    write_time_us INTEGER NOT NULL DEFAULT 0,
    item_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (use_case, decision_id, outcome_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outcomes_by_decision_time ON outcomes (use_case, decision_time_ms);
CREATE TABLE IF NOT EXISTS orphan_outcomes (
    use_case TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    outcome_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    label TEXT NOT NULL,
    event_time_ms INTEGER NOT NULL,
    write_time_us INTEGER NOT NULL DEFAULT 0,
    item_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (use_case, decision_id, outcome_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unit_deletions (
    use_case TEXT NOT NULL,
    unit_digest TEXT NOT NULL,
    deleted_at_ms INTEGER NOT NULL,
    PRIMARY KEY (use_case, unit_digest)
) WITHOUT ROWID;
"""

_DECISION_COLUMNS = (
    "decision_id, use_case, decision_time_ms, blueprint_version, unit_id, features, action_index, "
    "action, score, action_probabilities, model_version, arm, explored, fallback, shadow, action_scores, "
    "serving_latency_ms, undelivered, ranking"
)
_DECISION_MARKS = ",".join("?" * len(_DECISION_COLUMNS.split(",")))
# Columns added after the first release: (table, column, definition), added to older files on open.
_ADDED_COLUMNS = (
    ("decisions", "serving_latency_ms", "REAL NOT NULL DEFAULT 0"),
    ("decisions", "undelivered", "INTEGER NOT NULL DEFAULT 0"),
    # The accept time (µs) of the request that stored the row: its write identity.
    ("outcomes", "write_time_us", "INTEGER NOT NULL DEFAULT 0"),
    ("orphan_outcomes", "write_time_us", "INTEGER NOT NULL DEFAULT 0"),
    # Rankings: the ranked items of a decision (ranking_blob) and the item of an outcome.
    ("decisions", "ranking", "BLOB NOT NULL DEFAULT x''"),
    ("outcomes", "item_id", "TEXT NOT NULL DEFAULT ''"),
    ("orphan_outcomes", "item_id", "TEXT NOT NULL DEFAULT ''"),
)
_TRAINING_COLUMNS = (
    "decision_id, decision_time_ms, blueprint_version, features, action_index, action_probabilities, "
    "model_version, arm, explored, serving_latency_ms"
)
_OUTCOME_COLUMNS = ("use_case, decision_id, outcome_id, name, value, label, event_time_ms, decision_time_ms, "
                    "item_id")


def ranking_blob(r: fpb.DecisionRecord) -> bytes:
    """A ranking's fields of a record (ranked_items, ranking_probability) as one blob
    (a DecisionRecord holding only them); empty for other kinds."""
    if not r.ranked_items:
        return b""
    return fpb.DecisionRecord(ranked_items=r.ranked_items, ranking_probability=r.ranking_probability
                              ).SerializeToString()


def _decision_row(d: StoredDecision) -> tuple:
    r = d.record
    return (
        r.decision_id, r.use_case, d.decision_time_ms, r.blueprint_version, r.unit_id, r.features,
        r.action_index, r.action, r.score, np.asarray(r.action_probabilities, _F64).tobytes(),
        r.model_version, r.arm, int(r.explored), int(r.fallback), int(r.shadow),
        np.asarray(r.action_scores, _F64).tobytes(), r.serving_latency_ms, int(r.undelivered), ranking_blob(r),
    )


def _decision_from_row(row: Sequence) -> StoredDecision:
    record = fpb.DecisionRecord(
        decision_id=row[0], use_case=row[1], blueprint_version=row[3], unit_id=row[4] or "",
        features=bytes(row[5] or b""), action_index=row[6], action=row[7] or "", score=row[8],
        action_probabilities=np.frombuffer(row[9] or b"", _F64).tolist(), model_version=row[10], arm=row[11] or "",
        explored=bool(row[12]), fallback=bool(row[13]), shadow=bool(row[14]),
        action_scores=np.frombuffer(row[15] or b"", _F64).tolist(), serving_latency_ms=row[16] or 0.0,
        undelivered=bool(row[17]) if len(row) > 17 else False,
    )
    if len(row) > 18 and row[18]:
        record.MergeFromString(bytes(row[18]))
    return StoredDecision(record, row[2])


def _outcome_from_row(row: Sequence) -> OutcomeRow:
    return OutcomeRow(*row)


def _load_rules(conn: sqlite3.Connection, rules: Mapping[int, CountingRule]) -> None:
    """Fill the connection's temporary rule tables (the database thread is the only user)."""
    conn.executescript(
        """
        DROP TABLE IF EXISTS temp.rule_windows;
        CREATE TEMP TABLE rule_windows (version INTEGER PRIMARY KEY, window_ms INTEGER, all_names INTEGER,
                                        feature_count INTEGER);
        CREATE TEMP TABLE IF NOT EXISTS rule_names (version INTEGER, name TEXT, PRIMARY KEY (version, name));
        DELETE FROM rule_names;
        """
    )
    conn.executemany(
        "INSERT INTO rule_windows VALUES (?,?,?,?)",
        [(v, r.window_ms, int(not r.outcome_names), r.feature_count) for v, r in rules.items()],
    )
    conn.executemany(
        "INSERT INTO rule_names VALUES (?,?)",
        [(v, name) for v, r in rules.items() for name in r.outcome_names],
    )


# An outcome of decision d counts for the rule s (its name selected by the reward spec).
_NAME_SELECTED = (
    "(s.all_names = 1 OR EXISTS (SELECT 1 FROM rule_names n WHERE n.version = s.version AND n.name = o.name))"
)
_IN_WINDOW = "o.event_time_ms BETWEEN d.decision_time_ms AND d.decision_time_ms + s.window_ms"
# Decision d can be interpreted with the rule s of its version (s from a LEFT JOIN: no
# rule, no interpretation): its features fit the version, its action has a probability.
_VALID = (
    "(s.version IS NOT NULL AND (s.feature_count < 0 OR length(d.features) = 4 * s.feature_count) "
    "AND d.action_index >= 0 AND 8 * d.action_index < length(d.action_probabilities))"
)
_JOINED = (
    "FROM decisions d JOIN rule_windows s ON s.version = d.blueprint_version "
    "JOIN outcomes o ON o.use_case = d.use_case AND o.decision_id = d.decision_id "
    f"WHERE d.use_case = ? AND d.undelivered = 0 AND {_VALID}"
)


def _create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables, and add the columns a file from an older release lacks."""
    conn.executescript(SCHEMA)
    for table, column, definition in _ADDED_COLUMNS:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


class SqliteFeedbackStore(FeedbackStore):
    """Decisions and outcomes in the feedback service's SQLite file."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.run_sync(_create_schema)

    async def _insert_decisions(self, decisions: Sequence[StoredDecision], write_time_us: int | None) -> int:
        rows = [_decision_row(d) for d in decisions]

        def write(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            insert_rows(conn, f"INSERT OR IGNORE INTO decisions ({_DECISION_COLUMNS}) VALUES ({_DECISION_MARKS})",
                        rows)
            return conn.total_changes - before

        return await self.db.transaction(write)

    async def put_outcomes(self, outcomes: Sequence[OutcomeRow], orphans: Sequence[OutcomeRow],
                           write_time_us: int | None = None) -> tuple[list[bool], list[bool]]:
        ts = write_time_us or wall_time_us()
        rows = [(*o, ts) for o in outcomes]
        orphan_rows = [(*o[:7], o.item_id, ts) for o in orphans]

        def stored(conn: sqlite3.Connection, table: str, row: tuple) -> bool:
            """Whether the row's key is stored with this write's time (the same request)."""
            found = conn.execute(f"SELECT write_time_us FROM {table} WHERE use_case = ? AND decision_id = ? "
                                 "AND outcome_id = ?", row[:3]).fetchone()
            return found is not None and found[0] == ts

        def write(conn: sqlite3.Connection) -> tuple[list[bool], list[bool]]:
            insert = f"INSERT OR IGNORE INTO outcomes ({_OUTCOME_COLUMNS}, write_time_us) VALUES (?,?,?,?,?,?,?,?,?,?)"
            insert_orphan = ("INSERT OR IGNORE INTO orphan_outcomes (use_case, decision_id, outcome_id, name, value, "
                             "label, event_time_ms, item_id, write_time_us) VALUES (?,?,?,?,?,?,?,?,?)")
            results: list[list[bool]] = []
            for table, sql, batch in (("outcomes", insert, rows), ("orphan_outcomes", insert_orphan, orphan_rows)):
                before = conn.total_changes
                insert_rows(conn, sql, batch)
                if conn.total_changes - before == len(batch):  # every row new (no key twice in the batch)
                    results.append([True] * len(batch))
                    continue
                # A row is new when its key is stored with this write's time (inserted now,
                # or by this same request before: a replay) and it is the first of its key
                # in the batch (a key repeated within the batch is a duplicate).
                seen: set[tuple] = set()
                out = []
                for row in batch:
                    out.append(row[:3] not in seen and stored(conn, table, row))
                    seen.add(row[:3])
                results.append(out)
            return results[0], results[1]

        return await self.db.transaction(write)

    async def deletion_times(self, use_case: str, digests: Sequence[str]) -> dict[str, int]:
        def read(conn: sqlite3.Connection) -> dict[str, int]:
            found: dict[str, int] = {}
            for chunk in range(0, len(digests), 500):
                part = digests[chunk:chunk + 500]
                found.update(conn.execute(
                    "SELECT unit_digest, deleted_at_ms FROM unit_deletions WHERE use_case = ? "
                    f"AND unit_digest IN ({','.join('?' * len(part))})", (use_case, *part)))
            return found

        return await self.db.run(read) if digests else {}

    async def delete_unit(self, use_case: str, unit_ids: Sequence[str], deleted_at_ms: int) -> tuple[int, int]:
        units = [u for u in dict.fromkeys(unit_ids) if u]

        def delete(conn: sqlite3.Connection) -> tuple[int, int]:
            conn.executemany(
                "INSERT INTO unit_deletions VALUES (?,?,?) ON CONFLICT (use_case, unit_digest) "
                "DO UPDATE SET deleted_at_ms = max(deleted_at_ms, excluded.deleted_at_ms)",
                [(use_case, unit_digest(use_case, u), deleted_at_ms) for u in units])
            marks = ",".join("?" * len(units))
            ids = [r[0] for r in conn.execute(
                f"SELECT decision_id FROM decisions WHERE use_case = ? AND unit_id IN ({marks})",
                (use_case, *units))]
            outcomes = 0
            for chunk in range(0, len(ids), 500):
                part = ids[chunk:chunk + 500]
                outcomes += conn.execute(
                    f"DELETE FROM outcomes WHERE use_case = ? AND decision_id IN ({','.join('?' * len(part))})",
                    (use_case, *part)).rowcount
            decisions = conn.execute(f"DELETE FROM decisions WHERE use_case = ? AND unit_id IN ({marks})",
                                     (use_case, *units)).rowcount
            return decisions, outcomes

        return await self.db.transaction(delete) if units else (0, 0)

    async def purge_before(self, use_case: str, before_ms: int) -> None:
        def purge(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM outcomes WHERE use_case = ? AND decision_time_ms < ?", (use_case, before_ms))
            conn.execute("DELETE FROM decisions WHERE use_case = ? AND decision_time_ms < ?", (use_case, before_ms))
            conn.execute("DELETE FROM orphan_outcomes WHERE use_case = ? AND event_time_ms < ?",
                         (use_case, before_ms))

        await self.db.transaction(purge)

    async def get_decision(self, use_case: str, decision_id: str) -> StoredDecision | None:
        row = await self.db.fetchone(
            f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE use_case = ? AND decision_id = ?",
            (use_case, decision_id),
        )
        return None if row is None else _decision_from_row(row)

    async def outcomes_of(self, use_case: str, decision_id: str) -> list[OutcomeRow]:
        rows = await self.db.fetchall(
            f"SELECT {_OUTCOME_COLUMNS} FROM outcomes WHERE use_case = ? AND decision_id = ? "
            "ORDER BY event_time_ms, outcome_id",
            (use_case, decision_id),
        )
        return [_outcome_from_row(r) for r in rows]

    async def outcomes_between(self, use_case: str, start_ms: int, end_ms: int) -> list[OutcomeRow]:
        rows = await self.db.fetchall(
            f"SELECT {_OUTCOME_COLUMNS} FROM outcomes WHERE use_case = ? AND decision_time_ms BETWEEN ? AND ? "
            "ORDER BY event_time_ms, outcome_id",
            (use_case, start_ms, end_ms),
        )
        return [_outcome_from_row(r) for r in rows]

    async def _page_rows(self, columns: str, use_case: str, start_ms: int, end_ms: int, include_fallback: bool,
                         after: tuple[int, str] | None, limit: int, include_undelivered: bool = False) -> list[tuple]:
        """Rows of one keyset page. The index range starts at the ``after`` key's time,
        so each page costs its own rows, not a scan from ``start_ms``."""
        low = start_ms if after is None else max(start_ms, after[0])
        sql = f"SELECT {columns} FROM decisions WHERE use_case = ? AND decision_time_ms >= ? " \
              "AND decision_time_ms < ?"
        params: list = [use_case, low, end_ms]
        if not include_fallback:
            sql += " AND fallback = 0"
        if not include_undelivered:
            sql += " AND undelivered = 0"
        if after is not None:
            sql += " AND (decision_time_ms > ? OR decision_id > ?)"
            params += list(after)
        sql += " ORDER BY decision_time_ms, decision_id LIMIT ?"
        params.append(limit)
        return await self.db.fetchall(sql, params)

    async def decision_page(
        self, use_case: str, start_ms: int, end_ms: int, include_fallback: bool,
        after: tuple[int, str] | None, limit: int, include_undelivered: bool = False,
    ) -> list[StoredDecision]:
        rows = await self._page_rows(_DECISION_COLUMNS, use_case, start_ms, end_ms, include_fallback, after, limit,
                                     include_undelivered)
        return [_decision_from_row(r) for r in rows]

    async def scan_decision_columns(self, use_case: str, start_ms: int, end_ms: int, include_fallback: bool,
                                    page_rows: int) -> AsyncIterator[DecisionColumns]:
        after: tuple[int, str] | None = None
        while True:
            rows = await self._page_rows(_TRAINING_COLUMNS, use_case, start_ms, end_ms, include_fallback, after,
                                         page_rows)
            if rows:
                ids, times, versions, features, actions, probabilities, models, arms, explored, latencies = zip(
                    *rows, strict=True)
                yield DecisionColumns(
                    list(ids), np.array(times, dtype=np.int64), np.array(versions, dtype=np.int64),
                    [b or b"" for b in features], np.array(actions, dtype=np.int64),
                    [b or b"" for b in probabilities], np.array(models, dtype=np.int64),
                    [a or "" for a in arms], np.array(explored, dtype=bool),
                    np.array(latencies, dtype=np.float64))
                after = (times[-1], ids[-1])
            if len(rows) < page_rows:
                return

    async def blueprint_versions(self, use_case: str) -> list[int]:
        rows = await self.db.fetchall(
            "SELECT DISTINCT blueprint_version FROM decisions WHERE use_case = ? ORDER BY 1", (use_case,)
        )
        return [r[0] for r in rows]

    async def orphans(self, use_case: str) -> list[OutcomeRow]:
        rows = await self.db.fetchall(
            "SELECT use_case, decision_id, outcome_id, name, value, label, event_time_ms, 0 "
            "FROM orphan_outcomes WHERE use_case = ? ORDER BY event_time_ms, outcome_id",
            (use_case,),
        )
        return [_outcome_from_row(r) for r in rows]

    async def stats(self, use_case: str, rules: Mapping[int, CountingRule], now_ms: int,
                    lost_before_ms: int | None = None) -> StoredStats:
        def count(conn: sqlite3.Connection) -> StoredStats:
            _load_rules(conn, rules)

            def one(sql: str, *params: object) -> int:
                return int(conn.execute(sql, params).fetchone()[0] or 0)

            delivered = f"({_VALID} AND d.undelivered = 0)"
            decisions, fallbacks, closed, undelivered, invalid = conn.execute(
                f"SELECT sum({delivered}), sum({delivered} AND d.fallback), "
                f"sum({delivered} AND d.decision_time_ms + s.window_ms <= ?), "
                f"sum({_VALID} AND d.undelivered), sum(NOT {_VALID}) "
                "FROM decisions d LEFT JOIN rule_windows s ON s.version = d.blueprint_version WHERE d.use_case = ?",
                (now_ms, use_case),
            ).fetchone()
            unmatched = ("FROM outcomes o LEFT JOIN decisions d ON d.use_case = o.use_case "
                         "AND d.decision_id = o.decision_id WHERE o.use_case = ? AND d.decision_id IS NULL")
            return StoredStats(
                decisions=int(decisions or 0),
                fallback_decisions=int(fallbacks or 0),
                closed_windows=int(closed or 0),
                outcomes=one("SELECT count(*) FROM outcomes WHERE use_case = ?", use_case),
                joined_decisions=one(
                    f"SELECT count(DISTINCT d.decision_id) {_JOINED} AND {_IN_WINDOW} AND {_NAME_SELECTED}", use_case
                ),
                late_outcomes=one(
                    f"SELECT count(*) {_JOINED} AND o.event_time_ms > d.decision_time_ms + s.window_ms "
                    f"AND {_NAME_SELECTED}",
                    use_case,
                ),
                unmatched_outcomes=one(f"SELECT count(*) {unmatched}", use_case),
                orphan_outcomes=one("SELECT count(*) FROM orphan_outcomes WHERE use_case = ?", use_case),
                undelivered_decisions=int(undelivered or 0),
                invalid_records=int(invalid or 0),
                lost_decision_outcomes=0 if lost_before_ms is None else one(
                    f"SELECT count(*) {unmatched} AND o.decision_time_ms < ?", use_case, lost_before_ms),
            )

        return await self.db.run(count)

    def close(self) -> None:
        self.db.close()


def open_feedback_store(settings: Settings) -> FeedbackStore:
    """Open the feedback service's store named by its store URL: ``sqlite:///…`` or
    ``cassandra://…`` (connects and applies the CQL migrations)."""
    url = settings.store_url("feedback")
    if url.startswith("cassandra://"):
        from loopwise.store.feedback_cassandra import CassandraFeedbackStore

        return CassandraFeedbackStore.open(url, migrate=settings.store_migrate_on_start)
    scheme, path = parse_store_url(settings.store_url("feedback"))
    if scheme != "sqlite":  # pragma: no cover - parse_store_url accepts only sqlite today
        raise ValueError(f"unsupported feedback store {scheme!r}")
    return SqliteFeedbackStore(SqliteDatabase(path))

