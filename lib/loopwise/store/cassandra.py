"""Cassandra connection, schema migrations and asyncio bridging shared by the backends.

Store URL (documented in docs/storage.md)::

    cassandra://[user:pass@]host1:9042,host2:9042/keyspace
        ?local_dc=dc1&consistency=LOCAL_QUORUM&replication=SimpleStrategy:1
        &tls=true&tls_ca=/path/ca.pem&max_in_flight=256

``replication`` is ``SimpleStrategy:<rf>`` (one node, development) or
``NetworkTopologyStrategy:dc1=3,dc2=3`` (production). Sessions use token-aware,
DC-aware routing and prepared statements; writes are async with a bounded in-flight
window, handed to the driver in chunks (one asyncio wake-up per chunk, not per write).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

log = logging.getLogger("loopwise.store.cassandra")

# Writes handed to the driver together: each chunk takes one place of the in-flight
# window (``max_in_flight`` / WRITE_CHUNK places) and wakes the event loop once.
WRITE_CHUNK = 32


@dataclass(frozen=True)
class CassandraUrl:
    """A parsed ``cassandra://`` store URL."""

    hosts: tuple[tuple[str, int], ...]
    keyspace: str
    username: str = ""
    password: str = ""
    local_dc: str = ""
    consistency: str = "LOCAL_QUORUM"
    replication: dict[str, Any] = field(default_factory=lambda: {"class": "SimpleStrategy", "replication_factor": 1})
    tls: bool = False
    tls_ca: str = ""
    max_in_flight: int = 256

    @classmethod
    def parse(cls, url: str) -> CassandraUrl:
        """Parse a store URL; ValueError names what is wrong."""
        parsed = urlparse(url)
        if parsed.scheme != "cassandra":
            raise ValueError(f"not a cassandra:// URL: {url!r}")
        netloc = parsed.netloc
        username = password = ""
        if "@" in netloc:
            creds, netloc = netloc.rsplit("@", 1)
            username, _, password = creds.partition(":")
            username, password = unquote(username), unquote(password)
        hosts = []
        for part in filter(None, netloc.split(",")):
            host, _, port = part.partition(":")
            hosts.append((host, int(port or 9042)))
        if not hosts:
            raise ValueError(f"no hosts in {url!r}")
        keyspace = parsed.path.strip("/")
        if not keyspace or not keyspace.replace("_", "").isalnum():
            raise ValueError(f"bad or missing keyspace in {url!r}")
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        return cls(
            hosts=tuple(hosts), keyspace=keyspace, username=username, password=password,
            local_dc=query.get("local_dc", ""),
            consistency=query.get("consistency", "LOCAL_QUORUM").upper(),
            replication=_parse_replication(query.get("replication", "SimpleStrategy:1")),
            tls=query.get("tls", "false").lower() in ("1", "true", "yes"),
            tls_ca=query.get("tls_ca", ""),
            max_in_flight=int(query.get("max_in_flight", "256")),
        )


def _parse_replication(text: str) -> dict[str, Any]:
    strategy, _, rest = text.partition(":")
    if strategy == "SimpleStrategy":
        return {"class": "SimpleStrategy", "replication_factor": int(rest or 1)}
    if strategy == "NetworkTopologyStrategy":
        out: dict[str, Any] = {"class": "NetworkTopologyStrategy"}
        for item in filter(None, rest.split(",")):
            dc, _, rf = item.partition("=")
            out[dc] = int(rf)
        if len(out) == 1:
            raise ValueError("NetworkTopologyStrategy needs dc=rf pairs")
        return out
    raise ValueError(f"unknown replication strategy {strategy!r}")


class CassandraConnection:
    """One driver session for a keyspace, with async helpers and a write window."""

    def __init__(self, url: CassandraUrl, consistency_override: str | None = None) -> None:
        from cassandra import ConsistencyLevel
        from cassandra.auth import PlainTextAuthProvider
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

        self.url = url
        consistency = getattr(ConsistencyLevel, consistency_override or url.consistency)
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=url.local_dc or None)),
            consistency_level=consistency,
            serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
            request_timeout=20.0,
        )
        ssl_context = None
        if url.tls:
            ssl_context = ssl.create_default_context(cafile=url.tls_ca or None)
        auth = PlainTextAuthProvider(url.username, url.password) if url.username else None
        self.cluster = Cluster(
            contact_points=[h for h, _ in url.hosts], port=url.hosts[0][1],
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            auth_provider=auth, ssl_context=ssl_context, protocol_version=5,
            connect_timeout=10,
        )
        self.session = self.cluster.connect()
        self._prepared: dict[str, Any] = {}
        self._chunk = max(1, min(WRITE_CHUNK, url.max_in_flight))
        self._window = asyncio.Semaphore(max(1, url.max_in_flight // self._chunk))

    def ensure_keyspace(self) -> None:
        """Create the keyspace if missing (idempotent)."""
        rep = ", ".join(f"'{k}': {v!r}" if not isinstance(v, str) else f"'{k}': '{v}'"
                        for k, v in self.url.replication.items())
        self.session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {self.url.keyspace} WITH replication = {{{rep}}}"
        )
        self.session.set_keyspace(self.url.keyspace)

    def apply_migrations(self, owner: str, directory: Path) -> list[str]:
        """Apply versioned CQL files ``NNN_name.cql`` of ``owner`` not yet applied.

        Files hold ``;``-separated statements and must only add (tables, columns,
        indexes) so that old and new service versions can run side by side."""
        self.ensure_keyspace()
        self.session.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (owner text, version text, "
            "PRIMARY KEY (owner, version))"
        )
        done = {r.version for r in self.session.execute(
            "SELECT version FROM schema_migrations WHERE owner=%s", (owner,))}
        applied = []
        for path in sorted(directory.glob("*.cql")):
            if path.stem in done:
                continue
            for statement in _statements(path.read_text()):
                self.session.execute(statement, timeout=60)
            self.session.execute(
                "INSERT INTO schema_migrations (owner, version) VALUES (%s, %s)", (owner, path.stem)
            )
            applied.append(path.stem)
        if applied:
            log.info("applied %s migrations: %s", owner, applied)
        return applied

    def pending_migrations(self, owner: str, directory: Path) -> list[str]:
        """Versions of ``owner``'s CQL files not yet applied to the keyspace (all of them
        when the keyspace or its ``schema_migrations`` table does not exist yet)."""
        versions = [path.stem for path in sorted(directory.glob("*.cql"))]
        keyspace = self.cluster.metadata.keyspaces.get(self.url.keyspace)
        if keyspace is None or "schema_migrations" not in keyspace.tables:
            return versions
        done = {r.version for r in self.session.execute(
            f"SELECT version FROM {self.url.keyspace}.schema_migrations WHERE owner=%s", (owner,))}
        return [v for v in versions if v not in done]

    def require_migrations(self, owner: str, directory: Path) -> None:
        """Use the keyspace as migrated by ``loopwise migrate`` (or the chart's migrations
        Job); raise RuntimeError naming the versions still missing."""
        pending = self.pending_migrations(owner, directory)
        if pending:
            raise RuntimeError(
                f"the {owner} schema in keyspace {self.url.keyspace!r} lacks migrations {pending}: "
                "run `loopwise migrate` (LOOPWISE_STORE_MIGRATE_ON_START is false)")
        self.session.set_keyspace(self.url.keyspace)

    def prepare(self, cql: str) -> Any:
        """A prepared statement (cached by text)."""
        statement = self._prepared.get(cql)
        if statement is None:
            statement = self._prepared[cql] = self.session.prepare(cql)
        return statement

    async def execute(self, cql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Execute a prepared statement asynchronously; all rows of the first page."""
        future = self.session.execute_async(self.prepare(cql), params)
        return await _bridge(future)

    async def write(self, cql: str, params: Sequence[Any]) -> None:
        """One write, within the bounded in-flight window."""
        await self.write_many([(cql, params)])

    async def write_many(self, items: Iterable[tuple[str, Sequence[Any]]]) -> None:
        """Many writes concurrently, never more than ``max_in_flight`` at a time (in
        chunks of WRITE_CHUNK, or of ``max_in_flight`` when that is smaller). Returns
        only once every write is answered; raises the first error."""
        statements = [(self.prepare(cql), params) for cql, params in items]
        chunks = [statements[i:i + self._chunk] for i in range(0, len(statements), self._chunk)]
        if len(chunks) == 1:
            await self._write_chunk(chunks[0])
            return
        results = await asyncio.gather(*(self._write_chunk(chunk) for chunk in chunks), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _write_chunk(self, statements: Sequence[tuple[Any, Sequence[Any]]]) -> None:
        async with self._window:
            await _bridge_all([self.session.execute_async(statement, params) for statement, params in statements])

    def close(self) -> None:
        """Shut the driver down."""
        self.cluster.shutdown()


def _statements(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


async def _bridge(response_future: Any) -> list[Any]:
    """Await a driver ResponseFuture from asyncio (callbacks run on driver threads)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def ok(rows: Any) -> None:
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(list(rows or [])))

    def fail(exc: BaseException) -> None:
        loop.call_soon_threadsafe(lambda: done.done() or done.set_exception(exc))

    response_future.add_callbacks(ok, fail)
    return await done


async def _bridge_all(response_futures: Sequence[Any]) -> None:
    """Await every one of many driver ResponseFutures from asyncio with one wake-up of
    the event loop, once all are answered; raises the first error."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()
    lock = threading.Lock()
    state: dict[str, Any] = {"left": len(response_futures), "error": None}

    def settle() -> None:
        if not done.done():
            if state["error"] is not None:
                done.set_exception(state["error"])
            else:
                done.set_result(None)

    def answered(error: BaseException | None) -> None:
        with lock:  # callbacks run on the driver's threads
            if error is not None and state["error"] is None:
                state["error"] = error
            state["left"] -= 1
            last = state["left"] == 0
        if last:
            loop.call_soon_threadsafe(settle)

    for response_future in response_futures:
        response_future.add_callbacks(lambda _rows: answered(None), answered)
    if response_futures:
        await done
