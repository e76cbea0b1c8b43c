"""Decide against the real floor: a bare ``grpc.aio`` server that parses a DecideRequest
and serializes a DecideResponse of Decide's reply size (bench/bare.py), its raw-bytes
variant, and the decision service (one worker, a logistic model, logging off, then on),
driven by ghz (pinned version) as unary load.

Placement: with two or more cores, every server runs alone on core 1 (``taskset -a``:
all its threads) and ghz on core 0 (``--cpus 1``). Each cell: a warm-up, then ROUNDS
rounds of DURATION_S seconds, targets interleaved within each round; min / median / max
of requests/s, median p50 / p99, and the server's CPU µs per request from
/proc/<pid>/stat.

``python -m bench.floor [--quick] [--out FILE]`` (a markdown section; JSON on stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2

from bench.blueprints import decide_request
from bench.models import fit_models
from bench.run import ROOT, Bench, Sizes, cpu_seconds, load_average, rss_mib, say
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.launcher import free_port

GHZ_VERSION = "v0.121.0"
CALL = "loopwise.decision.v1.DecisionService.Decide"


def ghz_path() -> str:
    """The pinned ghz (scripts/install_tools.sh), else one on PATH."""
    pinned = Path.home() / ".cache" / "loopwise" / "tools" / f"ghz-{GHZ_VERSION}" / "bin" / "ghz"
    if pinned.exists():
        return str(pinned)
    found = shutil.which("ghz")
    if not found:
        raise RuntimeError("ghz not found: run scripts/install_tools.sh")
    return found


def protoset(path: Path) -> str:
    """A FileDescriptorSet of the decision service and its imports, for ghz."""
    out = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(fd) -> None:
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            add(dep)
        proto = out.file.add()
        fd.CopyToProto(proto)

    add(dpb.DESCRIPTOR)
    path.write_bytes(out.SerializeToString())
    return str(path)


def cores() -> tuple[str, str]:
    """(server core, client core) when there are two, else ("", "")."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) >= 2 and shutil.which("taskset"):
        return str(allowed[1]), str(allowed[0])
    return "", ""


def pin(pid: int, core: str) -> None:
    """Every thread of ``pid`` onto ``core``."""
    if core:
        subprocess.run(["taskset", "-a", "-c", "-p", core, str(pid)], check=True, capture_output=True)


def start_bare(started: list[subprocess.Popen], reply_bytes: int, raw: bool, core: str) -> tuple[str, int]:
    """A bare server process (bench/bare.py) pinned to ``core``, added to ``started``
    (the processes its caller stops); (target, pid)."""
    port = free_port()
    args = [sys.executable, "-m", "bench.bare", "--port", str(port), "--reply-bytes", str(reply_bytes)]
    if raw:
        args.append("--raw")
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    started.append(proc)
    target = f"127.0.0.1:{port}"
    with grpc.insecure_channel(target) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
    pin(proc.pid, core)
    return target, proc.pid


class Floor:
    """The floor comparison of one run."""

    def __init__(self, bench: Bench, duration_s: float, rounds: int, warmup_s: float) -> None:
        self.bench = bench
        self.duration_s = duration_s
        self.rounds = rounds
        self.warmup_s = warmup_s
        self.server_core, self.client_core = cores()
        self.protoset = protoset(bench.workdir / "decision.protoset")
        self.ghz = ghz_path()

    def start_bare(self, reply_bytes: int, raw: bool) -> tuple[str, int]:
        """A bare server process pinned to the server core; (target, pid)."""
        return start_bare(self.bench.started, reply_bytes, raw, self.server_core)

    def ghz_run(self, target: str, payload: str, concurrency: int, seconds: float) -> dict:
        """One ghz run (one connection per 8 in flight); its JSON summary."""
        args = [self.ghz, "--insecure", "--protoset", self.protoset, "--call", CALL, "-B", payload,
                "-c", str(concurrency), "--connections", str(max(1, concurrency // 8)),
                "-z", f"{seconds}s", "-O", "json", "--cpus", "1", target]
        if self.client_core:
            args = ["taskset", "-c", self.client_core, *args]
        out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
        if out.returncode and not out.stdout:
            raise RuntimeError(f"ghz failed: {out.stderr[-1000:]}")
        return json.loads(out.stdout)

    def cell(self, target: str, pid: int, payload: str, concurrency: int) -> dict:
        """One measured run: req/s, p50/p99 ms, errors, server CPU µs per request."""
        before = cpu_seconds([pid])
        report = self.ghz_run(target, payload, concurrency, self.duration_s)
        cpu = cpu_seconds([pid]) - before
        lat = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
        codes = report.get("statusCodeDistribution") or {}
        # Calls still in flight when ghz's duration ends are cancelled by ghz itself.
        errors = sum(n for code, n in codes.items() if code not in ("OK", "Canceled", "Unavailable"))
        return {"codes": codes, "errors_by_message": report.get("errorDistribution") or {}, "req_per_s": report["rps"], "p50_ms": lat.get(50, float("nan")), "p99_ms": lat.get(99, float("nan")),
                "errors": errors, "count": report["count"],
                "cpu_us": cpu * 1e6 / max(1, report["count"])}

    def compare(self, targets: dict[str, tuple[str, int]], payload: str, levels: list[int]) -> dict:
        """Every target at every level, ``rounds`` interleaved rounds: {(name, level): [runs]}."""
        out: dict[tuple[str, int], list[dict]] = {}
        for level in levels:
            for target, _ in targets.values():
                self.ghz_run(target, payload, level, self.warmup_s)
            for _ in range(self.rounds):
                for name, (target, pid) in targets.items():
                    r = self.cell(target, pid, payload, level)
                    out.setdefault((name, level), []).append(r)
                    say(f"  {name:>12} c={level:<3} {r['req_per_s']:8.0f} req/s  p50 {r['p50_ms']:.3f}  "
                        f"p99 {r['p99_ms']:.3f} ms  cpu {r['cpu_us']:.0f} us  errors {r['errors']}")
        return out


def med(runs: list[dict], key: str) -> float:
    """Median of ``key`` over runs."""
    return statistics.median(r[key] for r in runs)


async def run(quick: bool) -> dict:
    """The floor section; returns the measured cells and the verdicts."""
    sizes = Sizes(levels=[1, 8, 32], batch_levels=[1], rounds=3, duration_s=10.0, warmup_s=2.0, use_cases=1)
    levels = [1, 8, 32]
    if quick:
        sizes = Sizes(levels=[1, 8], batch_levels=[1], rounds=1, duration_s=0.5, warmup_s=0.2, use_cases=1,
                      mlserver=False)
        levels = [1, 8]
    workdir = ROOT / "bench" / "var" / time.strftime("floor-%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(sizes, workdir)
    load_start = load_average()
    try:
        say("fitting models; starting feedback, trainer, decision")
        models = fit_models(workdir / "models")
        launcher = bench.start_stack()
        await bench.deploy(models, {"bench_lr": "lr"})
        request = decide_request("bench_lr")
        with grpc.insecure_channel(launcher.address("decision")) as ch:
            reply = dgrpc.DecisionServiceStub(ch).Decide(request, timeout=10)
        reply_bytes = dpb.DecideResponse(decision=reply.decision).ByteSize()
        payload = bench.payload("decide.bin", request.SerializeToString())
        floor = Floor(bench, sizes.duration_s, sizes.rounds, sizes.warmup_s)
        decision_pid = launcher.pid("decision")
        assert decision_pid is not None
        pin(decision_pid, floor.server_core)
        targets = {"raw bytes": floor.start_bare(reply_bytes, raw=True),
                   "bare proto": floor.start_bare(reply_bytes, raw=False),
                   "Decide": (launcher.address("decision"), decision_pid)}
        say(f"placement: servers on core {floor.server_core or '(any)'}, ghz on core {floor.client_core or '(any)'}")
        cells = floor.compare(targets, payload, levels)
        rss = rss_mib(decision_pid)
        # Logging on: restart the decision service, interleaved with the bare floor again.
        say("decision logging on")
        pid = bench.restart_decision(LOOPWISE_DECISION_LOG_ENABLED="true")
        await bench.wait_models(["bench_lr"])
        pin(pid, floor.server_core)
        log_targets = {"bare proto (paired)": targets["bare proto"], "Decide, logging on": (launcher.address("decision"), pid)}
        log_level = levels[1]
        cells.update(floor.compare(log_targets, payload, [log_level]))
        load_end = load_average()
    finally:
        bench.stop_all()
    result = {"levels": levels, "log_level": log_level, "rounds": sizes.rounds, "duration_s": sizes.duration_s,
              "placement": {"server_core": floor.server_core, "client_core": floor.client_core},
              "reply_bytes": reply_bytes, "request_bytes": request.ByteSize(), "rss_mib": rss,
              "load": [load_start, load_end], "cells": {f"{k[0]}|{k[1]}": v for k, v in cells.items()}}
    return result


def verdicts(result: dict) -> list[tuple[str, str, bool]]:
    """(target, measured, met) of the unary targets."""
    cells = {tuple(k.split("|")): v for k, v in result["cells"].items()}
    out = []
    lv = str(result["log_level"])
    if ("Decide", "8") in cells:
        d, b = cells[("Decide", "8")], cells[("bare proto", "8")]
        ratio = med(d, "req_per_s") / med(b, "req_per_s")
        out.append(("Decide, logging off, ≥ 0.6× bare at 8 in flight", f"{ratio:.2f}×", ratio >= 0.6))
        p99 = med(d, "p99_ms") / med(b, "p99_ms")
        out.append(("Decide p99 ≤ 2× bare's at 8 in flight", f"{p99:.2f}×", p99 <= 2.0))
    if ("Decide, logging on", lv) in cells:
        ratio = med(cells[("Decide, logging on", lv)], "req_per_s") / med(cells[("bare proto (paired)", lv)], "req_per_s")
        out.append((f"Decide, logging on, ≥ 0.5× bare at {lv} in flight", f"{ratio:.2f}×", ratio >= 0.5))
    if ("Decide", "1") in cells:
        gap = med(cells[("Decide", "1")], "p50_ms") - med(cells[("bare proto", "1")], "p50_ms")
        out.append(("one in flight: Decide p50 ≤ bare + 0.25 ms", f"+{gap:.3f} ms", gap <= 0.25))
    return out


def markdown(result: dict) -> str:
    """The floor section of docs/benchmarks.md."""
    cells = {tuple(k.split("|")): v for k, v in result["cells"].items()}
    p = result["placement"]
    lines = [
        f"Unary Decide against the floor, driven by ghz {GHZ_VERSION}; servers alone on core "
        f"{p['server_core'] or '(any)'} (`taskset -a`), ghz on core {p['client_core'] or '(any)'} (`--cpus 1`); "
        f"{result['rounds']} interleaved rounds of {result['duration_s']:.0f} s per cell after a warm-up; "
        f"request {result['request_bytes']} B, reply {result['reply_bytes']} B. Load average "
        f"{result['load'][0]:.2f} at start, {result['load'][1]:.2f} at end. Decision service RSS after the "
        f"logging-off cells: {result['rss_mib']:.0f} MiB.",
        "",
        "| server | in flight | req/s min / median / max | × bare proto (medians) | p50 ms | p99 ms | "
        "server CPU µs/req | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (name, level), runs in cells.items():
        base = cells.get(("bare proto (paired)" if "logging on" in name else "bare proto", level))
        ratio = med(runs, "req_per_s") / med(base, "req_per_s") if base else float("nan")
        rates = [r["req_per_s"] for r in runs]
        lines.append(f"| {name} | {level} | {min(rates):,.0f} / {statistics.median(rates):,.0f} / {max(rates):,.0f} "
                     f"| {ratio:.2f} | {med(runs, 'p50_ms'):.3f} | {med(runs, 'p99_ms'):.3f} | "
                     f"{med(runs, 'cpu_us'):.0f} | {sum(r['errors'] for r in runs)} |")
    lines += ["", "| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {'met' if ok else 'NOT met'} |" for t, m, ok in verdicts(result)]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args.quick))
    print(json.dumps(result))
    if args.out:
        args.out.write_text(markdown(result))


if __name__ == "__main__":
    main()
