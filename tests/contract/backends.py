"""Store URLs for the contract suites: every store interface runs on both backends.

``backend_url(request, tmp_path_factory, service)`` gives a fresh ``sqlite:///`` file or
a fresh keyspace on the session Cassandra (the ``cassandra`` fixture: skipped without
Java locally, a failure in CI). One URL per test module and backend, so Cassandra's
schema changes happen once per module.
"""

from __future__ import annotations

import uuid

import pytest

from loopwise.settings import Settings

BACKENDS = ["sqlite", "cassandra"]


def backend_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, service: str) -> str:
    """A store URL of the backend named by ``request.param``."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp(service) / (service + '.db')}"
    cassandra = request.getfixturevalue("cassandra")
    return f"{cassandra.url}/{service}_{uuid.uuid4().hex[:12]}"


def store_settings(service: str, url: str, tmp_path_factory: pytest.TempPathFactory, **extra) -> Settings:
    """Settings whose ``<service>_store_url`` is ``url``."""
    return Settings(**{f"{service}_store_url": url}, data_dir=tmp_path_factory.mktemp("var"), **extra)


def unique(prefix: str = "uc") -> str:
    """A use-case name no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"
