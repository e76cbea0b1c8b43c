"""The one server builder used by all four services.

Every service is a ``grpc.aio`` server with health and reflection, ``SO_REUSEPORT``
explicitly off (a stale process must not silently share the port), message-size
limits from settings, and SIGTERM handling (DESIGN §6): health turns NOT_SERVING,
open streams end with UNAVAILABLE (clients resume), unary calls get the grace
period to finish, then shutdown hooks run (e.g. draining a spool).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from loopwise.errors import Unavailable
from loopwise.settings import Settings

log = logging.getLogger("loopwise.server")

ShutdownHook = Callable[[], Awaitable[None]]


@dataclass
class Registration:
    """A servicer to add: the generated ``add_…_to_server`` function, the servicer and
    the full service name (``loopwise.decision.v1.DecisionService``)."""

    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    service_name: str


def channel_options(settings: Settings) -> list[tuple[str, Any]]:
    """Channel/server options shared by servers and inter-service clients."""
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
    ]


@dataclass
class ServiceHost:
    """A running gRPC server for one loopwise service, with health and graceful stop."""

    name: str
    settings: Settings
    address: str
    server: grpc.aio.Server = field(init=False)
    health: health.aio.HealthServicer = field(init=False)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    # Share the port with sibling processes (SO_REUSEPORT). Only the decision service's
    # explicit multi-worker mode sets it; every other server keeps it off (DESIGN §6).
    reuse_port: bool = False
    _hooks: list[ShutdownHook] = field(default_factory=list)
    _services: list[str] = field(default_factory=list)
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        options = [("grpc.so_reuseport", 1 if self.reuse_port else 0), *channel_options(self.settings)]
        self.server = grpc.aio.server(options=options)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)

    def add(self, registrations: Iterable[Registration]) -> None:
        """Add servicers; their services are announced by health and reflection."""
        for reg in registrations:
            reg.add_to_server(reg.servicer, self.server)
            self._services.append(reg.service_name)

    def on_shutdown(self, hook: ShutdownHook) -> None:
        """Run ``hook`` after the server stopped accepting calls (in registration order)."""
        self._hooks.append(hook)

    async def start(self) -> int:
        """Bind, start and mark every service SERVING; returns the bound port."""
        names = [*self._services, health.SERVICE_NAME, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(names, self.server)
        self.port = self.server.add_insecure_port(self.address)
        if self.port == 0:
            raise RuntimeError(f"{self.name}: cannot bind {self.address}")
        await self.server.start()
        for svc in ["", *self._services]:
            await self.health.set(svc, health_pb2.HealthCheckResponse.SERVING)
        log.info("%s serving on %s", self.name, self.address.rsplit(":", 1)[0] + f":{self.port}")
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop: NOT_SERVING, streams end, unary calls finish, hooks run."""
        if self.stopping.is_set():
            await self._stopped.wait()
            return
        self.stopping.set()
        await self.health.enter_graceful_shutdown()
        grace = self.settings.grace_period_s if grace is None else grace
        await self.server.stop(grace)
        for hook in self._hooks:
            try:
                await hook()
            except Exception:  # a failing hook must not block the others
                log.exception("%s: shutdown hook failed", self.name)
        self._stopped.set()
        log.info("%s stopped", self.name)

    async def serve_until_signal(self) -> None:
        """Block until SIGTERM/SIGINT, then stop gracefully."""
        loop = asyncio.get_running_loop()
        requested = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, requested.set)
        stopped = asyncio.ensure_future(self._stopped.wait())
        signalled = asyncio.ensure_future(requested.wait())
        await asyncio.wait([stopped, signalled], return_when=asyncio.FIRST_COMPLETED)
        if requested.is_set():
            log.info("%s: signal received, shutting down", self.name)
        await self.stop()
        stopped.cancel()
        signalled.cancel()

    def check_stopping(self) -> None:
        """Raise UNAVAILABLE when the server is shutting down (for long streams)."""
        if self.stopping.is_set():
            raise Unavailable(f"{self.name} is shutting down; reconnect")


async def until_stopping(host: ServiceHost, awaitable: Awaitable[Any]) -> Any:
    """Await ``awaitable`` unless the host starts stopping first (then UNAVAILABLE)."""
    task = asyncio.ensure_future(awaitable)
    stop = asyncio.ensure_future(host.stopping.wait())
    try:
        done, _ = await asyncio.wait([task, stop], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if task in done:
        return task.result()
    task.cancel()
    host.check_stopping()


def configure_logging(settings: Settings) -> None:
    """One logger format for all services."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def run(main: Callable[[Settings], Awaitable[None]], settings: Settings | None = None) -> None:
    """Process entry point: configure logging and run a service's ``main`` coroutine."""
    from loopwise.settings import get_settings

    settings = settings or get_settings()
    configure_logging(settings)
    asyncio.run(main(settings))
