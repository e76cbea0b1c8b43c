"""DecideStream against unary Decide on one server core, from a Python client.

The decision service (one worker, logging off) serves the bench use case with its
logistic model, deployed through the trainer as in bench.floor: both paths make the
same decisions a production caller gets. It runs alone on core 1, the client (grpc.aio,
its own process) on core 0. Three loads:

- unary: N tasks each keep one Decide in flight;
- stream, answer awaited: N DecideStream calls, each writes a request and reads its
  answer in turn (one request in flight per stream);
- stream, sent ahead: AHEAD_STREAMS DecideStream call(s), each keeping up to AHEAD_WINDOW
  requests written and not yet answered, as loopwise's client does when it streams an
  iterable of requests (the same N in flight in all).

The same loads also run against the bare floor (bench/bare.py: a grpc.aio server that
parses each request and answers a reply of Decide's size, unary and streaming), on the
same core: its stream/unary ratio is what a Python gRPC server gives with no work per
message. Cells of DURATION_S, all interleaved for ROUNDS rounds; decisions/s and the
server's CPU µs per decision from /proc/<pid>/stat.

``python -m bench.stream [--quick]`` prints a markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc

from bench.blueprints import decide_request
from bench.floor import cores, pin, start_bare
from bench.models import fit_models
from bench.run import ROOT, Bench, Sizes, cpu_seconds, load_average, say
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc

USE_CASE = "bench_lr"
IN_FLIGHT = 8
# The sent-ahead load: streams × requests ahead per stream = IN_FLIGHT.
AHEAD_STREAMS = 1
AHEAD_WINDOW = 8
# cell name: (server, load, streams or calls, requests in flight per stream)
CELLS = {
    "unary": ("decision", "unary", IN_FLIGHT, 1),
    "stream": ("decision", "stream", IN_FLIGHT, 1),
    "stream ahead": ("decision", "ahead", AHEAD_STREAMS, AHEAD_WINDOW),
    "bare unary": ("bare", "unary", IN_FLIGHT, 1),
    "bare stream": ("bare", "stream", IN_FLIGHT, 1),
    "bare stream ahead": ("bare", "ahead", AHEAD_STREAMS, AHEAD_WINDOW),
}
LABELS = {"unary": "Decide (unary)", "stream": "DecideStream, answer awaited",
          "stream ahead": "DecideStream, sent ahead", "bare unary": "bare unary",
          "bare stream": "bare stream, answer awaited", "bare stream ahead": "bare stream, sent ahead"}


async def client(target: str, kind: str, concurrency: int, seconds: float, warmup_s: float,
                 window: int = 1) -> dict:
    """Drive one kind of load; counts decisions after the warm-up."""
    request = decide_request(USE_CASE)
    state = {"count": 0, "record": False, "stop": False}
    async with grpc.aio.insecure_channel(target) as ch:
        stub = dgrpc.DecisionServiceStub(ch)

        async def unary() -> None:
            while not state["stop"]:
                await stub.Decide(request)
                if state["record"]:
                    state["count"] += 1

        async def stream() -> None:
            call = stub.DecideStream()
            while not state["stop"]:
                await call.write(request)
                await call.read()
                if state["record"]:
                    state["count"] += 1
            await call.done_writing()
            async for _ in call:
                pass

        async def ahead() -> None:
            # As loopwise's client streams an iterable of requests: the writes run ahead of
            # the answers, up to ``window`` unanswered on the stream.
            call = stub.DecideStream()
            room = asyncio.Semaphore(window)

            async def write() -> None:
                while not state["stop"]:
                    await room.acquire()
                    await call.write(request)
                await call.done_writing()

            writer = asyncio.ensure_future(write())
            async for _ in call:
                room.release()
                if state["record"]:
                    state["count"] += 1
            await writer

        load = {"unary": unary, "stream": stream, "ahead": ahead}[kind]
        tasks = [asyncio.ensure_future(load()) for _ in range(concurrency)]
        await asyncio.sleep(warmup_s)
        state["record"] = True
        start = time.perf_counter()
        await asyncio.sleep(seconds)
        state["stop"] = True
        elapsed = time.perf_counter() - start
        count = state["count"]
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"count": count, "per_s": count / elapsed}


async def run(quick: bool) -> dict:
    """The comparison; returns its cells."""
    rounds, seconds, warmup = (1, 1.0, 0.3) if quick else (3, 10.0, 1.0)
    server_core, client_core = cores()
    workdir = ROOT / "bench" / "var" / time.strftime("stream-%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(Sizes(levels=[1], batch_levels=[1], rounds=rounds, duration_s=seconds, warmup_s=warmup,
                        use_cases=1, mlserver=False), workdir)
    cells: dict[str, list[dict]] = {name: [] for name in CELLS}
    load_start = load_average()
    try:
        say("fitting models; starting the stack")
        models = fit_models(workdir / "models")
        pid, target = await bench.serve_model(models, USE_CASE, "lr")
        pin(pid, server_core)
        with grpc.insecure_channel(target) as ch:
            reply = dgrpc.DecisionServiceStub(ch).Decide(decide_request(USE_CASE), timeout=10)
        servers = {"decision": (target, pid),
                   "bare": start_bare(bench.started, dpb.DecideResponse(decision=reply.decision).ByteSize(), False,
                                      server_core)}
        for _ in range(rounds):
            for name, (server, kind, concurrency, window) in CELLS.items():
                target, pid = servers[server]
                spec = json.dumps({"target": target, "kind": kind, "concurrency": concurrency, "seconds": seconds,
                                   "warmup_s": warmup, "window": window})
                args = [sys.executable, "-m", "bench.stream", "--client", spec]
                if client_core:
                    args = ["taskset", "-c", client_core, *args]
                before = cpu_seconds([pid])
                out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 120)
                if out.returncode:
                    raise RuntimeError(out.stderr[-2000:])
                cell = json.loads(out.stdout.strip().splitlines()[-1])
                cell["cpu_us"] = (cpu_seconds([pid]) - before) * 1e6 / max(1, cell["count"])
                cells[name].append(cell)
                say(f"{name:>17}: {cell['per_s']:8.0f} decisions/s, server CPU {cell['cpu_us']:.0f} us per decision")
    finally:
        bench.stop_all()
    return {"cells": cells, "rounds": rounds, "seconds": seconds,
            "placement": [server_core, client_core], "load": [load_start, load_average()]}


def markdown(result: dict) -> str:
    """The table, and the verdict of each stream load."""
    cells = result["cells"]
    med = {k: statistics.median(c["per_s"] for c in v) for k, v in cells.items()}
    cpu = {k: statistics.median(c["cpu_us"] for c in v) for k, v in cells.items()}
    per_core = {k: 1e6 / cpu[k] for k in cpu}
    lines = [f"DecideStream vs unary Decide on the bench use case served by its logistic model (logging off), "
             f"and the same loads on the bare floor; Python grpc.aio client on core "
             f"{result['placement'][1] or '(any)'}, the server measured alone on core "
             f"{result['placement'][0] or '(any)'}; {IN_FLIGHT} requests in flight in every load: {IN_FLIGHT} "
             f"unary calls, {IN_FLIGHT} streams that await each answer before the next request, or "
             f"{AHEAD_STREAMS} stream{'s' if AHEAD_STREAMS > 1 else ''} with up to {AHEAD_WINDOW} requests sent ahead of their answers (as "
             f"loopwise's client streams an iterable); {result['rounds']} interleaved rounds × "
             f"{result['seconds']:.0f} s; load average {result['load'][0]:.2f} → {result['load'][1]:.2f}.",
             "", "| path | decisions/s min / median / max | server CPU µs per decision | decisions/s per server core |",
             "|---|---|---|---|"]
    for k, v in cells.items():
        rates = [c["per_s"] for c in v]
        lines.append(f"| {LABELS.get(k, k)} | {min(rates):,.0f} / {med[k]:,.0f} / {max(rates):,.0f} | "
                     f"{cpu[k]:.0f} | {per_core[k]:,.0f} |")
    lines.append("")
    for stream, bare in (("stream", "bare stream"), ("stream ahead", "bare stream ahead")):
        if stream not in cpu:
            continue
        ratio = per_core[stream] / per_core["unary"]
        line = (f"{LABELS[stream]}: per core / unary per core {ratio:.2f}× (target ≥ 2×: "
                f"{'met' if ratio >= 2 else 'NOT met'}).")
        if bare in cpu and "bare unary" in cpu:
            # With U = Ub + u and S = Sb + s (floor + our work per decision), U / S >= 2 needs s <= U/2 - Sb.
            line += (f" The floor's own ratio: {cpu['bare unary'] / cpu[bare]:.2f}×. Over the floor, a streamed "
                     f"decision costs {cpu[stream] - cpu[bare]:.0f} µs of our work (the decision included), a "
                     f"unary one {cpu['unary'] - cpu['bare unary']:.0f} µs; for 2× at this unary cost, at most "
                     f"{cpu['unary'] / 2 - cpu[bare]:.0f} µs.")
        lines.append(line)
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--client")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.client:
        spec = json.loads(args.client)
        print(json.dumps(asyncio.run(client(spec["target"], spec["kind"], spec["concurrency"], spec["seconds"],
                                            spec["warmup_s"], spec.get("window", 1)))))
        return
    result = asyncio.run(run(args.quick))
    text = markdown(result)
    print(text)
    print(json.dumps(result))
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
