"""The bearer token and TLS reach the server on every call type.

A server built by the one server builder (mutual TLS, a tokens file, the call guard)
serves a probe service with one method of each gRPC call type. Clients made by
``security.aio_channel`` and ``security.sync_channel`` — the channels of the SDK and of
every service-to-service call — must get through on all four; the same calls without
the token must be refused UNAUTHENTICATED. (grpc.aio files an interceptor object under
its first interface only, so a token interceptor written as one object reaches
unary-unary calls alone: the streaming cases here fail on such a client.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from loopwise import security
from loopwise.decision.v1.decision_service_pb2 import GetUseCaseRequest as Probe
from loopwise.launcher import free_port
from loopwise.server import Registration, ServiceHost
from loopwise.settings import Settings
from tests.security.helpers import TokensFile

SERVICE = "loopwise.test.v1.ProbeService"
CALL_TYPES = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
METHOD = {kind: f"/{SERVICE}/{''.join(p.title() for p in kind.split('_'))}" for kind in CALL_TYPES}
STREAM_LENGTH = 3


def _probe_handlers() -> grpc.GenericRpcHandler:
    """One method per call type; each answers with the use case it was sent."""

    async def unary_unary(request: Probe, context: grpc.aio.ServicerContext) -> Probe:
        return Probe(use_case=request.use_case, version=1)

    async def unary_stream(request: Probe, context: grpc.aio.ServicerContext) -> AsyncIterator[Probe]:
        for version in range(1, STREAM_LENGTH + 1):
            yield Probe(use_case=request.use_case, version=version)

    async def stream_unary(requests: AsyncIterator[Probe], context: grpc.aio.ServicerContext) -> Probe:
        seen = [request async for request in requests]
        return Probe(use_case=seen[-1].use_case, version=len(seen))

    async def stream_stream(requests: AsyncIterator[Probe],
                            context: grpc.aio.ServicerContext) -> AsyncIterator[Probe]:
        count = 0
        async for request in requests:
            count += 1
            yield Probe(use_case=request.use_case, version=count)

    codec = {"request_deserializer": Probe.FromString, "response_serializer": Probe.SerializeToString}
    return grpc.method_handlers_generic_handler(SERVICE, {
        "UnaryUnary": grpc.unary_unary_rpc_method_handler(unary_unary, **codec),
        "UnaryStream": grpc.unary_stream_rpc_method_handler(unary_stream, **codec),
        "StreamUnary": grpc.stream_unary_rpc_method_handler(stream_unary, **codec),
        "StreamStream": grpc.stream_stream_rpc_method_handler(stream_stream, **codec),
    })


@pytest.fixture(scope="module")
def probe_tokens(tmp_path_factory: pytest.TempPathFactory) -> TokensFile:
    """A tokens file with one token that may call the probe service on ``team_a``."""
    tokens = TokensFile(tmp_path_factory.mktemp("probe") / "tokens.yaml")
    tokens.add("team-a", {"team_a": ["admin"]})
    return tokens


@pytest_asyncio.fixture
async def probe_server(pki: Path, probe_tokens: TokensFile, tmp_path: Path) -> AsyncIterator[str]:
    """The probe service on a ServiceHost with mutual TLS and tokens; yields its address."""
    settings = Settings(allow_plaintext=False, tls_cert_file=pki / "decision.crt",
                        tls_key_file=pki / "decision.key", tls_ca_file=pki / "ca.crt",
                        tokens_file=probe_tokens.path, data_dir=tmp_path)
    host = ServiceHost("probe", settings, f"127.0.0.1:{free_port()}")
    host.add([Registration(lambda _servicer, server: server.add_generic_rpc_handlers(
        (_probe_handlers(),)), None, SERVICE)])
    port = await host.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await host.stop(0)


def _client(pki: Path, token: str) -> Settings:
    return Settings(allow_plaintext=False, tls_ca_file=pki / "ca.crt", token=token,
                    tls_client_cert_file=pki / "client.crt", tls_client_key_file=pki / "client.key")


def _requests() -> Iterator[Probe]:
    return iter([Probe(use_case="team_a")] * STREAM_LENGTH)


async def _aio_call(channel: grpc.aio.Channel, kind: str) -> list[Probe]:
    """Call the probe method of ``kind``; the replies."""
    codec = {"request_serializer": Probe.SerializeToString, "response_deserializer": Probe.FromString}
    request = Probe(use_case="team_a")
    if kind == "unary_unary":
        return [await channel.unary_unary(METHOD[kind], **codec)(request, timeout=10)]
    if kind == "stream_unary":
        return [await channel.stream_unary(METHOD[kind], **codec)(_requests(), timeout=10)]
    if kind == "unary_stream":
        call = channel.unary_stream(METHOD[kind], **codec)(request, timeout=10)
    else:
        call = channel.stream_stream(METHOD[kind], **codec)(_requests(), timeout=10)
    return [reply async for reply in call]


def _sync_call(channel: grpc.Channel, kind: str) -> list[Probe]:
    codec = {"request_serializer": Probe.SerializeToString, "response_deserializer": Probe.FromString}
    request = Probe(use_case="team_a")
    if kind == "unary_unary":
        return [channel.unary_unary(METHOD[kind], **codec)(request, timeout=10)]
    if kind == "stream_unary":
        return [channel.stream_unary(METHOD[kind], **codec)(_requests(), timeout=10)]
    if kind == "unary_stream":
        return list(channel.unary_stream(METHOD[kind], **codec)(request, timeout=10))
    return list(channel.stream_stream(METHOD[kind], **codec)(_requests(), timeout=10))


EXPECTED_VERSIONS = {"unary_unary": [1], "unary_stream": [1, 2, 3], "stream_unary": [3],
                     "stream_stream": [1, 2, 3]}


@pytest.mark.parametrize("kind", CALL_TYPES)
async def test_aio_channel_sends_the_token_on_every_call_type(kind, probe_server, probe_tokens, pki) -> None:
    """The aio channel of services and the AsyncClient authenticates on ``kind`` calls;
    without its token the same call is UNAUTHENTICATED."""
    async with security.aio_channel(_client(pki, probe_tokens.secrets["team-a"]), probe_server) as channel:
        replies = await _aio_call(channel, kind)
    assert [r.version for r in replies] == EXPECTED_VERSIONS[kind]
    assert {r.use_case for r in replies} == {"team_a"}
    async with security.aio_channel(_client(pki, ""), probe_server) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _aio_call(channel, kind)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("kind", CALL_TYPES)
async def test_sync_channel_sends_the_token_on_every_call_type(kind, probe_server, probe_tokens, pki) -> None:
    """The blocking channel of the Client and the CLI authenticates on ``kind`` calls;
    without its token the same call is UNAUTHENTICATED."""
    import asyncio

    def call(token: str) -> list[Probe]:
        with security.sync_channel(_client(pki, token), probe_server) as channel:
            return _sync_call(channel, kind)

    replies = await asyncio.to_thread(call, probe_tokens.secrets["team-a"])
    assert [r.version for r in replies] == EXPECTED_VERSIONS[kind]
    with pytest.raises(grpc.RpcError) as refused:
        await asyncio.to_thread(call, "")
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
