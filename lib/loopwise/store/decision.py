"""The decision service's store: use cases, their blueprint versions, the kill-switch
flag and an audit of changes.

Backend-neutral interface (:class:`UseCaseStore`) with the embedded SQLite backend;
the Cassandra backend is in :mod:`loopwise.store.decision_cassandra`.
Blueprint versions are immutable once written, so the service reads them all once
(:meth:`UseCaseStore.load`) and serves decisions from memory.
"""

from __future__ import annotations

import abc
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.settings import Settings
from loopwise.store.sqlite import SqliteDatabase, parse_store_url


@dataclass(frozen=True)
class BlueprintVersion:
    """One stored, immutable blueprint version of a use case."""

    use_case: str
    version: int
    blueprint: bp.Blueprint
    create_time_ms: int
    author: str = ""
    reason: str = ""


@dataclass(frozen=True)
class AppliedRequest:
    """What an ApplyUseCase or RollbackUseCase request did, kept for idempotent retries
    (one namespace of request ids for both)."""

    request_id: str
    use_case: str
    version: int
    created: bool
    changed_fields: tuple[str, ...] = field(default_factory=tuple)


@dataclass
class StoredUseCases:
    """Everything the store holds, as loaded at start."""

    versions: list[BlueprintVersion]
    kill_switches: dict[str, bool]
    requests: list[AppliedRequest]
    archived: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class UseCaseChange:
    """One audited change of a use case: a version created/applied or a kill switch set."""

    use_case: str
    version: int
    change: str  # create | apply | rollback | kill_switch_on | kill_switch_off | archive | unarchive
    time_ms: int
    author: str
    reason: str
    request_id: str = ""


class VersionConflict(Exception):
    """The use case's latest version is not the one the writer expected."""


class UseCaseStore(abc.ABC):
    """Where the decision service keeps use cases and their blueprint versions."""

    @abc.abstractmethod
    async def load(self, held: Mapping[str, int] | None = None) -> StoredUseCases:
        """Every kill-switch and archive flag and remembered apply or rollback request, and the
        blueprint versions: all of them, or with ``held`` (the latest version the
        reader already holds, by use case) only the later ones. Versions never change
        once written, so a reader that re-reads the store often passes ``held`` and
        gets, and parses, only what is new."""

    @abc.abstractmethod
    async def add_version(
        self, version: BlueprintVersion, expected_latest: int, request: AppliedRequest | None,
        change: str = "",
    ) -> None:
        """Write ``version`` if the use case's latest version is ``expected_latest``
        (0: the use case must not exist); also remember ``request`` and audit the change
        as ``change`` (default: ``create`` or ``apply``; a rollback passes ``rollback``).
        Raises :class:`VersionConflict` otherwise."""

    @abc.abstractmethod
    async def remember_request(self, request: AppliedRequest, time_ms: int) -> None:
        """Remember an apply request that created nothing (for idempotent retries)."""

    @abc.abstractmethod
    async def set_kill_switch(self, use_case: str, enabled: bool, time_ms: int,
                              author: str = "", reason: str = "") -> bool:
        """Set a use case's kill switch and audit it; False if the use case does not exist."""

    @abc.abstractmethod
    async def set_archived(self, use_case: str, archived: bool, time_ms: int,
                           author: str = "", reason: str = "") -> bool:
        """Archive (or restore) a use case and audit it (``archive`` / ``unarchive``);
        False if the use case does not exist. ``load`` returns the flags."""

    @abc.abstractmethod
    async def audit(self, use_case: str) -> list[UseCaseChange]:
        """The changes of a use case, oldest first."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store's resources."""


DECISION_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS use_cases (
    use_case TEXT PRIMARY KEY,
    latest_version INTEGER NOT NULL,
    kill_switch INTEGER NOT NULL DEFAULT 0,
    archived INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS blueprint_versions (
    use_case TEXT NOT NULL,
    version INTEGER NOT NULL,
    blueprint BLOB NOT NULL,
    create_time_ms INTEGER NOT NULL,
    author TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (use_case, version)
);
CREATE TABLE IF NOT EXISTS apply_requests (
    request_id TEXT PRIMARY KEY,
    use_case TEXT NOT NULL,
    version INTEGER NOT NULL,
    created INTEGER NOT NULL,
    changed_fields TEXT NOT NULL,
    time_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    use_case TEXT NOT NULL,
    version INTEGER NOT NULL,
    change TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    author TEXT NOT NULL,
    reason TEXT NOT NULL,
    request_id TEXT NOT NULL
);
"""


class SqliteUseCaseStore(UseCaseStore):
    """Use cases in the decision service's own SQLite file."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.run_sync(_create_schema)

    async def load(self, held: Mapping[str, int] | None = None) -> StoredUseCases:
        def body(conn: sqlite3.Connection) -> StoredUseCases:
            # Requests first: a request and its version are committed together, so the
            # version of every request read here is in the reads below.
            requests = [
                AppliedRequest(rid, uc, v, bool(created), tuple(filter(None, fields.split(","))))
                for rid, uc, v, created, fields in conn.execute(
                    "SELECT request_id, use_case, version, created, changed_fields FROM apply_requests"
                )
            ]
            heads = conn.execute("SELECT use_case, latest_version, kill_switch, archived FROM use_cases").fetchall()
            if held is None:
                rows = conn.execute("SELECT use_case, version, blueprint, create_time_ms, author, reason "
                                    "FROM blueprint_versions ORDER BY use_case, version").fetchall()
            else:
                rows = []
                for uc, latest, _, _ in heads:
                    if latest > held.get(uc, 0):
                        rows += conn.execute(
                            "SELECT use_case, version, blueprint, create_time_ms, author, reason "
                            "FROM blueprint_versions WHERE use_case=? AND version>? ORDER BY version",
                            (uc, held.get(uc, 0))).fetchall()
            versions = [BlueprintVersion(uc, v, bp.Blueprint.FromString(blob), t, author, reason)
                        for uc, v, blob, t, author, reason in rows]
            switches = {uc: bool(k) for uc, _, k, _ in heads}
            archived = {uc: bool(a) for uc, _, _, a in heads}
            return StoredUseCases(versions, switches, requests, archived)

        return await self.db.run(body)

    async def add_version(
        self, version: BlueprintVersion, expected_latest: int, request: AppliedRequest | None,
        change: str = "",
    ) -> None:
        def body(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT latest_version FROM use_cases WHERE use_case=?", (version.use_case,)
            ).fetchone()
            latest = row[0] if row else 0
            if latest != expected_latest:
                raise VersionConflict(f"{version.use_case}: latest is {latest}, not {expected_latest}")
            conn.execute(
                "INSERT INTO use_cases (use_case, latest_version) VALUES (?, ?) "
                "ON CONFLICT (use_case) DO UPDATE SET latest_version=excluded.latest_version",
                (version.use_case, version.version),
            )
            conn.execute(
                "INSERT INTO blueprint_versions VALUES (?,?,?,?,?,?)",
                (version.use_case, version.version, version.blueprint.SerializeToString(),
                 version.create_time_ms, version.author, version.reason),
            )
            rid = request.request_id if request else ""
            if request is not None:
                _insert_request(conn, request, version.create_time_ms)
            conn.execute(
                "INSERT INTO audit (use_case, version, change, time_ms, author, reason, request_id) "
                "VALUES (?,?,?,?,?,?,?)",
                (version.use_case, version.version, change or ("apply" if expected_latest else "create"),
                 version.create_time_ms, version.author, version.reason, rid),
            )

        await self.db.transaction(body)

    async def remember_request(self, request: AppliedRequest, time_ms: int) -> None:
        await self.db.transaction(lambda c: _insert_request(c, request, time_ms))

    async def set_kill_switch(self, use_case: str, enabled: bool, time_ms: int,
                              author: str = "", reason: str = "") -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT latest_version FROM use_cases WHERE use_case=?", (use_case,)).fetchone()
            if row is None:
                return False
            conn.execute("UPDATE use_cases SET kill_switch=? WHERE use_case=?", (int(enabled), use_case))
            conn.execute(
                "INSERT INTO audit (use_case, version, change, time_ms, author, reason, request_id) "
                "VALUES (?,?,?,?,?,?,?)",
                (use_case, row[0], "kill_switch_on" if enabled else "kill_switch_off", time_ms,
                 author, reason, ""),
            )
            return True

        return await self.db.transaction(body)

    async def set_archived(self, use_case: str, archived: bool, time_ms: int,
                           author: str = "", reason: str = "") -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            row = conn.execute("SELECT latest_version FROM use_cases WHERE use_case=?", (use_case,)).fetchone()
            if row is None:
                return False
            conn.execute("UPDATE use_cases SET archived=? WHERE use_case=?", (int(archived), use_case))
            conn.execute(
                "INSERT INTO audit (use_case, version, change, time_ms, author, reason, request_id) "
                "VALUES (?,?,?,?,?,?,?)",
                (use_case, row[0], "archive" if archived else "unarchive", time_ms, author, reason, ""),
            )
            return True

        return await self.db.transaction(body)

    async def audit(self, use_case: str) -> list[UseCaseChange]:
        rows = await self.db.fetchall(
            "SELECT use_case, version, change, time_ms, author, reason, request_id FROM audit "
            "WHERE use_case=? ORDER BY id", (use_case,))
        return [UseCaseChange(*r) for r in rows]

    def close(self) -> None:
        self.db.close()


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(DECISION_SQLITE_SCHEMA)
    columns = {r[1] for r in conn.execute("PRAGMA table_info(use_cases)")}
    if "archived" not in columns:  # files written before archiving existed
        conn.execute("ALTER TABLE use_cases ADD COLUMN archived INTEGER NOT NULL DEFAULT 0")
        conn.commit()


def _insert_request(conn: sqlite3.Connection, request: AppliedRequest, time_ms: int) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO apply_requests VALUES (?,?,?,?,?,?)",
        (request.request_id, request.use_case, request.version, int(request.created),
         ",".join(request.changed_fields), time_ms),
    )


def open_decision_store(settings: Settings) -> UseCaseStore:
    """Open the decision service's store named by its store URL: ``sqlite:///…``
    (default) or ``cassandra://…`` (see docs/storage.md)."""
    url = settings.store_url("decision")
    if url.startswith("cassandra://"):
        from loopwise.store.cassandra_support import open_connection
        from loopwise.store.decision_cassandra import CassandraUseCaseStore

        return CassandraUseCaseStore(open_connection(url, "decision", migrate=settings.store_migrate_on_start))
    _, path = parse_store_url(url)
    return SqliteUseCaseStore(SqliteDatabase(path))
