"""The cost of tracing on the decision path: Decide with tracing off, on (every request
sampled, spans exported over OTLP/gRPC to a collector process on loopback) and on with
10% sampling, measured in the same run, round by round, with decision logging on.

``python -m bench.tracing [--quick] [--out docs/benchmarks.md]``: prints the table and,
with ``--out``, replaces the tracing section of that file. Only the decision service's
tracing changes between modes (the ``OTEL_*`` variables of its process); feedback,
trainer and the clients are the same. Everything started is stopped by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from bench.blueprints import decide_request
from bench.models import fit_models
from bench.run import ROOT, Bench, Result, Sizes, fmt_rate, load_average, say
from bench.sections import write_section

DECIDE = "/loopwise.decision.v1.DecisionService/Decide"
START, END = "<!-- tracing:start -->", "<!-- tracing:end -->"
MODES: dict[str, dict[str, str]] = {
    "off": {"OTEL_TRACES_EXPORTER": "none"},
    "on, 100% sampled": {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "parentbased_always_on"},
    "on, 10% sampled": {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                        "OTEL_TRACES_SAMPLER_ARG": "0.1"},
}
FULL = Sizes(levels=[1, 8], batch_levels=[], rounds=3, duration_s=3.0, warmup_s=0.5, use_cases=1, mlserver=False)
QUICK = Sizes(levels=[1], batch_levels=[], rounds=1, duration_s=0.5, warmup_s=0.1, use_cases=1, mlserver=False)


# -- a collector that receives spans and drops them ------------------------------------
async def _collector(port: int) -> None:
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

    class Sink(otlp_grpc.TraceServiceServicer):
        async def Export(self, request, context):
            return otlp.ExportTraceServiceResponse()

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 64 << 20)])
    otlp_grpc.add_TraceServiceServicer_to_server(Sink(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def start_collector(bench: Bench) -> str:
    """The collector process (stopped with the bench); returns its address."""
    from loopwise.launcher import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.tracing", "--collector", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    bench.started.append(proc)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
    return f"127.0.0.1:{port}"


# -- the comparison -----------------------------------------------------------------------
async def measure(sizes: Sizes, workdir: Path) -> tuple[dict[tuple[str, int], Result], list[str]]:
    """Rounds of every mode at every concurrency: {(mode, level): Result}."""
    bench = Bench(sizes, workdir)
    results: dict[tuple[str, int], Result] = {}
    notes: list[str] = []
    try:
        models = fit_models(workdir / "models")
        launcher = bench.start_stack()
        await bench.deploy(models, {"bench_lr": "lr"})
        collector = start_collector(bench)
        payload = bench.payload("decide.bin", decide_request("bench_lr").SerializeToString())
        common = {"LOOPWISE_DECISION_LOG_ENABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{collector}",
                  "OTEL_EXPORTER_OTLP_INSECURE": "true", "OTEL_TRACES_SAMPLER_ARG": "1.0"}
        for _ in range(sizes.rounds):
            for mode, env in MODES.items():
                pid = bench.restart_decision(**{**common, **env})
                await bench.wait_models(["bench_lr"])
                pids = [pid, launcher.pid("feedback") or pid]
                for level in sizes.levels:
                    r = bench.load(launcher.address("decision"), DECIDE, payload, level, cpu_pids=pids)
                    results.setdefault((mode, level), Result()).runs.append(r)
                    say(f"  {mode:>17} c={level:<3} {r['req_per_s']:9.0f} req/s  p50 {r['p50_ms']:.3f} ms  "
                        f"p99 {r['p99_ms']:.3f} ms  cpu {1e6 * r['cpu_s'] / max(r['total'], 1):.0f} µs/decision")
        notes.append(f"load average (1 min) at the end {load_average():.2f}")
    finally:
        bench.stop_all()
    return results, notes


def table(results: dict[tuple[str, int], Result], sizes: Sizes, command: str, notes: list[str]) -> str:
    """The markdown section."""
    lines = [START, "## Tracing cost on Decide (issue 8)", "",
             f"- command: `{command}`",
             f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
             "- setup: the `make bench` logistic-regression use case (20 features), one decision worker, decision "
             "logging on (feedback running); the decision process restarted per mode with its `OTEL_*` variables; "
             "tracing on = server span per Decide with the decision attributes, the decision log's batch span with "
             "a link per decision and a client span per LogDecisions, BatchSpanProcessor, OTLP/gRPC export to a "
             "collector process on loopback that drops what it receives; feedback's own tracing stays off",
             f"- {sizes.rounds} rounds × {sizes.duration_s} s per cell, modes interleaved within each round; "
             "medians over rounds; CPU = decision + feedback utime+stime per decision (warm-up included)",
             *[f"- {n}" for n in notes], "",
             "| tracing | concurrency | Decide | CPU per decision | req/s vs off | p99 vs off |",
             "|---|---|---|---|---|---|"]
    for level in sizes.levels:
        base = results[("off", level)]
        for mode in MODES:
            r = results[(mode, level)]
            cpu = 1e6 * sum(x["cpu_s"] for x in r.runs) / max(sum(x["total"] for x in r.runs), 1)
            lines.append(f"| {mode} | {level} | {fmt_rate(r)} | {cpu:.0f} µs | "
                         f"{r.med('req_per_s') / base.med('req_per_s'):.2f} | "
                         f"{r.med('p99_ms') / base.med('p99_ms'):.2f} |")
    lines += ["", "Off costs one `None` check per RPC in the server interceptor (no client interceptor is "
              "installed and the decision log keeps no span contexts), which is why \"off\" is the baseline.",
              END]
    return "\n".join(lines) + "\n"



def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round (smoke run)")
    parser.add_argument("--out", type=Path, help="markdown file whose tracing section is replaced")
    parser.add_argument("--collector", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.collector:
        asyncio.run(_collector(args.collector))
        return
    sizes = QUICK if args.quick else FULL
    command = "python -m bench.tracing" + (" --quick" if args.quick else "") + (f" --out {args.out}" if args.out else "")
    with tempfile.TemporaryDirectory(prefix="loopwise-bench-tracing-") as tmp:
        started = time.monotonic()
        results, notes = asyncio.run(measure(sizes, Path(tmp)))
        notes.append(f"run took {time.monotonic() - started:.0f} s")
    section = table(results, sizes, command, notes)
    print(section)
    if args.out:
        write_section(args.out, section, START, END)


if __name__ == "__main__":
    main()
