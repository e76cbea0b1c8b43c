"""The decision service's store in Cassandra (tables in ``cql/decision``).

- ``blueprint_versions`` ``(use_case, version)``: immutable versions. A new version is
  ``INSERT … IF NOT EXISTS``, so of two concurrent appliers of version N exactly one
  wins; the other gets :class:`VersionConflict`. The row also holds the version's audit
  (author, reason, time), its audit label (``change``: ``rollback``; empty means
  ``create``/``apply`` by number) and the request that created it: one atomic write.
- ``apply_requests`` ``(request_id)``: requests that created nothing.
- ``kill_switch_changes`` ``(use_case, time_ms, change_id)``: the switch's audit, with
  the current state as a static column.
- ``archive_changes`` ``(use_case, time_ms, change_id)``: archive/unarchive audit, with
  the current flag as a static column (same pattern).

Audit entries written in the same millisecond keep their order by their ``change_id``
(a time-based UUID).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.store.cassandra import CassandraConnection
from loopwise.store.cassandra_support import fetch_all, lwt
from loopwise.store.decision import (
    AppliedRequest,
    BlueprintVersion,
    StoredUseCases,
    UseCaseChange,
    UseCaseStore,
    VersionConflict,
)


class CassandraUseCaseStore(UseCaseStore):
    """Use cases in the shared keyspace."""

    def __init__(self, conn: CassandraConnection) -> None:
        self.conn = conn

    async def load(self, held: Mapping[str, int] | None = None) -> StoredUseCases:
        # With ``held``: every version's key and request (small), then the blueprints of
        # the new ones only, one partition read per use case with new versions.
        keys = await fetch_all(
            self.conn,
            "SELECT use_case, version, request_id, changed_fields"
            + (", blueprint, create_time_ms, author, reason" if held is None else "")
            + " FROM blueprint_versions")
        if held is None:
            rows = keys
        else:
            rows = []
            for use_case in sorted({r.use_case for r in keys if r.version > held.get(r.use_case, 0)}):
                rows += await fetch_all(
                    self.conn, "SELECT use_case, version, blueprint, create_time_ms, author, reason "
                    "FROM blueprint_versions WHERE use_case = ? AND version > ?", (use_case, held.get(use_case, 0)))
        rows.sort(key=lambda r: (r.use_case, r.version))
        versions = [BlueprintVersion(r.use_case, r.version, bp.Blueprint.FromString(r.blueprint),
                                     r.create_time_ms, r.author or "", r.reason or "") for r in rows]
        requests = [AppliedRequest(r.request_id, r.use_case, r.version, True, tuple(r.changed_fields or ()))
                    for r in keys if r.request_id]
        requests += [AppliedRequest(r.request_id, r.use_case, r.version, False)
                     for r in await fetch_all(
                         self.conn, "SELECT request_id, use_case, version FROM apply_requests")]
        switches = {r.use_case: bool(r.kill_switch) for r in await fetch_all(
            self.conn, "SELECT DISTINCT use_case, kill_switch FROM kill_switch_changes")}
        archived = {r.use_case: bool(r.archived) for r in await fetch_all(
            self.conn, "SELECT DISTINCT use_case, archived FROM archive_changes")}
        return StoredUseCases(versions, switches, requests, archived)

    async def _latest(self, use_case: str) -> int:
        rows = await self.conn.execute(
            "SELECT version FROM blueprint_versions WHERE use_case = ? ORDER BY version DESC LIMIT 1",
            (use_case,))
        return rows[0].version if rows else 0

    async def add_version(
        self, version: BlueprintVersion, expected_latest: int, request: AppliedRequest | None,
        change: str = "",
    ) -> None:
        if version.version != expected_latest + 1:
            raise VersionConflict(
                f"{version.use_case}: version {version.version} does not follow {expected_latest}")
        if expected_latest:
            # Versions are never deleted: if N exists and N+1 does not (checked by the
            # LWT below), the latest version is N.
            exists = await self.conn.execute(
                "SELECT version FROM blueprint_versions WHERE use_case = ? AND version = ?",
                (version.use_case, expected_latest))
            if not exists:
                latest = await self._latest(version.use_case)
                raise VersionConflict(f"{version.use_case}: latest is {latest}, not {expected_latest}")
        applied, _ = await lwt(
            self.conn,
            "INSERT INTO blueprint_versions (use_case, version, blueprint, create_time_ms, author, reason, "
            "request_id, changed_fields, change, change_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "IF NOT EXISTS",
            (version.use_case, version.version, version.blueprint.SerializeToString(),
             version.create_time_ms, version.author, version.reason,
             request.request_id if request else None,
             list(request.changed_fields) if request else None,
             change or ("apply" if expected_latest else "create"), uuid.uuid1()))
        if not applied:
            latest = await self._latest(version.use_case)
            raise VersionConflict(f"{version.use_case}: latest is {latest}, not {expected_latest}")

    async def remember_request(self, request: AppliedRequest, time_ms: int) -> None:
        # First write wins, as INSERT OR IGNORE does in SQLite.
        await lwt(self.conn,
                  "INSERT INTO apply_requests (request_id, use_case, version, time_ms) VALUES (?, ?, ?, ?) "
                  "IF NOT EXISTS", (request.request_id, request.use_case, request.version, time_ms))

    async def set_kill_switch(self, use_case: str, enabled: bool, time_ms: int,
                              author: str = "", reason: str = "") -> bool:
        latest = await self._latest(use_case)
        if not latest:
            return False
        await self.conn.write(
            "INSERT INTO kill_switch_changes (use_case, kill_switch, time_ms, change_id, enabled, version, "
            "author, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (use_case, enabled, time_ms, uuid.uuid1(), enabled, latest, author, reason))
        return True

    async def set_archived(self, use_case: str, archived: bool, time_ms: int,
                           author: str = "", reason: str = "") -> bool:
        latest = await self._latest(use_case)
        if not latest:
            return False
        await self.conn.write(
            "INSERT INTO archive_changes (use_case, archived, time_ms, change_id, archive, version, "
            "author, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (use_case, archived, time_ms, uuid.uuid1(), archived, latest, author, reason))
        return True

    async def audit(self, use_case: str) -> list[UseCaseChange]:
        versions = await fetch_all(
            self.conn, "SELECT version, create_time_ms, author, reason, request_id, change, change_id "
            "FROM blueprint_versions WHERE use_case = ?", (use_case,))
        switches = await fetch_all(
            self.conn, "SELECT time_ms, change_id, enabled, version, author, reason FROM kill_switch_changes "
            "WHERE use_case = ?", (use_case,))
        archives = await fetch_all(
            self.conn, "SELECT time_ms, change_id, archive, version, author, reason FROM archive_changes "
            "WHERE use_case = ?", (use_case,))
        # Sorted by time, then by the time-based change id (rows written before the
        # ids existed sort first within their millisecond), then versions first.
        changes = [((r.create_time_ms, _order(r.change_id), 0, r.version), UseCaseChange(
            use_case, r.version, r.change or ("create" if r.version == 1 else "apply"), r.create_time_ms,
            r.author or "", r.reason or "", r.request_id or "")) for r in versions]
        changes += [((r.time_ms, _order(r.change_id), 1, r.version), UseCaseChange(
            use_case, r.version, "kill_switch_on" if r.enabled else "kill_switch_off", r.time_ms,
            r.author or "", r.reason or "")) for r in switches if r.time_ms is not None]
        changes += [((r.time_ms, _order(r.change_id), 2, r.version), UseCaseChange(
            use_case, r.version, "archive" if r.archive else "unarchive", r.time_ms,
            r.author or "", r.reason or "")) for r in archives if r.time_ms is not None]
        changes.sort(key=lambda c: c[0])
        return [c for _, c in changes]

    def close(self) -> None:
        self.conn.close()


def _order(change_id: uuid.UUID | None) -> int:
    """The 100-ns timestamp of a time-based change id (-1 without one)."""
    return change_id.time if change_id is not None else -1
