"""Helpers the Cassandra backends of the decision, trainer and evaluator stores share:
opening a connection with an owner's migrations, paged reads off the event loop,
lightweight transactions, and blobs kept in ~1 MiB chunks with a sha256 per chunk.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from loopwise.errors import Unavailable
from loopwise.store.cassandra import CassandraConnection, CassandraUrl

CQL_DIR = Path(__file__).resolve().parent / "cql"
CHUNK_BYTES = 1024 * 1024


def open_connection(url: str, *owners: str, migrate: bool = True) -> CassandraConnection:
    """Connect to the keyspace of ``url`` and apply the CQL migrations of ``owners``; with
    ``migrate`` false, only check that they were applied (``loopwise migrate``)."""
    conn = CassandraConnection(CassandraUrl.parse(url))
    try:
        for owner in owners:
            if migrate:
                conn.apply_migrations(owner, CQL_DIR / owner)
            else:
                conn.require_migrations(owner, CQL_DIR / owner)
    except BaseException:
        conn.close()
        raise
    return conn


async def fetch_all(conn: CassandraConnection, cql: str, params: Sequence[Any] = (),
                    fetch_size: int = 500) -> list[Any]:
    """Every row of a (possibly multi-page) query; the paging runs on a worker thread."""
    statement = conn.prepare(cql)

    def run() -> list[Any]:
        bound = statement.bind(params)
        bound.fetch_size = fetch_size
        return list(conn.session.execute(bound))

    return await asyncio.to_thread(run)


async def lwt(conn: CassandraConnection, cql: str, params: Sequence[Any]) -> tuple[bool, Any]:
    """Run a conditional statement (``IF …``); returns (applied, the row Cassandra sent)."""
    rows = await conn.execute(cql, params)
    row = rows[0]
    return bool(row[0]), row


class ChunkCorrupted(Unavailable):
    """A stored chunk does not match its sha256 (or is missing)."""


class ChunkedBlobs:
    """Blobs in a table ``(blob_id text, chunk int, data blob, sha256 blob,
    PRIMARY KEY ((blob_id, chunk)))``: one partition per chunk, so a large blob spreads
    over the ring and no partition exceeds ~1 MiB. A blob is written before the row that
    names it, so a reader never sees a half-written blob."""

    def __init__(self, conn: CassandraConnection, table: str, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.conn = conn
        self.table = table
        self.chunk_bytes = chunk_bytes

    async def write(self, data: bytes) -> tuple[str, int]:
        """Store ``data``; returns (blob id, chunk count)."""
        blob_id = uuid.uuid4().hex
        pieces = [data[i:i + self.chunk_bytes] for i in range(0, len(data), self.chunk_bytes)]
        await self.conn.write_many(
            (f"INSERT INTO {self.table} (blob_id, chunk, data, sha256) VALUES (?, ?, ?, ?)",
             (blob_id, i, piece, hashlib.sha256(piece).digest()))
            for i, piece in enumerate(pieces)
        )
        return blob_id, len(pieces)

    async def _chunk(self, blob_id: str, chunk: int) -> bytes:
        rows = await self.conn.execute(
            f"SELECT data, sha256 FROM {self.table} WHERE blob_id = ? AND chunk = ?", (blob_id, chunk))
        if not rows:
            raise ChunkCorrupted(f"chunk {chunk} of blob {blob_id} is missing")
        data = bytes(rows[0].data or b"")
        if hashlib.sha256(data).digest() != bytes(rows[0].sha256):
            raise ChunkCorrupted(f"chunk {chunk} of blob {blob_id} does not match its sha256")
        return data

    async def iter(self, blob_id: str, chunks: int) -> AsyncIterator[bytes]:
        """The chunks in order, each checked against its sha256 (one read ahead)."""
        if chunks <= 0:
            return
        pending = asyncio.ensure_future(self._chunk(blob_id, 0))
        try:
            for i in range(chunks):
                data = await pending
                if i + 1 < chunks:
                    pending = asyncio.ensure_future(self._chunk(blob_id, i + 1))
                yield data
        finally:
            if not pending.done():
                pending.cancel()

    async def read(self, blob_id: str, chunks: int) -> bytes:
        """The whole blob, checked chunk by chunk."""
        parts = await asyncio.gather(*(self._chunk(blob_id, i) for i in range(chunks)))
        return b"".join(parts)
