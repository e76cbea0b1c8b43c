"""The process pool for heavy work (model fits, ONNX export, EconML estimation).

gRPC is not fork-safe, so workers are started with ``spawn``; the event loop only
awaits their futures and keeps answering Health and every other RPC meanwhile.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class ProcessPool:
    """A lazily started ``spawn`` process pool awaited from asyncio."""

    def __init__(self, max_workers: int = 1) -> None:
        self.max_workers = max_workers
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.max_workers, mp_context=multiprocessing.get_context("spawn")
            )
        return self._executor

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the picklable ``fn(*args)`` in a worker process and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), fn, *args)

    def shutdown(self) -> None:
        """Stop the workers (running work is abandoned)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
