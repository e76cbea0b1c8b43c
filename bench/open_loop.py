"""An open-loop Decide client on grpc's core (the channels the SDK uses), counting what
each request ended with on the client side.

``python -m bench.open_loop --target HOST:PORT --request FILE --rate R --seconds S
[--closed-loop N] [--deadline-s 1.0]`` prints one JSON object: the status of every
request (``codes``), the wall time, and with ``--closed-loop`` the OK answers per second
with N requests in flight (a capacity measurement) instead of an open loop.

Open loop: request ``i`` is started at ``i / rate`` seconds whatever happened to the
earlier ones (a request whose time has come while the loop was busy starts at once),
rate x seconds requests in all, each with its own deadline. grpc's core computes a
request's ``grpc-timeout`` when it writes the request, after any wait for a free stream
on its connection, so the server knows how long the caller will still wait; ghz
(grpc-go) computes it before that wait (tests/faults/test_overload.py). The request
bytes are sent as they are and the answers are not parsed, so the client stays cheap.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import grpc

DECIDE_METHOD = "/loopwise.decision.v1.DecisionService/Decide"
CHANNELS = 4  # client connections (each channel its own HTTP/2 connection)


def _channels(target: str) -> list[grpc.aio.Channel]:
    # A local subchannel pool per channel: each one is its own connection.
    return [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(CHANNELS)]


async def _one(call: grpc.aio.UnaryUnaryMultiCallable, payload: bytes, deadline_s: float, codes: Counter) -> None:
    try:
        await call(payload, timeout=deadline_s)
        codes["OK"] += 1
    except grpc.aio.AioRpcError as error:
        codes[error.code().name] += 1


async def open_loop(target: str, payload: bytes, rate: float, seconds: float, deadline_s: float = 1.0) -> dict:
    """``rate`` requests per second for ``seconds``; the status of each, counted."""
    channels = _channels(target)
    calls = [ch.unary_unary(DECIDE_METHOD) for ch in channels]
    codes: Counter = Counter()
    total = int(rate * seconds)
    loop = asyncio.get_running_loop()
    tasks = []
    started = loop.time()
    try:
        for i in range(total):
            due = started + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(_one(calls[i % CHANNELS], payload, deadline_s, codes)))
        await asyncio.gather(*tasks)
    finally:
        for ch in channels:
            await ch.close()
    return {"codes": dict(codes), "requests": total, "wall_s": loop.time() - started}


async def closed_loop(target: str, payload: bytes, in_flight: int, seconds: float) -> dict:
    """OK answers per second with ``in_flight`` requests outstanding (capacity)."""
    channels = _channels(target)
    calls = [ch.unary_unary(DECIDE_METHOD) for ch in channels]
    codes: Counter = Counter()
    stop = time.monotonic() + seconds

    async def worker(k: int) -> None:
        while time.monotonic() < stop:
            await _one(calls[k % CHANNELS], payload, 10.0, codes)

    started = time.monotonic()
    try:
        await asyncio.gather(*(worker(k) for k in range(in_flight)))
    finally:
        for ch in channels:
            await ch.close()
    wall = time.monotonic() - started
    return {"codes": dict(codes), "wall_s": wall, "ok_per_s": codes["OK"] / wall}


def main(argv: list[str] | None = None) -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--request", type=Path, required=True, help="a serialized DecideRequest")
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--deadline-s", type=float, default=1.0)
    parser.add_argument("--closed-loop", type=int, default=0, help="requests in flight (capacity run)")
    args = parser.parse_args(argv)
    payload = args.request.read_bytes()
    if args.closed_loop:
        result = asyncio.run(closed_loop(args.target, payload, args.closed_loop, args.seconds))
    else:
        result = asyncio.run(open_loop(args.target, payload, args.rate, args.seconds, args.deadline_s))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
