"""Operations (and job leases) of the trainer or the evaluator in Cassandra.

Each service has its own tables, created by its migrations (``cql/trainer``,
``cql/evaluator``) with the prefix ``training`` or ``evaluation``:

- ``<p>_operations`` ``(use_case, id)``, newest first: lists of one use case;
- ``<p>_operations_by_id`` ``(id)``: reads by id;
- ``<p>_operation_requests`` ``(request_id)``: request-id idempotency;
- ``<p>_job_leases`` ``(name)``: "one job per use case" — ``INSERT … IF NOT EXISTS
  USING TTL``, renewed by ``UPDATE … IF holder = ?``, released by ``DELETE … IF holder = ?``.

An operation row is written to both operation tables on every change (upserts, so a
retried write is harmless).
"""

from __future__ import annotations

import heapq

from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.store.cassandra import CassandraConnection
from loopwise.store.cassandra_support import fetch_all, lwt
from loopwise.store.operations import OperationStore

PREFIXES = ("training", "evaluation")


class CassandraOperationStore(OperationStore):
    """Operations in the ``<prefix>_operations*`` tables of the shared keyspace."""

    def __init__(self, conn: CassandraConnection, prefix: str) -> None:
        if prefix not in PREFIXES:
            raise ValueError(f"operation table prefix must be one of {PREFIXES}, not {prefix!r}")
        self.conn = conn
        self.by_use_case = f"{prefix}_operations"
        self.by_id = f"{prefix}_operations_by_id"
        self.requests = f"{prefix}_operation_requests"
        self.leases = f"{prefix}_job_leases"

    async def save(self, operation: op_pb.Operation) -> None:
        body = operation.SerializeToString()
        writes = [
            (f"INSERT INTO {self.by_use_case} (use_case, id, body) VALUES (?, ?, ?)",
             (operation.use_case, operation.id, body)),
            (f"INSERT INTO {self.by_id} (id, use_case, body) VALUES (?, ?, ?)",
             (operation.id, operation.use_case, body)),
        ]
        if operation.request_id:
            writes.append((f"INSERT INTO {self.requests} (request_id, id) VALUES (?, ?)",
                           (operation.request_id, operation.id)))
        await self.conn.write_many(writes)

    async def get(self, operation_id: str) -> op_pb.Operation | None:
        rows = await self.conn.execute(f"SELECT body FROM {self.by_id} WHERE id = ?", (operation_id,))
        return op_pb.Operation.FromString(rows[0].body) if rows else None

    async def find_by_request_id(self, request_id: str) -> op_pb.Operation | None:
        rows = await self.conn.execute(
            f"SELECT id FROM {self.requests} WHERE request_id = ?", (request_id,))
        return await self.get(rows[0].id) if rows else None

    async def _page(self, use_case: str, limit: int, before_id: str) -> list[op_pb.Operation]:
        if before_id:
            rows = await self.conn.execute(
                f"SELECT body FROM {self.by_use_case} WHERE use_case = ? AND id < ? LIMIT ?",
                (use_case, before_id, limit))
        else:
            rows = await self.conn.execute(
                f"SELECT body FROM {self.by_use_case} WHERE use_case = ? LIMIT ?", (use_case, limit))
        return [op_pb.Operation.FromString(r.body) for r in rows]

    async def list(self, use_case: str, limit: int, before_id: str) -> list[op_pb.Operation]:
        if use_case:
            return await self._page(use_case, limit, before_id)
        # All use cases: the newest of each partition, merged (use cases are few).
        use_cases = [r.use_case for r in await fetch_all(
            self.conn, f"SELECT DISTINCT use_case FROM {self.by_use_case}")]
        pages = [await self._page(uc, limit, before_id) for uc in use_cases]
        merged = heapq.merge(*pages, key=lambda o: o.id, reverse=True)
        return [o for _, o in zip(range(limit), merged, strict=False)]

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        applied, row = await lwt(
            self.conn,
            f"INSERT INTO {self.leases} (name, holder) VALUES (?, ?) IF NOT EXISTS USING TTL ?",
            (name, holder, max(1, int(ttl_s))))
        return applied or row.holder == holder

    async def renew_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        applied, _ = await lwt(
            self.conn, f"UPDATE {self.leases} USING TTL ? SET holder = ? WHERE name = ? IF holder = ?",
            (max(1, int(ttl_s)), holder, name, holder))
        return applied

    async def release_lease(self, name: str, holder: str) -> None:
        await lwt(self.conn, f"DELETE FROM {self.leases} WHERE name = ? IF holder = ?", (name, holder))

    async def lease_holder(self, name: str) -> str | None:
        rows = await self.conn.execute(f"SELECT holder FROM {self.leases} WHERE name = ?", (name,))
        return rows[0].holder if rows else None
