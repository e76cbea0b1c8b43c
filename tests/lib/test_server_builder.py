"""The shared server builder: health, reflection, no SO_REUSEPORT, graceful stop."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from loopwise.errors import InvalidArgument, field_violations, map_errors
from loopwise.launcher import free_port
from loopwise.metrics import Registry, RpcMetrics
from loopwise.server import Registration, ServiceHost

SERVICE = "loopwise.test.v1.SlowService"


class Slow:
    """A tiny servicer: a slow unary call, a never-ending stream and a validating call."""

    def __init__(self, host: ServiceHost) -> None:
        self.host = host
        self.started = asyncio.Event()

    @map_errors
    async def sleep(self, request: bytes, context) -> bytes:
        self.started.set()
        await asyncio.sleep(0.5)
        return b"done"

    @map_errors
    async def forever(self, request: bytes, context):
        yield b"first"
        self.started.set()
        await self.host.stopping.until(asyncio.sleep(3600))

    @map_errors
    async def check(self, request: bytes, context) -> bytes:
        raise InvalidArgument("payload.size", "must be even")


def _add(servicer: Slow, server: grpc.aio.Server) -> None:
    ident = lambda b: b  # noqa: E731 - raw bytes in and out
    handlers = {
        "Sleep": grpc.unary_unary_rpc_method_handler(servicer.sleep, ident, ident),
        "Forever": grpc.unary_stream_rpc_method_handler(servicer.forever, ident, ident),
        "Check": grpc.unary_unary_rpc_method_handler(servicer.check, ident, ident),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])


async def _started(make_settings) -> tuple[ServiceHost, Slow, str]:
    settings = make_settings(grace_period_s=3.0)
    address = f"127.0.0.1:{free_port()}"
    host = ServiceHost("slow", settings, address)
    slow = Slow(host)
    host.add([Registration(_add, slow, SERVICE)])
    await host.start()
    return host, slow, address


async def test_health_reflection_and_field_violations(make_settings) -> None:
    host, _, address = await _started(make_settings)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", SERVICE):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            refl = reflection_pb2_grpc.ServerReflectionStub(channel)
            async for reply in refl.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            ):
                names = {s.name for s in reply.list_services_response.service}
            assert SERVICE in names and "grpc.health.v1.Health" in names
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary(f"/{SERVICE}/Check")(b"x")
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field_violations(info.value) == [("payload.size", "must be even")]
    finally:
        await host.stop()


async def test_port_is_not_shared_with_a_second_server(make_settings) -> None:
    """so_reuseport=0: a second server cannot bind the same port."""
    host, _, address = await _started(make_settings)
    try:
        second = ServiceHost("second", make_settings(), address)
        with pytest.raises(RuntimeError):
            await second.start()
        # and a plain socket cannot bind it either
        with socket.socket() as sock, pytest.raises(OSError):
            sock.bind(("127.0.0.1", int(address.rsplit(":", 1)[1])))
    finally:
        await host.stop()


async def test_graceful_stop_finishes_unary_and_ends_streams_unavailable(make_settings) -> None:
    host, slow, address = await _started(make_settings)
    async with grpc.aio.insecure_channel(address) as channel:
        stream = channel.unary_stream(f"/{SERVICE}/Forever")(b"")
        assert await stream.read() == b"first"
        await slow.started.wait()
        slow.started.clear()
        unary = asyncio.ensure_future(channel.unary_unary(f"/{SERVICE}/Sleep")(b""))
        await slow.started.wait()
        stopping = asyncio.ensure_future(host.stop())
        assert await unary == b"done"  # the in-flight unary call finishes within the grace
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stream.read()
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        await stopping
        health = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.aio.AioRpcError):
            await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)


class _ListedMetrics(RpcMetrics):
    """RpcMetrics that also lists every recorded call (rpc, code name)."""

    def __init__(self, registry: Registry, service: str) -> None:
        super().__init__(registry, service)
        self.calls: list[tuple[str, str]] = []

    def record(self, rpc: str, use_case: str, code, seconds: float) -> None:
        super().record(rpc, use_case, code, seconds)
        self.calls.append((rpc, code.name))


class _MethodNames(grpc.aio.ServerInterceptor):
    """A server interceptor that notes the methods it sees."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    async def intercept_service(self, continuation, details):
        self.methods.append(details.method)
        return await continuation(details)


async def test_instrumentation_can_be_swapped(make_settings) -> None:
    """The measurement seam (bench/libraries.py): another RpcMetrics and extra server
    interceptors, both seeing every call, the refused one included."""
    names = _MethodNames()
    host = ServiceHost("slow", make_settings(), f"127.0.0.1:{free_port()}", rpc_metrics_factory=_ListedMetrics,
                       interceptors=(names,))
    host.add([Registration(_add, Slow(host), SERVICE)])
    address = f"127.0.0.1:{await host.start()}"
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            with pytest.raises(grpc.aio.AioRpcError):
                await channel.unary_unary(f"/{SERVICE}/Check")(b"x")
    finally:
        await host.stop(0)
    assert isinstance(host.rpc_metrics, _ListedMetrics)
    assert host.rpc_metrics.calls == [("Check", "OK"), ("Check", "INVALID_ARGUMENT")]
    assert names.methods == ["/grpc.health.v1.Health/Check", f"/{SERVICE}/Check"]
