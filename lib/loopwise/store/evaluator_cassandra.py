"""The evaluator's reports in Cassandra (tables in ``cql/evaluator``).

- ``effect_reports`` ``(report_id)``: the result and the ids of its two blobs;
- ``effect_report_chunks`` ``((blob_id, chunk))``: the HTML page and the pickled
  estimator in ~1 MiB chunks with a sha256 each (they may be several MiB);
- ``effect_reports_by_use_case`` ``(use_case, report_id DESC)``: listings, newest first
  (report ids are UUIDv7, so text order is creation order).

Blobs are written before the row naming them, so a report is never seen half-written.
"""

from __future__ import annotations

import heapq

from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.store.cassandra import CassandraConnection
from loopwise.store.cassandra_support import ChunkedBlobs, fetch_all
from loopwise.store.evaluator import ReportStore, StoredReport


class CassandraReportStore(ReportStore):
    """Effect reports in the shared keyspace."""

    def __init__(self, conn: CassandraConnection) -> None:
        self.conn = conn
        self.blobs = ChunkedBlobs(conn, "effect_report_chunks")

    async def save(self, result: epb.EstimateEffectsResult, html: bytes, estimator: bytes) -> None:
        html_id, html_chunks = await self.blobs.write(html)
        estimator_id, estimator_chunks = await self.blobs.write(estimator)
        body = result.SerializeToString()
        await self.conn.write_many([
            ("INSERT INTO effect_reports (report_id, use_case, result, html_id, html_chunks, estimator_id, "
             "estimator_chunks) VALUES (?, ?, ?, ?, ?, ?, ?)",
             (result.report_id, result.use_case, body, html_id, html_chunks, estimator_id, estimator_chunks)),
            ("INSERT INTO effect_reports_by_use_case (use_case, report_id, result) VALUES (?, ?, ?)",
             (result.use_case, result.report_id, body)),
        ])

    async def get(self, report_id: str) -> StoredReport | None:
        rows = await self.conn.execute(
            "SELECT result, html_id, html_chunks FROM effect_reports WHERE report_id = ?", (report_id,))
        if not rows:
            return None
        html = await self.blobs.read(rows[0].html_id, rows[0].html_chunks or 0)
        return StoredReport(epb.EstimateEffectsResult.FromString(rows[0].result), html)

    async def get_estimator(self, report_id: str) -> bytes | None:
        rows = await self.conn.execute(
            "SELECT estimator_id, estimator_chunks FROM effect_reports WHERE report_id = ?", (report_id,))
        if not rows:
            return None
        return await self.blobs.read(rows[0].estimator_id, rows[0].estimator_chunks or 0)

    async def _page(self, use_case: str, limit: int) -> list[epb.EstimateEffectsResult]:
        rows = await self.conn.execute(
            "SELECT result FROM effect_reports_by_use_case WHERE use_case = ? LIMIT ?", (use_case, limit))
        return [epb.EstimateEffectsResult.FromString(r.result) for r in rows]

    async def list(self, use_case: str, limit: int) -> list[epb.EstimateEffectsResult]:
        if use_case:
            return await self._page(use_case, limit)
        use_cases = [r.use_case for r in await fetch_all(
            self.conn, "SELECT DISTINCT use_case FROM effect_reports_by_use_case")]
        pages = [await self._page(uc, limit) for uc in use_cases]
        merged = heapq.merge(*pages, key=lambda r: r.report_id, reverse=True)
        return [r for _, r in zip(range(limit), merged, strict=False)]
