"""Admission control of the server builder (lib/loopwise/admission.py): bounded unary
calls and streams, deadline shedding, RESOURCE_EXHAUSTED with retry pushback before
the request is parsed, Health never shed, slots freed however a call ends."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loopwise.admission import PUSHBACK_KEY, STATUS_DETAILS_KEY, pushback_of
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.errors import InvalidArgument, servicer
from loopwise.launcher import free_port
from loopwise.server import Registration, ServiceHost

SERVICE = "loopwise.decision.v1.DecisionService"
DECIDE = f"/{SERVICE}/Decide"


@servicer
class Gate(dgrpc.DecisionServiceServicer):
    """Decide waits for ``release`` (so calls stay in progress); use case "bad" is
    INVALID_ARGUMENT; DecideStream answers every request until the client stops."""

    def __init__(self) -> None:
        self.entered = 0
        self.release = asyncio.Event()
        self.in_decide = asyncio.Event()

    async def Decide(self, request, context):
        self.entered += 1
        number = self.entered
        if request.use_case == "bad":
            raise InvalidArgument("use_case", "bad")
        self.in_decide.set()
        await self.release.wait()
        return dpb.DecideResponse(decision=dpb.Decision(decision_id=f"d{number}"))

    async def DecideStream(self, request_iterator, context):
        async for request in request_iterator:
            yield dpb.DecideResponse(decision=dpb.Decision(use_case=request.use_case))


@servicer
class WritingGate(Gate):
    """Gate whose DecideStream is a coroutine that answers with ``context.write`` (as
    the decision service's own)."""

    async def DecideStream(self, request_iterator, context):
        async for request in request_iterator:
            await context.write(dpb.DecideResponse(decision=dpb.Decision(use_case=request.use_case)))


async def _host(make_settings, gate_class: type[Gate] = Gate, **settings) -> tuple[ServiceHost, Gate, str]:
    address = f"127.0.0.1:{free_port()}"
    host = ServiceHost("decision", make_settings(**settings), address)
    gate = gate_class()
    host.add([Registration(dgrpc.add_DecisionServiceServicer_to_server, gate, SERVICE)])
    await host.start()
    return host, gate, address


def _shed(host: ServiceHost) -> dict[tuple[str, ...], float]:
    snapshot = host.registry.snapshot()["loopwise_admission_shed_total"]
    return {tuple(labels): value for labels, value in snapshot["series"]}


def _in_progress(host: ServiceHost) -> dict[str, float]:
    snapshot = host.registry.snapshot()["loopwise_admission_in_progress"]
    return {labels[1]: value for labels, value in snapshot["series"]}


async def _until(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_calls_over_the_bound_are_refused_with_pushback_before_parsing(make_settings) -> None:
    host, gate, address = await _host(make_settings, max_concurrent_rpcs=2, admission_min_deadline_ms=0)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = dgrpc.DecisionServiceStub(channel)
            held = [asyncio.ensure_future(stub.Decide(dpb.DecideRequest(use_case="a"), timeout=30))
                    for _ in range(2)]
            await _until(lambda: gate.entered == 2)
            assert _in_progress(host)["unary"] == 2

            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Decide(dpb.DecideRequest(use_case="a"), timeout=30)
            error = info.value
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_concurrent_rpcs" in error.details()
            trailers = {key: value for key, value in error.trailing_metadata()}
            assert int(trailers[PUSHBACK_KEY]) > 0
            status = status_pb2.Status.FromString(trailers[STATUS_DETAILS_KEY])
            assert status.code == code_pb2.RESOURCE_EXHAUSTED
            assert any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)
            assert pushback_of(error) == int(trailers[PUSHBACK_KEY]) / 1000

            # Bytes that are no request at all: refused for load, not as INVALID_ARGUMENT
            # (the request is not parsed).
            raw = channel.unary_unary(DECIDE)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await raw(b"\xff\xff\xff", timeout=30)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert gate.entered == 2  # no refused call reached the servicer

            # Health is never counted nor shed.
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=30)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

            gate.release.set()
            assert sorted(r.decision.decision_id for r in await asyncio.gather(*held)) == ["d1", "d2"]
            await _until(lambda: _in_progress(host)["unary"] == 0)
            # Slots are free again: the same garbage is now parsed and refused as such.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await raw(b"\xff\xff\xff", timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (await stub.Decide(dpb.DecideRequest(use_case="a"), timeout=30)).decision.decision_id == "d3"
        assert _shed(host) == {("decision", "Decide", "over_limit"): 2.0}
    finally:
        await host.stop(0)


async def test_a_deadline_shorter_than_needed_is_refused_before_work(make_settings) -> None:
    host, gate, address = await _host(make_settings, admission_min_deadline_ms=2000)
    gate.release.set()
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = dgrpc.DecisionServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Decide(dpb.DecideRequest(use_case="a"), timeout=1.0)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "deadline" in info.value.details()
            assert pushback_of(info.value) is not None
            assert gate.entered == 0
            reply = await stub.Decide(dpb.DecideRequest(use_case="a"), timeout=30)
            assert reply.decision.decision_id == "d1"
            # Without a deadline nothing is shed for time.
            reply = await stub.Decide(dpb.DecideRequest(use_case="a"))
            assert reply.decision.decision_id == "d2"
        assert _shed(host) == {("decision", "Decide", "deadline"): 1.0}
    finally:
        await host.stop(0)


@pytest.mark.parametrize("gate_class", [Gate, WritingGate], ids=["generator", "writer"])
async def test_streams_have_a_bound_of_their_own(make_settings, gate_class) -> None:
    host, gate, address = await _host(make_settings, gate_class, max_concurrent_rpcs=1, max_concurrent_streams=1,
                                      admission_min_deadline_ms=0)
    gate.release.set()
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = dgrpc.DecisionServiceStub(channel)
            first = stub.DecideStream()
            await first.write(dpb.DecideRequest(use_case="s1"))
            assert (await first.read()).decision.use_case == "s1"
            # An open stream takes no unary slot...
            assert (await stub.Decide(dpb.DecideRequest(use_case="a"), timeout=30)).decision.decision_id == "d1"
            await _until(lambda: _in_progress(host) == {"unary": 0.0, "stream": 1.0})
            # ...but a second stream is over the stream bound.
            second = stub.DecideStream()
            await second.done_writing()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await second.read()
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_concurrent_streams" in info.value.details()
            assert pushback_of(info.value) == 1.0
            await first.done_writing()
            assert await first.read() == grpc.aio.EOF
            await _until(lambda: _in_progress(host)["stream"] == 0)
            third = stub.DecideStream()
            await third.write(dpb.DecideRequest(use_case="s3"))
            assert (await third.read()).decision.use_case == "s3"
            await third.done_writing()
        assert _shed(host) == {("decision", "DecideStream", "streams"): 1.0}
    finally:
        await host.stop(0)


async def test_slots_are_freed_by_failed_cancelled_and_expired_calls(make_settings) -> None:
    host, gate, address = await _host(make_settings, max_concurrent_rpcs=1, admission_min_deadline_ms=0)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = dgrpc.DecisionServiceStub(channel)
            for _ in range(3):  # a failing call frees its slot
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Decide(dpb.DecideRequest(use_case="bad"), timeout=30)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                await _until(lambda: _in_progress(host)["unary"] == 0)
            call = stub.Decide(dpb.DecideRequest(use_case="a"), timeout=30)
            await gate.in_decide.wait()
            call.cancel()  # a cancelled call frees its slot
            await _until(lambda: _in_progress(host)["unary"] == 0)
            gate.in_decide.clear()
            expired = stub.Decide(dpb.DecideRequest(use_case="a"), timeout=0.5)
            await gate.in_decide.wait()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await expired  # its deadline passes while the servicer waits
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await _until(lambda: _in_progress(host)["unary"] == 0)
            gate.release.set()
            assert (await stub.Decide(dpb.DecideRequest(use_case="a"), timeout=30)).decision.decision_id == "d6"
        assert not _shed(host)
    finally:
        await host.stop(0)


def _status_trailer(delay: duration_pb2.Duration | None) -> tuple[str, bytes]:
    details = []
    if delay is not None:
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(packed)
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="busy", details=details)
    return STATUS_DETAILS_KEY, status.SerializeToString()


class _Error:
    """What pushback_of reads of a failed call."""

    def __init__(self, *metadata: tuple[str, object]) -> None:
        self.metadata = metadata

    def trailing_metadata(self):
        return self.metadata


@pytest.mark.parametrize("metadata, expected", [
    ((), None),
    (((PUSHBACK_KEY, "250"),), 0.25),
    (((PUSHBACK_KEY, "0"),), 0.0),
    (((PUSHBACK_KEY, "-1"),), -1.0),  # the server asks not to retry
    (((PUSHBACK_KEY, "soon"),), -1.0),  # unreadable: do not retry either
    ((_status_trailer(duration_pb2.Duration(seconds=1, nanos=500_000_000)),), 1.5),
    ((_status_trailer(None),), None),  # a status without RetryInfo
    (((PUSHBACK_KEY, "40"), _status_trailer(duration_pb2.Duration(seconds=3))), 0.04),  # the trailer first
    (((STATUS_DETAILS_KEY, b"\xff\x00not a status"),), None),
])
def test_pushback_of(metadata, expected) -> None:
    assert pushback_of(_Error(*metadata)) == expected
