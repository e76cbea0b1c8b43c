"""Fixtures for the decision service tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.decision.helpers import Decider, start_decider


@pytest_asyncio.fixture
async def decider(make_settings) -> AsyncIterator[Decider]:
    """A decision service whose feedback and trainer are not running (logging off)."""
    d = await start_decider(make_settings(decision_log_enabled=False, max_batch_rows=1000,
                                          max_message_bytes=256 * 1024))
    try:
        yield d
    finally:
        await d.stop()
