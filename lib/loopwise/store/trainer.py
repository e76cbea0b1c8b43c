"""The trainer's store: models, ONNX artifacts, deployments with their audit, operations.

A small backend-neutral interface (:class:`RegistryStore`) with the embedded SQLite
backend. Model versions and deployment revisions are assigned inside one
transaction with the insert (in Cassandra: a lightweight transaction), so two
writers never get the same number. Artifacts are kept in ~1 MiB chunks; the sha256
of the whole artifact is in the model's metadata. The Cassandra backend is in
:mod:`loopwise.store.trainer_cassandra`.
"""

from __future__ import annotations

import abc
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from loopwise.settings import Settings
from loopwise.store.operations import OperationStore, SqliteOperationStore
from loopwise.store.sqlite import SqliteDatabase, parse_store_url
from loopwise.trainer.v1 import trainer_service_pb2 as tpb

ARTIFACT_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class AuditEntry:
    """One deployment change: what was done, to which revision, why and when."""

    use_case: str
    revision: int
    action: str
    reason: str
    time_ms: int
    request_id: str


class RegistryStore(abc.ABC):
    """Where the trainer keeps models, artifacts and deployments."""

    @abc.abstractmethod
    async def add_model(self, model: tpb.Model, onnx: bytes, request_id: str) -> tuple[tpb.Model, bool]:
        """Store a model under the next version of its use case (``model.version`` is
        assigned) with its artifact. With a ``request_id`` seen before, the model stored
        then is returned instead; the flag says whether a new model was stored."""

    @abc.abstractmethod
    async def get_model(self, use_case: str, version: int) -> tpb.Model | None:
        """One model version (0: the latest), or None."""

    @abc.abstractmethod
    async def list_models(self, use_case: str) -> list[tpb.Model]:
        """The models of a use case, newest first."""

    @abc.abstractmethod
    def read_artifact(self, use_case: str, version: int) -> AsyncIterator[bytes]:
        """The stored chunks of a model's artifact, in order."""

    @abc.abstractmethod
    async def add_deployment(self, deployment: tpb.Deployment, request_id: str,
                             action: str) -> tuple[tpb.Deployment, bool]:
        """Store a deployment as the next revision of its use case (``revision`` is
        assigned) and audit it. With a ``request_id`` seen before, the revision stored
        then is returned; the flag says whether a new revision was stored."""

    @abc.abstractmethod
    async def current_deployments(self, use_cases: list[str]) -> list[tpb.Deployment]:
        """The latest revision of each use case (all use cases when the list is empty)."""

    @abc.abstractmethod
    async def revisions(self, use_case: str) -> list[tpb.Deployment]:
        """Every revision of a use case, newest first."""

    @abc.abstractmethod
    async def audit(self, use_case: str) -> list[AuditEntry]:
        """The deployment changes of a use case, oldest first."""

    @abc.abstractmethod
    async def save_rollout(self, rollout: tpb.Rollout) -> None:
        """Store the rollout as its use case's latest (replacing the one before)."""

    @abc.abstractmethod
    async def get_rollout(self, use_case: str) -> tpb.Rollout | None:
        """The latest rollout of a use case, or None."""

    @abc.abstractmethod
    async def list_rollouts(self) -> list[tpb.Rollout]:
        """The latest rollout of every use case, by use case."""


REGISTRY_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    use_case TEXT NOT NULL,
    version INTEGER NOT NULL,
    request_id TEXT,
    body BLOB NOT NULL,
    PRIMARY KEY (use_case, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS models_by_request ON models (request_id);
CREATE TABLE IF NOT EXISTS artifact_chunks (
    use_case TEXT NOT NULL,
    version INTEGER NOT NULL,
    chunk INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (use_case, version, chunk)
);
CREATE TABLE IF NOT EXISTS deployments (
    use_case TEXT NOT NULL,
    revision INTEGER NOT NULL,
    request_id TEXT,
    body BLOB NOT NULL,
    PRIMARY KEY (use_case, revision)
);
CREATE UNIQUE INDEX IF NOT EXISTS deployments_by_request ON deployments (request_id);
CREATE TABLE IF NOT EXISTS deployment_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    use_case TEXT NOT NULL,
    revision INTEGER NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    request_id TEXT
);
CREATE TABLE IF NOT EXISTS rollouts (
    use_case TEXT PRIMARY KEY,
    body BLOB NOT NULL
);
"""


class SqliteRegistryStore(RegistryStore):
    """The registry in the trainer's SQLite file."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.run_sync(lambda c: c.executescript(REGISTRY_SQLITE_SCHEMA))

    async def add_model(self, model: tpb.Model, onnx: bytes, request_id: str) -> tuple[tpb.Model, bool]:
        def insert(conn: sqlite3.Connection) -> tuple[tpb.Model, bool]:
            if request_id:
                row = conn.execute("SELECT body FROM models WHERE request_id=?", (request_id,)).fetchone()
                if row:
                    return tpb.Model.FromString(row[0]), False
            (last,) = conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM models WHERE use_case=?", (model.use_case,)
            ).fetchone()
            stored = tpb.Model()
            stored.CopyFrom(model)
            stored.version = last + 1
            conn.execute(
                "INSERT INTO models (use_case, version, request_id, body) VALUES (?,?,?,?)",
                (stored.use_case, stored.version, request_id or None, stored.SerializeToString()),
            )
            conn.executemany(
                "INSERT INTO artifact_chunks (use_case, version, chunk, data) VALUES (?,?,?,?)",
                [(stored.use_case, stored.version, i, onnx[start:start + ARTIFACT_CHUNK_BYTES])
                 for i, start in enumerate(range(0, len(onnx), ARTIFACT_CHUNK_BYTES))],
            )
            return stored, True

        return await self.db.transaction(insert)

    async def get_model(self, use_case: str, version: int) -> tpb.Model | None:
        if version:
            row = await self.db.fetchone(
                "SELECT body FROM models WHERE use_case=? AND version=?", (use_case, version))
        else:
            row = await self.db.fetchone(
                "SELECT body FROM models WHERE use_case=? ORDER BY version DESC LIMIT 1", (use_case,))
        return tpb.Model.FromString(row[0]) if row else None

    async def list_models(self, use_case: str) -> list[tpb.Model]:
        rows = await self.db.fetchall(
            "SELECT body FROM models WHERE use_case=? ORDER BY version DESC", (use_case,))
        return [tpb.Model.FromString(r[0]) for r in rows]

    async def read_artifact(self, use_case: str, version: int) -> AsyncIterator[bytes]:
        chunk = 0
        while True:
            row = await self.db.fetchone(
                "SELECT data FROM artifact_chunks WHERE use_case=? AND version=? AND chunk=?",
                (use_case, version, chunk),
            )
            if row is None:
                return
            yield bytes(row[0])
            chunk += 1

    async def add_deployment(self, deployment: tpb.Deployment, request_id: str,
                             action: str) -> tuple[tpb.Deployment, bool]:
        def insert(conn: sqlite3.Connection) -> tuple[tpb.Deployment, bool]:
            if request_id:
                row = conn.execute("SELECT body FROM deployments WHERE request_id=?", (request_id,)).fetchone()
                if row:
                    return tpb.Deployment.FromString(row[0]), False
            (last,) = conn.execute(
                "SELECT COALESCE(MAX(revision), 0) FROM deployments WHERE use_case=?",
                (deployment.use_case,),
            ).fetchone()
            stored = tpb.Deployment()
            stored.CopyFrom(deployment)
            stored.revision = last + 1
            conn.execute(
                "INSERT INTO deployments (use_case, revision, request_id, body) VALUES (?,?,?,?)",
                (stored.use_case, stored.revision, request_id or None, stored.SerializeToString()),
            )
            conn.execute(
                "INSERT INTO deployment_audit (use_case, revision, action, reason, time_ms, request_id) "
                "VALUES (?,?,?,?,?,?)",
                (stored.use_case, stored.revision, action, stored.reason,
                 stored.update_time.ToMilliseconds(), request_id or None),
            )
            return stored, True

        return await self.db.transaction(insert)

    async def current_deployments(self, use_cases: list[str]) -> list[tpb.Deployment]:
        rows = await self.db.fetchall(
            "SELECT d.body FROM deployments d JOIN (SELECT use_case, MAX(revision) AS revision "
            "FROM deployments GROUP BY use_case) m ON d.use_case = m.use_case AND d.revision = m.revision "
            "ORDER BY d.use_case"
        )
        found = [tpb.Deployment.FromString(r[0]) for r in rows]
        wanted = set(use_cases)
        return [d for d in found if not wanted or d.use_case in wanted]

    async def revisions(self, use_case: str) -> list[tpb.Deployment]:
        rows = await self.db.fetchall(
            "SELECT body FROM deployments WHERE use_case=? ORDER BY revision DESC", (use_case,))
        return [tpb.Deployment.FromString(r[0]) for r in rows]

    async def audit(self, use_case: str) -> list[AuditEntry]:
        rows = await self.db.fetchall(
            "SELECT use_case, revision, action, reason, time_ms, request_id FROM deployment_audit "
            "WHERE use_case=? ORDER BY id", (use_case,))
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5] or "") for r in rows]

    async def save_rollout(self, rollout: tpb.Rollout) -> None:
        await self.db.execute("INSERT OR REPLACE INTO rollouts (use_case, body) VALUES (?, ?)",
                              (rollout.use_case, rollout.SerializeToString()))

    async def get_rollout(self, use_case: str) -> tpb.Rollout | None:
        row = await self.db.fetchone("SELECT body FROM rollouts WHERE use_case=?", (use_case,))
        return tpb.Rollout.FromString(row[0]) if row else None

    async def list_rollouts(self) -> list[tpb.Rollout]:
        rows = await self.db.fetchall("SELECT body FROM rollouts ORDER BY use_case")
        return [tpb.Rollout.FromString(r[0]) for r in rows]


@dataclass
class TrainerStore:
    """The trainer's stores, opened from ``settings.store_url("trainer")``."""

    registry: RegistryStore
    operations: OperationStore
    closer: Callable[[], None]

    def close(self) -> None:
        """Close the database (or the Cassandra session)."""
        self.closer()


def open_trainer_store(settings: Settings) -> TrainerStore:
    """Open the trainer's store named by its store URL: ``sqlite:///…`` (default) or
    ``cassandra://…`` (see docs/storage.md)."""
    url = settings.store_url("trainer")
    if url.startswith("cassandra://"):
        from loopwise.store.cassandra_support import open_connection
        from loopwise.store.operations_cassandra import CassandraOperationStore
        from loopwise.store.trainer_cassandra import CassandraRegistryStore

        conn = open_connection(url, "trainer", migrate=settings.store_migrate_on_start)
        return TrainerStore(CassandraRegistryStore(conn), CassandraOperationStore(conn, "training"), conn.close)
    _, path = parse_store_url(url)
    db = SqliteDatabase(path)
    return TrainerStore(SqliteRegistryStore(db), SqliteOperationStore(db), db.close)
