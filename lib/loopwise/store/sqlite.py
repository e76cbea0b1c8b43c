"""An SQLite database used from asyncio without blocking the event loop.

All statements of one database run on one dedicated thread (SQLite connections are
thread-affine, and one writer avoids lock contention); coroutines await them.
WAL mode with ``synchronous=NORMAL``: a committed transaction survives a process
crash (SIGKILL), which is what "acknowledged" means for the embedded store.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

T = TypeVar("T")


def parse_store_url(url: str) -> tuple[str, str]:
    """Split a store URL into (scheme, rest): ``sqlite:///var/x.db`` → (sqlite, var/x.db)."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else parsed.path
        if not path:
            raise ValueError(f"store URL {url!r} names no file")
        return "sqlite", path
    raise ValueError(f"unsupported store URL scheme {parsed.scheme!r} in {url!r}")


# The interpreter's switch interval in a process that writes SQLite in bulk: sqlite3
# releases the GIL around every row's step, and the event loop thread, busy parsing and
# validating the next requests, would keep it for the default 5 ms each time (a GIL
# convoy: 57k outcomes/s through LogOutcomes with 5 ms, 83k with 0.5 ms; bench/sqlite_ingest.py).
BULK_WRITE_SWITCH_INTERVAL_S = 0.0005


def favour_database_thread() -> None:
    """Shorten the switch interval for bulk writes (:data:`BULK_WRITE_SWITCH_INTERVAL_S`)."""
    sys.setswitchinterval(min(sys.getswitchinterval(), BULK_WRITE_SWITCH_INTERVAL_S))


# Most rows in one multi-row INSERT of :func:`insert_rows` (fewer when the library's
# limit on a statement's parameters is lower).
MAX_ROWS_PER_INSERT = 256


@functools.lru_cache(maxsize=64)
def _multi_row(insert: str, rows: int) -> str:
    """``insert`` (``INSERT ... VALUES (?, ..., ?)``) with its values group ``rows`` times."""
    head, marks = insert.rsplit("VALUES", 1)
    return f"{head}VALUES {','.join([marks.strip()] * rows)}"


def insert_rows(conn: sqlite3.Connection, insert: str, rows: Sequence[Sequence[Any]]) -> None:
    """``conn.executemany(insert, rows)``, as multi-row statements of up to
    :data:`MAX_ROWS_PER_INSERT` rows (the rest by ``executemany``): the same rows stored
    in the same order, one statement step per statement instead of one per row. Each
    step releases the GIL, and a thread that wants it back must wait for the event loop
    thread to give it up: with a step per row, a bulk write waits that long per row.
    ``insert`` ends with its one ``VALUES (?, ..., ?)`` group."""
    if not rows:
        return
    width = len(rows[0])
    per = max(1, min(MAX_ROWS_PER_INSERT, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width))
    full = len(rows) - len(rows) % per if per > 1 else 0
    if full:
        sql = _multi_row(insert, per)
        for start in range(0, full, per):
            conn.execute(sql, list(chain.from_iterable(rows[start:start + per])))
    if full < len(rows):
        conn.executemany(insert, rows[full:])


class SqliteDatabase:
    """One SQLite file, its schema applied at open, used through ``await db.run(fn)``."""

    def __init__(self, path: str | Path, schema: str = "") -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{self.path.stem}")
        self._conn: sqlite3.Connection | None = None
        self._schema = schema
        self._executor.submit(self._open).result()

    def _open(self) -> None:
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        if self._schema:
            conn.executescript(self._schema)
        self._conn = conn

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection; only use it inside functions passed to :meth:`run`."""
        assert self._conn is not None
        return self._conn

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` on the database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self.conn, *args))

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` on the database thread and wait (outside a loop)."""
        return self._executor.submit(lambda: fn(self.conn, *args)).result()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """All rows of a query."""
        return await self.run(lambda c: c.execute(sql, params).fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        """The first row of a query, or None."""
        return await self.run(lambda c: c.execute(sql, params).fetchone())

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the number of changed rows."""
        return await self.run(lambda c: c.execute(sql, params).rowcount)

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` inside BEGIN IMMEDIATE … COMMIT (ROLLBACK on error)."""

        def body(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self.run(body)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for many rows in a single transaction."""
        rows = list(rows)
        await self.transaction(lambda c: c.executemany(sql, rows))

    def close(self) -> None:
        """Close the connection and stop the database thread."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._executor.submit(conn.close).result()
        self._executor.shutdown(wait=True)
