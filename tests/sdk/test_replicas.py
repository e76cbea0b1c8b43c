"""Load spreads over decision replicas (docs/operations.md, "Client targets").

Real decision processes on 127.0.0.1. Each answers from its own use case with its own
action names (``a0``… or ``b0``…, exploring without a model), so every decision the
SDK gets names the process that made it; a decision the SDK made up locally
(``fallback``, not explored) names none.

- One SDK target over two processes (a list, comma-separated, or ``ipv4:``): round
  robin, each process gets at least 30% of 2,000 decisions.
- A long-lived client reaches a process started later: two processes share one port
  with SO_REUSEPORT, so the kernel balances connections, not calls, as a Kubernetes
  ClusterIP Service does; the first process closes connections after a short
  ``max_connection_age``, the client reconnects, and some of its calls reach the
  second process. Without a connection age it never would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from loopwise.client import Client
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.launcher import free_port
from loopwise.server import connection_options
from loopwise.settings import Settings
from loopwise.targets import ROUND_ROBIN, channel_target, split_addresses

ROOT = Path(__file__).resolve().parents[2]
USE_CASE = "spread"
DECISIONS = 2000

# A decision process that applies its own use case (actions <prefix>0..2) before it
# reports "ready"; argv: worker index (-1: none, else SO_REUSEPORT on), action prefix.
RUNNER = """
import asyncio, sys
from loopwise.server import configure_process
from loopwise.settings import Settings
from loopwise.services.decision.server import start_process
from tests.decision.helpers import blueprint

async def main(settings, worker, prefix):
    process = await start_process(settings, worker=None if worker < 0 else worker)
    b = blueprint(name="spread", kind="action_value", explore_without_model=True)
    b.actions[:] = [f"{prefix}{i}" for i in range(3)]
    b.default_decision.action = f"{prefix}0"
    await process.core.use_cases.apply(b)
    print("ready", flush=True)
    await process.host.serve_until_signal()

settings = Settings()
configure_process(settings, "decision")
asyncio.run(main(settings, int(sys.argv[1]), sys.argv[2]))
"""


@dataclass
class Process:
    """A decision process started by a test (stopped by its pid)."""

    proc: subprocess.Popen
    log: Path

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while "ready" not in self.log.read_text(errors="replace").splitlines():
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "decision process not ready"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[callable]:
    started: list[Process] = []

    def start(name: str, port: int, prefix: str, worker: int = -1, **env: str) -> Process:
        data = tmp_path / name
        data.mkdir()
        values = {**os.environ, "LOOPWISE_DATA_DIR": str(data), "LOOPWISE_DECISION_ADDRESS": f"127.0.0.1:{port}",
                  "LOOPWISE_FEEDBACK_ADDRESS": f"127.0.0.1:{free_port()}",
                  "LOOPWISE_TRAINER_ADDRESS": f"127.0.0.1:{free_port()}",
                  "LOOPWISE_ALLOW_PLAINTEXT": "true", "LOOPWISE_DECISION_LOG_ENABLED": "false",
                  "LOOPWISE_LOG_FORMAT": "text", "LOOPWISE_GRACE_PERIOD_S": "1", **env}
        values.pop("LOOPWISE_PROFILE", None)
        log = tmp_path / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(worker), prefix], cwd=ROOT, env=values,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        process = Process(proc, log)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop()


def _client(address, **settings) -> Client:
    return Client(decision_address=address, retries=0, deadline_s=10,
                  settings=Settings(allow_plaintext=True, **settings))


def _served_by(client: Client, n: int) -> Counter:
    """Who made each of ``n`` decisions: "a", "b", or "local" (made up by the SDK)."""
    counts: Counter = Counter()
    for i in range(n):
        decision = client.decide(USE_CASE, {"x": float(i), "y": 1.0, "country": "fr"}, unit_id=f"u{i}")
        counts[decision.action[0] if decision.explored else "local"] += 1
    return counts


@pytest.mark.parametrize("form", ["list", "comma", "ipv4"])
def test_one_target_over_two_processes_spreads_the_decisions(processes, form: str) -> None:
    ports = [free_port(), free_port()]
    a = processes("a", ports[0], "a")
    b = processes("b", ports[1], "b")
    a.wait_ready()
    b.wait_ready()
    addresses = [f"127.0.0.1:{p}" for p in ports]
    address = {"list": addresses, "comma": ",".join(addresses),
               "ipv4": "ipv4:" + ",".join(addresses)}[form]
    with _client(address) as client:
        counts = _served_by(client, DECISIONS)
    assert counts["local"] == 0
    assert counts["a"] + counts["b"] == DECISIONS
    assert counts["a"] >= 0.3 * DECISIONS and counts["b"] >= 0.3 * DECISIONS, counts


def test_a_long_lived_client_reaches_a_process_started_later(processes) -> None:
    port = free_port()
    age = {"LOOPWISE_MAX_CONNECTION_AGE_S": "1", "LOOPWISE_MAX_CONNECTION_AGE_GRACE_S": "0.5"}
    a = processes("a", port, "a", worker=0, **age)  # SO_REUSEPORT: the port can be shared
    a.wait_ready()
    with _client(f"127.0.0.1:{port}") as client:
        assert set(_served_by(client, 50)) == {"a"}  # one connection, to the only process
        b = processes("b", port, "b", worker=1, **age)
        b.wait_ready()
        started = time.monotonic()
        counts: Counter = Counter()
        while counts["b"] == 0 and time.monotonic() - started < 60:
            counts += _served_by(client, 20)
        moved_after = time.monotonic() - started
    print(f"\nthe client reached the later process after {moved_after:.1f} s: {dict(counts)}")
    assert counts["b"] > 0, counts
    assert counts["local"] == 0


def test_without_a_connection_age_the_client_stays_where_it_is(processes) -> None:
    port = free_port()
    never = {"LOOPWISE_MAX_CONNECTION_AGE_S": "0"}
    a = processes("a", port, "a", worker=0, **never)
    a.wait_ready()
    with _client(f"127.0.0.1:{port}") as client:
        _served_by(client, 20)
        b = processes("b", port, "b", worker=1, **never)
        b.wait_ready()
        counts = _served_by(client, 300)
    assert counts == Counter({"a": 300})


def test_dns_target_and_targets() -> None:
    settings = Settings(allow_plaintext=True)
    target, options = channel_target(settings, "dns:///loopwise-decision-headless.loopwise.svc:50051")
    assert target == "dns:///loopwise-decision-headless.loopwise.svc:50051"
    assert ("grpc.service_config", ROUND_ROBIN) in options
    assert ("grpc.keepalive_time_ms", 30_000) in options
    target, options = channel_target(settings, "127.0.0.1:1, 127.0.0.1:2")
    assert target == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert ("grpc.default_authority", "127.0.0.1:1") in options
    assert channel_target(settings, ["[::1]:5", "::1:6"])[0] == "ipv6:[::1]:5,[::1]:6"
    assert channel_target(settings, "unix:/tmp/x.sock") == ("unix:/tmp/x.sock", channel_target(settings, "unix:/tmp/x.sock")[1])
    assert ("grpc.service_config", ROUND_ROBIN) not in channel_target(settings, "unix:/tmp/x.sock")[1]
    assert split_addresses(" a:1 ,b:2,") == ["a:1", "b:2"]
    with pytest.raises(ValueError, match="mix IPv4 and IPv6"):
        channel_target(settings, "127.0.0.1:1,[::1]:2")
    # Servers: keepalive everywhere, an age where asked (the decision service).
    server = dict(connection_options(settings, max_age=True))
    assert server["grpc.max_connection_age_ms"] == 60_000 and server["grpc.max_connection_age_grace_ms"] == 30_000
    assert server["grpc.keepalive_permit_without_calls"] == 1
    assert server["grpc.http2.min_ping_interval_without_data_ms"] <= dict(options)["grpc.keepalive_time_ms"]
    assert "grpc.max_connection_age_ms" not in dict(connection_options(settings))


def test_the_sdk_decides_through_a_dns_target(processes) -> None:
    port = free_port()
    processes("a", port, "a").wait_ready()
    with _client(f"dns:///127.0.0.1:{port}") as client:
        assert _served_by(client, 20) == Counter({"a": 20})
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # the process itself is as it was
        reply = dgrpc.DecisionServiceStub(channel).GetUseCase(dpb.GetUseCaseRequest(use_case=USE_CASE), timeout=10)
    assert list(reply.use_case.blueprint.actions) == ["a0", "a1", "a2"]
