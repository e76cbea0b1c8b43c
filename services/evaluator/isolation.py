"""Heavy evaluator work in a process of its own, which a cancel or a deadline terminates.

A shared process pool cannot stop one running task, so every analysis, policy evaluation
and tuning runs in a fresh ``spawn`` process (gRPC is not fork-safe): the job's stages
come back over a pipe while it runs, and cancelling the awaiting task (CancelOperation,
a client's deadline, a job timeout) terminates the process, so no CPU keeps burning on
work nobody waits for. Native thread pools are limited in the worker (``threads``):
oversubscribed OpenMP threads on a busy machine are many times slower. The limit is set
twice: in the environment (read by OpenMP and OpenBLAS when they load, as scikit-learn's
and SciPy's do only once the job imports them) and through threadpoolctl for the
libraries already loaded (numpy's, by unpickling the arguments); threadpoolctl alone
misses the libraries that load later, which then use every core.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from loopwise.errors import LoopwiseError
from loopwise.jobs import die_with_parent

# A job takes its arguments then ``report(stage, progress, message)``.
OnStage = Callable[[str, float, str], Awaitable[None]]
EXIT_CHECK_S = 1.0
JOIN_S = 5.0
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "NUMEXPR_NUM_THREADS")


class WorkerFailed(Exception):
    """The worker raised an exception that could not be sent back as is."""


def _entry(conn, fn: Callable[..., Any], args: tuple, threads: int, parent_pid: int) -> None:
    """The worker: die with ``parent_pid``, limit native threads, run ``fn(*args, report)``,
    send the outcome."""
    die_with_parent(parent_pid)
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass

    def report(stage: str, progress: float, message: str = "") -> None:
        conn.send(("stage", (stage, progress, message)))

    try:
        result = fn(*args, report)
    except LoopwiseError as exc:
        conn.send(("error", exc))
    except BaseException as exc:  # everything goes back to the caller
        conn.send(("failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    else:
        conn.send(("ok", result))
    finally:
        conn.close()


async def run_isolated(fn: Callable[..., Any], *args: Any, on_stage: OnStage | None = None,
                       threads: int = 1) -> Any:
    """Run the picklable top-level ``fn(*args, report)`` in a new spawn process and await
    its result; stages reported by the job are passed to ``on_stage``. Cancelling the
    awaiting task terminates the process."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_entry, args=(child, fn, args, threads, os.getpid()), daemon=True)
    # Starting a spawn process writes the pickled job (its data included) into the
    # child's pipe, which blocks until the new interpreter has read it: off the loop.
    await asyncio.to_thread(process.start)
    child.close()
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    # The pipe wakes the event loop when the worker writes (no thread blocks on it).
    loop.add_reader(parent.fileno(), readable.set)
    try:
        while True:
            try:
                await asyncio.wait_for(readable.wait(), timeout=EXIT_CHECK_S)
            except TimeoutError:
                if not process.is_alive() and not parent.poll():
                    raise WorkerFailed(f"the worker process exited with code {process.exitcode}") from None
                continue
            readable.clear()
            while parent.poll():
                # A message (the result: report HTML and fitted model) can be large and
                # arrive in pieces while the worker writes it: read it off the event loop,
                # so that Health and every other RPC keep answering meanwhile.
                loop.remove_reader(parent.fileno())
                try:
                    kind, payload = await asyncio.to_thread(parent.recv)
                except EOFError as exc:
                    raise WorkerFailed(f"the worker process exited with code {process.exitcode}") from exc
                finally:
                    loop.add_reader(parent.fileno(), readable.set)
                if kind == "stage":
                    if on_stage is not None:
                        await on_stage(*payload)
                elif kind == "ok":
                    return payload
                elif kind == "error":
                    raise payload
                else:
                    raise WorkerFailed(payload)
    finally:
        loop.remove_reader(parent.fileno())
        if process.is_alive():
            process.terminate()
        await asyncio.to_thread(process.join, JOIN_S)
        if process.is_alive():  # pragma: no cover - terminate is enough for numpy work
            process.kill()
        parent.close()
