"""Shared fixtures: real services on free loopback ports.

``stack`` starts all four services as real processes (``python -m
loopwise.services.<name>``) with their own data directory, a sped-up shared clock
and a fixed seed, and stops them (by pid) at the end of the session.
``make_settings`` builds a Settings for in-process servers and clients.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopwise.launcher import Launcher, free_port
from loopwise.settings import SERVICES, Settings
from tests.support import (
    CLOCK_SPEED,
    CassandraInstance,
    java_available,
    launcher_settings,
    new_launcher,
    stack_env,
)

__all__ = ["launcher_settings", "new_launcher", "stack_env"]


def pytest_configure(config: pytest.Config) -> None:
    """Plaintext is allowed for the tests that do not set security themselves, because
    what they test is not the transport; the deployed configuration (mutual TLS, tokens,
    Cassandra, several decision workers) runs end to end in tests/e2e/test_production.py,
    `make up`'s in tests/e2e/test_readme.py, and TLS and tokens in tests/security."""
    os.environ.setdefault("LOOPWISE_ALLOW_PLAINTEXT", "true")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """All four services running for the whole test session."""
    launcher = new_launcher(tmp_path_factory.mktemp("stack"))
    try:
        launcher.start_all()
        yield launcher
    finally:
        launcher.stop_all()


@pytest.fixture(scope="session")
def stack_settings(stack: Launcher) -> Settings:
    """Client settings for the session stack."""
    return launcher_settings(stack)


@pytest.fixture
def make_settings(tmp_path: Path):
    """Factory: Settings on free ports with a data dir under tmp_path (overrides as kwargs)."""

    def make(**overrides) -> Settings:
        values = {f"{s}_address": f"127.0.0.1:{free_port()}" for s in SERVICES}
        values.update(data_dir=tmp_path / "var", clock_anchor=time.time(),
                      clock_speed=CLOCK_SPEED, seed=7, grace_period_s=1.0)
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture(scope="session")
def cassandra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CassandraInstance]:
    """One real Cassandra for the session (deploy/cassandra/cassandra.sh, free ports).

    Without Java it is skipped locally, with the reason; in CI (CI=true) a Cassandra
    that cannot start fails the run instead."""
    if not java_available():
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs Java to run Cassandra")
        pytest.skip("no java on this machine: Cassandra tests need Java 17")
    instance = CassandraInstance(tmp_path_factory.mktemp("cassandra"))
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def cassandra_url_factory(cassandra: CassandraInstance):
    """Factory: a store URL for a fresh keyspace on the session Cassandra."""

    def make(prefix: str = "ks") -> str:
        return f"{cassandra.url}/{prefix}_{uuid.uuid4().hex[:12]}"

    return make
