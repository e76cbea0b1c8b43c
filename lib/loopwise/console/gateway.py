"""The console's way to the services: one SDK client per user token.

Every call made for a page goes through :class:`loopwise.AsyncClient` with the token
of the user who asked for the page, over the console's TLS identity (its client
certificate, from the settings). The services check the token's scopes, so a user sees
and changes only what their token allows. The console never calls with a token of its
own: the ``LOOPWISE_TOKEN`` of its settings (or of a local profile) is dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass

import grpc
from pydantic import SecretStr

from loopwise.client import AsyncClient
from loopwise.errors import field_violations
from loopwise.settings import Settings

log = logging.getLogger("loopwise.console")

# Clients of tokens unused for this long are closed.
IDLE_CLIENT_S = 900.0
MAX_CLIENTS = 256
# Deadline of one page's calls (the SDK's bulk calls get at least 30 s otherwise).
CALL_DEADLINE_S = 15.0


def token_key(token: str) -> str:
    """A digest naming a token in memory (the token itself is not used as a key)."""
    return hashlib.sha256(token.encode()).hexdigest()


def base_settings(settings: Settings) -> Settings:
    """The console's settings without a bearer token of its own."""
    return settings.model_copy(update={"token": SecretStr("")})


@dataclass
class _Entry:
    client: AsyncClient
    used: float


class Clients:
    """SDK clients by token (their channels are opened once and reused)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = base_settings(settings)
        self._clients: dict[str, _Entry] = {}

    def for_token(self, token: str) -> AsyncClient:
        """The client calling with ``token`` (made at first use, on the running loop)."""
        key = token_key(token)
        entry = self._clients.get(key)
        if entry is None:
            settings = self.settings.model_copy(update={"token": SecretStr(token)})
            entry = _Entry(AsyncClient(settings=settings, deadline_s=CALL_DEADLINE_S, retries=1),
                           time.monotonic())
            self._clients[key] = entry
            if len(self._clients) > MAX_CLIENTS:
                oldest = min(self._clients, key=lambda k: self._clients[k].used)
                self._close_later(self._clients.pop(oldest).client)
        entry.used = time.monotonic()
        return entry.client

    def forget(self, token: str) -> None:
        """Close the client of a token (logout)."""
        entry = self._clients.pop(token_key(token), None)
        if entry is not None:
            self._close_later(entry.client)

    async def close_idle(self, idle_s: float = IDLE_CLIENT_S) -> None:
        """Close the clients not used for ``idle_s`` seconds."""
        now = time.monotonic()
        for key in [k for k, e in self._clients.items() if now - e.used > idle_s]:
            await self._clients.pop(key).client.close()

    async def close(self) -> None:
        """Close every client."""
        entries, self._clients = list(self._clients.values()), {}
        for entry in entries:
            await entry.client.close()

    @staticmethod
    def _close_later(client: AsyncClient) -> None:
        task = asyncio.get_running_loop().create_task(client.close())
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)


@dataclass(frozen=True)
class Problem:
    """An RPC error as the console shows it."""

    status: int
    title: str
    code: str
    details: str
    violations: tuple[tuple[str, str], ...] = ()


_TITLES = {
    grpc.StatusCode.PERMISSION_DENIED: (
        403, "Your token is not allowed to do this",
        "The service refused the call: your token has no scope for it on this use case. "
        "Ask an operator for a token with the scope, or log in with another token."),
    grpc.StatusCode.NOT_FOUND: (404, "Not found", "The service knows no such item (or it "
                                "belongs to a use case your token does not cover)."),
    grpc.StatusCode.INVALID_ARGUMENT: (400, "The service refused the request", ""),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "Not possible now", ""),
    grpc.StatusCode.ALREADY_EXISTS: (409, "Already exists", ""),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "Too many requests", "Try again in a moment."),
    grpc.StatusCode.UNAVAILABLE: (503, "A service cannot be reached",
                                  "The service did not answer; it may be restarting."),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "A service was too slow", "Try again."),
}


def problem_of(error: grpc.RpcError) -> Problem:
    """How to show an RPC error."""
    code = error.code()
    status, title, hint = _TITLES.get(code, (502, "The service failed", ""))
    details = error.details() or ""
    text = f"{details} — {hint}" if hint and details else details or hint
    try:
        violations = tuple(field_violations(error))
    except Exception:  # details that cannot be parsed are left out
        violations = ()
    return Problem(status, title, code.name if code else "UNKNOWN", text, violations)
