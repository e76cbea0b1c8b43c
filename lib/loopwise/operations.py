"""Long-running operations shared by the trainer and the evaluator.

A job is an async function that reports its stage and progress through a
:class:`Progress` and returns a result message; heavy work inside it runs in the
:class:`loopwise.jobs.ProcessPool`, so the event loop keeps answering. Operations
are kept in the owning service's store (:mod:`loopwise.store.operations`), so they
survive a restart; jobs that were running when the service stopped are marked FAILED
at the next start, never left hanging.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from google.protobuf import any_pb2, message

from loopwise.clock import Clock
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.errors import FailedPrecondition, InvalidArgument, LoopwiseError, NotFound, quote
from loopwise.store.operations import OperationStore

log = logging.getLogger("loopwise.operations")

State = op_pb.OperationState
FINAL_STATES = (
    State.OPERATION_STATE_SUCCEEDED,
    State.OPERATION_STATE_FAILED,
    State.OPERATION_STATE_CANCELLED,
)


class Progress:
    """Handed to a running job to report its stage and progress."""

    def __init__(self, runner: OperationRunner, operation: op_pb.Operation) -> None:
        self._runner = runner
        self._operation = operation

    @property
    def operation_id(self) -> str:
        """The id of the operation being run."""
        return self._operation.id

    async def stage(self, name: str, progress: float, message: str = "") -> None:
        """Enter a stage; ``progress`` is the whole job's progress in [0, 1]."""
        self._operation.stage = name
        self._operation.progress = max(0.0, min(1.0, progress))
        self._operation.message = message
        await self._runner._update(self._operation)

    async def details(self, found: message.Message) -> None:
        """Publish what the job has found so far as the operation's ``details`` (e.g. a
        tuning's rounds); watchers see it at once."""
        self._operation.details.Pack(found)
        await self._runner._update(self._operation)


Job = Callable[[Progress], Awaitable[message.Message]]


class OperationRunner:
    """Starts jobs as operations, tracks them, and serves get/list/cancel/watch."""

    def __init__(self, store: OperationStore, clock: Clock, kind: str, lease_ttl_s: float = 30.0) -> None:
        self.store = store
        self.clock = clock
        self.kind = kind
        self.lease_ttl_s = lease_ttl_s
        self._tasks: dict[str, asyncio.Task] = {}
        self._leases: dict[str, str] = {}  # operation id -> lease name (exclusive jobs)
        self._heartbeats: dict[str, asyncio.Task] = {}
        self._watchers: dict[str, list[asyncio.Queue[op_pb.Operation]]] = {}
        self._start_lock = asyncio.Lock()
        self._orphans: asyncio.Task | None = None

    def lease_name(self, use_case: str) -> str:
        """The store lease an exclusive job of ``use_case`` holds while it runs."""
        return f"{self.kind}/{use_case}"

    async def recover(self) -> int:
        """Mark operations left unfinished by a previous process as FAILED; returns how many.

        An operation whose job still holds its lease runs in another process sharing
        the store: it is left alone, and failed later only if the lease lapses while the
        operation is still unfinished (its process died)."""
        count = 0
        before = ""
        held: list[op_pb.Operation] = []
        while True:
            page = await self.store.list("", 200, before)
            if not page:
                break
            for operation in page:
                if operation.state not in FINAL_STATES:
                    if await self.store.lease_holder(self.lease_name(operation.use_case)) == operation.id:
                        held.append(operation)
                        continue
                    await self._fail_orphan(operation)
                    count += 1
            before = page[-1].id
        if held:
            self._orphans = asyncio.create_task(self._fail_when_lease_lapses(held))
        return count

    async def _fail_orphan(self, operation: op_pb.Operation) -> None:
        self._finish(operation, State.OPERATION_STATE_FAILED)
        operation.error_code = 14  # UNAVAILABLE: retry is safe
        operation.error_message = "the service restarted while the job ran; start it again"
        await self.store.save(operation)

    async def _fail_when_lease_lapses(self, operations: list[op_pb.Operation]) -> None:
        waiting = list(operations)
        while waiting:
            await asyncio.sleep(self.lease_ttl_s / 2)
            still = []
            for operation in waiting:
                current = await self.store.get(operation.id)
                if current is None or current.state in FINAL_STATES:
                    continue
                if await self.store.lease_holder(self.lease_name(current.use_case)) == current.id:
                    still.append(current)
                else:
                    await self._fail_orphan(current)
            waiting = still

    def _stamp(self, operation: op_pb.Operation) -> None:
        operation.update_time.FromMilliseconds(self.clock.now_ms())

    def _finish(self, operation: op_pb.Operation, state: int) -> None:
        operation.state = state  # type: ignore[assignment]
        self._stamp(operation)
        operation.end_time.CopyFrom(operation.update_time)

    async def _update(self, operation: op_pb.Operation) -> None:
        self._stamp(operation)
        await self.store.save(operation)
        for queue in self._watchers.get(operation.id, ()):
            snapshot = op_pb.Operation()
            snapshot.CopyFrom(operation)
            queue.put_nowait(snapshot)

    async def start(
        self, use_case: str, request_id: str, job: Job,
        exclusive: bool = False,
    ) -> op_pb.Operation:
        """Start ``job`` as a new operation (or return the one of the same request id).

        With ``exclusive``, a second job of the same use case while one runs is refused
        with FAILED_PRECONDITION."""
        async with self._start_lock:
            if request_id:
                existing = await self.store.find_by_request_id(request_id)
                if existing is not None:
                    return existing
            operation = op_pb.Operation(
                id=self.clock.new_id(), kind=self.kind, use_case=use_case,
                state=State.OPERATION_STATE_PENDING, stage="pending", request_id=request_id,
            )
            if exclusive:
                for task_id in self._tasks:
                    running = await self.store.get(task_id)
                    if running is not None and running.use_case == use_case:
                        raise FailedPrecondition(
                            f"a {self.kind} job for use case {quote(use_case)} is already running: {task_id}"
                        )
                # Other processes sharing the store: the lease decides (released at job end).
                lease = self.lease_name(use_case)
                if not await self.store.acquire_lease(lease, operation.id, self.lease_ttl_s):
                    holder = await self.store.lease_holder(lease)
                    raise FailedPrecondition(
                        f"a {self.kind} job for use case {quote(use_case)} is already running "
                        f"in another process: {holder or 'unknown'}"
                    )
                self._leases[operation.id] = lease
            operation.create_time.FromMilliseconds(self.clock.now_ms())
            self._stamp(operation)
            try:
                await self.store.save(operation)
            except BaseException:
                await self._release(operation.id)
                raise
            self._tasks[operation.id] = asyncio.create_task(self._run(operation, job))
        return operation

    async def _release(self, operation_id: str) -> None:
        heartbeat = self._heartbeats.pop(operation_id, None)
        if heartbeat is not None:
            heartbeat.cancel()
        lease = self._leases.pop(operation_id, None)
        if lease is not None:
            try:
                await self.store.release_lease(lease, operation_id)
            except Exception:  # it lapses by itself after its TTL
                log.warning("could not release lease %s of %s", lease, operation_id, exc_info=True)

    async def _heartbeat(self, operation_id: str, lease: str) -> None:
        """Keep an exclusive job's lease alive while it runs."""
        while True:
            await asyncio.sleep(self.lease_ttl_s / 3)
            try:
                if not await self.store.renew_lease(lease, operation_id, self.lease_ttl_s):
                    log.warning("%s job %s lost its lease %s", self.kind, operation_id, lease)
            except Exception:
                log.warning("could not renew lease %s", lease, exc_info=True)

    async def _run(self, operation: op_pb.Operation, job: Job) -> None:
        lease = self._leases.get(operation.id)
        if lease:
            self._heartbeats[operation.id] = asyncio.create_task(self._heartbeat(operation.id, lease))
        try:
            await self._run_job(operation, job)
        finally:
            await self._release(operation.id)

    async def _run_job(self, operation: op_pb.Operation, job: Job) -> None:
        operation.state = State.OPERATION_STATE_RUNNING
        await self._update(operation)
        try:
            result = await job(Progress(self, operation))
        except asyncio.CancelledError:
            self._finish(operation, State.OPERATION_STATE_CANCELLED)
            operation.error_code = 1
            operation.error_message = "cancelled"
        except LoopwiseError as exc:
            self._finish(operation, State.OPERATION_STATE_FAILED)
            operation.error_code = exc.code.value[0]
            operation.error_message = exc.message
        except Exception as exc:
            log.exception("%s job %s failed", self.kind, operation.id)
            self._finish(operation, State.OPERATION_STATE_FAILED)
            operation.error_code = 13
            operation.error_message = f"{type(exc).__name__}: {exc}"
        else:
            packed = any_pb2.Any()
            packed.Pack(result)
            operation.result.CopyFrom(packed)
            operation.progress = 1.0
            operation.stage = "done"
            self._finish(operation, State.OPERATION_STATE_SUCCEEDED)
        finally:
            self._tasks.pop(operation.id, None)
        await self._release(operation.id)  # before the final state is seen: a new job may start
        await self._update(operation)

    async def get(self, operation_id: str, use_case: str = "") -> op_pb.Operation:
        """One operation; NOT_FOUND if unknown, or if ``use_case`` is given and the
        operation belongs to another (the answer does not tell the two apart)."""
        if not operation_id:
            raise InvalidArgument("id", "required")
        operation = await self.store.get(operation_id)
        if operation is None or (use_case and operation.use_case != use_case):
            raise NotFound(f"operation {quote(operation_id)} not found"
                           + (f" in use case {quote(use_case)}" if use_case else ""))
        return operation

    async def list(self, use_case: str, page_size: int, page_token: str) -> tuple[list[op_pb.Operation], str]:
        """A page of operations, newest first, and the next page token."""
        if page_size < 0:
            raise InvalidArgument("page_size", "must be >= 0")
        size = page_size or 50
        page = await self.store.list(use_case, size, page_token)
        return page, (page[-1].id if len(page) == size else "")

    async def cancel(self, operation_id: str, use_case: str = "") -> op_pb.Operation:
        """Cancel a running operation; a final one is returned unchanged."""
        operation = await self.get(operation_id, use_case)
        task = self._tasks.get(operation_id)
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            operation = await self.get(operation_id)
        return operation

    async def wait(self, operation_id: str) -> op_pb.Operation:
        """Wait until the operation is final."""
        async for operation in self.watch(operation_id):
            last = operation
        return last

    async def watch(self, operation_id: str, use_case: str = "") -> AsyncIterator[op_pb.Operation]:
        """Yield the operation now and after every change, until it is final
        (NOT_FOUND as :meth:`get`).

        Changes made by this process are delivered one by one, so no stage is skipped;
        changes made by another process sharing the store are seen by polling it."""
        queue: asyncio.Queue[op_pb.Operation] = asyncio.Queue()
        self._watchers.setdefault(operation_id, []).append(queue)
        try:
            operation = await self.get(operation_id, use_case)
            yield operation
            last = operation.SerializeToString()
            while operation.state not in FINAL_STATES:
                try:
                    operation = await asyncio.wait_for(queue.get(), timeout=1.0)
                except TimeoutError:
                    operation = await self.get(operation_id)
                current = operation.SerializeToString()
                if current != last:
                    last = current
                    yield operation
        finally:
            watchers = self._watchers.get(operation_id, [])
            if queue in watchers:
                watchers.remove(queue)
            if not watchers:
                self._watchers.pop(operation_id, None)

    async def close(self) -> None:
        """Cancel running jobs (they are marked CANCELLED)."""
        if self._orphans is not None:
            self._orphans.cancel()
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


class OperationsServicer:
    """The four operation RPCs, for a servicer that has ``self.operations``.

    Mixed into the trainer's and the evaluator's servicers (each apply
    :func:`loopwise.errors.servicer` to the final class)."""

    operations: OperationRunner

    async def GetOperation(self, request: op_pb.GetOperationRequest, context) -> op_pb.GetOperationResponse:
        """Read one operation."""
        return op_pb.GetOperationResponse(operation=await self.operations.get(request.id, request.use_case))

    async def ListOperations(self, request: op_pb.ListOperationsRequest, context) -> op_pb.ListOperationsResponse:
        """List operations, newest first."""
        page, token = await self.operations.list(request.use_case, request.page_size, request.page_token)
        return op_pb.ListOperationsResponse(operations=page, next_page_token=token)

    async def CancelOperation(self, request: op_pb.CancelOperationRequest, context) -> op_pb.CancelOperationResponse:
        """Cancel an operation."""
        return op_pb.CancelOperationResponse(operation=await self.operations.cancel(request.id, request.use_case))

    async def WatchOperation(self, request: op_pb.WatchOperationRequest, context) -> AsyncIterator[op_pb.WatchOperationResponse]:
        """Stream an operation's updates until it is final."""
        async for operation in self.operations.watch(request.id, request.use_case):
            yield op_pb.WatchOperationResponse(operation=operation)
