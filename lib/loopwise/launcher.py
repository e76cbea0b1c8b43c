"""Start and stop loopwise services as background processes.

Used by ``loopwise up`` / ``loopwise down`` (``make up`` / ``make down``), the demo
and the tests: each service runs as ``python -m loopwise.services.<name>`` with its
environment, its pid in ``<data_dir>/run/<name>.pid`` and its log in
``<data_dir>/logs/<name>.log``. Processes are stopped by their own pid only.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loopwise import security
from loopwise.settings import SERVICES, ServiceName, Settings

DEFAULT_PORTS: dict[str, int] = {"decision": 50051, "feedback": 50052, "trainer": 50053, "evaluator": 50054}


def _ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections and port-0 binds (Linux default if unknown)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _port_candidates() -> Iterator[int]:
    """Ports below the ephemeral range, from a random start, each handed out once per process.

    A port the kernel may hand to an outgoing connection or to another process's port-0
    bind can be taken while its server is down for a restart (a Cassandra restarted on its
    old port once failed to bind because a port-0 listener had been given it meanwhile).
    """
    ephemeral_low, ephemeral_high = _ephemeral_port_range()
    low, high = 20000, ephemeral_low
    if high - low < 1000:  # an unusual kernel range: fall back to ports above it
        low, high = ephemeral_high + 1, 65535
    span = high - low
    start = random.randrange(span)
    for step in range(span):
        yield low + (start + step) % span


_PORTS = _port_candidates()
_PORTS_LOCK = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now, outside the kernel's ephemeral range.

    No outgoing connection or port-0 bind can take it, so a service restarted on the same
    port finds it free; within this process no port is handed out twice.
    """
    with _PORTS_LOCK:
        for port in _PORTS:
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as sock:  # every candidate used: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def health_status(address: str, timeout: float = 1.0, settings: Settings | None = None) -> str:
    """The overall health status name of a server, or "UNREACHABLE". With ``settings``
    the check goes over their channel (TLS with the client certificate when they have
    one); without, in plaintext."""
    channel = (security.sync_channel(settings, address) if settings is not None
               else grpc.insecure_channel(address))
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


class Launcher:
    """Runs services in the background with a shared environment."""

    def __init__(self, data_dir: Path, env: Mapping[str, str] | None = None,
                 ports: Mapping[str, int] | None = None, client: Settings | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        # How health is checked on a service without a plaintext health port (TLS).
        self.client = client
        self.ports = dict(ports or DEFAULT_PORTS)
        self.env = {**os.environ, **(env or {})}
        self.env["LOOPWISE_DATA_DIR"] = str(self.data_dir)
        # Services read their own settings, never a client's local profile.
        self.env.pop("LOOPWISE_PROFILE", None)
        for name in SERVICES:
            self.env[f"LOOPWISE_{name.upper()}_ADDRESS"] = self.address(name)
        self._procs: dict[str, subprocess.Popen] = {}
        # Per-service additions to the environment (own certificate, token, health port).
        self.service_env: dict[str, dict[str, str]] = {}

    def address(self, name: ServiceName) -> str:
        """``127.0.0.1:<port>`` of a service."""
        return f"127.0.0.1:{self.ports[name]}"

    def pid_file(self, name: str) -> Path:
        """Where a service's pid is kept."""
        return self.data_dir / "run" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        """Where a service's log goes."""
        return self.data_dir / "logs" / f"{name}.log"

    def pid(self, name: str) -> int | None:
        """The pid of a running service started here (or by an earlier ``up``), else None."""
        path = self.pid_file(name)
        if not path.exists():
            return None
        pid = int(path.read_text().strip() or 0)
        return pid if pid and _alive(pid) else None

    def start(self, name: ServiceName, wait: bool = True, timeout: float = 90.0) -> int:
        """Start a service (unless it runs) and wait until its health is SERVING."""
        existing = self.pid(name)
        if existing:
            return existing
        for sub in ("run", "logs"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        log = open(self.log_file(name), "ab")  # owned by the child
        proc = subprocess.Popen(
            [sys.executable, "-m", f"loopwise.services.{name}"],
            env={**self.env, **self.service_env.get(name, {})}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        self._procs[name] = proc
        self.pid_file(name).write_text(str(proc.pid))
        if wait:
            self.wait_serving(name, timeout)
        return proc.pid

    def wait_serving(self, name: ServiceName, timeout: float = 90.0) -> None:
        """Wait until the service reports SERVING; raise with its log tail if it dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.health(name, timeout=0.5) == "SERVING":
                return
            pid = self.pid(name)
            if pid is None:
                raise RuntimeError(f"{name} exited during start-up:\n{self.log_tail(name)}")
            time.sleep(0.2)
        raise TimeoutError(f"{name} not SERVING after {timeout}s:\n{self.log_tail(name)}")

    def health(self, name: ServiceName, timeout: float = 1.0) -> str:
        """A service's health status name: over its plaintext health port when it has
        one, else over the launcher's client settings (TLS), else in plaintext."""
        address = self.health_address(name)
        client = None if address != self.address(name) else self.client
        return health_status(address, timeout=timeout, settings=client)

    def health_address(self, name: ServiceName) -> str:
        """Where Health answers in plaintext: the plaintext Health-only port when the
        service has one (TLS deployments), else its service address."""
        port = self.service_env.get(name, {}).get("LOOPWISE_HEALTH_PORT")
        return f"127.0.0.1:{port}" if port and port != "0" else self.address(name)

    def log_tail(self, name: str, lines: int = 40) -> str:
        """The last lines of a service's log."""
        path = self.log_file(name)
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def start_all(self, names: Iterable[ServiceName] = SERVICES) -> dict[str, int]:
        """Start several services (all started first, then awaited)."""
        names = list(names)
        pids = {name: self.start(name, wait=False) for name in names}
        for name in names:
            self.wait_serving(name)
        return pids

    def stop(self, name: str, timeout: float = 30.0) -> bool:
        """SIGTERM a service by its pid and wait (SIGKILL after ``timeout``); True if it ran."""
        pid = self.pid(name)
        if pid is None:
            self.pid_file(name).unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        self._reap(name)
        return True

    def kill(self, name: str) -> None:
        """SIGKILL a service by its pid (a crash, for fault tests)."""
        pid = self.pid(name)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        self._reap(name)

    def _reap(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is not None:
            proc.wait()
        self.pid_file(name).unlink(missing_ok=True)

    def stop_all(self, names: Iterable[str] = SERVICES) -> None:
        """Stop several services, in reverse order."""
        for name in reversed(list(names)):
            self.stop(name)
