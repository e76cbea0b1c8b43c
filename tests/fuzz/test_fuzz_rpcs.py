"""Fuzzing every RPC of the four running services with hypothesis.

Per RPC a fixed number of examples (derandomized, so every run sends the same ones):
random messages built from the request type, mutations of their wire bytes, and raw
bytes. Every call must end with a proper status: never UNKNOWN, never a hang (unary
calls get a generous deadline; only server streams, cut short on purpose, may end
with DEADLINE_EXCEEDED), and never INTERNAL or UNAVAILABLE for a request that parses
(bytes that do not parse as the request type get INVALID_ARGUMENT). Afterwards
every service still runs under the same pid, Health reports SERVING and a good
request succeeds.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.launcher import Launcher
from loopwise.settings import SERVICES
from tests.decision.helpers import blueprint, features
from tests.fuzz.strategies import messages, mutated, parses_as, raw_bytes
from tests.security.helpers import Rpc, all_rpcs
from tests.support import new_launcher

RPCS = list(all_rpcs())
EXAMPLES = 24
UNARY_DEADLINE_S = 30.0
STREAM_DEADLINE_S = 1.0
# Responses read from a server stream before the call is cancelled.
STREAM_READ_CAP = 20


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Launcher, dict[str, int]]]:
    """The four services, a valid use case, and their pids at the start."""
    launcher = new_launcher(tmp_path_factory.mktemp("fuzz"))
    try:
        pids = launcher.start_all()
        with grpc.insecure_channel(launcher.address("decision")) as channel:
            dgrpc.DecisionServiceStub(channel).ApplyUseCase(
                dpb.ApplyUseCaseRequest(blueprint=blueprint("fuzz_case")), timeout=60)
        yield launcher, pids
    finally:
        launcher.stop_all()


@pytest.fixture(scope="module")
def fuzz_channels(fuzz_stack) -> Iterator[dict[str, grpc.Channel]]:
    launcher, _ = fuzz_stack
    channels = {s: grpc.insecure_channel(launcher.address(s)) for s in SERVICES}
    yield channels
    for channel in channels.values():
        channel.close()


def call(channel: grpc.Channel, rpc: Rpc, data: bytes) -> grpc.StatusCode:
    """Send raw request bytes to ``rpc``; the final status code."""
    method = rpc.method
    timeout = STREAM_DEADLINE_S if method.server_streaming else UNARY_DEADLINE_S
    try:
        if method.client_streaming and method.server_streaming:
            responses = channel.stream_stream(rpc.path)(iter([data, data]), timeout=timeout)
        elif method.client_streaming:
            channel.stream_unary(rpc.path)(iter([data]), timeout=timeout)
            return grpc.StatusCode.OK
        elif method.server_streaming:
            responses = channel.unary_stream(rpc.path)(data, timeout=timeout)
        else:
            channel.unary_unary(rpc.path)(data, timeout=timeout)
            return grpc.StatusCode.OK
        for count, _ in enumerate(responses):
            if count >= STREAM_READ_CAP:
                responses.cancel()
                return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def inputs(rpc: Rpc) -> st.SearchStrategy[bytes]:
    """Serialized random messages, mutated wire bytes and raw bytes, for one RPC."""
    descriptor = rpc.method.input_type
    return st.one_of(messages(descriptor).map(lambda m: m.SerializeToString()), mutated(descriptor),
                     raw_bytes())


@pytest.mark.parametrize("rpc", RPCS, ids=[f"{r.area}.{r.name}" for r in RPCS])
def test_fuzz_rpc(fuzz_channels, rpc: Rpc) -> None:
    channel = fuzz_channels[rpc.area]

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=inputs(rpc))
    def fuzz(data: bytes) -> None:
        code = call(channel, rpc, data)
        parsed = parses_as(rpc.method.input_type, data)
        assert code != grpc.StatusCode.UNKNOWN, (rpc.name, data)
        assert code != grpc.StatusCode.UNAVAILABLE, (rpc.name, data)
        if parsed:
            assert code != grpc.StatusCode.INTERNAL, (rpc.name, data)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            assert rpc.method.server_streaming, (rpc.name, "hang", data)

    fuzz()


def test_services_survive_the_fuzzing(fuzz_stack, fuzz_channels) -> None:
    launcher, pids = fuzz_stack
    assert {s: launcher.pid(s) for s in SERVICES} == pids
    for service in SERVICES:
        reply = health_pb2_grpc.HealthStub(fuzz_channels[service]).Check(
            health_pb2.HealthCheckRequest(), timeout=30)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    decision = dgrpc.DecisionServiceStub(fuzz_channels["decision"])
    reply = decision.Decide(dpb.DecideRequest(use_case="fuzz_case", unit_id="u", features=features()),
                            timeout=30)
    assert reply.decision.decision_id and reply.decision.action in ("no", "yes")
