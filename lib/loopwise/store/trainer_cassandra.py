"""The trainer's registry in Cassandra (tables in ``cql/trainer``).

- ``models`` ``(use_case, version DESC)``: the version is assigned by
  ``INSERT … IF NOT EXISTS`` (retried with the next number when another writer won), so
  version numbers are unique. The artifact is written first, in ~1 MiB chunks with a
  sha256 each (``model_artifact_chunks``), so a visible model always has its bytes.
- ``deployments`` ``(use_case, revision DESC)``: same for revisions; every revision is
  kept (rollback) and carries its own audit entry (action, reason, time, request id).
- ``model_requests`` / ``deployment_requests`` ``(request_id)``: idempotent retries. A
  request first claims its id (``IF NOT EXISTS USING TTL``); a concurrent duplicate waits
  for the winner's result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from loopwise.errors import Unavailable
from loopwise.store.cassandra import CassandraConnection
from loopwise.store.cassandra_support import ChunkedBlobs, fetch_all, lwt
from loopwise.store.trainer import ARTIFACT_CHUNK_BYTES, AuditEntry, RegistryStore
from loopwise.trainer.v1 import trainer_service_pb2 as tpb

CLAIM_TTL_S = 300
CLAIM_WAIT_S = 30.0


class CassandraRegistryStore(RegistryStore):
    """Models, artifacts and deployments in the shared keyspace."""

    def __init__(self, conn: CassandraConnection) -> None:
        self.conn = conn
        self.artifacts = ChunkedBlobs(conn, "model_artifact_chunks", ARTIFACT_CHUNK_BYTES)

    # -- request ids ---------------------------------------------------------------
    async def _claim(self, table: str, number: str, request_id: str, use_case: str) -> tuple[str, int] | None:
        """Claim ``request_id``: None if this caller runs it, else (use case, number)
        of the request done before (waits for a concurrent duplicate to finish)."""
        select = f"SELECT use_case, {number} FROM {table} WHERE request_id = ?"
        rows = await self.conn.execute(select, (request_id,))
        if rows and getattr(rows[0], number):
            return rows[0].use_case, getattr(rows[0], number)
        applied, _ = await lwt(
            self.conn, f"INSERT INTO {table} (request_id, use_case) VALUES (?, ?) IF NOT EXISTS USING TTL ?",
            (request_id, use_case, CLAIM_TTL_S))
        if applied:
            return None
        deadline = time.monotonic() + CLAIM_WAIT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            rows = await self.conn.execute(select, (request_id,))
            if rows and getattr(rows[0], number):
                return rows[0].use_case, getattr(rows[0], number)
        raise Unavailable(f"request {request_id!r} is still being processed; retry later")

    async def _record(self, table: str, number: str, request_id: str, use_case: str, value: int) -> None:
        # A plain INSERT replaces the claim, without its TTL.
        await self.conn.write(f"INSERT INTO {table} (request_id, use_case, {number}) VALUES (?, ?, ?)",
                              (request_id, use_case, value))

    async def _next_free(self, table: str, number: str, use_case: str, insert: str, params) -> int:
        """Insert with the next free number of ``use_case`` (LWT, retried on a lost race)."""
        rows = await self.conn.execute(f"SELECT {number} FROM {table} WHERE use_case = ? LIMIT 1", (use_case,))
        candidate = (getattr(rows[0], number) if rows else 0) + 1
        while True:
            applied, row = await lwt(self.conn, insert, params(candidate))
            if applied:
                return candidate
            candidate = max(candidate, getattr(row, number)) + 1

    # -- models --------------------------------------------------------------------
    async def add_model(self, model: tpb.Model, onnx: bytes, request_id: str) -> tuple[tpb.Model, bool]:
        if request_id:
            done = await self._claim("model_requests", "version", request_id, model.use_case)
            if done is not None:
                found = await self.get_model(*done)
                if found is None:
                    raise Unavailable(f"model of request {request_id!r} is missing")
                return found, False
        artifact_id, chunks = await self.artifacts.write(onnx)
        stored = tpb.Model()
        stored.CopyFrom(model)

        def params(version: int) -> tuple:
            stored.version = version
            return (stored.use_case, version, request_id or None, artifact_id, chunks,
                    stored.SerializeToString())

        await self._next_free(
            "models", "version", model.use_case,
            "INSERT INTO models (use_case, version, request_id, artifact_id, artifact_chunks, body) "
            "VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS", params)
        if request_id:
            await self._record("model_requests", "version", request_id, stored.use_case, stored.version)
        return stored, True

    async def get_model(self, use_case: str, version: int) -> tpb.Model | None:
        if version:
            rows = await self.conn.execute(
                "SELECT body FROM models WHERE use_case = ? AND version = ?", (use_case, version))
        else:
            rows = await self.conn.execute("SELECT body FROM models WHERE use_case = ? LIMIT 1", (use_case,))
        return tpb.Model.FromString(rows[0].body) if rows else None

    async def list_models(self, use_case: str) -> list[tpb.Model]:
        rows = await fetch_all(self.conn, "SELECT body FROM models WHERE use_case = ?", (use_case,))
        return [tpb.Model.FromString(r.body) for r in rows]

    async def read_artifact(self, use_case: str, version: int) -> AsyncIterator[bytes]:
        rows = await self.conn.execute(
            "SELECT artifact_id, artifact_chunks FROM models WHERE use_case = ? AND version = ?",
            (use_case, version))
        if not rows:
            return
        async for chunk in self.artifacts.iter(rows[0].artifact_id, rows[0].artifact_chunks or 0):
            yield chunk

    # -- deployments ---------------------------------------------------------------
    async def add_deployment(self, deployment: tpb.Deployment, request_id: str,
                             action: str) -> tuple[tpb.Deployment, bool]:
        if request_id:
            done = await self._claim("deployment_requests", "revision", request_id, deployment.use_case)
            if done is not None:
                rows = await self.conn.execute(
                    "SELECT body FROM deployments WHERE use_case = ? AND revision = ?", done)
                if not rows:
                    raise Unavailable(f"deployment of request {request_id!r} is missing")
                return tpb.Deployment.FromString(rows[0].body), False
        stored = tpb.Deployment()
        stored.CopyFrom(deployment)

        def params(revision: int) -> tuple:
            stored.revision = revision
            return (stored.use_case, revision, request_id or None, action, stored.reason,
                    stored.update_time.ToMilliseconds(), stored.SerializeToString())

        await self._next_free(
            "deployments", "revision", deployment.use_case,
            "INSERT INTO deployments (use_case, revision, request_id, action, reason, time_ms, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS", params)
        if request_id:
            await self._record("deployment_requests", "revision", request_id, stored.use_case, stored.revision)
        return stored, True

    async def current_deployments(self, use_cases: list[str]) -> list[tpb.Deployment]:
        if use_cases:
            found = []
            for use_case in sorted(set(use_cases)):
                rows = await self.conn.execute(
                    "SELECT body FROM deployments WHERE use_case = ? LIMIT 1", (use_case,))
                found += [tpb.Deployment.FromString(r.body) for r in rows]
            return found
        rows = await fetch_all(self.conn, "SELECT body FROM deployments PER PARTITION LIMIT 1")
        return sorted((tpb.Deployment.FromString(r.body) for r in rows), key=lambda d: d.use_case)

    async def revisions(self, use_case: str) -> list[tpb.Deployment]:
        rows = await fetch_all(self.conn, "SELECT body FROM deployments WHERE use_case = ?", (use_case,))
        return [tpb.Deployment.FromString(r.body) for r in rows]

    async def audit(self, use_case: str) -> list[AuditEntry]:
        rows = await fetch_all(
            self.conn, "SELECT revision, action, reason, time_ms, request_id FROM deployments "
            "WHERE use_case = ? ORDER BY revision ASC", (use_case,))
        return [AuditEntry(use_case, r.revision, r.action or "", r.reason or "", r.time_ms or 0,
                           r.request_id or "") for r in rows]

    async def save_rollout(self, rollout: tpb.Rollout) -> None:
        await self.conn.write("INSERT INTO rollouts (use_case, body) VALUES (?, ?)",
                              (rollout.use_case, rollout.SerializeToString()))

    async def get_rollout(self, use_case: str) -> tpb.Rollout | None:
        rows = await self.conn.execute("SELECT body FROM rollouts WHERE use_case = ?", (use_case,))
        return tpb.Rollout.FromString(rows[0].body) if rows else None

    async def list_rollouts(self) -> list[tpb.Rollout]:
        rows = await fetch_all(self.conn, "SELECT body FROM rollouts")
        return sorted((tpb.Rollout.FromString(r.body) for r in rows), key=lambda r: r.use_case)
