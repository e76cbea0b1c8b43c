"""Library or own code: prometheus_client (multiprocess mode) and
opentelemetry-instrumentation-grpc (its aio server interceptor) against loopwise's own
per-call metrics and tracing on unary Decide, measured in the same run, round by round.

Variants (the decision service restarted per variant, decision logging on):

- ``own, tracing off`` / ``own, tracing on``: as shipped (loopwise.metrics, the call
  pipeline's server span; "on" = ``OTEL_TRACES_EXPORTER=otlp`` with the default sampler).
- ``prometheus_client``: the per-call count (service, rpc, use case, code) and latency
  histogram (same buckets) recorded by prometheus_client in multiprocess mode
  (``PROMETHEUS_MULTIPROC_DIR`` set, as several decision workers need) instead of the
  own registry; tracing off.
- ``otel grpc, tracing off`` / ``otel grpc, tracing on``: own metrics, own tracing off,
  plus the library's ``aio_server_interceptor()``; "on" = an SDK TracerProvider with the
  default sampler (parent-based always-on) and a BatchSpanProcessor exporting over
  OTLP/gRPC to the same collector; "off" = no SDK provider (the API's no-op tracer).

The variants are swapped through ServiceHost's ``rpc_metrics_factory`` and
``interceptors`` fields, set by this module's ``--serve`` entry (which runs the decision
service in its own process); production code paths are untouched. Load: ghz (pinned,
scripts/install_tools.sh) through bench/floor.py's helpers, the server pinned to one
core and ghz to the other when there are two.

``python -m bench.libraries [--quick] [--out docs/benchmarks.md]``: prints the table
and, with ``--out``, replaces the libraries section of that file. Everything started
is stopped by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.blueprints import decide_request
from bench.floor import GHZ_VERSION, Floor, pin
from bench.models import fit_models
from bench.run import ROOT, Bench, Sizes, load_average, say
from bench.sections import write_section
from bench.tracing import start_collector
from loopwise.metrics import LATENCY_BUCKETS, Registry, RpcMetrics

START, END = "<!-- libraries:start -->", "<!-- libraries:end -->"
# Variant → (what --serve builds, the decision process's OTEL_* variables, its baseline).
VARIANTS: dict[str, tuple[str, dict[str, str], str]] = {
    "own, tracing off": ("own", {"OTEL_TRACES_EXPORTER": "none"}, "own, tracing off"),
    "prometheus_client": ("prometheus", {"OTEL_TRACES_EXPORTER": "none"}, "own, tracing off"),
    "otel grpc, tracing off": ("otel-off", {"OTEL_TRACES_EXPORTER": "none"}, "own, tracing off"),
    "own, tracing on": ("own", {"OTEL_TRACES_EXPORTER": "otlp"}, "own, tracing on"),
    "otel grpc, tracing on": ("otel-on", {"OTEL_TRACES_EXPORTER": "none"}, "own, tracing on"),
}
FULL = Sizes(levels=[8], batch_levels=[], rounds=6, duration_s=4.0, warmup_s=1.0, use_cases=1, mlserver=False)
QUICK = Sizes(levels=[8], batch_levels=[], rounds=1, duration_s=0.5, warmup_s=0.2, use_cases=1, mlserver=False)
WITHIN = 0.05  # a library is adopted when its median req/s is within 5% of the own code's


# -- the instrumentation swapped in (inside the decision process) -------------------------
class PrometheusRpcMetrics(RpcMetrics):
    """RpcMetrics' per-call work done by prometheus_client: a counter per service, rpc,
    use case and code and a latency histogram with the own buckets. In multiprocess mode
    (``PROMETHEUS_MULTIPROC_DIR`` set before the import) every value is an mmap'd file
    entry per process, merged at scrape time."""

    def __init__(self, registry: Registry, service: str) -> None:
        from prometheus_client import Counter, Histogram

        self.service = service
        self.prom_requests = Counter("loopwise_rpc_requests", "RPCs handled", ["service", "rpc", "use_case", "code"])
        self.prom_latency = Histogram("loopwise_rpc_latency_seconds", "Time in the handler per RPC",
                                      ["service", "rpc", "use_case"], buckets=LATENCY_BUCKETS)

    def record(self, rpc: str, use_case: str, code: Any, seconds: float) -> None:
        """Count one finished RPC."""
        self.prom_requests.labels(self.service, rpc, use_case, code.name).inc()
        self.prom_latency.labels(self.service, rpc, use_case).observe(seconds)


def _otel_provider() -> None:
    """The SDK provider of the library variant: default sampler (from ``OTEL_TRACES_SAMPLER``,
    parent-based always-on unless set), batch export over OTLP/gRPC (``OTEL_EXPORTER_OTLP_*``)."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "loopwise-decision"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def serve(kind: str) -> None:
    """Run the decision service (one worker) with the instrumentation of ``kind``."""
    from loopwise.server import ServiceHost, run
    from loopwise.services.decision import server as decision_server

    options: dict[str, Any] = {}
    if kind == "prometheus":
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            raise SystemExit("PROMETHEUS_MULTIPROC_DIR must be set for the prometheus variant")
        options["rpc_metrics_factory"] = PrometheusRpcMetrics
    elif kind in ("otel-on", "otel-off"):
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        if kind == "otel-on":
            _otel_provider()
        options["interceptors"] = (aio_server_interceptor(),)
    elif kind != "own":
        raise SystemExit(f"unknown variant {kind!r}")
    # The decision server builds its host by this name: the variant's host, this process only.
    decision_server.ServiceHost = functools.partial(ServiceHost, **options)  # type: ignore[misc]
    run(decision_server.main, service="decision")


# -- the comparison -------------------------------------------------------------------------
def start_variant(bench: Bench, kind: str, env: dict[str, str]) -> int:
    """Stop the decision service and start it again through ``--serve kind``; its pid."""
    launcher = bench.launcher
    assert launcher is not None
    launcher.stop("decision")
    log = open(launcher.log_file("decision"), "ab")
    proc = subprocess.Popen([sys.executable, "-m", "bench.libraries", "--serve", kind], cwd=ROOT,
                            env={**launcher.env, **launcher.service_env.get("decision", {}), **env},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    bench.started.append(proc)
    launcher.pid_file("decision").write_text(str(proc.pid))
    launcher.wait_serving("decision")
    return proc.pid


async def measure(sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """Interleaved rounds of every variant: {"cells": {variant: [runs]}, ...}."""
    bench = Bench(sizes, workdir)
    cells: dict[str, list[dict]] = {}
    load_start = load_average()
    try:
        say("fitting models; starting feedback, trainer, decision")
        models = fit_models(workdir / "models")
        launcher = bench.start_stack()
        await bench.deploy(models, {"bench_lr": "lr"})
        collector = start_collector(bench)
        payload = bench.payload("decide.bin", decide_request("bench_lr").SerializeToString())
        floor = Floor(bench, sizes.duration_s, sizes.rounds, sizes.warmup_s)
        target = launcher.address("decision")
        prom_dir = workdir / "prometheus"
        common = {"LOOPWISE_DECISION_LOG_ENABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{collector}",
                  "OTEL_EXPORTER_OTLP_INSECURE": "true"}
        level = sizes.levels[0]
        for round_no in range(sizes.rounds):
            for name, (kind, env, _) in VARIANTS.items():
                extra = dict(env)
                if kind == "prometheus":
                    prom_dir.mkdir(exist_ok=True)
                    for old in prom_dir.glob("*.db"):
                        old.unlink()
                    extra["PROMETHEUS_MULTIPROC_DIR"] = str(prom_dir)
                pid = start_variant(bench, kind, {**common, **extra})
                await bench.wait_models(["bench_lr"])
                pin(pid, floor.server_core)
                floor.ghz_run(target, payload, level, sizes.warmup_s)
                r = floor.cell(target, pid, payload, level)
                cells.setdefault(name, []).append(r)
                say(f"  round {round_no + 1} {name:>23} c={level} {r['req_per_s']:8.0f} req/s  p50 "
                    f"{r['p50_ms']:.3f}  p99 {r['p99_ms']:.3f} ms  cpu {r['cpu_us']:.0f} us  errors {r['errors']}")
        if prom_dir.exists():
            from prometheus_client import CollectorRegistry, generate_latest, multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=str(prom_dir))
            scraped = generate_latest(registry).decode()
            counted = [line for line in scraped.splitlines()
                       if line.startswith("loopwise_rpc_requests_total{") and 'rpc="Decide"' in line]
            say(f"prometheus_client multiprocess files: {counted}")
    finally:
        bench.stop_all()
    return {"cells": cells, "level": level, "rounds": sizes.rounds, "duration_s": sizes.duration_s,
            "warmup_s": sizes.warmup_s, "load": [load_start, load_average()],
            "placement": [floor.server_core, floor.client_core]}


def med(runs: list[dict], key: str) -> float:
    """Median of ``key`` over runs."""
    return statistics.median(r[key] for r in runs)


def decisions(result: dict[str, Any]) -> list[tuple[str, float, bool]]:
    """(library, its worst req/s ratio to the own code, adopted) by the 5% rule."""
    cells = result["cells"]

    def ratio(name: str) -> float:
        return med(cells[name], "req_per_s") / med(cells[VARIANTS[name][2]], "req_per_s")

    prom = ratio("prometheus_client")
    otel = min(ratio("otel grpc, tracing off"), ratio("otel grpc, tracing on"))
    return [("prometheus_client (multiprocess)", prom, prom >= 1 - WITHIN),
            ("opentelemetry-instrumentation-grpc", otel, otel >= 1 - WITHIN)]


def table(result: dict[str, Any], command: str) -> str:
    """The markdown section."""
    cells = result["cells"]
    server_core, client_core = result["placement"]
    lines = [START, "## Library or own code: metrics and gRPC tracing on Decide", "",
             f"- command: `{command}`",
             f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; load average (1 min) "
             f"{result['load'][0]:.2f} at start, {result['load'][1]:.2f} at end (shared 2-core machine)",
             f"- unary Decide (the `make bench` logistic-regression use case, 20 features), one decision worker, "
             f"decision logging on (feedback running), driven by ghz {GHZ_VERSION} at {result['level']} in flight; "
             f"server on core {server_core or '(any)'}, ghz on core {client_core or '(any)'}; the decision process "
             f"restarted per variant; {result['rounds']} rounds × {result['duration_s']} s per variant after a "
             f"{result['warmup_s']} s warm-up, variants interleaved within each round (A B C D E, A B C D E, …); "
             "medians over rounds",
             "- prometheus_client: the per-call counter and latency histogram in multiprocess mode "
             "(`PROMETHEUS_MULTIPROC_DIR`, as the decision service's worker processes would need) in place of the "
             "own registry; the rest of the decision metrics stay own",
             "- otel grpc: `opentelemetry.instrumentation.grpc.aio_server_interceptor()` added as a grpc server "
             "interceptor, own metrics kept, own tracing off; \"on\" = SDK provider with the default sampler "
             "(parent-based always-on, as own tracing on) and OTLP/gRPC batch export to a collector process on "
             "loopback that drops spans; own tracing on also traces the decision log's batches (the library "
             "variant does not), so the comparison favours the library", "",
             "| variant | req/s min / median / max | req/s × own (medians) | p50 ms | p99 ms | server CPU µs/req | "
             "CPU × own | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for name in VARIANTS:
        runs = cells[name]
        rates = [r["req_per_s"] for r in runs]
        base = cells[VARIANTS[name][2]]
        ratio = med(runs, "req_per_s") / med(base, "req_per_s")
        lines.append(f"| {name} | {min(rates):,.0f} / {statistics.median(rates):,.0f} / {max(rates):,.0f} | "
                     f"{ratio:.3f} | {med(runs, 'p50_ms'):.3f} | {med(runs, 'p99_ms'):.3f} | "
                     f"{med(runs, 'cpu_us'):.0f} | {med(runs, 'cpu_us') / med(base, 'cpu_us'):.3f} | "
                     f"{sum(r['errors'] for r in runs)} |")
    lines += ["", "Decision (a library is adopted when its median req/s is within 5% of the own code's; for the "
              "gRPC instrumentation the worse of tracing off and on counts):", "",
              "| library | req/s × own | decision |", "|---|---|---|"]
    for library, ratio, adopted in decisions(result):
        lines.append(f"| {library} | {ratio:.3f} | {'adopt' if adopted else 'keep the own code'} |")
    lines.append(END)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round (smoke run)")
    parser.add_argument("--out", type=Path, help="markdown file whose libraries section is replaced")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return
    sizes = QUICK if args.quick else FULL
    command = ".venv/bin/python -m bench.libraries" + (" --quick" if args.quick else "") + \
        (f" --out {args.out}" if args.out else "")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="loopwise-bench-libraries-") as tmp:
        result = asyncio.run(measure(sizes, Path(tmp)))
    say(f"run took {time.monotonic() - started:.0f} s")
    section = table(result, command)
    print(section)
    if args.out:
        write_section(args.out, section, START, END)


if __name__ == "__main__":
    main()
