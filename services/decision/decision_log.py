"""Decision logging: served decisions go to ``FeedbackService.LogDecisions`` in batches,
never on the request path, never dropped silently.

``submit`` only appends to a bounded in-memory queue; ``submit_lazy`` appends a
compact builder (arrays and ids captured by a closure) that the shipper turns into
record protos, so building protos stays off the request path. A background task sends
batches (size ``decision_log_batch_size``, at least every
``decision_log_flush_interval_s``). When the queue is full, or the feedback service
is unreachable or answers with an error, batches go to a disk spool: one file per
``LogDecisionsRequest`` (length + crc32 + bytes, fsync'd, renamed into place), named
by a sequence number. The spool is replayed in order, with the original request ids
(feedback stores decisions idempotently by id), before new batches are sent; a file is
removed only after an OK answer. A restart replays what the spool holds; shutdown
drains the queue (sending if possible, spooling otherwise).

Tracing (when on): ``submit_lazy`` keeps the span context of the request that made
the decisions, in memory beside the queue; each ``LogDecisions`` call runs in a
``decision_log.ship`` span that links to the span of every decision it carries (with
the decision id on the link), so a batch leads back to its requests and a request
forward to its batch. Links do not survive the spool: a replayed batch has none.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc

from loopwise import tracing
from loopwise.clock import Clock
from loopwise.durable import write_file_durably
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc

log = logging.getLogger("loopwise.decision.log")

_HEADER = struct.Struct("<III")  # payload length, crc32, record count
_SEND_TIMEOUT_S = 5.0
_OK, _RETRY, _REJECTED = "ok", "retry", "rejected"


@dataclass
class DecisionLogCounters:
    """What happened to logged decisions (since start; spool depth is current)."""

    submitted: int = 0  # decisions handed to the log
    acked: int = 0  # decisions the feedback service acknowledged
    spooled: int = 0  # decisions written to the spool (overflow or feedback down)
    replayed: int = 0  # spooled decisions later acknowledged
    dropped: int = 0  # decisions neither sent nor spooled (disk failure); logged
    rejected: int = 0  # spooled decisions feedback refused as invalid (kept as *.rejected)
    send_failures: int = 0  # LogDecisions calls that failed
    spool_files: int = 0  # files in the spool now
    spool_depth: int = 0  # decisions in the spool now


class DecisionSpool:
    """An fsync'd directory of serialized ``LogDecisionsRequest`` files, oldest first."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        for tmp in self.dir.glob("*.tmp"):  # a crash mid-write: never acknowledged
            tmp.unlink()
        self._seq = max((int(p.stem) for p in self.files()), default=0)

    def files(self) -> list[Path]:
        """Spool files in order."""
        return sorted(self.dir.glob("*.req"))

    def append(self, request: fpb.LogDecisionsRequest) -> Path:
        """Write one request durably; returns its file."""
        payload = request.SerializeToString()
        self._seq += 1
        path = self.dir / f"{self._seq:020d}.req"
        header = _HEADER.pack(len(payload), zlib.crc32(payload), len(request.decisions))
        write_file_durably(path, header, payload)
        return path

    @staticmethod
    def read(path: Path) -> fpb.LogDecisionsRequest | None:
        """The request in a file, or None when the file is damaged."""
        data = path.read_bytes()
        if len(data) < _HEADER.size:
            return None
        length, crc, _ = _HEADER.unpack_from(data)
        payload = data[_HEADER.size : _HEADER.size + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            return None
        return fpb.LogDecisionsRequest.FromString(payload)

    @staticmethod
    def count(path: Path) -> int:
        """Number of decisions in a file (from its header)."""
        with open(path, "rb") as f:
            head = f.read(_HEADER.size)
        return _HEADER.unpack(head)[2] if len(head) == _HEADER.size else 0


class DecisionLog:
    """The bounded queue, the shipper task and the spool."""

    def __init__(
        self,
        channel: grpc.aio.Channel | None,
        spool_dir: Path,
        clock: Clock,
        *,
        enabled: bool = True,
        queue_size: int = 50_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
        backoff_s: tuple[float, float] = (0.1, 2.0),
    ) -> None:
        self.stub = fgrpc.FeedbackServiceStub(channel) if channel is not None else None
        self.enabled = enabled and channel is not None
        self.clock = clock
        self.queue_size = max(1, queue_size)
        self.batch_size = max(1, batch_size)
        self.flush_interval_s = flush_interval_s
        self.backoff_s = backoff_s
        self.counters = DecisionLogCounters()
        self._queue: deque[fpb.DecisionRecord] = deque()
        self._overflow: list[fpb.DecisionRecord] = []
        self._pending: deque[tuple[int, Callable[[], list[fpb.DecisionRecord]], object]] = deque()
        # decision id -> span context of the request that made it (tracing on only)
        self._links: dict[str, object] = {}
        self._pending_count = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False
        self._retry_at = 0.0
        self._delay = backoff_s[0]
        self.spool = DecisionSpool(spool_dir) if self.enabled else None
        if self.spool is not None:
            files = self.spool.files()
            self.counters.spool_files = len(files)
            self.counters.spool_depth = sum(DecisionSpool.count(p) for p in files)

    # -- request path -------------------------------------------------------------
    def submit(self, records: Iterable[fpb.DecisionRecord]) -> None:
        """Queue decisions for logging; never blocks or awaits. Past the queue bound
        they are handed to the shipper for the spool."""
        if not self.enabled:
            return
        records = list(records)
        self.counters.submitted += len(records)
        room = self.queue_size - len(self._queue)
        if room >= len(records):
            self._queue.extend(records)
        else:
            self._queue.extend(records[: max(room, 0)])
            self._overflow.extend(records[max(room, 0) :])
            self._wake.set()
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    def submit_lazy(self, count: int, build: Callable[[], list[fpb.DecisionRecord]]) -> None:
        """Queue ``count`` decisions as a builder the shipper calls later; never blocks."""
        if not self.enabled:
            return
        self._pending.append((count, build, tracing.current_span_context()))
        self._pending_count += count
        if self._pending_count + len(self._queue) >= self.batch_size:
            self._wake.set()

    def _materialize(self) -> None:
        """Build the records of pending builders (shipper side)."""
        while self._pending:
            count, build, span_context = self._pending.popleft()
            self._pending_count -= count
            try:
                records = build()
            except Exception:
                self.counters.dropped += count
                log.exception("cannot build %d decision records: DROPPED", count)
                continue
            if span_context is not None:
                for record in records:
                    self._links[record.decision_id] = span_context
            self.submit(records)

    # -- background ---------------------------------------------------------------
    def start(self) -> None:
        """Start the shipper task."""
        if self.enabled and self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            except TimeoutError:
                pass
            self._wake.clear()
            if self._closing:
                return
            try:
                self._materialize()
                await self._spool_overflow()
                await self._ship(loop.time())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("decision log shipper failed; retrying")

    async def _ship(self, now: float) -> None:
        """Replay the spool, then send queued batches; on failure spool them."""
        can_send = now >= self._retry_at
        if can_send and self.counters.spool_files:
            can_send = await self._replay()
        while self._queue:
            request = self._peek_batch(self.batch_size)
            if can_send and not self.counters.spool_files:
                if await self._send(request) == _OK:
                    self._drop_sent(request)
                    continue
                can_send = False
            await self._to_spool(request)
            self._drop_sent(request)
            if len(self._queue) < self.batch_size:
                break  # leave a partial batch for the next tick unless we are behind

    async def _replay(self) -> bool:
        """Send spooled requests oldest first; False at the first failure."""
        assert self.spool is not None
        for path in await asyncio.to_thread(self.spool.files):
            request = await asyncio.to_thread(DecisionSpool.read, path)
            if request is None:
                log.error("damaged decision spool file %s: moved aside", path)
                path.rename(path.with_suffix(".damaged"))
                self.counters.spool_files -= 1
                continue
            outcome = await self._send(request, replay=True)
            if outcome == _RETRY:
                return False
            if outcome == _REJECTED:
                # Retrying cannot help; keep the file for inspection and move on.
                path.rename(path.with_suffix(".rejected"))
                self.counters.rejected += len(request.decisions)
                log.error("feedback rejected %d spooled decisions as invalid; kept in %s",
                          len(request.decisions), path.with_suffix(".rejected"))
            else:
                path.unlink()
            self.counters.spool_files -= 1
            self.counters.spool_depth -= len(request.decisions)
        return True

    async def _send(self, request: fpb.LogDecisionsRequest, replay: bool = False) -> str:
        """Send one request: _OK, _RETRY (spool and retry later) or _REJECTED (invalid)."""
        assert self.stub is not None
        try:
            if tracing.enabled():
                await self._traced_send(request, replay)
            else:
                await self.stub.LogDecisions(request, timeout=_SEND_TIMEOUT_S)
                self._log_sent(request, replay)
        except grpc.RpcError as exc:
            self.counters.send_failures += 1
            if replay and exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                return _REJECTED
            self._retry_at = asyncio.get_running_loop().time() + self._delay
            log.warning("LogDecisions failed (%s); spooling, retry in %.2fs",
                        exc.code() if hasattr(exc, "code") else exc, self._delay)
            self._delay = min(self._delay * 2, self.backoff_s[1])
            return _RETRY
        self._delay = self.backoff_s[0]
        self.counters.acked += len(request.decisions)
        if replay:
            self.counters.replayed += len(request.decisions)
        return _OK

    async def _traced_send(self, request: fpb.LogDecisionsRequest, replay: bool) -> None:
        """LogDecisions in a span linked to the span of every decision it carries."""
        ids = [d.decision_id for d in request.decisions]
        links = [(self._links[i], i) for i in ids if i in self._links]
        with tracing.linked_span("decision_log.ship", links, decision_count=len(ids), decision_ids=ids,
                                 replay=replay, request_id=request.request_id):
            await self.stub.LogDecisions(request, timeout=_SEND_TIMEOUT_S)  # type: ignore[union-attr]
            self._log_sent(request, replay)

    @staticmethod
    def _log_sent(request: fpb.LogDecisionsRequest, replay: bool) -> None:
        """A DEBUG line with the ids of an acknowledged batch (in its span when traced)."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("decisions logged", extra={"decision_ids": [d.decision_id for d in request.decisions],
                                                 "request_id": request.request_id, "replay": replay})

    def _peek_batch(self, size: int) -> fpb.LogDecisionsRequest:
        """The oldest queued records as a request; they stay queued until
        :meth:`_drop_sent` (so a cancelled send loses nothing)."""
        n = min(size, len(self._queue))
        records = [self._queue[i] for i in range(n)]
        return fpb.LogDecisionsRequest(request_id=self.clock.new_id(), decisions=records)

    def _drop_sent(self, request: fpb.LogDecisionsRequest) -> None:
        for _ in range(len(request.decisions)):
            self._queue.popleft()
        self._forget_links(request)

    def _forget_links(self, request: fpb.LogDecisionsRequest) -> None:
        if self._links:
            for record in request.decisions:
                self._links.pop(record.decision_id, None)

    async def _spool_overflow(self) -> None:
        while self._overflow:
            records = self._overflow[: self.batch_size]
            request = fpb.LogDecisionsRequest(request_id=self.clock.new_id(), decisions=records)
            await self._to_spool(request)
            self._forget_links(request)
            del self._overflow[: len(records)]

    async def _to_spool(self, request: fpb.LogDecisionsRequest) -> None:
        assert self.spool is not None
        try:
            await asyncio.to_thread(self.spool.append, request)
        except OSError:
            self.counters.dropped += len(request.decisions)
            log.exception("cannot spool %d decisions: DROPPED (total dropped %d)",
                          len(request.decisions), self.counters.dropped)
            return
        self.counters.spooled += len(request.decisions)
        self.counters.spool_files += 1
        self.counters.spool_depth += len(request.decisions)

    async def stop(self) -> None:
        """Stop the shipper (after its current step) and drain: send what can be
        sent, spool the rest."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await self._task
            except Exception:  # already logged by the task
                pass
            self._task = None
        if not self.enabled:
            return
        self._materialize()
        await self._spool_overflow()
        can_send = not self.counters.spool_files or await self._replay()
        while self._queue:
            request = self._peek_batch(self.batch_size)
            if can_send and await self._send(request) == _OK:
                self._drop_sent(request)
                continue
            can_send = False
            await self._to_spool(request)
            self._drop_sent(request)
        if self.counters.spool_depth:
            log.warning("%d decisions left in the spool %s; replayed at the next start",
                        self.counters.spool_depth, self.spool.dir if self.spool else "")

    @property
    def queued(self) -> int:
        """Decisions waiting in memory."""
        return len(self._queue) + len(self._overflow) + self._pending_count
