"""The one mapping from loopwise exceptions to gRPC status codes.

Core code raises these exceptions and never touches gRPC; servicers are wrapped by
:func:`map_errors`, which turns them into a status with google.rpc details
(``BadRequest`` field violations for bad input, AIP-193). A store that cannot answer
right now (cassandra-driver's NoHostAvailable, timeouts, unavailable replicas; SQLite
busy or locked) is UNAVAILABLE, so that callers retry; any other exception is INTERNAL.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

log = logging.getLogger("loopwise.errors")


class LoopwiseError(Exception):
    """Base class: an error with a gRPC status code and a message for the caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> list[Any]:
        """google.rpc detail messages to attach to the status."""
        return []


class InvalidArgument(LoopwiseError):
    """Bad input; names the offending field(s)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, description: str, more: list[tuple[str, str]] | None = None):
        self.violations = [(field, description), *(more or [])]
        text = "; ".join(f"{f}: {d}" for f, d in self.violations)
        super().__init__(text)

    def details(self) -> list[Any]:
        request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in self.violations
            ]
        )
        return [request]


class NotFound(LoopwiseError):
    """The named resource does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(LoopwiseError):
    """The resource exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(LoopwiseError):
    """The system is not in a state in which the call can run (e.g. too little data)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(LoopwiseError):
    """A dependency cannot be reached right now; retry later."""

    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(LoopwiseError):
    """A limit was hit (size, quota, queue)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(LoopwiseError):
    """The work could not finish within its deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(LoopwiseError):
    """The RPC is part of the API but not served by this version."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Cancelled(LoopwiseError):
    """The work was cancelled."""

    code = grpc.StatusCode.CANCELLED


def to_status(error: LoopwiseError) -> grpc.Status:
    """The gRPC status (with packed details) for a loopwise error."""
    detail_anys = []
    for detail in error.details():
        packed = any_pb2.Any()
        packed.Pack(detail)
        detail_anys.append(packed)
    proto = status_pb2.Status(
        code=getattr(code_pb2, error.code.name), message=error.message, details=detail_anys
    )
    return rpc_status.to_status(proto)


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """The (field, description) pairs of an INVALID_ARGUMENT error received by a client."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return []
    out = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            request = error_details_pb2.BadRequest()
            detail.Unpack(request)
            out += [(v.field, v.description) for v in request.field_violations]
    return out


@functools.cache
def _cassandra_unavailable_types() -> tuple[type[BaseException], ...]:
    """cassandra-driver errors meaning "the store cannot answer now" (imported on first use)."""
    from cassandra import CoordinationFailure, OperationTimedOut, Timeout
    from cassandra import Unavailable as ReplicasUnavailable
    from cassandra.cluster import NoHostAvailable
    from cassandra.connection import ConnectionBusy, ConnectionException
    from cassandra.protocol import IsBootstrappingErrorMessage, OverloadedErrorMessage

    return (NoHostAvailable, OperationTimedOut, ReplicasUnavailable, Timeout, CoordinationFailure,
            ConnectionException, ConnectionBusy, OverloadedErrorMessage, IsBootstrappingErrorMessage)


# SQLite primary result codes of a database held by another connection.
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


def store_unavailable(exc: BaseException) -> Unavailable | None:
    """The UNAVAILABLE error for a store that cannot answer right now, else None.

    Covers cassandra-driver's no host / timeout / unavailable replicas / connection
    errors and SQLite's busy or locked database (also when raised as the explicit
    cause of another exception): the call may succeed when retried later."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, sqlite3.OperationalError):
            code = getattr(seen, "sqlite_errorcode", None)
            text = str(seen).lower()
            if (code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)) or \
                    "locked" in text or "busy" in text:
                return Unavailable(f"the store is busy; retry later ({type(seen).__name__}: {seen})")
        module = type(seen).__module__ or ""
        if (module == "cassandra" or module.startswith("cassandra.")) and \
                isinstance(seen, _cassandra_unavailable_types()):
            return Unavailable(f"the store cannot be reached; retry later ({type(seen).__name__})")
        seen = seen.__cause__
    return None


F = TypeVar("F", bound=Callable[..., Any])


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    if not isinstance(exc, LoopwiseError):
        unavailable = store_unavailable(exc)
        if unavailable is not None:
            log.warning("store unavailable: %s: %s", type(exc).__name__, exc)
            exc = unavailable
    if isinstance(exc, LoopwiseError):
        await context.abort_with_status(to_status(exc))
    log.exception("unexpected error in RPC", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")


def map_errors(method: F) -> F:
    """Wrap one aio servicer method (unary or streaming) with the error mapping."""
    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream_wrapper(self: Any, request: Any, context: Any) -> Any:
            try:
                async for item in method(self, request, context):
                    yield item
            except (grpc.aio.AbortError, GeneratorExit):
                raise
            except Exception as exc:  # noqa: BLE001 - the one mapping point
                await _abort(context, exc)

        return stream_wrapper  # type: ignore[return-value]

    @functools.wraps(method)
    async def unary_wrapper(self: Any, request: Any, context: Any) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - the one mapping point
            await _abort(context, exc)

    return unary_wrapper  # type: ignore[return-value]


C = TypeVar("C", bound=type)


def servicer(cls: C) -> C:
    """Class decorator: apply :func:`map_errors` to every RPC method of the class.

    RPC methods are the coroutine or async-generator functions whose names start
    with an upper-case letter (as generated by grpc_tools), including those
    inherited from mixins such as :class:`loopwise.operations.OperationsServicer`.
    """
    for name in dir(cls):
        member = getattr(cls, name)
        if (
            name[:1].isupper()
            and (inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member))
            and not getattr(member, "__loopwise_mapped__", False)
        ):
            wrapped = map_errors(member)
            wrapped.__loopwise_mapped__ = True  # type: ignore[attr-defined]
            setattr(cls, name, wrapped)
    return cls
