"""Fixtures for the security tests: a development PKI and a stack with tokens on.

``auth_stack`` runs the four services as real processes on loopback with a tokens
file: every service has its own credential (a service token in its own environment),
and tokens with each single scope exist for the use case ``team_a``, for every use
case, and an admin token for ``team_b`` only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from loopwise.auth import SCOPES
from loopwise.launcher import Launcher
from loopwise.settings import SERVICES
from tests.security.helpers import TokensFile, give_services_credentials
from tests.support import new_launcher


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A development CA and certificates for the four services and a client."""
    from scripts.make_certs import make_certs

    return make_certs(tmp_path_factory.mktemp("pki"))


@dataclass
class AuthStack:
    """The running stack, its tokens and one aio channel per service."""

    launcher: Launcher
    tokens: TokensFile
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    def channel(self, service: str) -> grpc.aio.Channel:
        """A plaintext channel to ``service`` (auth is what is tested here)."""
        if service not in self.channels:
            self.channels[service] = grpc.aio.insecure_channel(self.launcher.address(service))
        return self.channels[service]

    def secret(self, name: str) -> str:
        """The secret of a token created for the test."""
        return self.tokens.secrets[name]


@pytest.fixture(scope="package")
def auth_launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Launcher, TokensFile]]:
    """The four services with tokens on (plaintext transport: auth is what is tested)."""
    root = tmp_path_factory.mktemp("auth_stack")
    tokens = TokensFile(root / "tokens.yaml")
    for scope in SCOPES:
        tokens.add(f"{scope}-team-a", {"team_a": [scope]})
        tokens.add(f"{scope}-all", {"*": [scope]})
    tokens.add("admin-team-b", {"team_b": list(SCOPES)})
    launcher = new_launcher(root / "stack", LOOPWISE_TOKENS_FILE=str(tokens.path),
                            LOOPWISE_TOKENS_RELOAD_S="0.2")
    give_services_credentials(launcher, tokens)
    try:
        launcher.start_all()
        yield launcher, tokens
    finally:
        launcher.stop_all()


@pytest_asyncio.fixture
async def auth_stack(auth_launcher) -> AsyncIterator[AuthStack]:
    """The running auth stack with fresh channels for one test."""
    stack = AuthStack(*auth_launcher)
    try:
        yield stack
    finally:
        for channel in stack.channels.values():
            await channel.close()


__all__ = ["SERVICES"]
