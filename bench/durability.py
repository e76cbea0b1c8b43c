"""The cost of the decision log's crash guarantee (docs/architecture.md §7): Decide with
decision logging on in the default ``interval`` mode (spooled every 5 ms, off the
request path) and in the ``durable`` mode (each answer waits for a group commit of the
fsync'd spool), measured in the same run, round by round.

``python -m bench.durability [--quick] [--out docs/benchmarks.md]``: prints the table
and, with ``--out``, replaces the durability section of that file. Only the decision
service's ``LOOPWISE_DECISION_LOG_DURABILITY`` changes between modes; feedback, trainer
and the clients are the same. Everything started is stopped by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.blueprints import decide_request
from bench.models import fit_models
from bench.run import Bench, Result, Sizes, fmt_rate, load_average, say
from bench.sections import write_section
from loopwise.launcher import free_port
from loopwise.metrics import parse_text

DECIDE = "/loopwise.decision.v1.DecisionService/Decide"
START, END = "<!-- durability:start -->", "<!-- durability:end -->"
MODES: dict[str, dict[str, str]] = {
    "interval (default)": {"LOOPWISE_DECISION_LOG_DURABILITY": "interval"},
    "durable, no window": {"LOOPWISE_DECISION_LOG_DURABILITY": "durable",
                           "LOOPWISE_DECISION_LOG_COMMIT_WINDOW_MS": "0"},
    "durable, 1 ms window": {"LOOPWISE_DECISION_LOG_DURABILITY": "durable",
                             "LOOPWISE_DECISION_LOG_COMMIT_WINDOW_MS": "1"},
}
READING = ("`durable` makes every answer wait for an fdatasync of the spool, a hop to a thread and the event "
           "loop's next turn: with one request in flight p50 grows by about that and throughput falls; with more "
           "requests in flight they share commits (decisions per commit) and the gap narrows. A fixed commit "
           "window did not help (latency higher or equal, throughput within the noise), hence `LOOPWISE_DECISION_LOG_COMMIT_WINDOW_MS=0` by default (requests that "
           "arrive during a commit share the next one). `interval` keeps answers off the disk and commits about "
           "every 5 ms, many decisions at a time. This run shared the 2 cores with other work (see the load "
           "average): read the ratios and their direction, not the second digit.")
FULL = Sizes(levels=[1, 8, 24], batch_levels=[], rounds=3, duration_s=3.0, warmup_s=0.5, use_cases=1,
             mlserver=False)
QUICK = Sizes(levels=[1, 8], batch_levels=[], rounds=1, duration_s=0.5, warmup_s=0.1, use_cases=1, mlserver=False)


def log_counters(metrics_port: int) -> dict[str, float]:
    """The decision log's counters from the decision service's metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        samples = parse_text(reply.read().decode())
    out: dict[str, float] = {}
    for key, value in samples.items():  # loopwise_decision_log{counter="commits",worker="0"}
        if key.startswith("loopwise_decision_log{") and 'counter="' in key:
            name = key.split('counter="', 1)[1].split('"', 1)[0]
            out[name] = out.get(name, 0.0) + value
    return out


async def measure(sizes: Sizes, workdir: Path) -> tuple[dict[tuple[str, int], Result], list[str]]:
    """Rounds of every mode at every concurrency: {(mode, level): Result}, each run with
    the decisions per spool commit and the decision + feedback CPU."""
    bench = Bench(sizes, workdir)
    results: dict[tuple[str, int], Result] = {}
    notes: list[str] = []
    try:
        models = fit_models(workdir / "models")
        launcher = bench.start_stack()
        await bench.deploy(models, {"bench_lr": "lr"})
        payload = bench.payload("decide.bin", decide_request("bench_lr").SerializeToString())
        metrics = free_port()
        common = {"LOOPWISE_DECISION_LOG_ENABLED": "true", "LOOPWISE_METRICS_PORT": str(metrics)}
        for _ in range(sizes.rounds):
            for mode, env in MODES.items():
                pid = bench.restart_decision(**{**common, **env})
                await bench.wait_models(["bench_lr"])
                pids = [pid, launcher.pid("feedback") or pid]
                for level in sizes.levels:
                    before = log_counters(metrics)
                    r = bench.load(launcher.address("decision"), DECIDE, payload, level, cpu_pids=pids)
                    after = log_counters(metrics)
                    commits = after.get("commits", 0) - before.get("commits", 0)
                    r["per_commit"] = (after.get("spooled", 0) - before.get("spooled", 0)) / max(commits, 1)
                    results.setdefault((mode, level), Result()).runs.append(r)
                    say(f"  {mode:>20} c={level:<3} {r['req_per_s']:9.0f} req/s  p50 {r['p50_ms']:.3f} ms  "
                        f"p99 {r['p99_ms']:.3f} ms  {r['per_commit']:.1f} decisions/commit  "
                        f"cpu {1e6 * r['cpu_s'] / max(r['total'], 1):.0f} µs/decision  errors {r['errors']}")
        notes.append(f"load average (1 min) at the end {load_average():.2f}")
    finally:
        bench.stop_all()
    return results, notes


def table(results: dict[tuple[str, int], Result], sizes: Sizes, command: str, notes: list[str]) -> str:
    """The markdown section."""
    lines = [START, "## Cost of the decision log's crash guarantee", "",
             f"- command: `{command}`",
             f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
             "- setup: the `make bench` logistic-regression use case (20 features), one decision worker, decision "
             "logging on (feedback running, SQLite); the decision process restarted per mode with "
             "`LOOPWISE_DECISION_LOG_DURABILITY`; `interval` (the default): the spool is written every 5 ms "
             "(`LOOPWISE_DECISION_LOG_SPOOL_INTERVAL_MS`) off the request path; `durable`: each answer waits for "
             "the fsync'd group commit of its decision, either at once (requests arriving during a commit share "
             "the next one) or after a 1 ms window (`LOOPWISE_DECISION_LOG_COMMIT_WINDOW_MS`); spool on the "
             "machine's disk (append + fdatasync ≈ 0.4 ms when the machine is quiet)",
             f"- {sizes.rounds} rounds × {sizes.duration_s} s per cell, modes interleaved within each round; "
             "medians over rounds; decisions per commit from the decision log's counters; CPU = decision + "
             "feedback utime+stime per decision (warm-up included)",
             *[f"- {n}" for n in notes], "",
             "| mode | concurrency | Decide | decisions per commit | CPU per decision | req/s vs interval | "
             "p50 vs interval | p99 vs interval |",
             "|---|---|---|---|---|---|---|---|"]
    base_mode = next(iter(MODES))
    for level in sizes.levels:
        base = results[(base_mode, level)]
        for mode in MODES:
            r = results[(mode, level)]
            cpu = 1e6 * sum(x["cpu_s"] for x in r.runs) / max(sum(x["total"] for x in r.runs), 1)
            errors = f" (errors {r.errors})" if r.errors else ""
            lines.append(f"| {mode} | {level} | {fmt_rate(r)}{errors} | {r.med('per_commit'):.1f} | {cpu:.0f} µs | "
                         f"{r.med('req_per_s') / base.med('req_per_s'):.2f} | "
                         f"{r.med('p50_ms') / base.med('p50_ms'):.2f} | {r.med('p99_ms') / base.med('p99_ms'):.2f} |")
    lines += ["", READING, END]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round (smoke run)")
    parser.add_argument("--out", type=Path, help="markdown file whose durability section is replaced")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    given = list(argv if argv is not None else sys.argv[1:])
    from_make = bool(os.environ.get("MAKELEVEL")) and given == ["--out", "docs/benchmarks.md"]
    command = "make bench-durability" if from_make else " ".join(["python -m bench.durability", *given])
    with tempfile.TemporaryDirectory(prefix="loopwise-bench-durability-") as tmp:
        started = time.monotonic()
        results, notes = asyncio.run(measure(sizes, Path(tmp)))
        notes.append(f"run took {time.monotonic() - started:.0f} s")
    section = table(results, sizes, command, notes)
    print(section)
    if args.out:
        write_section(args.out, section, START, END)


if __name__ == "__main__":
    main()
