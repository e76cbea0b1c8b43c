"""Live figures of a use case: GetStats polled by the console, a short history in memory.

When a user opens a use case's live page, the console polls ``GetStats`` for it every
``POLL_INTERVAL_S`` seconds with that user's token and keeps the last ``HISTORY_POINTS``
samples in this process (nothing is stored anywhere else: a restart starts afresh, and
two console replicas keep two histories). Polling stops ``WATCH_FOR_S`` after the last
view, or at once when the token is refused. The history is shown only to a user whose
own ``GetStats`` call for the page succeeded.

Per sample: decisions per second (the change of the stored decision count over the
interval), the join rate, the fallback share of the interval's decisions, the
exploration share of a sample of the interval's decisions (``ReadTrainingData``, first
batch of at most ``EXPLORATION_SAMPLE_ROWS`` rows: GetStats has no exploration count)
and the feature and prediction drift (PSI) that the feedback service last computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np

from loopwise.client import AsyncClient
from loopwise.feedback.v1 import feedback_service_pb2 as fpb

log = logging.getLogger("loopwise.console.live")

POLL_INTERVAL_S = 5.0
HISTORY_POINTS = 360  # 30 minutes at 5 s
WATCH_FOR_S = 600.0
EXPLORATION_SAMPLE_ROWS = 2000
# Decisions reach the feedback service in batches: the exploration sample reads up to
# this many real seconds before now.
DELIVERY_LAG_S = 1.0
RECENT_DECISIONS = 10
_REFUSED = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.NOT_FOUND)


@dataclass(frozen=True)
class Sample:
    """One poll of a use case."""

    time: float  # epoch seconds (real)
    decisions: int
    fallback_decisions: int
    join_rate: float
    decisions_per_s: float | None
    fallback_share: float | None  # of the interval's decisions
    exploration_share: float | None  # of the sampled decisions of the interval
    exploration_rows: int
    drift_status: str
    max_feature_psi: float | None
    prediction_psi: float | None
    feature_psi: dict[str, float] = field(default_factory=dict)


@dataclass
class _Series:
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    token: str = ""
    viewed: float = 0.0
    task: asyncio.Task | None = None
    window_end_ms: int = 0
    recent: list[str] = field(default_factory=list)


def _drift(stats: fpb.GetStatsResponse) -> tuple[str, float | None, float | None, dict[str, float]]:
    if not stats.HasField("drift"):
        return "not computed yet", None, None, {}
    drift = stats.drift
    has_model = drift.status not in ("no_model", "no_profile")
    features = {f.name: f.psi for f in drift.features} if has_model else {}
    return (drift.status, drift.max_feature_psi if has_model else None,
            drift.prediction_psi if has_model else None, features)


class LiveMonitor:
    """Polls GetStats per use case while someone watches; keeps a short history."""

    def __init__(self, client_for: Callable[[str], AsyncClient],
                 interval_s: float = POLL_INTERVAL_S) -> None:
        self.client_for = client_for
        self.interval_s = interval_s
        self._series: dict[str, _Series] = {}

    def history(self, use_case: str) -> list[Sample]:
        """The samples kept for a use case, oldest first."""
        series = self._series.get(use_case)
        return list(series.samples) if series else []

    def recent_decisions(self, use_case: str) -> list[str]:
        """Ids of decisions seen in the latest exploration sample."""
        series = self._series.get(use_case)
        return list(series.recent) if series else []

    async def viewed(self, use_case: str, token: str, stats: fpb.GetStatsResponse) -> None:
        """A user whose token just read ``stats`` watches the use case: record the sample
        and poll with that token from now on."""
        series = self._series.setdefault(use_case, _Series())
        series.token, series.viewed = token, time.monotonic()
        last = series.samples[-1] if series.samples else None
        if last is None or time.time() - last.time >= 1.0:
            await self._record(use_case, series, stats)
        if series.task is None or series.task.done():
            series.task = asyncio.get_running_loop().create_task(self._poll(use_case, series))

    def forget_token(self, token: str) -> None:
        """Stop polling with a token (its user logged out)."""
        for series in self._series.values():
            if series.token == token:
                series.token = ""
                if series.task is not None:
                    series.task.cancel()

    async def close(self) -> None:
        """Stop every poller."""
        tasks = [s.task for s in self._series.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _poll(self, use_case: str, series: _Series) -> None:
        while series.token and time.monotonic() - series.viewed < WATCH_FOR_S:
            await asyncio.sleep(self.interval_s)
            if not series.token:
                break
            client = self.client_for(series.token)
            try:
                stats = await client.get_stats(use_case)
                await self._record(use_case, series, stats, client)
            except grpc.RpcError as error:
                if error.code() in _REFUSED:
                    log.info("live polling of %s stopped: %s", use_case, error.code().name)
                    series.token = ""
                    break
                log.warning("live polling of %s: %s", use_case, error.code().name)

    async def _record(self, use_case: str, series: _Series, stats: fpb.GetStatsResponse,
                      client: AsyncClient | None = None) -> None:
        now = time.time()
        last = series.samples[-1] if series.samples else None
        per_s = fallback = None
        if last is not None and now > last.time:
            delta = stats.decisions - last.decisions
            per_s = max(0.0, delta / (now - last.time))
            if delta > 0:
                fallback = min(1.0, max(0.0, (stats.fallback_decisions - last.fallback_decisions) / delta))
        explored = rows = 0
        client = client or (self.client_for(series.token) if series.token else None)
        if client is not None:
            explored, rows = await self._exploration(use_case, series, client)
        status, max_psi, prediction_psi, features = _drift(stats)
        series.samples.append(Sample(
            time=now, decisions=stats.decisions, fallback_decisions=stats.fallback_decisions,
            join_rate=stats.join_rate, decisions_per_s=per_s, fallback_share=fallback,
            exploration_share=explored / rows if rows else None, exploration_rows=rows,
            drift_status=status, max_feature_psi=max_psi, prediction_psi=prediction_psi,
            feature_psi=features))

    async def _exploration(self, use_case: str, series: _Series, client: AsyncClient) -> tuple[int, int]:
        """(explored, rows) among the first decisions made since the previous sample."""
        end_ms = client.clock.now_ms() - int(DELIVERY_LAG_S * 1000 * client.clock.speed)
        start_ms = series.window_end_ms or end_ms - int(self.interval_s * 1000 * client.clock.speed)
        series.window_end_ms = end_ms
        if end_ms <= start_ms:
            return 0, 0
        request = fpb.ReadTrainingDataRequest(use_case=use_case, include_open_windows=True,
                                              include_fallback=True,
                                              batch_rows=EXPLORATION_SAMPLE_ROWS)
        request.start_time.FromMilliseconds(start_ms)
        request.end_time.FromMilliseconds(end_ms)
        call = client.feedback_stub.ReadTrainingData(request, timeout=10)
        try:
            async for batch in call:
                if batch.rows:
                    series.recent = list(batch.decision_ids[-RECENT_DECISIONS:])
                    return int(np.frombuffer(batch.explored, np.uint8).sum()), batch.rows
            return 0, 0
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                log.info("exploration sample of %s: %s", use_case, error.code().name)
            return 0, 0
        finally:
            call.cancel()
