"""The one classification of store errors.

:func:`store_error_kind` says what an exception raised by a store call means:

- ``UNAVAILABLE``: the store cannot answer right now (cassandra-driver's no host,
  timeouts, unavailable replicas, connection errors; SQLite's busy or locked
  database; also when raised as the explicit cause of another exception). A call
  answers UNAVAILABLE (:func:`store_unavailable`, used by the error mapping in
  loopwise.errors) and may succeed when retried.
- ``FAILED``: the store did not take the request, for another reason a retry may cure
  (a timeout, an OS error, any other SQLite operational error, an Unavailable
  dependency, any other cassandra-driver error but a request it refuses as invalid):
  a write is worth spooling and retrying.
- None: anything else (a request the store will never accept, or a bug).

:func:`store_failure` is either kind: what the feedback spool spools and what the
feedback service retries when opening its store.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import sqlite3

from loopwise.errors import Unavailable

# SQLite primary result codes of a database held by another connection.
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


class StoreErrorKind(enum.Enum):
    """What a store error means (see the module doc)."""

    UNAVAILABLE = "unavailable"
    FAILED = "failed"


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


def _from_cassandra(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module == "cassandra" or module.startswith("cassandra.")


def _unavailable_reason(exc: BaseException) -> str | None:
    """Why the store cannot answer now, for ``exc`` or an explicit cause of it; else None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, sqlite3.OperationalError):
            code = getattr(seen, "sqlite_errorcode", None)
            text = str(seen).lower()
            if (code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)) or \
                    "locked" in text or "busy" in text:
                return f"the store is busy; retry later ({type(seen).__name__}: {seen})"
        if _from_cassandra(seen) and isinstance(seen, _cassandra_unavailable_types()):
            return f"the store cannot be reached; retry later ({type(seen).__name__})"
        seen = seen.__cause__
    return None


def store_error_kind(exc: BaseException) -> StoreErrorKind | None:
    """What ``exc``, raised by a store call, means (see the module doc)."""
    if _unavailable_reason(exc) is not None:
        return StoreErrorKind.UNAVAILABLE
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, OSError, sqlite3.OperationalError, Unavailable)):
        return StoreErrorKind.FAILED
    if _from_cassandra(exc):
        from cassandra import RequestValidationException

        return None if isinstance(exc, RequestValidationException) else StoreErrorKind.FAILED
    return None


def store_unavailable(exc: BaseException) -> Unavailable | None:
    """The UNAVAILABLE error for a store that cannot answer right now, else None."""
    reason = _unavailable_reason(exc)
    return Unavailable(reason) if reason is not None else None


def store_failure(exc: BaseException) -> bool:
    """Whether an exception means "the store did not answer" (worth spooling and
    retrying), as opposed to a request the store will never accept."""
    return store_error_kind(exc) is not None
