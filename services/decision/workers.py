"""Multi-worker mode and metrics of the decision service.

With ``decision_workers`` = N > 1 the decision process is a supervisor that holds no
gRPC object (docs/architecture.md §6: gRPC is not fork-safe): it spawns N worker processes (the
``spawn`` start method), each a complete decision server bound to the same port with
``SO_REUSEPORT``, so the kernel balances connections (not requests) between them:
clients need several channels to use several workers. The supervisor restarts a
worker that dies, forwards SIGTERM/SIGINT to every worker and waits for them, and
serves the one metrics endpoint of the service, aggregating the workers' snapshots
with a ``worker`` label. A worker stops by itself when its supervisor is gone.

Workers keep their own state: a decision-log spool each (worker 0 uses the service's
usual spool directory), a shared model cache, and the shared use-case store, which
each worker re-reads like any decision process (use_cases.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loopwise.metrics import (
    MetricsEndpoint,
    Registry,
    metrics_port,
    read_snapshots,
    write_snapshots_forever,
)
from loopwise.services.decision.proxy import UNARY_DECIDING, ServicerProxy
from loopwise.settings import Settings

log = logging.getLogger("loopwise.decision.workers")

RESTART_BACKOFF_S = 1.0
SNAPSHOT_INTERVAL_S = 0.5


# -- metrics of one process ------------------------------------------------------------
class DecisionMetrics:
    """The decision service's own metrics, in its host's registry (per-RPC counts and
    latency come from the server interceptor, see loopwise.server)."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        r = self.registry
        self.decisions = r.counter("loopwise_decisions_total", "Decisions served", ["use_case"])
        self.fallbacks = r.counter("loopwise_decision_fallbacks_total", "Decisions that fell back to the default",
                                   ["use_case"])
        self.explored = r.counter("loopwise_decision_explored_total", "Decisions whose action was explored",
                                  ["use_case"])
        self.log_state = r.gauge("loopwise_decision_log", "Decision log counters (since start; spool now)",
                                 ["counter"])
        self.logged = r.counter("loopwise_decision_log_decisions_total",
                                "Decisions by what the decision log did with them (since start)", ["state"])
        self.spool_depth = r.gauge("loopwise_decision_log_spool_depth", "Decisions waiting in the local spool now")
        self.queued = r.gauge("loopwise_decision_log_queued", "Decisions waiting in memory to be logged")
        self.model_version = r.gauge("loopwise_model_version", "Model version serving, by use case and role",
                                     ["use_case", "role"])
        self.undelivered = r.counter("loopwise_decisions_undelivered_total",
                                     "Decisions made whose answer could not reach the caller (the call's "
                                     "deadline passed first); logged with undelivered set", ["use_case"])
        self.unsent = r.counter("loopwise_decisions_unsent_total",
                                "Undelivered decisions whose answer was not sent at all (ready too close to the "
                                "call's deadline; not in loopwise_decisions_total, which counts answers)",
                                ["use_case"])
        self.queue_passes = r.counter("loopwise_decide_passes_total",
                                      "Passes of the Decide queue (calls that arrived together, decided at once)")
        self.queue_calls = r.counter("loopwise_decide_pass_calls_total",
                                     "Decide calls and DecideStream messages decided by the Decide queue's passes")

    def watch_decide_queue(self, queue: Any) -> None:
        """Expose the Decide queue's passes and the calls decided in them at every
        snapshot (their ratio: calls decided together per pass)."""

        def collect() -> None:
            self.queue_passes.values[()] = float(queue.passes)
            self.queue_calls.values[()] = float(queue.decided)

        self.registry.on_collect(collect)

    def watch_decision_log(self, decision_log: Any) -> None:
        """Expose the decision log's counters at every snapshot."""

        def collect() -> None:
            counters = vars(decision_log.counters)
            for name, value in counters.items():
                self.log_state.set((name,), value)
            for state in ("submitted", "acked", "spooled", "replayed", "dropped", "rejected"):
                self.logged.values[(state,)] = float(counters[state])
            self.spool_depth.set((), counters["spool_depth"])
            self.queued.set((), decision_log.queued)

        self.registry.on_collect(collect)

    def watch_undelivered(self, core: Any) -> None:
        """Expose the core's counts of undelivered (and unsent) decisions at every snapshot."""

        def collect() -> None:
            for use_case, count in list(core.undelivered.items()):
                self.undelivered.values[(use_case,)] = float(count)
            for use_case, count in list(core.unsent.items()):
                self.unsent.values[(use_case,)] = float(count)

        self.registry.on_collect(collect)

    def watch_models(self, scorers: Any) -> None:
        """Expose the model versions serving each use case at every snapshot."""

        def collect() -> None:
            self.model_version.values.clear()
            for use_case, serving in list(scorers.items()):
                self.model_version.set((use_case, "production"), serving.version)
                if serving.canary is not None:
                    self.model_version.set((use_case, "canary"), serving.canary.version)
                for shadow in serving.shadows:
                    self.model_version.set((use_case, f"shadow_v{shadow.version}"), shadow.version)

        self.registry.on_collect(collect)

    def count(self, rpc: str, request: Any, response: Any) -> None:
        """Count the decisions (fallbacks, explorations) of one response."""
        if rpc == "DecideBatch":
            labels = (request.use_case,)
            self.decisions.inc(labels, len(response.decision_ids))
            # inc by 0 too: every series exists from the first decision (rates need both)
            self.fallbacks.inc(labels, response.fallback.count(1))
            self.explored.inc(labels, response.explored.count(1))
        else:
            decision = response.decision
            labels = (decision.use_case,)
            self.decisions.inc(labels)
            self.fallbacks.inc(labels, 1.0 if decision.fallback else 0.0)
            self.explored.inc(labels, 1.0 if decision.explored else 0.0)


def instrument(servicer: Any, metrics: DecisionMetrics) -> Any:
    """Count the decisions of Decide and DecideBatch (wrapped) and of DecideStream (its
    ``stream_answered`` hook). The proxy is what gets registered on the server."""
    servicer.stream_answered = functools.partial(metrics.count, "DecideStream", None)
    return ServicerProxy(servicer, {rpc: _wrap_unary(rpc, getattr(servicer, rpc), metrics) for rpc in UNARY_DECIDING})


def _wrap_unary(rpc: str, fn: Callable[..., Any], m: DecisionMetrics) -> Callable[..., Any]:
    async def call(request: Any, context: Any) -> Any:
        response = await fn(request, context)
        m.count(rpc, request, response)
        return response

    call.__name__ = rpc
    return call


# -- one worker process ------------------------------------------------------------------
def worker_process(settings: Settings, index: int, metrics_dir: str) -> None:
    """Entry point of a spawned worker: a decision server on the shared port."""
    from loopwise.server import configure_process

    configure_process(settings, "decision")
    asyncio.run(_worker_main(settings, index, Path(metrics_dir)))


async def _worker_main(settings: Settings, index: int, metrics_dir: Path) -> None:
    from loopwise.services.decision.server import start_process

    parent = os.getppid()
    process = await start_process(settings, worker=index)
    host = process.host

    async def orphaned() -> None:
        while os.getppid() == parent:
            await asyncio.sleep(1.0)
        log.warning("decision worker %d: supervisor gone, stopping", index)
        await host.stop()

    tasks = [
        asyncio.ensure_future(write_snapshots_forever(host.registry, metrics_dir, index, SNAPSHOT_INTERVAL_S)),
        asyncio.ensure_future(orphaned()),
    ]
    try:
        await host.serve_until_signal()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- the supervisor ----------------------------------------------------------------------
class Supervisor:
    """Starts, watches and stops the worker processes; serves the merged metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.n = settings.decision_workers
        self.metrics_dir = settings.service_dir("decision") / "metrics"
        self.metrics_dir.mkdir(parents=True, exist_ok=True)
        for old in self.metrics_dir.glob("w*.json"):
            old.unlink()
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: dict[int, Any] = {}
        self.started_at: dict[int, float] = {}
        self.restarts = 0
        self.endpoint: MetricsEndpoint | None = None

    def _start(self, index: int) -> None:
        proc = self.ctx.Process(target=worker_process, args=(self.settings, index, str(self.metrics_dir)),
                                name=f"decision-worker-{index}", daemon=False)
        proc.start()
        self.procs[index] = proc
        self.started_at[index] = time.monotonic()
        log.info("decision worker %d started (pid %d)", index, proc.pid)

    def pids(self) -> dict[int, int]:
        """Worker index → pid of the live workers."""
        return {i: p.pid for i, p in self.procs.items() if p.exitcode is None}

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT, then stop every worker."""
        loop = asyncio.get_running_loop()
        requested = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, requested.set)
        for i in range(self.n):
            self._start(i)
        port = metrics_port(self.settings, "decision")
        if port:
            self.endpoint = MetricsEndpoint(lambda: read_snapshots(self.metrics_dir), port,
                                            host=self.settings.metrics_host)
            await self.endpoint.start()
        try:
            while not requested.is_set():
                try:
                    await asyncio.wait_for(requested.wait(), 0.2)
                except TimeoutError:
                    pass
                if requested.is_set():
                    break
                for i, proc in list(self.procs.items()):
                    if proc.exitcode is None:
                        continue
                    if time.monotonic() - self.started_at[i] < RESTART_BACKOFF_S:
                        continue  # crash loop: at most one restart per backoff
                    log.warning("decision worker %d (pid %d) exited with %s; restarting", i, proc.pid, proc.exitcode)
                    proc.join()
                    self.restarts += 1
                    self._start(i)
        finally:
            log.info("decision supervisor: stopping %d workers", len(self.procs))
            await self.stop_workers()
            if self.endpoint is not None:
                await self.endpoint.stop()

    async def stop_workers(self) -> None:
        """SIGTERM every live worker, wait for the grace period (+ margin), then SIGKILL."""
        for proc in self.procs.values():
            if proc.exitcode is None:
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + self.settings.grace_period_s + 15.0
        while any(p.exitcode is None for p in self.procs.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for proc in self.procs.values():
            if proc.exitcode is None:
                log.warning("decision worker pid %d did not stop; killing it", proc.pid)
                proc.kill()
            proc.join()


async def supervise(settings: Settings) -> None:
    """The decision process in multi-worker mode."""
    await Supervisor(settings).run()


async def serve_single(settings: Settings, start_server: Callable[..., Any]) -> None:
    """The decision process with one worker (its host serves its metrics endpoint)."""
    host = await start_server(settings)
    await host.serve_until_signal()
