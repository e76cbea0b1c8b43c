"""Background loops that repeat one step at a fixed interval (rollout looks, schedules,
drift, stats refreshes)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable


async def every(interval_s: float, step: Callable[[], Awaitable[object]], what: str, log: logging.Logger) -> None:
    """Run ``step`` every ``interval_s`` seconds until cancelled. A failing step is
    logged ("``what`` failed") and the loop goes on: one bad look must not stop it."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; retrying at the next interval", what)
