"""Metrics: counters, gauges and histograms in the Prometheus text format, one HTTP
endpoint per service, aggregated over worker processes.

A small registry (``prometheus_client`` is not a dependency): updating a metric is a
dict lookup and an addition, cheap enough for the request path. A process with
several workers works like prometheus_client's multiprocess mode: each worker writes
a snapshot of its registry to ``<dir>/w<index>.json`` (atomically, every
``interval`` seconds and at exit); the parent's endpoint reads every snapshot and
exposes each series with a ``worker`` label. A single process exposes its live
registry with ``worker="0"``.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from loopwise.settings import SERVICES, ServiceName, Settings

log = logging.getLogger("loopwise.metrics")

# Latency buckets in seconds: 50 µs … 5 s.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)

LabelValues = tuple[str, ...]


def metrics_port(settings: Settings, service: ServiceName) -> int:
    """The metrics HTTP port of a service (0: metrics HTTP off)."""
    if not settings.metrics_port:
        return 0
    return settings.metrics_port + SERVICES.index(service)


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str]) -> None:
        self.name = name
        self.help = help_text
        self.labels = tuple(labels)

    def snapshot(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError


class Counter(_Metric):
    """A monotonically increasing value per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self.values: dict[LabelValues, float] = {}

    def inc(self, labels: LabelValues = (), amount: float = 1.0) -> None:
        """Add ``amount`` to the series of ``labels`` (a tuple in label order)."""
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {"series": [[list(k), v] for k, v in self.values.items()]}


class Gauge(Counter):
    """A value that goes up and down; ``set`` replaces it."""

    kind = "gauge"

    def set(self, labels: LabelValues, value: float) -> None:
        """Set the series of ``labels``."""
        self.values[labels] = float(value)


class Histogram(_Metric):
    """Observations in cumulative buckets, with their count and sum."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = (),
                 buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        super().__init__(name, help_text, labels)
        self.buckets = tuple(sorted(buckets))
        # per label set: [count per bucket (non-cumulative, last = +Inf), sum]
        self.values: dict[LabelValues, list[Any]] = {}

    def observe(self, labels: LabelValues, value: float) -> None:
        """Record one observation."""
        entry = self.values.get(labels)
        if entry is None:
            entry = self.values[labels] = [[0] * (len(self.buckets) + 1), 0.0]
        entry[0][bisect.bisect_left(self.buckets, value)] += 1
        entry[1] += value

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {"buckets": list(self.buckets),
                "series": [[list(k), counts, total] for k, (counts, total) in self.values.items()]}


class Registry:
    """The metrics of one process."""

    def __init__(self) -> None:
        self.metrics: dict[str, _Metric] = {}
        self.collectors: list[Callable[[], None]] = []

    def _add(self, metric: _Metric) -> Any:
        if metric.name in self.metrics:
            raise ValueError(f"metric {metric.name} already registered")
        self.metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        """A new counter."""
        return self._add(Counter(name, help_text, labels))

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Gauge:
        """A new gauge."""
        return self._add(Gauge(name, help_text, labels))

    def histogram(self, name: str, help_text: str, labels: Sequence[str] = (),
                  buckets: Sequence[float] = LATENCY_BUCKETS) -> Histogram:
        """A new histogram."""
        return self._add(Histogram(name, help_text, labels, buckets))

    def on_collect(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` before every snapshot (to refresh gauges from live state)."""
        self.collectors.append(fn)

    def snapshot(self) -> dict[str, Any]:
        """Every metric as JSON-ready data."""
        for fn in self.collectors:
            try:
                fn()
            except Exception:  # a broken collector must not hide the other metrics
                log.exception("metrics collector failed")
        return {name: {"kind": m.kind, "help": m.help, "labels": list(m.labels), **m.snapshot()}
                for name, m in self.metrics.items()}


# -- metrics every service has ------------------------------------------------------------
class RpcMetrics:
    """Request counts and latency per RPC, use case (the request's ``use_case`` field,
    empty for RPCs without one) and status code; recorded by the server interceptor."""

    def __init__(self, registry: Registry, service: str) -> None:
        self.service = service
        self.requests = registry.counter("loopwise_rpc_requests_total", "RPCs handled",
                                         ["service", "rpc", "use_case", "code"])
        self.latency = registry.histogram("loopwise_rpc_latency_seconds", "Time in the handler per RPC",
                                          ["service", "rpc", "use_case"])

    def record(self, rpc: str, use_case: str, code: Any, seconds: float) -> None:
        """Count one finished RPC (``code``: a ``grpc.StatusCode``)."""
        self.requests.inc((self.service, rpc, use_case, code.name))
        self.latency.observe((self.service, rpc, use_case), seconds)


# Job durations in seconds: 0.1 s … 2 h.
JOB_BUCKETS: tuple[float, ...] = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)


def observe_jobs(runner: Any, registry: Registry) -> None:
    """Time every job an ``OperationRunner`` starts (``loopwise_job_duration_seconds``
    by kind, use case and outcome) and run it in a span (when tracing is on) that is a
    child of the RPC that started it. Wraps ``runner.start``."""
    from loopwise import tracing

    durations = registry.histogram("loopwise_job_duration_seconds", "Wall time of background jobs (operations)",
                                   ["kind", "use_case", "outcome"], buckets=JOB_BUCKETS)
    running = registry.gauge("loopwise_jobs_running", "Background jobs running now", ["kind"])
    kind = runner.kind
    running.set((kind,), 0)
    start = runner.start

    async def timed_start(use_case: str, request_id: str, job: Any, *args: Any, **kwargs: Any) -> Any:
        async def timed(progress: Any) -> Any:
            began = time.perf_counter()
            outcome = "failed"
            running.inc((kind,))
            try:
                with tracing.job_span(kind, use_case, getattr(progress, "operation_id", "")):
                    result = await job(progress)
                    tracing.set_attributes(**_model_lineage(result))
                outcome = "succeeded"
                return result
            except asyncio.CancelledError:
                outcome = "cancelled"
                raise
            finally:
                running.inc((kind,), -1)
                durations.observe((kind, use_case, outcome), time.perf_counter() - began)

        return await start(use_case, request_id, timed, *args, **kwargs)

    runner.start = timed_start


def _model_lineage(result: Any) -> dict[str, Any]:
    """Span attributes of the model a job registered (its version and training data
    range), when its result names one (e.g. a TrainingResult)."""
    model = getattr(result, "model", None)
    if model is None or not getattr(model, "version", 0):
        return {}
    out: dict[str, Any] = {"model_version": model.version}
    for field_name in ("data_start_time", "data_end_time"):
        if model.HasField(field_name):
            out[f"model_{field_name}"] = getattr(model, field_name).ToJsonString()
    return out


# -- text exposition ------------------------------------------------------------------
def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Iterable[str], values: Iterable[str]) -> str:
    pairs = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values, strict=True)]
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render(snapshots: dict[str, dict[str, Any]]) -> str:
    """Prometheus text format for snapshots keyed by worker label."""
    families: dict[str, dict[str, Any]] = {}
    for snap in snapshots.values():
        for name, metric in snap.items():
            families.setdefault(name, metric)
    lines: list[str] = []
    for name in sorted(families):
        meta = families[name]
        lines.append(f"# HELP {name} {meta['help']}")
        lines.append(f"# TYPE {name} {meta['kind']}")
        for worker in sorted(snapshots, key=lambda w: (len(w), w)):
            metric = snapshots[worker].get(name)
            if metric is None:
                continue
            names = [*metric["labels"], "worker"]
            if metric["kind"] == "histogram":
                bounds = metric["buckets"]
                for values, counts, total in metric["series"]:
                    cumulative = 0
                    for bound, count in zip([*bounds, math.inf], counts, strict=True):
                        cumulative += count
                        lines.append(f"{name}_bucket{_labels([*names, 'le'], [*values, worker, _number(bound)])} "
                                     f"{cumulative}")
                    lines.append(f"{name}_count{_labels(names, [*values, worker])} {cumulative}")
                    lines.append(f"{name}_sum{_labels(names, [*values, worker])} {_number(total)}")
            else:
                for values, value in metric["series"]:
                    lines.append(f"{name}{_labels(names, [*values, worker])} {_number(value)}")
    return "\n".join(lines) + "\n"


def parse_text(text: str) -> dict[str, float]:
    """Sample lines of a text exposition as ``{'name{labels}': value}`` (for tests and tools)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


# -- multiprocess snapshots -------------------------------------------------------------
def write_snapshot(registry: Registry, directory: Path, worker: int) -> None:
    """Write a worker's snapshot atomically."""
    path = directory / f"w{worker}.json"
    tmp = directory / f".w{worker}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(registry.snapshot()))
    os.replace(tmp, path)


def read_snapshots(directory: Path) -> dict[str, dict[str, Any]]:
    """Every worker's last snapshot, keyed by worker index (as a string)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("w*.json")):
        try:
            out[path.stem[1:]] = json.loads(path.read_text())
        except (OSError, ValueError):  # replaced while reading: skip this scrape
            continue
    return out


async def write_snapshots_forever(registry: Registry, directory: Path, worker: int,
                                  interval: float = 0.5) -> None:
    """A worker's task: write its snapshot every ``interval`` seconds (and once more when
    cancelled)."""
    try:
        while True:
            write_snapshot(registry, directory, worker)
            await asyncio.sleep(interval)
    finally:
        write_snapshot(registry, directory, worker)


# -- HTTP endpoint ----------------------------------------------------------------------
class MetricsEndpoint:
    """A minimal HTTP server answering ``GET /metrics`` with ``render(source())``."""

    def __init__(self, source: Callable[[], dict[str, dict[str, Any]]], port: int,
                 host: str = "127.0.0.1") -> None:
        self.source = source
        self.port = port
        self.host = host
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        """Listen; returns the bound port."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            if request.startswith(b"GET ") and path.split(b"?")[0] in (b"/metrics", b"/"):
                body = render(self.source()).encode()
                status = b"200 OK"
            else:
                body, status = b"not found\n", b"404 Not Found"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
