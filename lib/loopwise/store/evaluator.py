"""The evaluator's store: effect reports (result, HTML, fitted estimator) and operations.

Backend-neutral interface (:class:`ReportStore`) with the embedded SQLite backend;
the operations live in the same database (:class:`loopwise.store.operations.SqliteOperationStore`).
The Cassandra backend is in :mod:`loopwise.store.evaluator_cassandra`.
"""

from __future__ import annotations

import abc
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.settings import Settings
from loopwise.store.operations import OperationStore, SqliteOperationStore
from loopwise.store.sqlite import SqliteDatabase, parse_store_url


@dataclass(frozen=True)
class StoredReport:
    """One report: the structured result and its HTML page."""

    result: epb.EstimateEffectsResult
    html: bytes


class ReportStore(abc.ABC):
    """Where the evaluator keeps its reports and fitted estimators."""

    @abc.abstractmethod
    async def save(self, result: epb.EstimateEffectsResult, html: bytes, estimator: bytes) -> None:
        """Store a report under ``result.report_id`` with its pickled estimator."""

    @abc.abstractmethod
    async def get(self, report_id: str) -> StoredReport | None:
        """The report, or None if unknown."""

    @abc.abstractmethod
    async def get_estimator(self, report_id: str) -> bytes | None:
        """The pickled estimator of a report, or None if unknown."""

    @abc.abstractmethod
    async def list(self, use_case: str, limit: int) -> list[epb.EstimateEffectsResult]:
        """Report results (no HTML), newest first, optionally of one use case."""


REPORTS_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id TEXT PRIMARY KEY,
    use_case TEXT NOT NULL,
    result BLOB NOT NULL,
    html BLOB NOT NULL,
    estimator BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_by_use_case ON reports (use_case, id);
"""


class SqliteReportStore(ReportStore):
    """Reports in the evaluator's SQLite file (table ``reports``); ids are UUIDv7, so
    ordering by id is ordering by creation time."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.run_sync(lambda c: c.executescript(REPORTS_SQLITE_SCHEMA))

    async def save(self, result: epb.EstimateEffectsResult, html: bytes, estimator: bytes) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO reports (id, use_case, result, html, estimator) VALUES (?,?,?,?,?)",
            (result.report_id, result.use_case, result.SerializeToString(), html, estimator),
        )

    async def get(self, report_id: str) -> StoredReport | None:
        row = await self.db.fetchone("SELECT result, html FROM reports WHERE id=?", (report_id,))
        if row is None:
            return None
        return StoredReport(epb.EstimateEffectsResult.FromString(row[0]), bytes(row[1]))

    async def get_estimator(self, report_id: str) -> bytes | None:
        row = await self.db.fetchone("SELECT estimator FROM reports WHERE id=?", (report_id,))
        return bytes(row[0]) if row else None

    async def list(self, use_case: str, limit: int) -> list[epb.EstimateEffectsResult]:
        def query(conn: sqlite3.Connection) -> list[tuple]:
            if use_case:
                return conn.execute(
                    "SELECT result FROM reports WHERE use_case=? ORDER BY id DESC LIMIT ?",
                    (use_case, limit),
                ).fetchall()
            return conn.execute("SELECT result FROM reports ORDER BY id DESC LIMIT ?", (limit,)).fetchall()

        return [epb.EstimateEffectsResult.FromString(r[0]) for r in await self.db.run(query)]


@dataclass
class EvaluatorStore:
    """The evaluator's stores, opened from ``settings.store_url("evaluator")``."""

    reports: ReportStore
    operations: OperationStore
    closer: Callable[[], None]

    def close(self) -> None:
        """Close the database (or the Cassandra session)."""
        self.closer()


def open_evaluator_store(settings: Settings) -> EvaluatorStore:
    """Open the evaluator's store named by its store URL: ``sqlite:///…`` (default) or
    ``cassandra://…`` (see docs/storage.md)."""
    url = settings.store_url("evaluator")
    if url.startswith("cassandra://"):
        from loopwise.store.cassandra_support import open_connection
        from loopwise.store.evaluator_cassandra import CassandraReportStore
        from loopwise.store.operations_cassandra import CassandraOperationStore

        conn = open_connection(url, "evaluator", migrate=settings.store_migrate_on_start)
        return EvaluatorStore(CassandraReportStore(conn), CassandraOperationStore(conn, "evaluation"), conn.close)
    _, path = parse_store_url(url)
    db = SqliteDatabase(path)
    return EvaluatorStore(SqliteReportStore(db), SqliteOperationStore(db), db.close)
