"""The DecisionService servicer: protos in, core calls, protos out.

A decision is logged as served only if its answer could reach the caller
(docs/architecture.md §6): each call's decisions wait in a ``Delivery`` until the call
has ended, and are logged with ``DecisionRecord.undelivered`` set when the call's
deadline had passed by then (an answer handed over with ``SURE_DELIVERY_S`` or more
left, or without a deadline, is logged as delivered at once). A decision ready after (or within ``SEND_MARGIN_S`` of)
the deadline is not sent at all (DEADLINE_EXCEEDED, logged as undelivered); in
``DecideStream`` a decision counts as delivered once the stream's write of it
completed, and as undelivered when the stream ended before. When the decision log must hold a decision before its answer leaves (its
``durable`` mode), the mark is decided when the decision is ready instead, and
turned to undelivered if the commit its answer waits for fails (the answer is then
UNAVAILABLE).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

import grpc

from loopwise import tracing
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.errors import DeadlineExceeded, InvalidArgument, servicer
from loopwise.server import Stopping
from loopwise.services.decision.core import DecisionCore, Delivery
from loopwise.services.decision.decide_queue import DecideQueue
from loopwise.services.decision.decision_log import DURABLE
from loopwise.services.decision.use_cases import ApplyResult, UseCases

log = logging.getLogger("loopwise.decision")

# A decision ready with less than this left before its call's deadline is not sent (and
# is logged as undelivered): the answer could not be expected to arrive in time (the
# event loop's other work before it is written, transit, and the caller's deadline
# running a little ahead of the one the server computed when the request arrived).
SEND_MARGIN_S = 0.005
# An answer handed over with at least this long left before the call's deadline (or
# with no deadline) is logged as delivered at once: the rest of the call (writing ~100
# bytes to the transport) takes microseconds, and admission control bounds how long the
# event loop can be behind. Closer to the deadline, the end of the call's task decides.
SURE_DELIVERY_S = 0.25
# Most requests of one DecideStream read and not yet answered (StreamReader).
READ_AHEAD = 16


def observe_decision(decision: dpb.Decision, in_stream: bool = False) -> None:
    """The decision id (and what served it) on the current span, and a DEBUG log line
    with the id as a field; free when tracing is off and DEBUG is not on."""
    if tracing.enabled():
        # Few attributes: each one costs on the request path (the SDK validates them).
        attributes = dict(decision_id=decision.decision_id, model_version=decision.model_version,
                          action=decision.action, fallback=decision.fallback)
        if in_stream:  # one span for the whole stream: one event per decision
            tracing.add_event("decision", **attributes)
        else:
            tracing.set_attributes(**attributes)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("decision", extra={"decision_id": decision.decision_id, "use_case": decision.use_case,
                                     "model_version": decision.model_version, "action": decision.action})


def use_case_message(uc_version, latest_version: int, kill_switch: bool, archived: bool = False) -> dpb.UseCase:
    """The UseCase proto of a blueprint version."""
    stored = uc_version.stored
    message = dpb.UseCase(
        blueprint=stored.blueprint, version=stored.version, author=stored.author,
        reason=stored.reason, kill_switch=kill_switch, latest_version=latest_version, archived=archived,
    )
    message.create_time.FromMilliseconds(stored.create_time_ms)
    return message


@servicer
class DecisionServicer(dgrpc.DecisionServiceServicer):
    """Decisions and use cases. ``stopping``: the server's stopping signal (streams end
    with UNAVAILABLE when it is set); ``queue_turns``: see :class:`DecideQueue`."""

    def __init__(self, core: DecisionCore, use_cases: UseCases, stopping: Stopping | None = None,
                 queue_turns: int = 8) -> None:
        self.core = core
        self.use_cases = use_cases
        self.stopping = stopping if stopping is not None else Stopping("decision")
        self.queue = DecideQueue(core, queue_turns)
        # Called with each DecideStream answer before it is written (decision metrics).
        self.stream_answered: Callable[[dpb.DecideResponse], None] = _ignore

    async def Decide(self, request: dpb.DecideRequest, context) -> dpb.DecideResponse:
        """One decision from named features (or a ranking of candidates)."""
        started = time.perf_counter()
        _check_deadline(context)
        if self.use_cases.find(request.use_case, request.blueprint_version) is None:
            await self.use_cases.catch_up(request.use_case, request.blueprint_version)
        delivery = self.core.delivery()
        try:
            response = await self.queue.decide(request, started, delivery)
            observe_decision(response.decision)
        except BaseException:
            # E.g. the call cancelled (its deadline passed) after its pass decided it:
            # the decision was made and its answer will not be sent.
            delivery.settle(delivered=False, sent=False)
            raise
        self._hand_over(context, delivery)
        return response

    async def DecideBatch(self, request: dpb.DecideBatchRequest, context) -> dpb.DecideBatchResponse:
        """Many decisions from one packed float32 tensor."""
        started = time.perf_counter()
        _check_deadline(context)
        if self.use_cases.find(request.use_case, request.blueprint_version) is None:
            await self.use_cases.catch_up(request.use_case, request.blueprint_version)
        delivery = self.core.delivery()
        try:
            response = self.core.decide_batch(request, started, delivery)
        except BaseException:
            delivery.settle(delivered=False)
            raise
        if tracing.enabled() and response.decision_ids:
            tracing.set_attributes(decision_count=len(response.decision_ids),
                                   first_decision_id=response.decision_ids[0],
                                   last_decision_id=response.decision_ids[-1])
        self._hand_over(context, delivery)
        return response

    def _hand_over(self, context, delivery: Delivery) -> None:
        """Log the call's decisions once its answer is out (as undelivered if the call's
        deadline passed first); refuse to send what is ready after the deadline."""
        remaining = context.time_remaining()
        if remaining is not None and remaining < SEND_MARGIN_S:
            delivery.settle(delivered=False, sent=False)
            raise DeadlineExceeded("the decision was ready too close to the call's deadline to reach the "
                                   "caller; it was not sent")
        if remaining is None or remaining >= SURE_DELIVERY_S or _log_before_answer(self.core):
            delivery.settle(delivered=True)
            return
        # The call's task ends once grpc has handed the answer to the transport (or
        # failed to). Its done callback, not the context's: a context callback would
        # keep the call (and its HTTP/2 stream) alive until the garbage collector runs.
        delivery.deadline = time.monotonic() + remaining
        asyncio.current_task().add_done_callback(delivery.on_done)

    async def DecideStream(self, request_iterator, context) -> None:
        """A bidi stream of Decide calls, answered in order with ``context.write`` (no
        generator between the stream and grpc). Requests are read ahead of their
        answers (:class:`StreamReader`). A bad request ends the stream with its error
        (INVALID_ARGUMENT / NOT_FOUND) after the answers before it; a stopping server
        ends it with UNAVAILABLE so that the client reconnects elsewhere. Each answer
        leaves once the decision log allows it (:meth:`DecisionLog.spooled`), and is
        counted by ``stream_answered``."""
        reader = StreamReader(self, request_iterator)
        log, answered = self.core.log, self.stream_answered
        try:
            while True:
                item = await reader.next()
                if item is None:
                    return
                response, delivery = item
                observe_decision(response.decision, in_stream=True)
                remaining = context.time_remaining()
                if remaining is not None and remaining < SEND_MARGIN_S:
                    delivery.settle(delivered=False, sent=False)
                    raise DeadlineExceeded("the decision was ready too close to the stream's deadline to reach "
                                           "the caller; it was not sent")
                if _log_before_answer(self.core):
                    delivery.settle(delivered=True)
                try:
                    waiting = log.spooled()
                    if waiting is not None:
                        await waiting
                    answered(response)
                    await context.write(response)
                except BaseException as error:  # the stream ended before this answer was written
                    delivery.settle(delivered=False)
                    if isinstance(error, grpc.aio.InternalError):
                        # grpc could not send it: the call ended under the write (the caller
                        # went away, its deadline passed). A cancellation, as when grpc writes
                        # a generator's answers itself; not an error of the service.
                        raise asyncio.CancelledError from error
                    raise
                delivery.settle(delivered=True)
        finally:
            reader.close()

    async def ApplyUseCase(self, request: dpb.ApplyUseCaseRequest, context) -> dpb.ApplyUseCaseResponse:
        """Create a use case or a new blueprint version (or only validate)."""
        if not request.HasField("blueprint"):
            raise InvalidArgument("blueprint", "required")
        result: ApplyResult = await self.use_cases.apply(
            request.blueprint, request_id=request.request_id, validate_only=request.validate_only,
            author=request.author, reason=request.reason,
        )
        return dpb.ApplyUseCaseResponse(
            use_case=use_case_message(result.version, result.latest_version, result.kill_switch, result.archived),
            created=result.created, changed_fields=result.changed_fields,
            diff=[dpb.FieldChange(path=p, old_value=a, new_value=b) for p, a, b in result.diff],
        )

    async def GetUseCase(self, request: dpb.GetUseCaseRequest, context) -> dpb.GetUseCaseResponse:
        """One use case at its latest or a given blueprint version."""
        UseCases.check_name(request.use_case)
        await self.use_cases.catch_up(request.use_case, request.version)
        version = self.use_cases.get(request.use_case, request.version)
        return dpb.GetUseCaseResponse(use_case=self._message(version))

    def _message(self, version) -> dpb.UseCase:
        name = version.use_case
        return use_case_message(version, self.use_cases.latest_version(name), self.use_cases.kill_switch(name),
                                self.use_cases.archived(name))

    async def ListUseCases(self, request: dpb.ListUseCasesRequest, context) -> dpb.ListUseCasesResponse:
        """The latest version of every use case, by name, paged (archived ones on request)."""
        page, token = self.use_cases.list(request.page_size, request.page_token, request.include_archived)
        return dpb.ListUseCasesResponse(use_cases=[self._message(v) for v in page], next_page_token=token)

    async def RollbackUseCase(self, request: dpb.RollbackUseCaseRequest, context) -> dpb.RollbackUseCaseResponse:
        """Make an earlier blueprint version current again, as a new version."""
        version = await self.use_cases.rollback(request.use_case, request.to_version, request_id=request.request_id,
                                                author=request.author, reason=request.reason)
        return dpb.RollbackUseCaseResponse(use_case=self._message(version))

    async def SetKillSwitch(self, request: dpb.SetKillSwitchRequest, context) -> dpb.SetKillSwitchResponse:
        """Force (or stop forcing) the default decision on every decision path."""
        await self.use_cases.set_kill_switch(request.use_case, request.enabled, author=request.author,
                                             reason=request.reason)
        return dpb.SetKillSwitchResponse(use_case=self._message(self.use_cases.get(request.use_case)))

    async def ArchiveUseCase(self, request: dpb.ArchiveUseCaseRequest, context) -> dpb.ArchiveUseCaseResponse:
        """Archive (or restore) a use case."""
        await self.use_cases.set_archived(request.use_case, request.archived, author=request.author,
                                          reason=request.reason)
        return dpb.ArchiveUseCaseResponse(use_case=self._message(self.use_cases.get(request.use_case)))

    async def ListUseCaseChanges(self, request: dpb.ListUseCaseChangesRequest, context) -> dpb.ListUseCaseChangesResponse:
        """The audit trail of a use case, oldest first."""
        changes = []
        for c in await self.use_cases.changes(request.use_case):
            message = dpb.UseCaseChange(use_case=c.use_case, version=c.version, change=c.change,
                                        author=c.author, reason=c.reason, request_id=c.request_id)
            message.change_time.FromMilliseconds(c.time_ms)
            changes.append(message)
        return dpb.ListUseCaseChangesResponse(changes=changes)


class StreamReader:
    """Reads a DecideStream's requests ahead of their answers, each handed to the
    :class:`DecideQueue` as it arrives: a caller that sends requests without waiting
    for each answer (as loopwise's client does) has them decided together in one pass,
    while the answers before them are written. At most ``READ_AHEAD`` requests are
    read and not yet answered; the reader then waits (and grpc's flow control holds
    the caller).

    The reading runs in one task per stream; the stream's own task takes the answers
    in order with :meth:`next`. When that task is already waiting for its next answer
    and nothing else is read ahead (a caller that waits for each answer), the reader
    hands it the request's decision directly: the task wakes once, with the answer.
    The reader's end (the caller's half-close, a bad request, the server stopping)
    reaches :meth:`next` after the answers read before it. :meth:`close` stops the
    reader and logs the decisions read ahead but not answered as undelivered."""

    def __init__(self, servicer: DecisionServicer, request_iterator) -> None:
        self._servicer = servicer
        self._pending: collections.deque[tuple[asyncio.Future, Delivery]] = collections.deque()
        # The stream's task waiting for its next answer (nothing read ahead), if it is:
        # resolved with the answer (or its error) by the queue, or with None by the reader.
        self._waiter: asyncio.Future | None = None
        self._handed: Delivery | None = None  # the delivery of the decision handed to the waiter
        self._room: asyncio.Future | None = None  # the reader waiting for room, if it is
        self._end: BaseException | None = None
        self._ended = False
        self._task = asyncio.ensure_future(self._read(request_iterator.__aiter__()))

    async def _read(self, iterator) -> None:
        stopping = self._servicer.stopping
        try:
            stopping.check()
            # The whole reading waits under until(): a stopping server cancels it wherever
            # it waits (for the next request, or for room), with UNAVAILABLE.
            await stopping.until(self._read_all(iterator))
        except StopAsyncIteration:
            pass
        except BaseException as error:  # the stream's end: the caller's error, UNAVAILABLE, ...
            self._end = error
        finally:
            self._ended = True
            self._wake_answers()

    async def _read_all(self, iterator) -> None:
        queue, core, pending = self._servicer.queue, self._servicer.core, self._pending
        use_cases = self._servicer.use_cases
        perf_counter = time.perf_counter
        while True:
            request = await iterator.__anext__()
            if use_cases.find(request.use_case, request.blueprint_version) is None:
                await use_cases.catch_up(request.use_case, request.blueprint_version)
            delivery = core.delivery()
            waiter = self._waiter
            if waiter is not None and not waiter.done():  # nothing read ahead: straight to the waiter
                self._waiter, self._handed = None, delivery
                queue.decide(request, perf_counter(), delivery, waiter)
                continue
            pending.append((queue.decide(request, perf_counter(), delivery), delivery))
            self._wake_answers()
            if len(pending) >= READ_AHEAD:
                self._room = asyncio.get_running_loop().create_future()
                await self._room

    def _wake_answers(self) -> None:
        """Wake the stream's task waiting for its next answer, to look again."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self) -> tuple[dpb.DecideResponse, Delivery] | None:
        """The next request's answer and its delivery, in order; None when the caller
        half-closed. A request's own error is raised (its delivery settled as not
        sent), and so is the reader's error, after the answers before it."""
        while not self._pending:
            if self._ended:
                if self._end is not None:
                    raise self._end
                return None
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            self._handed = None
            try:
                response = await waiter
            except BaseException:
                if self._handed is not None:  # the decision handed to this wait failed, or the call ended
                    self._handed.settle(delivered=False, sent=False)
                raise
            finally:
                if self._waiter is waiter:
                    self._waiter = None
            if response is not None:
                assert self._handed is not None
                return response, self._handed
        future, delivery = self._pending.popleft()
        if len(self._pending) == READ_AHEAD - 1:
            room, self._room = self._room, None  # the reader waits for room
            if room is not None and not room.done():
                room.set_result(None)
        try:
            return await future, delivery
        except BaseException:
            delivery.settle(delivered=False, sent=False)
            raise

    def close(self) -> None:
        """Stop reading; the decisions read and not answered are logged as undelivered
        (and never sent). Closing again does nothing more."""
        self._task.cancel()
        while self._pending:
            future, delivery = self._pending.popleft()
            if not future.done():
                future.cancel()  # not decided yet: the queue skips it
            elif not future.cancelled():
                future.exception()  # a request's error that no one will await is not reported as lost
            delivery.settle(delivered=False, sent=False)


def _ignore(_response: dpb.DecideResponse) -> None:
    """No one counts the answers."""


def _log_before_answer(core: DecisionCore) -> bool:
    """The decision log must hold a decision before its answer leaves (``durable``)."""
    return core.log.durability == DURABLE


def _check_deadline(context) -> None:
    """DEADLINE_EXCEEDED when the client's deadline has already passed."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise DeadlineExceeded("the request's deadline passed before it was served")
