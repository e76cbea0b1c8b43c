"""The errors the SDK raises for a failed call: one class per status code.

Every call of :class:`loopwise.Client` and :class:`loopwise.AsyncClient` that fails
raises a :class:`LoopwiseError` subclass named after the status code (``NotFound``
for NOT_FOUND, ``InvalidArgument`` for INVALID_ARGUMENT, ...), made in one place, the
SDK's call wrapper, by :func:`from_rpc_error`. They are ``grpc.RpcError`` too and keep
the call's accessors (``code()``, ``details()``, ``trailing_metadata()``), so code that
catches ``grpc.RpcError`` and reads ``error.code()`` works unchanged::

    try:
        client.get_use_case("checkout_upsell")
    except loopwise.NotFound:
        ...
    except loopwise.InvalidArgument as error:
        for field, description in error.field_violations:
            ...

A class's status code is its name in upper snake case; the server side's exceptions
(:mod:`loopwise.errors`, :mod:`loopwise.auth`) follow the same names, so one name means
one code on both sides and no table of codes exists here. Codes without a class of
their own (ABORTED, OUT_OF_RANGE, DATA_LOSS, UNKNOWN) raise :class:`LoopwiseError`.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import grpc

from loopwise.admission import pushback_of
from loopwise.errors import field_violations as _field_violations

__all__ = [
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "LoopwiseError",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "from_rpc_error",
]

_WORD = re.compile(r"(?<!^)(?=[A-Z])")


def _code_of_name(name: str) -> grpc.StatusCode:
    return grpc.StatusCode[_WORD.sub("_", name).upper()]


class LoopwiseError(grpc.RpcError):
    """A call to a loopwise service failed; the base of every per-code class.

    ``code()`` and ``details()`` are the status code and message, as on a gRPC call
    error; ``field_violations`` the (field, description) pairs of an INVALID_ARGUMENT
    (google.rpc.BadRequest); ``retry_after`` the retry pushback the server sent, in
    seconds (None without one); ``service`` and ``address`` the service called
    ("decision", "feedback", "trainer" or "evaluator") and where.
    """

    status_code: ClassVar[grpc.StatusCode | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.status_code = _code_of_name(cls.__name__)

    def __init__(self, code: grpc.StatusCode, details: str = "", *,
                 trailing_metadata: Any = (), initial_metadata: Any = (),
                 debug_error_string: str = "", service: str = "", address: str = "",
                 method: str = "") -> None:
        self._code = code
        self._details = details or ""
        self._trailing = tuple(trailing_metadata or ())
        self._initial = tuple(initial_metadata or ())
        self._debug = debug_error_string or ""
        self.service = service
        self.address = address
        self.method = method
        super().__init__(self._text())

    def _text(self) -> str:
        where = f" ({self.service} at {self.address})" if self.service and self.address else ""
        return f"{self._code.name}: {self._details}{where}"

    def __str__(self) -> str:
        return self._text()

    def code(self) -> grpc.StatusCode:
        """The status code."""
        return self._code

    def details(self) -> str:
        """The status message."""
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, Any], ...]:
        """The trailing metadata of the failed call (status details, retry pushback)."""
        return self._trailing

    def initial_metadata(self) -> tuple[tuple[str, Any], ...]:
        """The initial metadata of the failed call."""
        return self._initial

    def debug_error_string(self) -> str:
        """gRPC's debug string of the failure (empty when unknown)."""
        return self._debug

    @property
    def field_violations(self) -> list[tuple[str, str]]:
        """The (field, description) pairs of a google.rpc.BadRequest in the status."""
        return _field_violations(self)

    @property
    def retry_after(self) -> float | None:
        """The retry pushback the server sent in seconds (``grpc-retry-pushback-ms`` or
        google.rpc.RetryInfo), negative when it asked not to retry, None without one."""
        return pushback_of(self)


class InvalidArgument(LoopwiseError):
    """The request is invalid; ``field_violations`` names the fields."""


class NotFound(LoopwiseError):
    """What the request names does not exist (use case, version, operation, report)."""


class AlreadyExists(LoopwiseError):
    """What the request would create exists already."""


class PermissionDenied(LoopwiseError):
    """The token is valid but lacks the scope the call needs on its use case."""


class Unauthenticated(LoopwiseError):
    """No token was sent, or the one sent matches no token of the service."""


class FailedPrecondition(LoopwiseError):
    """The system is not in a state in which the call can run (e.g. too little data)."""


class ResourceExhausted(LoopwiseError):
    """A limit was hit: a size or quota limit, or the service shedding load (then
    ``retry_after`` says when to come back)."""


class Unavailable(LoopwiseError):
    """The service cannot be reached or cannot answer now; retry later."""


class DeadlineExceeded(LoopwiseError):
    """The call did not finish within its deadline."""


class Cancelled(LoopwiseError):
    """The call was cancelled."""


class Unimplemented(LoopwiseError):
    """The service does not serve this call (an older version)."""


class Internal(LoopwiseError):
    """The service failed unexpectedly."""


def _classes() -> dict[grpc.StatusCode, type[LoopwiseError]]:
    found: dict[grpc.StatusCode, type[LoopwiseError]] = {}
    pending = list(LoopwiseError.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.status_code is not None:
            found.setdefault(cls.status_code, cls)
    return found


_BY_CODE = _classes()


def error_class(code: grpc.StatusCode) -> type[LoopwiseError]:
    """The class raised for ``code`` (:class:`LoopwiseError` when it has none of its own)."""
    return _BY_CODE.get(code, LoopwiseError)


def from_rpc_error(error: grpc.RpcError, *, service: str = "", address: str = "",
                   method: str = "") -> LoopwiseError:
    """The typed error for a failed gRPC call (returned as is when it is one already)."""
    if isinstance(error, LoopwiseError):
        return error
    code = _call_value(error, "code") or grpc.StatusCode.UNKNOWN
    details = _call_value(error, "details") or (str(error) if code == grpc.StatusCode.UNKNOWN else "")
    return error_class(code)(
        code, details, trailing_metadata=_call_value(error, "trailing_metadata") or (),
        initial_metadata=_call_value(error, "initial_metadata") or (),
        debug_error_string=_call_value(error, "debug_error_string") or "",
        service=service, address=address, method=method)


def _call_value(error: grpc.RpcError, name: str) -> Any:
    """``error.<name>()`` when the error is a call error that has it, else None."""
    accessor = getattr(error, name, None)
    if accessor is None:
        return None
    try:
        return accessor()
    except Exception:  # not a completed call (e.g. an error raised before the call started)
        return None
