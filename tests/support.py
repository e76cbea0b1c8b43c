"""Helpers shared by tests: launchers on free ports with a sped-up clock."""

from __future__ import annotations

import time
from pathlib import Path

from loopwise.launcher import Launcher, free_port
from loopwise.settings import SERVICES, Settings

# Test clock: 60 simulated seconds per real second, so reward windows close fast.
CLOCK_SPEED = 60.0


def stack_env(anchor: float, seed: int = 7, speed: float = CLOCK_SPEED) -> dict[str, str]:
    """The environment every service of a test stack shares."""
    return {
        "LOOPWISE_CLOCK_ANCHOR": repr(anchor),
        "LOOPWISE_CLOCK_SPEED": repr(speed),
        "LOOPWISE_SEED": str(seed),
        "LOOPWISE_GRACE_PERIOD_S": "2",
        "LOOPWISE_DECISION_LOG_FLUSH_INTERVAL_S": "0.05",
        "LOOPWISE_LOG_LEVEL": "INFO",
        # Tests run on loopback: plaintext, explicitly allowed.
        "LOOPWISE_ALLOW_PLAINTEXT": "true",
    }


def launcher_settings(launcher: Launcher) -> Settings:
    """Settings for a client of a launched stack (same addresses and clock)."""
    env = launcher.env
    return Settings(
        **{f"{s}_address": launcher.address(s) for s in SERVICES},
        data_dir=launcher.data_dir,
        clock_anchor=float(env["LOOPWISE_CLOCK_ANCHOR"]),
        clock_speed=float(env["LOOPWISE_CLOCK_SPEED"]),
        seed=int(env["LOOPWISE_SEED"]),
    )


def new_launcher(root: Path, seed: int = 7, **env: str) -> Launcher:
    """A launcher on fresh free ports under ``root`` (nothing started yet)."""
    ports = {s: free_port() for s in SERVICES}
    return Launcher(root, env={**stack_env(time.time(), seed), **env}, ports=ports)


CASSANDRA_SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "cassandra" / "cassandra.sh"


class CassandraInstance:
    """A real Cassandra started by ``deploy/cassandra/cassandra.sh`` on free ports."""

    def __init__(self, root: Path, tls_keystore: Path | None = None,
                 tls_keystore_password: str = "", tls_store_type: str = "PKCS12") -> None:
        self.dir = Path(root)
        self.cql_port = free_port()
        self.storage_port = free_port()
        # Optional client TLS: the CQL port then accepts TLS connections only.
        self.tls_keystore = tls_keystore
        self.tls_keystore_password = tls_keystore_password
        self.tls_store_type = tls_store_type

    @property
    def url(self) -> str:
        """A store URL for this instance (keyspace to be appended)."""
        return f"cassandra://127.0.0.1:{self.cql_port}"

    def _run(self, command: str) -> None:
        import os
        import subprocess

        args = ["bash", str(CASSANDRA_SCRIPT), command, "--dir", str(self.dir),
                "--cql-port", str(self.cql_port), "--storage-port", str(self.storage_port)]
        env = None
        if self.tls_keystore is not None and command == "start":
            args += ["--tls-keystore", str(self.tls_keystore), "--tls-store-type", self.tls_store_type]
            # The password goes by environment, not argv.
            env = {**os.environ, "CASSANDRA_TLS_KEYSTORE_PASSWORD": self.tls_keystore_password}
        subprocess.run(args, check=True, env=env)

    def start(self) -> None:
        """Start (or restart) it and wait until CQL answers."""
        self._run("start")

    def stop(self) -> None:
        """Stop it by its own pid."""
        self._run("stop")

    def pid(self) -> int | None:
        """Its pid while running."""
        path = self.dir / "cassandra.pid"
        return int(path.read_text()) if path.exists() else None

    def kill(self) -> None:
        """SIGKILL it (a crash, for fault tests)."""
        import os
        import signal

        pid = self.pid()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # already gone (it exited on its own)
                pass
            while True:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            (self.dir / "cassandra.pid").unlink(missing_ok=True)


def java_available() -> bool:
    """Java and Maven (or fetched jars) are present to run Cassandra."""
    import shutil

    return shutil.which("java") is not None
