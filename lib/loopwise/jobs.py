"""The process pool for heavy work (model fits, ONNX export, EconML estimation).

gRPC is not fork-safe, so workers are started with ``spawn``; the event loop only
awaits their futures and keeps answering Health and every other RPC meanwhile.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Make this worker process die with the process that started it, ``parent_pid``
    (Linux): a SIGKILLed service must not leave its workers computing for nobody.
    Called first in every worker (pool initializer, evaluator job entry)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


class ProcessPool:
    """A lazily started ``spawn`` process pool awaited from asyncio."""

    def __init__(self, max_workers: int = 1) -> None:
        self.max_workers = max_workers
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.max_workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=die_with_parent, initargs=(os.getpid(),),
            )
        return self._executor

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run the picklable ``fn(*args)`` in a worker process and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), fn, *args)

    def shutdown(self) -> None:
        """Stop the workers (running work is abandoned): the executor is told to stop
        and its worker processes are terminated, so none outlives this process."""
        if self._executor is not None:
            workers = list((getattr(self._executor, "_processes", None) or {}).values())
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            for worker in workers:
                if worker.is_alive():
                    worker.terminate()
            for worker in workers:
                worker.join(timeout=5)
