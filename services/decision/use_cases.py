"""Use cases: apply (validate, version, audit), read and list blueprint versions.

Versions are immutable, so all of them live in memory after :meth:`UseCases.load`;
decisions never touch the store. Every decision process (each pod, each worker)
re-reads the store every ``SYNC_INTERVAL_S`` (:meth:`UseCases.sync_forever`), so a
version, kill switch or archive flag written through another one is served within
that interval. A name or version not held yet is looked up in the store before it is
refused (:meth:`UseCases.catch_up`): a use case applied through one replica is known
to the others at once. An apply or rollback reads the store first (it writes on top
of the latest version), and one that loses a race with another process's write reads
it again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from loopwise.clock import Clock
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.errors import (
    FailedPrecondition,
    InvalidArgument,
    LoopwiseError,
    NotFound,
    Unavailable,
)
from loopwise.periodic import every
from loopwise.services.decision.arm_parameters import check_arm_parameters
from loopwise.services.decision.blueprints import (
    changed_fields,
    check_use_case_name,
    diff,
    validate_blueprint,
)
from loopwise.services.decision.encoding import UseCaseVersion
from loopwise.store.decision import (
    AppliedRequest,
    BlueprintVersion,
    UseCaseChange,
    UseCaseStore,
    VersionConflict,
)

log = logging.getLogger("loopwise.decision.use_cases")
T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Seconds between two re-reads of the store by every decision process.
SYNC_INTERVAL_S = 1.0
# Least seconds between two look-ups caused by unknown names (a flood of unknown names
# costs the store at most one read per interval).
CATCH_UP_INTERVAL_S = 0.05
# Tries of an apply or rollback whose version another process wrote first (re-read,
# then again), and the pause before the n-th re-read: RETRY_PAUSE_S × (n + a random
# fraction).
APPLY_TRIES = 3
RETRY_PAUSE_S = 0.02


@dataclass(frozen=True)
class ApplyResult:
    """What ApplyUseCase did."""

    version: UseCaseVersion
    latest_version: int
    created: bool
    changed_fields: tuple[str, ...]
    kill_switch: bool = False
    diff: tuple[tuple[str, str, str], ...] = ()
    archived: bool = False


class UseCases:
    """The in-memory view of every use case and blueprint version, backed by a store."""

    def __init__(self, store: UseCaseStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._versions: dict[str, list[UseCaseVersion]] = {}
        self._kill: dict[str, bool] = {}
        self._archived: dict[str, bool] = {}
        self._requests: dict[str, AppliedRequest] = {}
        self._lock = asyncio.Lock()
        self._catch_up_lock = asyncio.Lock()
        self._reads_started = 0  # store reads begun by refresh()
        self._read_tried = 0  # the number (in that count) of the last read ended
        self._read_failed = False  # whether that read failed
        self._catch_up_at = -CATCH_UP_INTERVAL_S  # monotonic time of the last catch-up read

    async def load(self) -> None:
        """Read every stored version into memory."""
        await self.refresh()

    async def sync_forever(self, interval_s: float | None = None) -> None:
        """Re-read the store every ``interval_s`` (default ``SYNC_INTERVAL_S``) until
        cancelled (a failed read is logged and retried at the next interval)."""
        await every(SYNC_INTERVAL_S if interval_s is None else interval_s, self.refresh,
                    "re-reading use cases from the store", log)

    async def catch_up(self, use_case: str, version: int = 0) -> None:
        """Make sure a use case (at ``version``; 0: any) not held yet was looked for in
        the store after this call began: it may have been written through another
        process. Held ones, and malformed names, return at once. Concurrent callers
        share one read (successful or not), and such reads are at least
        ``CATCH_UP_INTERVAL_S`` apart. UNAVAILABLE when it is still not held and the
        last read of the store failed: whether it exists cannot be known now."""
        if self.find(use_case, version) is not None or version < 0:
            return
        try:
            self.check_name(use_case)
        except LoopwiseError:
            return  # refused as malformed by the caller's own check
        missed = self._reads_started
        async with self._catch_up_lock:
            if self._read_tried <= missed and self.find(use_case, version) is None:
                wait = self._catch_up_at + CATCH_UP_INTERVAL_S - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._catch_up_at = time.monotonic()
                try:
                    await self.refresh()
                except Exception as exc:  # noted in _read_failed, answered below
                    log.warning("looking up %r in the store failed: %s: %s", use_case, type(exc).__name__, exc)
        if self._read_failed and self.find(use_case, version) is None:
            raise Unavailable(f"use case {use_case!r} is not known to this decision process and the store, "
                              "where another one may have written it, cannot be read now")

    async def refresh(self) -> bool:
        """Merge what the store holds (e.g. written by another worker); True if anything changed.

        Versions are immutable and numbered, so merging appends the ones not held yet;
        kill switches and archive flags are replaced by the stored ones."""
        async with self._lock:  # an apply in this process is not half-merged
            self._reads_started += 1
            read = self._reads_started
            try:
                # Only the versions after those held: versions never change once written.
                held = {name: len(have) for name, have in self._versions.items()}
                stored = await self.store.load(held or None)
            except BaseException:
                self._read_tried, self._read_failed = read, True
                raise
            changed = False
            for v in sorted(stored.versions, key=lambda v: (v.use_case, v.version)):
                have = self._versions.get(v.use_case, [])
                if v.version == len(have) + 1:  # a gap (a replica behind) is read again next time
                    self._versions.setdefault(v.use_case, have).append(UseCaseVersion(v))
                    changed = True
            kill, archived = dict(stored.kill_switches), dict(stored.archived)
            if kill != self._kill or archived != self._archived:
                self._kill, self._archived = kill, archived
                changed = True
            for r in stored.requests:
                self._requests.setdefault(r.request_id, r)
            self._read_tried, self._read_failed = read, False
            return changed

    # -- reads (no I/O) -----------------------------------------------------------
    def get(self, use_case: str, version: int = 0, field: str = "version") -> UseCaseVersion:
        """A version (0: latest); NOT_FOUND for an unknown use case or version."""
        versions = self._versions.get(use_case)
        if not versions:
            raise NotFound(f"use case {use_case!r} does not exist")
        if version < 0:
            raise InvalidArgument(field, "must be >= 0")
        if version == 0:
            return versions[-1]
        if version > len(versions):
            raise NotFound(f"use case {use_case!r} has no blueprint version {version} (latest {len(versions)})")
        return versions[version - 1]

    def find(self, use_case: str, version: int) -> UseCaseVersion | None:
        """A version, or None when unknown (0: latest)."""
        versions = self._versions.get(use_case)
        if not versions or version < 0 or version > len(versions):
            return None
        return versions[version - 1] if version else versions[-1]

    def latest_version(self, use_case: str) -> int:
        """The latest version number (0 when the use case does not exist)."""
        return len(self._versions.get(use_case, ()))

    def kill_switch(self, use_case: str) -> bool:
        """Whether the default decision is forced."""
        return self._kill.get(use_case, False)

    def archived(self, use_case: str) -> bool:
        """Whether the use case is archived (it refuses decisions)."""
        return self._archived.get(use_case, False)

    def list(self, page_size: int, page_token: str, include_archived: bool = False) -> tuple[list[UseCaseVersion], str]:
        """Latest versions by name after ``page_token``; and the next token. Archived
        use cases only with ``include_archived``."""
        if page_size < 0:
            raise InvalidArgument("page_size", "must be >= 0")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        names = sorted(n for n in self._versions
                       if n > page_token and (include_archived or not self.archived(n)))
        page = names[:size]
        token = page[-1] if len(names) > size else ""
        return [self._versions[n][-1] for n in page], token

    # -- apply --------------------------------------------------------------------
    async def apply(
        self, blueprint: bp.Blueprint, *, request_id: str = "", validate_only: bool = False,
        author: str = "", reason: str = "",
    ) -> ApplyResult:
        """Validate, then create a new version when the blueprint changed. A version
        written first through another process is read, and the apply tried again on
        top of it (UNAVAILABLE after ``APPLY_TRIES`` such races)."""
        validate_blueprint(blueprint)
        check_arm_parameters(blueprint)
        if validate_only:
            await self.catch_up(blueprint.use_case)
        else:
            await self.refresh()  # compared with the latest version, wherever it was written
        return await self._on_latest(
            blueprint.use_case, lambda: self._apply_once(blueprint, request_id, validate_only, author, reason))

    async def _on_latest(self, use_case: str, write: Callable[[], Awaitable[T]]) -> T:
        """Run ``write``, which adds a version on top of the latest one held; when another
        process added one first (the store refuses the write), re-read the store and run
        it again: UNAVAILABLE after ``APPLY_TRIES`` such races."""
        for attempt in range(APPLY_TRIES):
            try:
                return await write()
            except VersionConflict as conflict:
                log.info("%s: %s; re-reading the store and writing again", use_case, conflict)
                # The winner's write may take a moment to be read back (replicas).
                await asyncio.sleep(RETRY_PAUSE_S * (attempt + random.random()))
                await self.refresh()
        raise Unavailable(f"use case {use_case!r} kept changing through other replicas while this change was "
                          "written; send it again")

    async def _apply_once(self, blueprint: bp.Blueprint, request_id: str, validate_only: bool,
                          author: str, reason: str) -> ApplyResult:
        name = blueprint.use_case
        if self.archived(name) and not validate_only:
            raise FailedPrecondition(f"use case {name!r} is archived; restore it with ArchiveUseCase first")
        async with self._lock:
            if request_id and request_id in self._requests and not validate_only:
                done = self._requests[request_id]
                if done.use_case != name:
                    raise InvalidArgument("request_id", f"already used for use case {done.use_case!r}")
                return self._result(self.get(name, done.version), done.created, done.changed_fields)
            latest = self.find(name, 0)
            if latest is not None and latest.blueprint == blueprint:
                if request_id and not validate_only:
                    request = AppliedRequest(request_id, name, latest.version, False)
                    await self.store.remember_request(request, self.clock.now_ms())
                    self._requests[request_id] = request
                return self._result(latest, False, ())
            fields = tuple(changed_fields(latest.blueprint, blueprint)) if latest else ()
            delta = tuple(diff(latest.blueprint if latest else bp.Blueprint(), blueprint))
            number = (latest.version if latest else 0) + 1
            stored = BlueprintVersion(name, number, bp.Blueprint.FromString(blueprint.SerializeToString()),
                                      self.clock.now_ms(), author, reason)
            version = UseCaseVersion(stored)
            if validate_only:
                return ApplyResult(version, number - 1, False, fields, self.kill_switch(name), delta,
                                   self.archived(name))
            request = AppliedRequest(request_id, name, number, True, fields) if request_id else None
            await self.store.add_version(stored, number - 1, request)
            self._versions.setdefault(name, []).append(version)
            if request is not None:
                self._requests[request_id] = request
            log.info("%s: blueprint v%d applied by %r (%s): %s", name, number, author, reason, list(fields))
            return self._result(version, True, fields, delta)

    def _result(self, version: UseCaseVersion, created: bool, fields: tuple[str, ...],
                delta: tuple[tuple[str, str, str], ...] = ()) -> ApplyResult:
        return ApplyResult(version, self.latest_version(version.use_case), created, fields,
                           self.kill_switch(version.use_case), delta, self.archived(version.use_case))

    # -- lifecycle ----------------------------------------------------------------
    async def rollback(self, use_case: str, to_version: int, *, request_id: str = "", author: str = "",
                       reason: str = "") -> UseCaseVersion:
        """Make version ``to_version``'s blueprint current again, as a new version
        (audited as ``rollback``); a rollback whose blueprint is already the current one
        makes no new version. Retrying with the same ``request_id``, through any
        process, answers the version the first call answered: the id is kept in the
        store with it, in one namespace with ApplyUseCase's ids (an id reused for the
        other call answers the first call's version)."""
        self.check_name(use_case)
        if to_version <= 0:
            raise InvalidArgument("to_version", "must be a version >= 1")
        await self.refresh()  # the latest version, wherever it was written
        target = self.get(use_case, to_version, "to_version")
        if self.archived(use_case):
            raise FailedPrecondition(f"use case {use_case!r} is archived; restore it with ArchiveUseCase first")
        return await self._on_latest(
            use_case, lambda: self._rollback_once(use_case, to_version, target, request_id, author, reason))

    async def _rollback_once(self, use_case: str, to_version: int, target: UseCaseVersion, request_id: str,
                             author: str, reason: str) -> UseCaseVersion:
        async with self._lock:
            done = self._requests.get(request_id) if request_id else None
            if done is not None:  # kept in the store: a retry through any process finds it
                if done.use_case != use_case:
                    raise InvalidArgument("request_id", f"already used for use case {done.use_case!r}")
                return self.get(use_case, done.version)
            latest = self.get(use_case)
            if to_version == latest.version:
                raise FailedPrecondition(f"version {to_version} is already the current version")
            if latest.blueprint == target.blueprint:
                if request_id:  # a retry answers this version too, whatever came after
                    request = AppliedRequest(request_id, use_case, latest.version, False)
                    await self.store.remember_request(request, self.clock.now_ms())
                    self._requests[request_id] = request
                return latest
            number = latest.version + 1
            why = f"rollback to v{to_version}" + (f": {reason}" if reason else "")
            stored = BlueprintVersion(use_case, number, bp.Blueprint.FromString(target.blueprint.SerializeToString()),
                                      self.clock.now_ms(), author, why)
            request = AppliedRequest(request_id, use_case, number, True) if request_id else None
            await self.store.add_version(stored, latest.version, request, change="rollback")
            version = UseCaseVersion(stored)
            self._versions[use_case].append(version)
            if request is not None:
                self._requests[request_id] = request
            log.warning("%s: rolled back to v%d as v%d by %r (%s)", use_case, to_version, number, author, reason)
            return version

    async def set_kill_switch(self, use_case: str, enabled: bool, *, author: str = "", reason: str = "") -> None:
        """Force (or stop forcing) the default decision; effective for the next request."""
        self.check_name(use_case)
        await self.catch_up(use_case)
        self.get(use_case)
        async with self._lock:
            if not await self.store.set_kill_switch(use_case, enabled, self.clock.now_ms(), author, reason):
                raise NotFound(f"use case {use_case!r} does not exist")
            self._kill[use_case] = enabled
        log.warning("%s: kill switch %s by %r (%s)", use_case, "ON" if enabled else "off", author, reason)

    async def set_archived(self, use_case: str, archived: bool, *, author: str = "", reason: str = "") -> None:
        """Archive (or restore) a use case."""
        self.check_name(use_case)
        await self.catch_up(use_case)
        self.get(use_case)
        async with self._lock:
            if not await self.store.set_archived(use_case, archived, self.clock.now_ms(), author, reason):
                raise NotFound(f"use case {use_case!r} does not exist")
            self._archived[use_case] = archived
        log.warning("%s: %s by %r (%s)", use_case, "archived" if archived else "restored", author, reason)

    async def changes(self, use_case: str) -> list[UseCaseChange]:
        """The audit trail of a use case, oldest first."""
        self.check_name(use_case)
        await self.catch_up(use_case)
        self.get(use_case)
        return await self.store.audit(use_case)

    @staticmethod
    def check_name(use_case: str, field: str = "use_case") -> None:
        """INVALID_ARGUMENT naming ``field`` for a malformed use case name."""
        check_use_case_name(use_case, field)
