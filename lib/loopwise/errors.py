"""The one mapping from loopwise exceptions to gRPC status codes.

Core code raises these exceptions and never touches gRPC; servicers are wrapped by
:func:`map_errors`, which turns them into a status with google.rpc details
(``BadRequest`` field violations for bad input, AIP-193). A store that cannot answer
right now (cassandra-driver's NoHostAvailable, timeouts, unavailable replicas; SQLite
busy or locked: loopwise.store.failures classifies store errors) is UNAVAILABLE, so
that callers retry; any other exception is INTERNAL.

Errors are bounded (docs/architecture.md §3): a status travels in response metadata,
and a default gRPC client refuses metadata over 16 KiB (8 KiB soft) with
RESOURCE_EXHAUSTED, which would read as "retry later" for input that can never pass.
So messages quote at most a short prefix of any input (:func:`quote`), and
:func:`to_status` caps the message, each field violation and their number.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

log = logging.getLogger("loopwise.errors")

# How much of an input value an error message quotes (characters).
QUOTE_CHARS = 64
# The longest status message (UTF-8 bytes).
MAX_MESSAGE_BYTES = 512
# Field violations listed in a status, at most this many and this many bytes of
# field paths and descriptions together; the message says how many more there were.
MAX_VIOLATIONS = 10
MAX_VIOLATION_BYTES = 1024
# The longest field path and description of one violation (UTF-8 bytes).
MAX_FIELD_BYTES = 128
MAX_DESCRIPTION_BYTES = 256
# Any other detail message larger than this (serialized) is left out.
MAX_OTHER_DETAIL_BYTES = 512
_MORE = re.compile(r"; and \d+ more violations$")


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """``repr`` of an input value for an error message, at most ``limit`` characters
    of it: a longer value is cut and marked with its length, ``'aaaa…' (3000
    characters)``. Use it wherever a message repeats request content."""
    if not isinstance(value, (str, bytes, bytearray)):
        text = repr(value)
        return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"
    if len(value) <= limit:
        return repr(value)
    shown = repr(value[:limit])
    unit = "bytes" if isinstance(value, (bytes, bytearray)) else "characters"
    return f"{shown[:-1]}…{shown[-1]} ({len(value)} {unit})"


def cut(text: str, max_bytes: int) -> str:
    """``text`` in at most ``max_bytes`` UTF-8 bytes; a cut text ends with
    "… (N characters)" giving its full length."""
    raw = text.encode("utf-8", "replace")
    if len(raw) <= max_bytes:
        return text
    marker = f"… ({len(text)} characters)"
    keep = max(0, max_bytes - len(marker.encode()))
    return raw[:keep].decode("utf-8", "ignore") + marker


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
        shown = self.violations[:MAX_VIOLATIONS]
        text = "; ".join(f"{cut(f, MAX_FIELD_BYTES)}: {cut(d, MAX_DESCRIPTION_BYTES)}" for f, d in shown)
        if len(self.violations) > len(shown):
            text += f"; and {len(self.violations) - len(shown)} more violations"
        super().__init__(text)

    def details(self) -> list[Any]:
        # Every violation: to_status bounds what is sent.
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




def _bounded_bad_request(request: error_details_pb2.BadRequest) -> tuple[error_details_pb2.BadRequest, int]:
    """The first violations, each cut to size, at most MAX_VIOLATIONS of them and
    MAX_VIOLATION_BYTES in all (the first always); and how many were left out."""
    kept = error_details_pb2.BadRequest()
    used = 0
    for v in request.field_violations[:MAX_VIOLATIONS]:
        field, description = cut(v.field, MAX_FIELD_BYTES), cut(v.description, MAX_DESCRIPTION_BYTES)
        size = len(field.encode("utf-8", "replace")) + len(description.encode("utf-8", "replace"))
        if kept.field_violations and used + size > MAX_VIOLATION_BYTES:
            break
        kept.field_violations.add(field=field, description=description)
        used += size
    return kept, len(request.field_violations) - len(kept.field_violations)


def to_status(error: LoopwiseError) -> grpc.Status:
    """The gRPC status (with packed details) for a loopwise error, bounded in size:
    the message at most MAX_MESSAGE_BYTES; field violations at most MAX_VIOLATIONS
    and MAX_VIOLATION_BYTES (the message says how many more there were), each field
    path and description cut to MAX_FIELD_BYTES and MAX_DESCRIPTION_BYTES. The
    serialized status stays under 2 KiB, and all it adds to the response metadata
    (status details in base64, the message percent-encoded) under 4 KiB."""
    message = error.message
    tail = ""
    detail_anys = []
    for detail in error.details():
        if isinstance(detail, error_details_pb2.BadRequest):
            detail, left_out = _bounded_bad_request(detail)
            if left_out:  # counted against the violations sent, whatever the message said
                message = _MORE.sub("", message)
                tail = f"; and {left_out} more violations"
        elif detail.ByteSize() > MAX_OTHER_DETAIL_BYTES:
            log.warning("left a %d-byte %s out of a status", detail.ByteSize(), type(detail).__name__)
            continue
        packed = any_pb2.Any()
        packed.Pack(detail)
        detail_anys.append(packed)
    message = cut(message, MAX_MESSAGE_BYTES - len(tail)) + tail
    proto = status_pb2.Status(code=getattr(code_pb2, error.code.name), message=message, details=detail_anys)
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


F = TypeVar("F", bound=Callable[..., Any])


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    if not isinstance(exc, LoopwiseError):
        # Imported here: the store package imports this module.
        from loopwise.store.failures import store_unavailable

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
            except Exception as exc:  # the one mapping point
                await _abort(context, exc)

        return stream_wrapper  # type: ignore[return-value]

    @functools.wraps(method)
    async def unary_wrapper(self: Any, request: Any, context: Any) -> Any:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # the one mapping point
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
