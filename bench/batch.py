"""DecideBatch of 1,024 rows against a raw onnxruntime session on the same model, both
on the same pinned core, interleaved.

The decision service (one worker, logging off, the HistGradientBoosting bench model)
runs alone on core 1; a Python grpc.aio client in its own process on core 0 keeps one,
then two, DecideBatch calls in flight. With one, the server's core waits while each
answer travels back and the client parses it and sends the next request; with two, the
next request is already there (the core is saturated, as raw onnxruntime's is). The raw
baseline is a process pinned to core 1 too, running ``session.run`` on the same 1,024
rows with the service's session options (one thread). Cells of DURATION_S, the three
interleaved for ROUNDS rounds; rows/s min / median / max and CPU µs per row (the
server's from /proc/<pid>/stat; the baseline's own). The verdict is on the saturated
cell (two in flight); the CPU ratio is stated beside it.

``python -m bench.batch [--quick] [--out FILE]`` prints a markdown table and one JSON line.
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
import numpy as np

from bench.blueprints import FEATURE_NAMES
from bench.floor import cores, pin
from bench.models import fit_models
from bench.run import BATCH_ROWS, ROOT, Bench, Sizes, cpu_seconds, load_average, say
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.tensors import F32, pack

USE_CASE = "bench_hgb"
# DecideBatch calls the client keeps in flight, one cell each: the verdict is on the last.
IN_FLIGHT = (1, 2)


def _cell(in_flight: int) -> str:
    """The table row of DecideBatch with ``in_flight`` calls in flight."""
    return f"DecideBatch, {in_flight} in flight"



def batch_request(seed: int = 11) -> dpb.DecideBatchRequest:
    """1,024 random rows of the bench use case."""
    rows = np.random.default_rng(seed).normal(size=(BATCH_ROWS, len(FEATURE_NAMES))).astype(np.float32)
    return dpb.DecideBatchRequest(use_case=USE_CASE, blueprint_version=1, feature_names=FEATURE_NAMES,
                                  rows=BATCH_ROWS, features=pack(rows, F32))


async def client(target: str, seconds: float, in_flight: int = 1) -> dict:
    """``in_flight`` DecideBatch calls in flight for ``seconds``; batches answered."""
    request = batch_request()
    options = [("grpc.max_receive_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = dgrpc.DecisionServiceStub(channel)
        await stub.DecideBatch(request, timeout=30)
        count, started = 0, time.perf_counter()

        async def one() -> None:
            nonlocal count
            while time.perf_counter() - started < seconds:
                await stub.DecideBatch(request, timeout=30)
                count += 1

        await asyncio.gather(*(one() for _ in range(in_flight)))
        return {"batches": count, "seconds": time.perf_counter() - started}


def raw(onnx_path: str, seconds: float) -> dict:
    """The baseline: session.run on the same rows (the service's session options)."""
    from loopwise.services.decision.models import load_session

    session = load_session(Path(onnx_path))
    rows = np.frombuffer(batch_request().features, dtype=np.float32).reshape(BATCH_ROWS, len(FEATURE_NAMES))
    feed = {"features": rows}
    for _ in range(5):
        session.run(["probabilities"], feed)
    count, started, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        session.run(["probabilities"], feed)
        count += 1
    return {"batches": count, "seconds": time.perf_counter() - started, "cpu_s": time.process_time() - cpu}


def _child(args: list[str], core: str) -> dict:
    command = [sys.executable, "-m", "bench.batch", *args]
    if core:
        command = ["taskset", "-c", core, *command]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


async def run(quick: bool) -> dict:
    """Both sides, interleaved; the measured cells."""
    rounds, seconds = (1, 1.0) if quick else (3, 10.0)
    workdir = ROOT / "bench" / "var" / time.strftime("batch-%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(Sizes(levels=[1], batch_levels=[1], rounds=rounds, duration_s=seconds, warmup_s=1.0,
                        use_cases=1, mlserver=False), workdir)
    server_core, client_core = cores()
    load_start = load_average()
    cells: dict[str, list[dict]] = {_cell(n): [] for n in IN_FLIGHT}
    cells["raw onnxruntime"] = []
    try:
        say("fitting models; starting the stack")
        models = fit_models(workdir / "models")
        onnx_path = workdir / "hgb.onnx"
        onnx_path.write_bytes(models["hgb"].onnx)
        pid, target = await bench.serve_model(models, USE_CASE, "hgb")
        pin(pid, server_core)
        _child(["--client", target, "--seconds", "1"], client_core)  # warm-up
        for r in range(rounds):
            for n in IN_FLIGHT:
                before = cpu_seconds([pid])
                out = _child(["--client", target, "--seconds", str(seconds), "--in-flight", str(n)], client_core)
                cpu = cpu_seconds([pid]) - before
                rows = (out["batches"] + 1) * BATCH_ROWS  # and the warm-up call
                cells[_cell(n)].append({
                    "rows_per_s": out["batches"] * BATCH_ROWS / out["seconds"], "cpu_us_per_row": cpu * 1e6 / rows})
            out = _child(["--raw", str(onnx_path), "--seconds", str(seconds)], server_core)
            cells["raw onnxruntime"].append({"rows_per_s": out["batches"] * BATCH_ROWS / out["seconds"],
                                             "cpu_us_per_row": out["cpu_s"] * 1e6 / (out["batches"] * BATCH_ROWS)})
            say(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]['rows_per_s']:,.0f} rows/s" for k, v in cells.items()))
    finally:
        bench.stop_all()
    return {"cells": cells, "rounds": rounds, "seconds": seconds, "placement": [server_core, client_core],
            "load": [load_start, load_average()]}


def markdown(result: dict) -> str:
    """The table and the verdict."""
    cells = result["cells"]
    med = {k: statistics.median(c["rows_per_s"] for c in v) for k, v in cells.items()}
    cpu = {k: statistics.median(c["cpu_us_per_row"] for c in v) for k, v in cells.items()}
    saturated = _cell(IN_FLIGHT[-1])
    ratio = med[saturated] / med["raw onnxruntime"]
    cpu_ratio = cpu["raw onnxruntime"] / cpu[saturated]
    server, client_core = result["placement"]
    lines = ["The client keeps one, then two, DecideBatch calls in flight. With one, the server's core waits "
             "while each answer travels back and the client parses it and sends the next request; with two, the "
             "next request is already there and the core is saturated, as raw onnxruntime's is, so the verdict is "
             "on that cell. CPU per row is the server's (from /proc) and, for the baseline, its own process time.",
             "",
             f"DecideBatch of {BATCH_ROWS:,} rows (HistGradientBoosting, 100 trees) against raw onnxruntime on the "
             f"same core {server or '(any)'} (client on core {client_core or '(any)'}); "
             f"{result['rounds']} interleaved rounds × {result['seconds']:.0f} s; load average "
             f"{result['load'][0]:.2f} → {result['load'][1]:.2f}.", "",
             "| path | rows/s min / median / max | CPU µs per row |", "|---|---|---|"]
    for k, v in cells.items():
        rates = [c["rows_per_s"] for c in v]
        lines.append(f"| {k} | {min(rates):,.0f} / {med[k]:,.0f} / {max(rates):,.0f} | {cpu[k]:.2f} |")
    lines += ["", f"With one batch in flight the server's core waits for each round trip: "
                  f"{med[_cell(IN_FLIGHT[0])] / med['raw onnxruntime']:.2f}× raw onnxruntime. "
                  f"Saturated ({IN_FLIGHT[-1]} in flight), CPU per row raw / DecideBatch: {cpu_ratio:.2f}×.", "",
              f"DecideBatch ({IN_FLIGHT[-1]} in flight) / raw onnxruntime (medians): {ratio:.2f}× (target ≥ 0.7×: "
              f"{'met' if ratio >= 0.7 else 'NOT met'})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--client", help="(internal) drive DecideBatch at this target")
    parser.add_argument("--raw", help="(internal) run the raw baseline on this ONNX file")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--in-flight", type=int, default=1, help="(internal) DecideBatch calls in flight")
    args = parser.parse_args()
    if args.client:
        print(json.dumps(asyncio.run(client(args.client, args.seconds, args.in_flight))))
        return
    if args.raw:
        print(json.dumps(raw(args.raw, args.seconds)))
        return
    result = asyncio.run(run(args.quick))
    text = markdown(result)
    print(text)
    print(json.dumps(result))
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
