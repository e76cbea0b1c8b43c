"""A closed-loop load client, run as its own process: ``python -m bench.load SPEC``.

SPEC (JSON): target, method, payload_file (the serialized request), concurrency,
channels, warmup_s, duration_s, max_requests. ``concurrency`` tasks each keep one
request in flight, spread over ``channels`` channels (each its own connection: with
SO_REUSEPORT workers, balancing is per connection). Every request sends the same
pre-serialized bytes and receives raw bytes, so the client does the same work for
every server. Prints one JSON line: requests, seconds, req_per_s, p50/p90/p99 (ms),
errors, total requests including warm-up.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import grpc
import numpy as np

_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


async def run(spec: dict) -> dict:
    """Drive the load described by ``spec``; returns the summary."""
    with open(spec["payload_file"], "rb") as f:
        payload = f.read()
    channels = [grpc.aio.insecure_channel(spec["target"], options=_OPTIONS) for _ in range(spec["channels"])]
    calls = [c.unary_unary(spec["method"]) for c in channels]
    for c in channels:
        await asyncio.wait_for(c.channel_ready(), 20)
    latencies: list[int] = []
    errors: list[str] = []
    state = {"record": False, "stop": False, "total": 0}
    max_requests = spec.get("max_requests", 10**9)

    async def worker(call) -> None:
        clock = time.perf_counter_ns
        while not state["stop"]:
            start = clock()
            try:
                await call(payload, timeout=30)
            except grpc.aio.AioRpcError as e:
                errors.append(e.code().name)
                if len(errors) > 100:
                    state["stop"] = True
                continue
            finally:
                state["total"] += 1
            if state["record"]:
                latencies.append(clock() - start)
                if len(latencies) >= max_requests:
                    state["stop"] = True

    tasks = [asyncio.ensure_future(worker(calls[i % len(calls)])) for i in range(spec["concurrency"])]
    await asyncio.sleep(spec.get("warmup_s", 0.5))
    state["record"] = True
    started = time.perf_counter()
    deadline = started + spec["duration_s"]
    while not state["stop"] and time.perf_counter() < deadline:
        await asyncio.sleep(0.02)
    state["stop"] = True
    elapsed = time.perf_counter() - started
    recorded = len(latencies)
    await asyncio.wait(tasks, timeout=35)
    for c in channels:
        await c.close()
    lat = np.array(latencies[:recorded], dtype=np.float64) / 1e6
    pct = np.percentile(lat, [50, 90, 99]) if recorded else [float("nan")] * 3
    return {
        "requests": recorded, "seconds": elapsed, "req_per_s": recorded / elapsed if elapsed else 0.0,
        "p50_ms": float(pct[0]), "p90_ms": float(pct[1]), "p99_ms": float(pct[2]),
        "errors": len(errors), "error_codes": sorted(set(errors)), "total": state["total"],
    }


def main() -> None:
    """Command line entry: one JSON spec argument, one JSON result line."""
    spec = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(run(spec))))


if __name__ == "__main__":
    main()
