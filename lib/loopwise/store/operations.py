"""Where the trainer and the evaluator keep their long-running operations
(:mod:`loopwise.operations` runs them): the interface, and the SQLite tables in the
service's database. The Cassandra store is in :mod:`loopwise.store.operations_cassandra`."""

from __future__ import annotations

import abc
import sqlite3
import time

from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.store.sqlite import SqliteDatabase


class OperationStore(abc.ABC):
    """Where a service keeps its operations."""

    @abc.abstractmethod
    async def save(self, operation: op_pb.Operation) -> None:
        """Insert or replace an operation."""

    @abc.abstractmethod
    async def get(self, operation_id: str) -> op_pb.Operation | None:
        """One operation, or None."""

    @abc.abstractmethod
    async def find_by_request_id(self, request_id: str) -> op_pb.Operation | None:
        """The operation started by a request id, or None."""

    @abc.abstractmethod
    async def list(self, use_case: str, limit: int, before_id: str) -> list[op_pb.Operation]:
        """Operations (newest first), optionally of one use case, with ids < before_id."""

    # Leases: "one job per use case" across processes sharing a store. A lease is a
    # name held by a holder until released or until its TTL runs out (a crashed holder
    # never blocks for longer). Stores without leases grant every request.
    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take ``name`` for ``holder`` unless someone else holds it; True if held now."""
        return True

    async def renew_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Extend ``holder``'s lease; False if it no longer holds it."""
        return True

    async def release_lease(self, name: str, holder: str) -> None:
        """Give ``name`` up if ``holder`` holds it."""
        return None

    async def lease_holder(self, name: str) -> str | None:
        """Who holds ``name`` now, or None."""
        return None


OPERATIONS_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS operations (
    id TEXT PRIMARY KEY,
    use_case TEXT NOT NULL,
    request_id TEXT,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS operations_by_use_case ON operations (use_case, id);
CREATE INDEX IF NOT EXISTS operations_by_request ON operations (request_id);
CREATE TABLE IF NOT EXISTS job_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
);
"""


class SqliteOperationStore(OperationStore):
    """Operations in the service's SQLite file (table ``operations``)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.run_sync(lambda c: c.executescript(OPERATIONS_SQLITE_SCHEMA))

    async def save(self, operation: op_pb.Operation) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO operations (id, use_case, request_id, body) VALUES (?,?,?,?)",
            (operation.id, operation.use_case, operation.request_id or None,
             operation.SerializeToString()),
        )

    @staticmethod
    def _parse(row: tuple | None) -> op_pb.Operation | None:
        return op_pb.Operation.FromString(row[0]) if row else None

    async def get(self, operation_id: str) -> op_pb.Operation | None:
        return self._parse(await self.db.fetchone("SELECT body FROM operations WHERE id=?", (operation_id,)))

    async def find_by_request_id(self, request_id: str) -> op_pb.Operation | None:
        row = await self.db.fetchone("SELECT body FROM operations WHERE request_id=?", (request_id,))
        return self._parse(row)

    async def list(self, use_case: str, limit: int, before_id: str) -> list[op_pb.Operation]:
        def query(conn: sqlite3.Connection) -> list[tuple]:
            sql = "SELECT body FROM operations WHERE id < ?"
            params: list = [before_id or "\uffff"]
            if use_case:
                sql += " AND use_case = ?"
                params.append(use_case)
            sql += " ORDER BY id DESC LIMIT ?"
            return conn.execute(sql, (*params, limit)).fetchall()

        return [op_pb.Operation.FromString(r[0]) for r in await self.db.run(query)]

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            now = _wall_ms()
            conn.execute("DELETE FROM job_leases WHERE name=? AND expires_ms <= ?", (name, now))
            conn.execute("INSERT OR IGNORE INTO job_leases (name, holder, expires_ms) VALUES (?,?,?)",
                         (name, holder, now + int(ttl_s * 1000)))
            row = conn.execute("SELECT holder FROM job_leases WHERE name=?", (name,)).fetchone()
            return row is not None and row[0] == holder

        return await self.db.transaction(body)

    async def renew_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        changed = await self.db.execute(
            "UPDATE job_leases SET expires_ms=? WHERE name=? AND holder=? AND expires_ms > ?",
            (_wall_ms() + int(ttl_s * 1000), name, holder, _wall_ms()))
        return changed == 1

    async def release_lease(self, name: str, holder: str) -> None:
        await self.db.execute("DELETE FROM job_leases WHERE name=? AND holder=?", (name, holder))

    async def lease_holder(self, name: str) -> str | None:
        row = await self.db.fetchone(
            "SELECT holder FROM job_leases WHERE name=? AND expires_ms > ?", (name, _wall_ms()))
        return row[0] if row else None


def _wall_ms() -> int:
    """Real time for lease expiry (leases are about processes, not the simulated clock)."""
    return int(time.time() * 1000)
