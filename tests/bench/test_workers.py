"""Multi-worker decision service: SO_REUSEPORT workers, one metrics endpoint with a
worker label, a dead worker restarted, SIGTERM stops everything."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request

import grpc

from bench.blueprints import blueprint, decide_request
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.launcher import free_port
from loopwise.metrics import parse_text
from tests.support import new_launcher


def children(pid: int) -> set[int]:
    """Worker pids of a supervisor: its spawned children (Linux /proc), not
    multiprocessing's resource tracker."""
    out: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.update(int(p) for p in f.read().split())
        except FileNotFoundError:
            continue
    workers = set()
    for child in out:
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"spawn_main" in f.read() and alive(child):
                    workers.add(child)
        except FileNotFoundError:
            continue
    return workers


def alive(pid: int) -> bool:
    """Whether a pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def scrape(port: int) -> dict[str, float]:
    """The metrics endpoint's samples."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return parse_text(reply.read().decode())


def served_by_worker(samples: dict[str, float], use_case: str) -> dict[str, float]:
    """Decisions served per worker label for a use case."""
    prefix = f'loopwise_decisions_total{{use_case="{use_case}",worker="'
    return {k[len(prefix):-2]: v for k, v in samples.items() if k.startswith(prefix)}


async def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2):
    """Poll until ``predicate()`` returns a truthy value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError("condition not reached in time")


async def test_two_workers_share_the_port_and_metrics_show_both(tmp_path) -> None:
    metrics = free_port()
    launcher = new_launcher(tmp_path, LOOPWISE_DECISION_WORKERS="2", LOOPWISE_METRICS_PORT=str(metrics),
                            LOOPWISE_DECISION_LOG_ENABLED="false")
    parent = launcher.start("decision")
    workers: set[int] = set()
    channels: list[grpc.aio.Channel] = []
    try:
        workers = await wait_for(lambda: children(parent) if len(children(parent)) == 2 else None)
        # A use case applied through one connection reaches both workers (store re-read).
        async with grpc.aio.insecure_channel(launcher.address("decision")) as channel:
            await dgrpc.DecisionServiceStub(channel).ApplyUseCase(
                dpb.ApplyUseCaseRequest(blueprint=blueprint("bench_mw")), timeout=10)
        # Balancing is per connection: several channels, each its own connection.
        channels = [grpc.aio.insecure_channel(launcher.address("decision"),
                                              options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(8)]
        stubs = [dgrpc.DecisionServiceStub(c) for c in channels]
        request = decide_request("bench_mw")
        served = 0
        deadline = time.monotonic() + 30
        while True:  # the other worker sees the use case once it re-read the store (~1 s)
            replies = await asyncio.gather(*[stub.Decide(request, timeout=10) for stub in stubs for _ in range(5)],
                                           return_exceptions=True)
            ok = [r for r in replies if not isinstance(r, Exception)]
            assert all(r.decision.use_case == "bench_mw" for r in ok)
            assert all(r.code() == grpc.StatusCode.NOT_FOUND for r in replies if isinstance(r, grpc.aio.AioRpcError))
            served += len(ok)
            if len(ok) == len(replies) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        assert len(ok) == 40, "every worker serves the use case applied through one of them"
        per_worker = await wait_for(lambda: (s := served_by_worker(scrape(metrics), "bench_mw"))
                                    and sum(s.values()) == served and s)
        for _ in range(10):  # the kernel hashes connections: rarely, 8 land on one worker
            if len(per_worker) == 2:
                break
            more = [grpc.aio.insecure_channel(launcher.address("decision"),
                                              options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(8)]
            channels += more
            replies = await asyncio.gather(*[dgrpc.DecisionServiceStub(c).Decide(request, timeout=10) for c in more],
                                           return_exceptions=True)
            # a worker not reached before may not have re-read the store yet: NOT_FOUND, then served
            assert all(isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.NOT_FOUND
                       for r in replies if isinstance(r, BaseException)), replies
            served += sum(not isinstance(r, BaseException) for r in replies)
            await asyncio.sleep(0.5)
            per_worker = await wait_for(lambda n=served: (s := served_by_worker(scrape(metrics), "bench_mw"))
                                        and sum(s.values()) == n and s)
        assert set(per_worker) == {"0", "1"}, per_worker
        assert all(v > 0 for v in per_worker.values())
        samples = scrape(metrics)
        # every served decision was timed; calls refused before the re-read (NOT_FOUND) are timed too
        assert samples['loopwise_rpc_latency_seconds_count{service="decision",rpc="Decide",use_case="bench_mw",worker="0"}'] >= per_worker["0"]
        assert 'loopwise_decision_fallbacks_total{use_case="bench_mw",worker="1"}' in samples  # no model yet

        # A worker that dies is replaced, and the service keeps answering.
        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        replacement = await wait_for(lambda: (c := children(parent)) and len(c) == 2 and victim not in c and c)
        for c in channels:
            await c.close()
        channels = [grpc.aio.insecure_channel(launcher.address("decision"),
                                              options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(4)]
        replies = await asyncio.gather(*[dgrpc.DecisionServiceStub(c).Decide(request, timeout=10)
                                         for c in channels])
        assert len(replies) == 4
        workers = replacement
    finally:
        for c in channels:
            await c.close()
        launcher.stop("decision")
    assert not alive(parent)
    assert workers and not any(alive(pid) for pid in workers), "SIGTERM must stop every worker"
