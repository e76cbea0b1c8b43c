"""Where a unary Decide's server time goes: the decision service in this process under
cProfile, ghz driving Decide at 8 in flight for a few seconds, the profile grouped by
where each function lives (loopwise's Python, grpc's Python/Cython layer, asyncio,
protobuf, numpy/onnxruntime).

``python -m bench.profile_decide [--seconds 8]``. The use case has no model here (its
default decision: encoding, arms and policy run, onnxruntime does not); the model's
own cost is DecideBatch's row against raw onnxruntime in the suite.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import resource
import tempfile
import time
from pathlib import Path

import grpc

from bench.blueprints import blueprint, decide_request
from bench.floor import CALL, cores, ghz_path, pin, protoset
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.launcher import free_port
from loopwise.services.decision.server import start_server
from loopwise.settings import Settings

GROUPS = (("grpc (Python)", ("site-packages/grpc/",)), ("protobuf", ("google/protobuf", "upb")),
          ("onnxruntime/numpy", ("onnxruntime", "numpy")), ("loopwise (our Python)", ("/loopwise/", "/services/")),
          ("asyncio and the rest of the standard library", ("/lib/python3",)))
CYTHON = "grpc's Cython layer and C core, run from the event loop (own time of Context.run: Cython is not profiled)"


def group_of(filename: str, func: str = "") -> str:
    """Which layer a profiled function belongs to."""
    if filename == "~":
        if "_contextvars.Context" in func:
            return CYTHON
        if "epoll" in func:
            return "waiting in epoll (idle or I/O)"
        return "builtins (C functions called from Python)"
    for name, marks in GROUPS:
        if any(m in filename for m in marks):
            return name
    return "other"


async def run(seconds: float, concurrency: int) -> str:
    """Profile; returns a markdown summary."""
    work = Path(tempfile.mkdtemp(prefix="lw-profile-"))
    port = free_port()
    settings = Settings(decision_address=f"127.0.0.1:{port}", feedback_address=f"127.0.0.1:{free_port()}",
                        trainer_address=f"127.0.0.1:{free_port()}", evaluator_address=f"127.0.0.1:{free_port()}",
                        allow_plaintext=True, decision_log_enabled=False, data_dir=work, seed=7,
                        log_level="WARNING")
    host = await start_server(settings)
    server_core, client_core = cores()
    pin(os.getpid(), server_core)
    request = decide_request("bench_lr")
    async with grpc.aio.insecure_channel(settings.decision_address) as ch:
        stub = dgrpc.DecisionServiceStub(ch)
        await stub.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=blueprint("bench_lr")), timeout=30)
        await stub.Decide(request, timeout=10)
    payload = work / "decide.bin"
    payload.write_bytes(request.SerializeToString())
    args = [ghz_path(), "--insecure", "--protoset", protoset(work / "d.protoset"), "--call", CALL,
            "-B", str(payload), "-c", str(concurrency), "--connections", str(max(1, concurrency // 8)),
            "-z", f"{seconds}s", "--cpus", "1", "-O", "json", f"127.0.0.1:{port}"]
    if client_core:
        args = ["taskset", "-c", client_core, *args]
    profile = cProfile.Profile()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    profile.enable()
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL)
    out, _ = await proc.communicate()
    profile.disable()
    wall = time.perf_counter() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    await host.stop(0.5)
    import json

    report = json.loads(out)
    count = report["count"]
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    stats = pstats.Stats(profile)
    groups: dict[str, float] = {}
    top = []
    for (filename, line, func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        g = group_of(filename, func)
        groups[g] = groups.get(g, 0.0) + tottime
        top.append((tottime, f"{Path(filename).name}:{line} {func}", g))
    profiled = sum(groups.values())
    top.sort(reverse=True)
    lines = [f"cProfile of the decision service (one process, pinned), ghz at {concurrency} in flight for "
             f"{seconds:.0f} s: {count:,} Decide calls ({report['rps']:,.0f}/s under the profiler), process CPU "
             f"{cpu * 1e6 / count:.0f} µs per call, of which {profiled * 1e6 / count:.0f} µs inside profiled "
             f"Python-visible functions (wall {wall:.1f} s).", "",
             "| where (own time, per call) | µs | share of process CPU |", "|---|---|---|"]
    for g, t in sorted(groups.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {g} | {t * 1e6 / count:.0f} | {t / cpu:.0%} |")
    rest = max(0.0, cpu - profiled)
    lines.append(f"| outside any profiled function (grpc's C core threads, the event loop's C parts) | "
                 f"{rest * 1e6 / count:.0f} | {rest / cpu:.0%} |")
    lines += ["", "| top functions by own time | µs per call | layer |", "|---|---|---|"]
    lines += [f"| `{name}` | {t * 1e6 / count:.1f} | {g} |" for t, name, g in top[:15]]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    text = asyncio.run(run(args.seconds, args.concurrency))
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
