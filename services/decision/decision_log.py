"""Decision logging: every served decision goes to an fsync'd local spool, then to
``FeedbackService.LogDecisions`` in batches; never dropped silently.

The spool is the log (docs/architecture.md §7). ``submit`` and ``submit_lazy`` only
append to an in-memory list (``submit_lazy`` appends a compact builder that the
committer turns into record protos, so building protos stays off the request path). A
committer task writes what was submitted as frames appended to the current spool
segment and fdatasyncs it; a shipper task sends the spooled frames to feedback in
order, several frames per call (up to ``decision_log_batch_size`` decisions, at least
every ``decision_log_flush_interval_s``), and a segment file is removed once feedback
acknowledged all of it. Nothing else changes when feedback is unreachable: frames wait
in the spool (kept in memory up to ``queue_size`` decisions, re-read from disk past
that) and are sent, oldest first, once it answers. A restart sends what the spool
holds before anything new.

Crash guarantee, by ``durability`` (``LOOPWISE_DECISION_LOG_DURABILITY``):

- ``interval`` (the default): answers never wait for the disk. What was submitted is
  committed at most ``spool_interval_s`` after it arrived, so a SIGKILL loses at most
  the decisions of that interval and of the commit in progress; and no more than
  ``max_unspooled`` decisions are ever uncommitted: past that, answers wait for the
  commit (never under normal load).
- ``durable``: an answer leaves only once its decisions are committed. Concurrent
  requests share commits (group commit): a commit takes everything submitted so far
  with one fdatasync, and the requests arriving during it share the next one; with
  ``commit_window_s`` > 0 the committer also waits that long after the first waiting
  request. A commit that fails answers UNAVAILABLE (the decisions are still sent from
  memory, marked ``undelivered``: none of their answers left).

Spool files (``<seq>.req``, oldest first, in a loopwise.spool directory) are sequences
of frames: payload length, crc32 and record count (``<III``), then a serialized ``LogDecisionsRequest`` with its
own request id (feedback stores decisions idempotently by id, so a frame sent twice, e
.g. after a crash between its acknowledgement and the file's removal, is stored once).
Frames are sent as they were written, byte for byte: several frames concatenated are
one valid ``LogDecisionsRequest``. A torn frame at the end of a segment (a crash during
its write, never acknowledged) is ignored; a frame whose checksum fails ends what can be read of its file, which is then kept as
``*.damaged``. A frame feedback refuses as invalid is kept as ``<id>.rejected``.

Tracing (when on): ``submit_lazy`` keeps the span context of the request that made
the decisions, in memory beside the spool; each ``LogDecisions`` call runs in a
``decision_log.ship`` span that links to the span of every decision it carries (with
the decision id on the link), so a batch leads back to its requests and a request
forward to its batch. Links do not survive a restart: a replayed batch has none.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from loopwise import tracing
from loopwise.clock import Clock
from loopwise.durable import write_file_durably
from loopwise.errors import Unavailable, to_status
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.services.decision.proxy import UNARY_DECIDING, ServicerProxy
from loopwise.spool import SpoolDirectory

log = logging.getLogger("loopwise.decision.log")

_HEADER = struct.Struct("<III")  # payload length, crc32, record count
_SEND_TIMEOUT_S = 5.0
_OK, _RETRY, _REJECTED = "ok", "retry", "rejected"
_LOG_DECISIONS = "/loopwise.feedback.v1.FeedbackService/LogDecisions"
# A spool segment takes appends until it is this large or this old; it is removed
# once every frame of it is acknowledged.
SEGMENT_BYTES = 4 * 1024 * 1024
SEGMENT_AGE_S = 1.0

_CURRENT = object()  # submit_lazy: the current span context

INTERVAL, DURABLE = "interval", "durable"
DURABILITY_MODES = (INTERVAL, DURABLE)


@dataclass
class DecisionLogCounters:
    """What happened to logged decisions (since start; spool files and depth are current)."""

    submitted: int = 0  # decisions handed to the log
    spooled: int = 0  # decisions committed (fsync'd) to the spool
    commits: int = 0  # spool commits (one fdatasync each): spooled / commits = decisions per commit
    acked: int = 0  # decisions the feedback service acknowledged
    replayed: int = 0  # acknowledged decisions that waited in the spool (feedback down, or a restart)
    dropped: int = 0  # decisions whose records could not be built; logged
    rejected: int = 0  # decisions feedback refused as invalid (kept as *.rejected)
    spool_failures: int = 0  # decisions whose commit failed (sent from memory only)
    send_failures: int = 0  # LogDecisions calls that failed
    spool_files: int = 0  # files in the spool now
    spool_depth: int = 0  # decisions spooled and not yet acknowledged now


@dataclass
class SpoolScan:
    """What a spool file holds: its frames (payload, record count) and how it ends."""

    frames: list[tuple[bytes, int]]
    torn: bool = False  # an incomplete frame at the end (a crash during a write)
    damaged: bool = False  # a complete frame whose checksum fails


class DecisionSpool(SpoolDirectory):
    """The decision log's spool (loopwise.spool): segments ``<seq>.req`` (20 digits) of
    frames appended and fdatasync'd; leftovers of a crash mid-write are deleted."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, ".req", 20, discard_temporary=True)

    @staticmethod
    def frame(payload: bytes, count: int) -> bytes:
        """A frame: header and payload."""
        return _HEADER.pack(len(payload), zlib.crc32(payload), count) + payload

    @staticmethod
    def scan(path: Path, payloads: bool = True) -> SpoolScan:
        """The frames of a file; with ``payloads`` false only their headers are read
        (payloads left empty, checksums not checked: a quick count)."""
        if not payloads:
            return DecisionSpool._scan_headers(path)
        data = path.read_bytes()
        out = SpoolScan([])
        at = 0
        while at < len(data):
            if len(data) - at < _HEADER.size:
                out.torn = True
                break
            length, crc, count = _HEADER.unpack_from(data, at)
            start = at + _HEADER.size
            if start + length > len(data):
                out.torn = True
                break
            payload = data[start : start + length]
            if zlib.crc32(payload) != crc:
                out.damaged = True
                break
            out.frames.append((payload if payloads else b"", count))
            at = start + length
        return out

    @staticmethod
    def _scan_headers(path: Path) -> SpoolScan:
        out = SpoolScan([])
        size = path.stat().st_size
        with open(path, "rb") as f:
            at = 0
            while at < size:
                head = f.read(_HEADER.size)
                if len(head) < _HEADER.size:
                    out.torn = True
                    break
                length, _, count = _HEADER.unpack(head)
                if at + _HEADER.size + length > size:
                    out.torn = True
                    break
                out.frames.append((b"", count))
                at += _HEADER.size + length
                f.seek(at)
        return out

    @staticmethod
    def read(path: Path) -> fpb.LogDecisionsRequest | None:
        """The decisions of a file as one request, or None when it is damaged."""
        scan = DecisionSpool.scan(path)
        if scan.damaged:
            return None
        return fpb.LogDecisionsRequest.FromString(b"".join(p for p, _ in scan.frames))

    @staticmethod
    def count(path: Path) -> int:
        """Number of decisions in a file."""
        return sum(n for _, n in DecisionSpool.scan(path, payloads=False).frames)


class _Frame:
    """One committed frame: its payload, decisions and (tracing or DEBUG) their ids."""

    __slots__ = ("payload", "count", "ids", "waited")

    def __init__(self, payload: bytes, count: int, ids: list[str] | None, waited: bool = False) -> None:
        self.payload = payload
        self.count = count
        self.ids = ids
        self.waited = waited  # a send failed, or it came from an earlier run


class _Segment:
    """A spool file (or, after a failed commit, frames held in memory only) and the
    frames of it not yet acknowledged. ``frames`` is None while they are on disk only."""

    __slots__ = ("path", "fd", "frames", "acked", "total", "decisions", "size", "created", "closed", "scan")

    def __init__(self, path: Path | None, fd: int | None = None) -> None:
        self.path = path
        self.fd = fd
        self.frames: deque[_Frame] | None = deque()
        self.acked = 0  # frames acknowledged, from the start of the file
        self.total = 0  # frames in the file
        self.decisions = 0  # decisions not yet acknowledged
        self.size = 0
        self.created = time.monotonic()
        self.closed = fd is None
        self.scan: SpoolScan | None = None

    @property
    def done(self) -> bool:
        return self.closed and self.acked == self.total


class DecisionLog:
    """The submitted decisions, the committer and shipper tasks, and the spool."""

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
        durability: str = INTERVAL,
        spool_interval_s: float = 0.005,
        commit_window_s: float = 0.0,
        max_unspooled: int = 1000,
    ) -> None:
        if durability not in DURABILITY_MODES:
            raise ValueError(f"durability must be one of {DURABILITY_MODES}, not {durability!r}")
        self.stub = fgrpc.FeedbackServiceStub(channel) if channel is not None else None
        # LogDecisions with the request already serialized: spooled frames go out as written.
        self._send_raw = (channel.unary_unary(_LOG_DECISIONS, request_serializer=None,
                                              response_deserializer=fpb.LogDecisionsResponse.FromString)
                          if channel is not None else None)
        self.enabled = enabled and channel is not None
        self.clock = clock
        self.queue_size = max(1, queue_size)
        self.batch_size = max(1, batch_size)
        self.flush_interval_s = flush_interval_s
        self.backoff_s = backoff_s
        self.durability = durability
        self.spool_interval_s = max(0.0, spool_interval_s)
        self.commit_window_s = max(0.0, commit_window_s)
        self.max_unspooled = max(1, max_unspooled)
        self.counters = DecisionLogCounters()
        # Submitted, not yet committed: (count, records or builder, span context).
        self._pending: deque[tuple[int, Any, object]] = deque()
        self._seq = 0  # decisions submitted
        self._settled = 0  # decisions whose commit has ended
        self._waiters: list[tuple[int, asyncio.Future]] = []
        # decision id -> span context of the request that made it (tracing on only)
        self._links: dict[str, object] = {}
        self._segments: deque[_Segment] = deque()
        self._active: _Segment | None = None
        self._segment_lock = asyncio.Lock()
        self._in_memory = 0  # unacknowledged decisions whose frames are in memory
        self._has_pending = asyncio.Event()
        self._commit_wake = asyncio.Event()
        self._ship_wake = asyncio.Event()
        self._committer: asyncio.Task | None = None
        self._shipper: asyncio.Task | None = None
        self._closing = False
        self._retry_at = 0.0
        self._delay = backoff_s[0]
        self.spool = DecisionSpool(spool_dir) if self.enabled else None
        if self.spool is not None:
            self._load()

    def _load(self) -> None:
        """The segments left by an earlier run (frames read when their turn comes)."""
        assert self.spool is not None
        for path in self.spool.files():
            scan = DecisionSpool.scan(path, payloads=False)
            if not scan.frames:
                # Nothing readable: the run crashed between the segment's creation and
                # the end of its first frame, so nothing of it was acknowledged. (A
                # segment is otherwise removed once its frames are acknowledged, which
                # an empty one never is.)
                if scan.damaged:
                    aside = self.spool.set_aside(path, ".damaged")
                    log.error("damaged decision spool file without a readable frame: kept as %s", aside)
                else:
                    self.spool.remove([path])
                continue
            segment = _Segment(path)
            segment.frames = None
            segment.total = len(scan.frames)
            segment.decisions = sum(n for _, n in scan.frames)
            self._segments.append(segment)
            self.counters.spool_files += 1
            self.counters.spool_depth += segment.decisions

    # -- request path -------------------------------------------------------------
    def submit(self, records: Iterable[fpb.DecisionRecord]) -> None:
        """Queue decision records; never blocks or awaits."""
        if not self.enabled:
            return
        records = list(records)
        self._add(len(records), records, None)

    def submit_lazy(self, count: int, build: Callable[[], list[fpb.DecisionRecord]],
                    span_context: object = _CURRENT) -> None:
        """Queue ``count`` decisions as a builder the committer calls later; never blocks.
        ``span_context``: the span of the request that made them (default: the current
        one; pass the request's when submitting after it ended)."""
        if not self.enabled:
            return
        self._add(count, build, tracing.current_span_context() if span_context is _CURRENT else span_context)

    def _add(self, count: int, item: Any, span_context: object) -> None:
        self._pending.append((count, item, span_context))
        self._seq += count
        self.counters.submitted += count
        self._has_pending.set()
        if self._seq - self._settled > self.max_unspooled:
            self._commit_wake.set()  # past the bound: commit now, not at the interval

    def spooled(self) -> Awaitable[None] | None:
        """What an answer must await before it leaves: None when nothing (the
        ``interval`` mode below ``max_unspooled``), else the commit of every decision
        submitted so far. Call it after the request's decisions were submitted."""
        if not self.enabled or self._seq <= self._settled:
            return None
        if self.durability != DURABLE and self._seq - self._settled <= self.max_unspooled:
            return None
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((self._seq, future))
        self._commit_wake.set()
        return future

    # -- background ---------------------------------------------------------------
    def start(self) -> None:
        """Start the committer and shipper tasks."""
        if self.enabled and self._committer is None:
            self._committer = asyncio.ensure_future(self._run_committer())
            self._shipper = asyncio.ensure_future(self._run_shipper())

    async def _run_committer(self) -> None:
        busy = False  # requests piled up during the previous commit
        while not self._closing:
            await self._has_pending.wait()
            if self._closing:
                return
            if not self._waiters:
                try:  # the interval, cut short when an answer starts waiting
                    await asyncio.wait_for(self._commit_wake.wait(), self.spool_interval_s)
                except TimeoutError:
                    pass
            if self._waiters and self.commit_window_s > 0 and not busy:
                await asyncio.sleep(self.commit_window_s)  # gather concurrent requests
            self._commit_wake.clear()
            try:
                await self._commit()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("decision log committer failed; retrying")
            busy = bool(self._pending)

    async def _commit(self) -> None:
        """Build the records of everything submitted, write them as frames to the
        spool with one fdatasync, and release the answers waiting for them."""
        if not self._pending:
            self._has_pending.clear()
            return
        upto = self._seq
        records = self._materialize()
        frames = self._frames(records)
        error: BaseException | None = None
        if frames:
            try:
                await self._write(frames)
            except OSError as exc:
                error = exc
                count = sum(f.count for f in frames)
                self.counters.spool_failures += count
                if self.durability == DURABLE:
                    # Every answer of these decisions waits for this commit and now gets
                    # UNAVAILABLE (or its call already ended): none reached its caller.
                    for record in records:
                        record.undelivered = True
                    frames = self._frames(records)
                if self._in_memory + count > self.queue_size:  # no disk and no room: never unbounded
                    self.counters.dropped += count
                    log.exception("cannot write %d decisions to the spool and %d wait in memory: DROPPED",
                                  count, self._in_memory)
                else:
                    log.exception("cannot write %d decisions to the spool; sending them from memory only", count)
                    memory = _Segment(None)
                    self._segments.append(memory)
                    self._keep(memory, frames)
        self._settled = max(self._settled, upto)
        self._release(error)
        if not self._pending:
            self._has_pending.clear()
        if self._in_memory >= self.batch_size:
            self._ship_wake.set()

    def _materialize(self) -> list[fpb.DecisionRecord]:
        """The records of every pending item (builders called here, off the request path)."""
        records: list[fpb.DecisionRecord] = []
        while self._pending:
            count, item, span_context = self._pending.popleft()
            if callable(item):
                try:
                    built = item()
                except Exception:
                    self.counters.dropped += count
                    log.exception("cannot build %d decision records: DROPPED", count)
                    continue
            else:
                built = item
            if span_context is not None:
                for record in built:
                    self._links[record.decision_id] = span_context
            records.extend(built)
        return records

    def _frames(self, records: list[fpb.DecisionRecord]) -> list[_Frame]:
        keep_ids = tracing.enabled() or log.isEnabledFor(logging.DEBUG)
        frames = []
        for i in range(0, len(records), self.batch_size):
            chunk = records[i : i + self.batch_size]
            payload = fpb.LogDecisionsRequest(request_id=self.clock.new_id(), decisions=chunk).SerializeToString()
            frames.append(_Frame(payload, len(chunk), [r.decision_id for r in chunk] if keep_ids else None))
        return frames

    async def _write(self, frames: list[_Frame]) -> None:
        """Append frames to the active segment (a new one when it is full, old or
        closed) with one fdatasync."""
        assert self.spool is not None
        data = b"".join(DecisionSpool.frame(f.payload, f.count) for f in frames)
        async with self._segment_lock:
            active = self._active
            if active is not None and (active.size >= SEGMENT_BYTES
                                       or time.monotonic() - active.created >= SEGMENT_AGE_S):
                await self._close_active()
                active = None
            if active is None:
                path, fd = await asyncio.to_thread(self.spool.create)
                active = self._active = _Segment(path, fd)
                self._segments.append(active)
                self.counters.spool_files += 1
            try:
                await asyncio.to_thread(DecisionSpool.append, active.fd, data)  # type: ignore[arg-type]
            except OSError:
                await self._close_active()  # a torn frame may end it: append no more
                raise
            active.total += len(frames)
            active.size += len(data)
            self._keep(active, frames)
            count = sum(f.count for f in frames)
            self.counters.spooled += count
            self.counters.commits += 1
        self._trim_memory()

    def _keep(self, segment: _Segment, frames: list[_Frame]) -> None:
        """Frames committed to ``segment``, waiting to be sent."""
        assert segment.frames is not None
        segment.frames.extend(frames)
        count = sum(f.count for f in frames)
        segment.decisions += count
        self._in_memory += count
        self.counters.spool_depth += count

    def _release(self, error: BaseException | None) -> None:
        """Resolve the waiting answers whose decisions were committed (or failed)."""
        still = []
        for ticket, future in self._waiters:
            if future.done():
                continue
            if ticket <= self._settled:
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(Unavailable("the decision could not be written to the decision "
                                                     f"log's spool ({type(error).__name__}); retry"))
            else:
                still.append((ticket, future))
        self._waiters = still

    def _trim_memory(self) -> None:
        """Past ``queue_size`` decisions in memory, the newest closed segments keep their
        frames on disk only (re-read when their turn comes)."""
        if self._in_memory <= self.queue_size:
            return
        for segment in reversed(self._segments):
            if self._in_memory <= self.queue_size:
                break
            if segment is self._segments[0] or not segment.closed or segment.path is None or segment.frames is None:
                continue
            self._in_memory -= sum(f.count for f in segment.frames)
            segment.frames = None

    async def _close_active(self) -> None:
        """Stop appending to the active segment (remove it when all of it was sent).
        Called with the segment lock held."""
        active, self._active = self._active, None
        if active is None:
            return
        if active.fd is not None:
            os.close(active.fd)
            active.fd = None
        active.closed = True
        if active.done:
            await self._remove(active)

    async def _remove(self, segment: _Segment) -> None:
        """A fully acknowledged segment leaves the spool."""
        try:
            self._segments.remove(segment)
        except ValueError:
            return
        if segment.path is None:
            return
        self.counters.spool_files -= 1
        scan = segment.scan
        assert self.spool is not None
        try:
            if scan is not None and scan.damaged:
                damaged = await asyncio.to_thread(self.spool.set_aside, segment.path, ".damaged", False)
                log.error("damaged decision spool file: its frames after the damage are kept in %s", damaged)
            else:
                await asyncio.to_thread(self.spool.remove, [segment.path], False)
        except OSError:
            log.exception("cannot remove the sent spool file %s", segment.path)

    async def _run_shipper(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                await asyncio.wait_for(self._ship_wake.wait(), self.flush_interval_s)
                timed_out = False
            except TimeoutError:
                timed_out = True
            self._ship_wake.clear()
            if self._closing:
                return
            try:
                await self._ship(loop.time(), everything=timed_out)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("decision log shipper failed; retrying")

    async def _ship(self, now: float, everything: bool, drain: bool = False) -> bool:
        """Send spooled frames oldest first, up to ``batch_size`` decisions per call:
        full batches, and the rest when ``everything`` (the flush interval passed).
        False when a send failed (the frames stay for a later try)."""
        if not drain and now < self._retry_at:
            return False
        while self._segments:
            group = await self._group()
            if not group:
                return True
            if sum(f.count for _, f in group) < self.batch_size and not everything and not drain:
                return True
            outcome = await self._send([f for _, f in group])
            if outcome == _RETRY:
                for _, frame in group:
                    frame.waited = True
                return False
            if outcome == _REJECTED and len(group) > 1:
                if not await self._send_one_by_one(group):
                    return False
                continue
            if outcome == _REJECTED:
                await self._set_aside(group[0][1])
            await self._acked(group, rejected=outcome == _REJECTED)
        return True

    async def _group(self) -> list[tuple[_Segment, _Frame]]:
        """The oldest unsent frames, up to ``batch_size`` decisions (at least one frame)."""
        group: list[tuple[_Segment, _Frame]] = []
        size = 0
        for segment in list(self._segments):
            if size >= self.batch_size:
                break
            if segment.frames is None:
                await self._reload(segment)
            assert segment.frames is not None
            for frame in segment.frames:
                if group and size + frame.count > self.batch_size:
                    return group
                group.append((segment, frame))
                size += frame.count
        return group

    async def _reload(self, segment: _Segment) -> None:
        """Read a segment's unacknowledged frames back from disk."""
        assert segment.path is not None
        scan = await asyncio.to_thread(DecisionSpool.scan, segment.path)
        if segment.scan is None:
            segment.scan = scan
            if scan.torn:
                log.warning("decision spool file %s ends with an incomplete frame (a crash during its write; "
                            "never acknowledged): ignored", segment.path)
            if scan.damaged:
                log.error("decision spool file %s is damaged after %d frames", segment.path, len(scan.frames))
        frames = deque(_Frame(payload, count, None, waited=True) for payload, count in scan.frames[segment.acked:])
        # What is readable is what there is (a damaged file: the frames before the damage).
        readable = sum(f.count for f in frames)
        self.counters.spool_depth -= segment.decisions - readable
        segment.decisions = readable
        segment.total = segment.acked + len(frames)
        segment.frames = frames
        self._in_memory += readable

    async def _send_one_by_one(self, group: list[tuple[_Segment, _Frame]]) -> bool:
        """After INVALID_ARGUMENT on several frames: each alone, setting aside the refused."""
        for segment, frame in group:
            outcome = await self._send([frame])
            if outcome == _RETRY:
                frame.waited = True
                return False
            if outcome == _REJECTED:
                await self._set_aside(frame)
            await self._acked([(segment, frame)], rejected=outcome == _REJECTED)
        return True

    async def _set_aside(self, frame: _Frame) -> None:
        """Keep a frame feedback refused as invalid, as ``<id>.rejected``."""
        assert self.spool is not None
        path = self.spool.dir / f"{self.clock.new_id()}.rejected"
        try:
            await asyncio.to_thread(write_file_durably, path, DecisionSpool.frame(frame.payload, frame.count))
        except OSError:
            log.exception("cannot keep the %d rejected decisions in %s", frame.count, path)
        self.counters.rejected += frame.count
        log.error("feedback rejected %d spooled decisions as invalid; kept in %s", frame.count, path)

    async def _acked(self, group: list[tuple[_Segment, _Frame]], rejected: bool = False) -> None:
        """Frames acknowledged (or set aside): out of memory, their segments removed
        once complete."""
        done = []
        count = waited = 0
        for segment, frame in group:
            assert segment.frames is not None and segment.frames[0] is frame
            segment.frames.popleft()
            segment.acked += 1
            segment.decisions -= frame.count
            self._in_memory -= frame.count
            count += frame.count
            waited += frame.count if frame.waited else 0
            self._forget_links(frame)
            if segment.acked == segment.total and segment not in done:
                done.append(segment)
        if not rejected:
            self.counters.acked += count
            self.counters.replayed += waited
        try:
            await self._remove_done(done)
        finally:  # out of the spool once their files are gone
            self.counters.spool_depth -= count

    async def _remove_done(self, done: list[_Segment]) -> None:
        for segment in done:
            if segment.path is None:
                if not segment.frames:
                    await self._remove(segment)
            elif segment is self._active:
                async with self._segment_lock:  # no commit appends to it meanwhile
                    if segment is self._active and segment.acked == segment.total:
                        await self._close_active()
            elif segment.closed and segment.acked == segment.total:
                await self._remove(segment)

    async def _send(self, frames: list[_Frame]) -> str:
        """Send frames as one request: _OK, _RETRY (keep them and retry later) or
        _REJECTED (invalid)."""
        assert self._send_raw is not None
        payload = b"".join(f.payload for f in frames)
        try:
            if tracing.enabled():
                await self._traced_send(payload, frames)
            else:
                await self._send_raw(payload, timeout=_SEND_TIMEOUT_S)
                self._log_sent(frames)
        except grpc.RpcError as exc:
            self.counters.send_failures += 1
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                return _REJECTED
            self._retry_at = asyncio.get_running_loop().time() + self._delay
            log.warning("LogDecisions failed (%s); %d decisions wait in the spool, retry in %.2fs",
                        exc.code() if hasattr(exc, "code") else exc, self.counters.spool_depth, self._delay)
            self._delay = min(self._delay * 2, self.backoff_s[1])
            return _RETRY
        self._delay = self.backoff_s[0]
        return _OK

    async def _traced_send(self, payload: bytes, frames: list[_Frame]) -> None:
        """LogDecisions in a span linked to the span of every decision it carries."""
        ids = _ids(frames)
        links = [(self._links[i], i) for i in ids if i in self._links]
        replay = any(f.waited for f in frames)
        with tracing.linked_span("decision_log.ship", links, decision_count=len(ids), decision_ids=ids,
                                 replay=replay):
            await self._send_raw(payload, timeout=_SEND_TIMEOUT_S)  # type: ignore[misc]
            self._log_sent(frames)

    @staticmethod
    def _log_sent(frames: list[_Frame]) -> None:
        """A DEBUG line with the ids of an acknowledged batch (in its span when traced)."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("decisions logged", extra={"decision_ids": _ids(frames),
                                                 "replay": any(f.waited for f in frames)})

    def _forget_links(self, frame: _Frame) -> None:
        if self._links and frame.ids:
            for decision_id in frame.ids:
                self._links.pop(decision_id, None)

    async def stop(self) -> None:
        """Stop both tasks, commit what was submitted, send what can be sent; the rest
        stays in the spool for the next start."""
        self._closing = True
        self._has_pending.set()
        self._commit_wake.set()
        self._ship_wake.set()
        for task in (self._committer, self._shipper):
            if task is not None:
                try:
                    await task
                except Exception:  # already logged by the task
                    pass
        self._committer = self._shipper = None
        if not self.enabled:
            return
        await self._commit()
        await self._ship(asyncio.get_running_loop().time(), everything=True, drain=True)
        async with self._segment_lock:
            await self._close_active()
        if self.counters.spool_depth:
            log.warning("%d decisions left in the spool %s; sent at the next start",
                        self.counters.spool_depth, self.spool.dir if self.spool else "")

    @property
    def queued(self) -> int:
        """Decisions submitted and not yet committed to the spool (what a crash loses)."""
        return self._seq - self._settled


def _ids(frames: list[_Frame]) -> list[str]:
    """The decision ids of frames (parsed from the payload when not kept)."""
    ids: list[str] = []
    for frame in frames:
        if frame.ids is None:
            frame.ids = [d.decision_id for d in fpb.LogDecisionsRequest.FromString(frame.payload).decisions]
        ids.extend(frame.ids)
    return ids


def spooled_answers(servicer: Any, decision_log: DecisionLog) -> Any:
    """Wrap ``servicer``'s Decide and DecideBatch so that each answer leaves only after
    what :meth:`DecisionLog.spooled` asks for (the commit of its decisions in the
    ``durable`` mode; nothing, below ``max_unspooled``, in the ``interval`` mode). A
    failed commit answers UNAVAILABLE. DecideStream waits the same way before each
    answer it writes."""
    return ServicerProxy(servicer, {rpc: _unary(getattr(servicer, rpc), decision_log) for rpc in UNARY_DECIDING})


async def _settle(waiting: Awaitable[None], context: Any) -> None:
    try:
        await waiting
    except Unavailable as error:
        await context.abort_with_status(to_status(error))


def _unary(fn: Callable[..., Any], decision_log: DecisionLog) -> Callable[..., Any]:
    async def call(request: Any, context: Any) -> Any:
        response = await fn(request, context)
        waiting = decision_log.spooled()
        if waiting is not None:
            await _settle(waiting, context)
        return response

    call.__name__ = fn.__name__
    return call
