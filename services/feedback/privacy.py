"""Privacy in the feedback service: deleting one unit's data and retention per use case.

Deletion goes through the store's by-unit index and matches the unit id as the client
knows it and in its hashed form (``unit_id_pii: hash``; the blueprint's rule may have
changed between versions). Retention: every ``retention_sweep_interval_s`` the sweeper
reads each use case's current blueprint and deletes decisions (with their outcomes)
older than its ``retention``; use cases without one keep the store's default TTL.
"""

from __future__ import annotations

import asyncio
import logging

from loopwise.clock import Clock
from loopwise.errors import InvalidArgument, LoopwiseError
from loopwise.periodic import every
from loopwise.privacy import stored_unit_ids
from loopwise.store.feedback import FeedbackStore
from loopwise.upstream import DecisionUseCases

log = logging.getLogger("loopwise.feedback.privacy")


async def delete_unit(store: FeedbackStore, clock: Clock, use_case: str, unit_id: str,
                      pii_key: str) -> tuple[int, int]:
    """Delete a unit's decisions and their outcomes; returns (decisions, outcomes).

    Decisions of the unit made until now that arrive later are refused by the store."""
    if not use_case:
        raise InvalidArgument("use_case", "required")
    if not unit_id:
        raise InvalidArgument("unit_id", "required")
    return await store.delete_unit(use_case, stored_unit_ids(pii_key, use_case, unit_id), clock.now_ms())


class RetentionSweeper:
    """Deletes data past each use case's retention, in the background."""

    def __init__(self, store: FeedbackStore, blueprints: DecisionUseCases, clock: Clock,
                 interval_s: float) -> None:
        self.store = store
        self.blueprints = blueprints
        self.clock = clock
        self.interval_s = interval_s
        self._task: asyncio.Task | None = None

    async def sweep(self) -> list[str]:
        """One pass over every use case; returns those with a retention applied."""
        swept = []
        for use_case in await self.blueprints.names():
            blueprint, _ = await self.blueprints.latest(use_case)
            retention_ms = blueprint.retention.ToMilliseconds()
            if retention_ms > 0:
                await self.store.purge_before(use_case, self.clock.now_ms() - retention_ms)
                swept.append(use_case)
        return swept

    async def _sweep_and_log(self) -> None:
        """One pass, logged; a pass the decision service or the store cannot answer is
        skipped (a warning) and the next one tries again."""
        try:
            swept = await self.sweep()
        except LoopwiseError as error:  # decision service or store away: next pass
            log.warning("retention sweep skipped: %s", error.message)
            return
        if swept:
            log.info("retention applied to %s", ", ".join(swept))

    def start(self) -> None:
        """Start sweeping in the background."""
        if self._task is None:
            self._task = asyncio.create_task(every(self.interval_s, self._sweep_and_log, "retention sweep", log))

    async def stop(self) -> None:
        """Stop sweeping."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
