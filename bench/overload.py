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
import statistics
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
    capacity: float = 0.0  # the capacity measured just before (OK/s) ...
    capacity_cpu: float = 0.0  # ... and the cores the process used meanwhile
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
    def goodput_ratio(self) -> float:
        """OK answers per second against the capacity measured just before."""
        return self.ok / self.seconds / self.capacity

    @property
    def per_cpu_ratio(self) -> float:
        """OK answers per CPU-second of the decision process, against the same while
        capacity was measured (the machine is shared: the process does not always get
        its core)."""
        if not (self.cpu and self.capacity_cpu):
            return 0.0
        return (self.ok / self.seconds / self.cpu) / (self.capacity / self.capacity_cpu)

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
                 rss.start, rss.peak, (cpu_seconds(decision_pid) - cpu) / wall, capacity)


# -- the benchmark ------------------------------------------------------------------------
def measure(seconds: float, capacity_s: float, multiples: list[float], workdir: Path, rounds: int = 3,
            baseline: bool = True) -> tuple[list[Level], list[str]]:
    """``rounds`` rounds of: capacity, then every multiple of it (decision + feedback +
    trainer, the bench model); then the top multiple once with the bounds off."""
    from bench.blueprints import decide_request
    from bench.models import fit_models
    from bench.run import Bench, Sizes
    from loopwise.launcher import free_port

    sizes = Sizes(levels=[], batch_levels=[], rounds=rounds, duration_s=seconds, warmup_s=0.0, use_cases=1,
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
        feedback = launcher.address("feedback")

        def capacity_now(decision_pid: int) -> tuple[float, float]:
            cpu, began = cpu_seconds(decision_pid), time.monotonic()
            capacity = ghz.capacity(capacity_s)
            cores = (cpu_seconds(decision_pid) - cpu) / (time.monotonic() - began)
            say(f"capacity {capacity:.0f} OK/s (closed loop, 16 in flight, {capacity_s:g} s, {cores:.2f} cores)")
            return capacity, cores

        def level_at(multiple: float, decision_pid: int, capacity: tuple[float, float], label: str = "") -> Level:
            time.sleep(2.0)
            made = metric_total(metrics_port, "loopwise_decisions_total", "bench_lr")
            before = drained_stats(feedback, "bench_lr", made)
            level = offer(ghz, multiple, capacity[0], seconds, decision_pid)
            level.label = label
            level.capacity, level.capacity_cpu = capacity
            level.made = metric_total(metrics_port, "loopwise_decisions_total", "bench_lr") - made
            stats = drained_stats(feedback, "bench_lr", made + level.made)
            level.logged_served = stats.decisions - before.decisions
            level.logged_undelivered = stats.undelivered_decisions - before.undelivered_decisions
            say(f"{multiple:g}x {label}: {level.rate}/s offered, {level.finals}, OK p99 {level.ok_p99_ms:.0f} ms, "
                f"{level.cpu:.2f} cores, RSS {level.rss_start:.0f} -> {level.rss_peak:.0f} MiB; goodput "
                f"{level.goodput_ratio:.2f}x capacity, per CPU-second {level.per_cpu_ratio:.2f}; logged served "
                f"{level.logged_served}, undelivered {level.logged_undelivered}")
            return level

        ghz.capacity(2.0)  # warm-up
        levels = []
        for _ in range(rounds):
            capacity = capacity_now(pid)
            levels += [level_at(multiple, pid, capacity) for multiple in multiples]
        if baseline:
            # The top load with the bounds off (grpc's core still drops calls it held
            # for 1 s: that is not a setting; the deadline rule still uses the observed
            # service time).
            pid = bench.restart_decision(**{f"LOOPWISE_{name.upper()}": "0" for name in BOUNDS})
            asyncio.run(bench.wait_models(["bench_lr"]))
            pin_process(pid, SERVER_CORE)
            ghz.capacity(2.0)  # warm-up
            levels.append(level_at(max(multiples), pid, capacity_now(pid), "bounds off"))
        notes.append(f"load average (1 min) at the end {os.getloadavg()[0]:.2f}")
        return levels, notes
    finally:
        bench.stop_all()


def say(message: str) -> None:
    """Progress on stderr."""
    print(f"[overload {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def table(levels: list[Level], command: str, settings_text: str, notes: list[str]) -> str:
    """The markdown section: per offered load, medians over its rounds (sums of counts)."""
    groups: dict[tuple[float, str], list[Level]] = {}
    for level in levels:
        groups.setdefault((level.multiple, level.label), []).append(level)
    rounds = max(len(g) for g in groups.values())
    capacities = [lv.capacity for lv in levels if not lv.label and lv.multiple == levels[0].multiple]
    lines = [START, "## Overload: admission control and undelivered decisions", "",
             f"- command: `{command}`",
             f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; load average (1 min) at the start "
             f"{levels[0].notes[0] if levels and levels[0].notes else ''}",
             "- setup: the `make bench` logistic-regression use case (20 features), one decision worker, decision "
             "logging on (feedback running, SQLite); ghz (scripts/install_tools.sh) pinned to core 0 with feedback "
             "and trainer, the decision process to core 1; capacity = OK answers per second closed loop with 16 "
             f"requests in flight on 4 connections for 5 s, measured again before each round; each level offered "
             f"open loop for {levels[0].seconds:.0f} s (`ghz --async --rps`: every request sent on schedule, "
             "whatever happened to the earlier ones) on 4 connections with a 1 s deadline (the SDK's default); "
             f"{rounds} rounds of 1×, 2×, 3×, then 3× once with the admission bounds at 0",
             f"- admission settings: {settings_text}",
             *[f"- {n}" for n in notes],
             "- goodput / capacity and per CPU-second: medians over the rounds (each round against its own "
             "capacity); per CPU-second is OK answers per second of the decision process's CPU against the same "
             "while capacity was measured (the machine is shared: the process did not always get its core); counts "
             "are summed over the rounds, each request once (ghz counts attempts, and grpc-go retries a refused "
             "stream once by itself); p99 and CPU are medians, RSS the highest", "",
             f"Capacity: {statistics.median(capacities):,.0f} OK/s (median; rounds: "
             f"{', '.join(f'{c:,.0f}' for c in capacities)}).", "",
             "| offered | requests | goodput / capacity (rounds) | per CPU-second, vs capacity's | "
             "shed at once (RESOURCE_EXHAUSTED, UNAVAILABLE) | other answers | p99 of OK answers | "
             "decision RSS start → peak | decision CPU | logged served / undelivered (ghz OK) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (multiple, label), group in groups.items():
        requests = sum(lv.requests for lv in group)
        shed = sum(lv.shed for lv in group)
        others: dict[str, int] = {}
        for lv in group:
            for code, n in lv.finals.items():
                if code != "OK" and code not in SHED_CODES:
                    others[code] = others.get(code, 0) + n
        other_text = ", ".join(f"{k} {v:,} ({v / requests:.1%})" for k, v in sorted(others.items())) or "none"
        ratios = [lv.goodput_ratio for lv in group]
        ratio_text = f"{statistics.median(ratios):.2f}" + (
            f" ({', '.join(f'{r:.2f}' for r in ratios)})" if len(group) > 1 else "")
        rate = statistics.median(lv.rate for lv in group)
        offered = f"{multiple:g}× (~{rate:,.0f}/s)" + (f", {label}" if label else "")
        lines.append(
            f"| {offered} | {requests:,} | {ratio_text} | {statistics.median(lv.per_cpu_ratio for lv in group):.2f} | "
            f"{shed:,} ({shed / requests:.1%}) | {other_text} | "
            f"{statistics.median(lv.ok_p99_ms for lv in group):.0f} ms | "
            f"{min(lv.rss_start for lv in group):.0f} → {max(lv.rss_peak for lv in group):.0f} MiB | "
            f"{statistics.median(lv.cpu for lv in group):.2f} cores | "
            f"{sum(lv.logged_served for lv in group):,} / {sum(lv.logged_undelivered for lv in group):,} "
            f"({sum(lv.ok for lv in group):,}) |")
    top_multiple = max(lv.multiple for lv in levels if not lv.label)
    top = [lv for lv in levels if not lv.label and lv.multiple == top_multiple]
    ratio = statistics.median(lv.goodput_ratio for lv in top)
    per_cpu = statistics.median(lv.per_cpu_ratio for lv in top)
    lines += ["", f"Target: goodput at {top_multiple:g}× capacity ≥ 0.8× capacity — "
              f"{'met' if ratio >= 0.8 else 'NOT met'} ({ratio:.2f}× capacity, median of {len(top)} rounds; "
              f"{per_cpu:.2f}× per CPU-second).", END]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short levels (a smoke run)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per level (default 30; quick 3)")
    parser.add_argument("--out", type=Path, help="markdown file whose overload section is replaced")
    parser.add_argument("--no-baseline", action="store_true", help="skip the top load with the bounds off")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of 1x, 2x, 3x (default 3; quick 1)")
    args = parser.parse_args(argv)
    from bench.sections import write_section
    from loopwise.settings import Settings

    seconds = args.seconds or (3.0 if args.quick else 30.0)
    given = list(argv if argv is not None else sys.argv[1:])
    command = "make bench-overload (also the last step of make bench)" if os.environ.get("LOOPWISE_BENCH_FROM_MAKE") and given == [
        "--out", "docs/benchmarks.md"] else " ".join([".venv/bin/python -m bench.overload", *given])
    defaults = Settings()
    settings_text = ", ".join(f"{name} {getattr(defaults, name):g}" for name in BOUNDS) + " (the defaults)"
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="loopwise-bench-overload-") as tmp:
        levels, notes = measure(seconds, 2.0 if args.quick else 5.0, [1.0, 2.0, 3.0], Path(tmp),
                                args.rounds or (1 if args.quick else 3), baseline=not args.no_baseline)
    levels[0].notes.append(f"{load:.2f}")
    section = table(levels, command, settings_text, notes)
    print(section)
    if args.out:
        write_section(args.out, section, START, END)


if __name__ == "__main__":
    main()
