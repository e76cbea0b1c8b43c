"""Starting without the store: the feedback service serves before its store answers.

When the store cannot be opened at start (Cassandra down: no host, timeouts), the
service starts anyway on :class:`UnconnectedStore`, whose every call is UNAVAILABLE:
LogDecisions and LogOutcomes are acknowledged into the fsync'd spool (spool.py), reads
answer UNAVAILABLE (GetStats: ``store_unavailable`` with the spool fields). A
:class:`StoreConnector` keeps opening the store in the background with exponential
backoff (``CONNECT_MIN_S`` doubling to ``CONNECT_MAX_S``); once it opens, the service
switches to it and the spool drains. An error that retrying cannot cure (a bad store
URL) still fails the start.

Health (docs/storage.md, "Durability"): the overall status ("") and
``loopwise.feedback.v1.FeedbackService`` are SERVING as soon as the server runs, because
writes are accepted; ``loopwise.feedback.v1.FeedbackService/reads`` is SERVING only while
the store answers (connected, and its last write or spool replay succeeded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from loopwise.errors import Unavailable
from loopwise.store.failures import store_failure
from loopwise.store.feedback import (
    CountingRule,
    FeedbackStore,
    OutcomeRow,
    StoredDecision,
    StoredStats,
)

log = logging.getLogger("loopwise.feedback.connect")

CONNECT_MIN_S, CONNECT_MAX_S = 0.5, 10.0
# The health service name of the read side.
READS_HEALTH_SUFFIX = "/reads"


class StoreNotConnected(Unavailable):
    """The store has not been reached since the service started."""


def retryable(exc: BaseException) -> bool:
    """Whether opening the store failed in a way that retrying may cure."""
    return store_failure(exc)


class UnconnectedStore(FeedbackStore):
    """Stands in for the store until it connects: every call is UNAVAILABLE."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def _fail(self) -> StoreNotConnected:
        return StoreNotConnected(f"the feedback store is not connected yet ({self.reason}); retry later")

    async def _insert_decisions(self, decisions: Sequence[StoredDecision], write_time_us: int | None) -> int:
        raise self._fail()

    async def deletion_times(self, use_case: str, digests: Sequence[str]) -> dict[str, int]:
        raise self._fail()

    async def put_outcomes(self, outcomes: Sequence[OutcomeRow], orphans: Sequence[OutcomeRow],
                           write_time_us: int | None = None) -> tuple[list[bool], list[bool]]:
        raise self._fail()

    async def get_decision(self, use_case: str, decision_id: str) -> StoredDecision | None:
        raise self._fail()

    async def outcomes_of(self, use_case: str, decision_id: str) -> list[OutcomeRow]:
        raise self._fail()

    async def outcomes_between(self, use_case: str, start_ms: int, end_ms: int) -> list[OutcomeRow]:
        raise self._fail()

    async def decision_page(self, use_case: str, start_ms: int, end_ms: int, include_fallback: bool,
                            after: tuple[int, str] | None, limit: int,
                            include_undelivered: bool = False) -> list[StoredDecision]:
        raise self._fail()

    async def scan_decisions(self, use_case: str, start_ms: int, end_ms: int, include_fallback: bool,
                             page_rows: int, include_undelivered: bool = False
                             ) -> AsyncIterator[list[StoredDecision]]:
        raise self._fail()
        yield []  # pragma: no cover - makes this an async generator

    async def blueprint_versions(self, use_case: str) -> list[int]:
        raise self._fail()

    async def orphans(self, use_case: str) -> list[OutcomeRow]:
        raise self._fail()

    async def stats(self, use_case: str, rules: Mapping[int, CountingRule], now_ms: int,
                    lost_before_ms: int | None = None) -> StoredStats:
        raise self._fail()

    async def delete_unit(self, use_case: str, unit_ids: Sequence[str], deleted_at_ms: int) -> tuple[int, int]:
        raise self._fail()

    async def purge_before(self, use_case: str, before_ms: int) -> None:
        raise self._fail()

    def close(self) -> None:
        """Nothing to release."""


class StoreConnector:
    """Opens the store in the background until it succeeds, then hands it over."""

    def __init__(self, open_store: Callable[[], FeedbackStore], on_connected: Callable[[FeedbackStore], None],
                 min_s: float = CONNECT_MIN_S, max_s: float = CONNECT_MAX_S) -> None:
        self.open_store = open_store
        self.on_connected = on_connected
        self.min_s, self.max_s = min_s, max_s
        self.attempts = 0
        self._task: asyncio.Task | None = None
        self._stopped = False

    def start(self) -> None:
        """Start trying."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="feedback-store-connector")

    async def _run(self) -> None:
        delay = self.min_s
        while not self._stopped:
            await asyncio.sleep(delay)
            self.attempts += 1
            opening = asyncio.ensure_future(asyncio.to_thread(self.open_store))
            try:
                store = await asyncio.shield(opening)
            except asyncio.CancelledError:
                # Stopping while a connection is being opened: close it once it opens.
                opening.add_done_callback(_close_opened)
                raise
            except Exception as exc:
                if not retryable(exc):
                    log.exception("the feedback store cannot be opened and retrying will not help")
                    return
                log.warning("the feedback store is still unreachable (attempt %d: %s: %s); next try in %.1fs",
                            self.attempts, type(exc).__name__, exc, min(delay * 2, self.max_s))
                delay = min(delay * 2, self.max_s)
                continue
            if self._stopped:
                store.close()
                return
            log.info("the feedback store is connected (attempt %d): replaying the spool", self.attempts)
            self.on_connected(store)
            return

    async def stop(self) -> None:
        """Stop trying."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _close_opened(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()
