"""Overload: Decide offered open loop at 1x, 2x and 3x the decision service's measured
capacity with ghz, decision logging on (docs/architecture.md §6, docs/benchmarks.md).

``python -m bench.overload [--quick] [--out docs/benchmarks.md]`` (``make
bench-overload``): measures capacity closed loop, then offers each multiple for
``--seconds`` with the SDK's default 1 s deadline and reports goodput (OK answers per
second), the share of requests shed (RESOURCE_EXHAUSTED or UNAVAILABLE), what else the
clients got, the p99 latency of OK answers and the decision process's resident memory;
with ``--out`` it replaces the overload section of that file. ghz runs pinned to one
core and the decision service to the other (feedback shares ghz's core), as far as the
machine has two. Everything started is stopped by its pid.

The helpers here (ghz, the protoset, closed and open loops, metrics, GetStats) are also
what tests/faults/test_overload.py uses.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2

from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc

ROOT = Path(__file__).resolve().parents[1]
DECIDE_CALL = "loopwise.decision.v1.DecisionService.Decide"
START, END = "<!-- overload:start -->", "<!-- overload:end -->"
SHED_CODES = ("ResourceExhausted", "Unavailable")
GHZ_CORE, SERVER_CORE = 0, 1
# The admission settings (all 0 in the "bounds off" row).
BOUNDS = ("max_concurrent_rpcs", "max_streams_per_connection", "max_concurrent_streams", "admission_min_deadline_ms")
# Client connections of the open loop (each its own HTTP/2 connection).
CONNS = 4


# -- ghz ---------------------------------------------------------------------------------
def ghz_binary() -> str:
    """ghz built by scripts/install_tools.sh (cached by version); RuntimeError without Go."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / "install_tools.sh"), "ghz"],
                          capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        raise RuntimeError(f"installing ghz failed (Go is needed):\n{done.stderr[-3000:]}")
    return str(Path(done.stdout.strip().splitlines()[-1]) / "ghz")


def write_protoset(path: Path) -> Path:
    """The DecisionService descriptors (with their imports) as a protoset file for ghz,
    taken from the generated Python modules (no protoc, no server reflection)."""
    files = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(descriptor) -> None:
        if descriptor.name in seen:
            return
        for dependency in descriptor.dependencies:
            add(dependency)
        seen.add(descriptor.name)
        proto = descriptor_pb2.FileDescriptorProto()
        descriptor.CopyToProto(proto)
        files.file.append(proto)

    add(dpb.DESCRIPTOR)
    path.write_bytes(files.SerializeToString())
    return path


def pinned(command: list[str], core: int) -> list[str]:
    """``command`` run on one core (taskset), when the machine has two and taskset exists."""
    if (os.cpu_count() or 1) < 2 or not Path("/usr/bin/taskset").exists():
        return command
    return ["taskset", "-c", str(core), *command]


def pin_process(pid: int, core: int) -> None:
    """Every thread of a running process onto one core (best effort)."""
    if (os.cpu_count() or 1) >= 2 and Path("/usr/bin/taskset").exists():
        subprocess.run(["taskset", "-apc", str(core), str(pid)], capture_output=True, check=False)


@dataclass
class Ghz:
    """ghz against one Decide request (a serialized DecideRequest file)."""

    binary: str
    address: str
    protoset: Path
    request_file: Path

    def run(self, *args: str, timeout_s: float = 300.0) -> dict:
        """One ghz run (JSON report); stopped by its pid if it outlives ``timeout_s``."""
        command = pinned([self.binary, "--insecure", "--protoset", str(self.protoset), "--call", DECIDE_CALL,
                          "-B", str(self.request_file), "--disable-template-functions",
                          "--disable-template-data", "--cpus", "1", "-O", "json", *args, self.address],
                         GHZ_CORE)
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        if proc.returncode != 0 and not out.strip():
            raise RuntimeError(f"ghz failed: {err[-2000:]}")
        return json.loads(out)

    def capacity(self, seconds: float, concurrency: int = 16) -> float:
        """OK answers per second, closed loop (``concurrency`` requests in flight)."""
        report = self.run("-c", str(concurrency), "--connections", str(min(concurrency, 4)), "-z",
                          f"{seconds:g}s", "--duration-stop", "wait", "-t", "10s")
        return report["statusCodeDistribution"].get("OK", 0) / (report["total"] / 1e9)

    def open_loop(self, rate: int, seconds: float, deadline_s: float = 1.0) -> dict:
        """``rate`` requests per second for ``seconds`` (rate x seconds requests in all),
        each sent on schedule whatever happened to the earlier ones (--async), with a
        ``deadline_s`` deadline."""
        total = int(rate * seconds)
        return self.run("--async", "--rps", str(rate), "-n", str(total), "-c", str(max(64, CONNS)), "--connections", str(CONNS),
                        "-t", f"{int(deadline_s * 1000)}ms", timeout_s=seconds * 3 + 60)


class PeakRss:
    """The highest resident memory of a process, sampled every 0.1 s in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = rss_mib(pid)
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.peak = max(self.peak, rss_mib(self.pid))
            except (OSError, ValueError):
                return

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for {pid}")


def metric_values(port: int, name: str) -> dict[str, float]:
    """The series of one metric on a metrics endpoint, by their label text."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    out = {}
    for match in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.M):
        out[match.group(1) or ""] = float(match.group(2))
    return out


def metric_total(port: int, name: str, use_case: str) -> float:
    """A metric summed over the series of one use case (and every worker)."""
    return sum(v for labels, v in metric_values(port, name).items() if f'use_case="{use_case}"' in labels)


def get_stats(address: str, use_case: str) -> fpb.GetStatsResponse:
    """GetStats of a use case from the feedback service."""
    with grpc.insecure_channel(address) as channel:
        return fgrpc.FeedbackServiceStub(channel).GetStats(fpb.GetStatsRequest(use_case=use_case), timeout=30)


def drained_stats(feedback: str, use_case: str, made: float, timeout_s: float = 120.0) -> fpb.GetStatsResponse:
    """GetStats once feedback holds every decision made (served and undelivered)."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = get_stats(feedback, use_case)
        if stats.decisions + stats.undelivered_decisions >= made or time.monotonic() > deadline:
            return stats
        time.sleep(0.5)


def apply(address: str, blueprint) -> None:
    """Apply a use case's blueprint."""
    with grpc.insecure_channel(address) as channel:
        dgrpc.DecisionServiceStub(channel).ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=blueprint), timeout=60)


@dataclass
class Level:
    """One offered load and what the clients and the services saw."""

    multiple: float
    rate: int
    requests: int  # rate x seconds
    seconds: float
    codes: dict[str, int]  # status per attempt, as ghz counts them
    ok_p99_ms: float
    rss_start: float
    rss_peak: float
    cpu: float = 0.0  # cores the decision process used (utime + stime per second)
    made: float = 0.0
    logged_served: int = 0
    logged_undelivered: int = 0
    label: str = ""  # "" for the default settings
    notes: list[str] = field(default_factory=list)

    @property
    def finals(self) -> dict[str, int]:
        """The status each request ended with. ghz counts attempts, and grpc-go retries
        a call once by itself when the server refused its stream before looking at it
        (REFUSED_STREAM, or a connection closing): those extra attempts all end
        UNAVAILABLE, so the requests that ended UNAVAILABLE are the ones no other
        status accounts for."""
        out = {code: n for code, n in self.codes.items() if code != "Unavailable"}
        rest = self.requests - sum(out.values())
        if rest > 0:
            out["Unavailable"] = rest
        return out

    @property
    def ok(self) -> int:
        return self.codes.get("OK", 0)

    @property
    def shed(self) -> int:
        """Requests refused at once: RESOURCE_EXHAUSTED or UNAVAILABLE."""
        finals = self.finals
        return sum(finals.get(c, 0) for c in SHED_CODES)


def offer(ghz: Ghz, multiple: float, capacity: float, seconds: float, decision_pid: int) -> Level:
    """One open-loop level."""
    rate = max(1, int(round(capacity * multiple)))
    cpu = cpu_seconds(decision_pid)
    with PeakRss(decision_pid) as rss:
        report = ghz.open_loop(rate, seconds)
    p99 = next((d["latency"] / 1e6 for d in report.get("latencyDistribution") or [] if d["percentage"] == 99), 0.0)
    wall = report["total"] / 1e9
    return Level(multiple, rate, int(rate * seconds), wall, dict(report["statusCodeDistribution"]), p99,
                 rss.start, rss.peak, (cpu_seconds(decision_pid) - cpu) / wall)


# -- the benchmark ------------------------------------------------------------------------
def measure(seconds: float, capacity_s: float, multiples: list[float], workdir: Path,
            baseline: bool = True) -> tuple[float, float, list[Level], list[str]]:
    """Capacity, then every multiple (decision + feedback + trainer, the bench model)."""
    from bench.blueprints import decide_request
    from bench.models import fit_models
    from bench.run import Bench, Sizes
    from loopwise.launcher import free_port

    sizes = Sizes(levels=[], batch_levels=[], rounds=1, duration_s=seconds, warmup_s=0.0, use_cases=1,
                  mlserver=False)
    bench = Bench(sizes, workdir)
    notes: list[str] = []
    try:
        models = fit_models(workdir / "models")
        launcher = bench.start_stack()
        metrics_port = free_port()
        asyncio.run(bench.deploy(models, {"bench_lr": "lr"}))
        bench.restart_decision(LOOPWISE_DECISION_LOG_ENABLED="true", LOOPWISE_METRICS_PORT=str(metrics_port))
        asyncio.run(bench.wait_models(["bench_lr"]))
        pid = launcher.pid("decision")
        assert pid is not None
        pin_process(pid, SERVER_CORE)
        for other in ("feedback", "trainer"):
            other_pid = launcher.pid(other)
            if other_pid:
                pin_process(other_pid, GHZ_CORE)
        request = workdir / "decide.bin"
        request.write_bytes(decide_request("bench_lr").SerializeToString())
        ghz = Ghz(ghz_binary(), launcher.address("decision"), write_protoset(workdir / "decision.protoset"), request)
        ghz.capacity(2.0)  # warm-up
        cpu, began = cpu_seconds(pid), time.monotonic()
        capacity = ghz.capacity(capacity_s)
        capacity_cpu = (cpu_seconds(pid) - cpu) / (time.monotonic() - began)
        notes.append(f"capacity measured with the decision process using {capacity_cpu:.2f} cores")
        say(f"capacity {capacity:.0f} OK/s (closed loop, 16 in flight, {capacity_s:g} s, {capacity_cpu:.2f} cores)")
        feedback = launcher.address("feedback")

        def level_at(multiple: float, decision_pid: int, label: str = "") -> Level:
            time.sleep(2.0)
            made = metric_total(metrics_port, "loopwise_decisions_total", "bench_lr")
            before = drained_stats(feedback, "bench_lr", made)
            level = offer(ghz, multiple, capacity, seconds, decision_pid)
            level.label = label
            level.made = metric_total(metrics_port, "loopwise_decisions_total", "bench_lr") - made
            stats = drained_stats(feedback, "bench_lr", made + level.made)
            level.logged_served = stats.decisions - before.decisions
            level.logged_undelivered = stats.undelivered_decisions - before.undelivered_decisions
            say(f"{multiple:g}x {label}: {level.rate}/s offered, {level.finals}, OK p99 {level.ok_p99_ms:.0f} ms, "
                f"{level.cpu:.2f} cores, RSS {level.rss_start:.0f} -> {level.rss_peak:.0f} MiB; logged served "
                f"{level.logged_served}, undelivered {level.logged_undelivered}")
            return level

        levels = [level_at(multiple, pid) for multiple in multiples]
        if baseline:
            # The same top load with the bounds off (grpc's core still drops calls it
            # held for 1 s: that is not a setting).
            pid = bench.restart_decision(**{f"LOOPWISE_{name.upper()}": "0" for name in BOUNDS})
            asyncio.run(bench.wait_models(["bench_lr"]))
            pin_process(pid, SERVER_CORE)
            ghz.capacity(2.0)  # warm-up
            levels.append(level_at(max(multiples), pid, "bounds off"))
        notes.append(f"load average (1 min) at the end {os.getloadavg()[0]:.2f}")
        return capacity, capacity_cpu, levels, notes
    finally:
        bench.stop_all()


def say(message: str) -> None:
    """Progress on stderr."""
    print(f"[overload {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def table(capacity: float, capacity_cpu: float, levels: list[Level], command: str, settings_text: str,
          notes: list[str]) -> str:
    """The markdown section."""
    lines = [START, "## Overload: admission control and undelivered decisions", "",
             f"- command: `{command}`",
             f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; load average (1 min) at the start "
             f"{levels[0].notes[0] if levels and levels[0].notes else ''}",
             "- setup: the `make bench` logistic-regression use case (20 features), one decision worker, decision "
             "logging on (feedback running, SQLite); ghz (scripts/install_tools.sh) pinned to core 0 with feedback "
             "and trainer, the decision process to core 1; capacity = OK answers per second closed loop with 16 "
             f"requests in flight on 4 connections; each level offered open loop for {levels[0].seconds:.0f} s "
             "(`ghz --async --rps`: every request sent on schedule, whatever happened to the earlier ones) on 4 "
             "connections with a 1 s deadline (the SDK's default)",
             f"- admission settings: {settings_text}",
             *[f"- {n}" for n in notes],
             "- per CPU-second: OK answers per second of the decision process's CPU, against the same ratio while "
             "capacity was measured (the machine is shared: the process did not always get its core); requests "
             "count each once (ghz counts attempts, and grpc-go retries a refused stream once by itself)", "",
             f"Capacity: {capacity:,.0f} OK/s.", "",
             "| offered | requests | goodput (OK/s) | goodput / capacity | per CPU-second, vs capacity's | "
             "shed at once (RESOURCE_EXHAUSTED, UNAVAILABLE) | other answers | p99 of OK answers | "
             "decision RSS start → peak | decision CPU | logged served / undelivered (ghz OK) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for level in levels:
        goodput = level.ok / level.seconds
        finals = level.finals
        others = {k: v for k, v in finals.items() if k != "OK" and k not in SHED_CODES}
        other_text = ", ".join(f"{k} {v:,} ({v / level.requests:.1%})" for k, v in sorted(others.items())) or "none"
        per_cpu = (goodput / level.cpu) / (capacity / capacity_cpu) if level.cpu and capacity_cpu else 0.0
        offered = f"{level.multiple:g}× ({level.rate:,}/s)" + (f", {level.label}" if level.label else "")
        lines.append(f"| {offered} | {level.requests:,} | {goodput:,.0f} | {goodput / capacity:.2f} | {per_cpu:.2f} | "
                     f"{level.shed:,} ({level.shed / level.requests:.1%}) | {other_text} | {level.ok_p99_ms:.0f} ms | "
                     f"{level.rss_start:.0f} → {level.rss_peak:.0f} MiB | {level.cpu:.2f} cores | "
                     f"{level.logged_served:,} / {level.logged_undelivered:,} ({level.ok:,}) |")
    top = max((lv for lv in levels if not lv.label), key=lambda lv: lv.multiple)
    ratio = top.ok / top.seconds / capacity
    lines += ["", f"Target: goodput at {top.multiple:g}× capacity ≥ 0.8× capacity — "
              f"{'met' if ratio >= 0.8 else 'NOT met'} ({ratio:.2f}×).", END]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short levels (a smoke run)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per level (default 30; quick 3)")
    parser.add_argument("--out", type=Path, help="markdown file whose overload section is replaced")
    parser.add_argument("--no-baseline", action="store_true", help="skip the top load with the bounds off")
    args = parser.parse_args(argv)
    from bench.sections import write_section
    from loopwise.settings import Settings

    seconds = args.seconds or (3.0 if args.quick else 30.0)
    given = list(argv if argv is not None else sys.argv[1:])
    command = "make bench-overload" if os.environ.get("LOOPWISE_BENCH_FROM_MAKE") and given == [
        "--out", "docs/benchmarks.md"] else " ".join([".venv/bin/python -m bench.overload", *given])
    defaults = Settings()
    settings_text = ", ".join(f"{name} {getattr(defaults, name):g}" for name in BOUNDS) + " (the defaults)"
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="loopwise-bench-overload-") as tmp:
        capacity, capacity_cpu, levels, notes = measure(seconds, 2.0 if args.quick else 5.0, [1.0, 2.0, 3.0],
                                                        Path(tmp), baseline=not args.no_baseline)
    levels[0].notes.append(f"{load:.2f}")
    section = table(capacity, capacity_cpu, levels, command, settings_text, notes)
    print(section)
    if args.out:
        write_section(args.out, section, START, END)


if __name__ == "__main__":
    main()
