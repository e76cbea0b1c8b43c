"""Mutual TLS on every service and every inter-service call, a plaintext port that
serves only Health, and the secure default (no plaintext unless allowed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loopwise import security
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.launcher import Launcher, free_port
from loopwise.server import ServiceHost
from loopwise.settings import SERVICES, Settings
from tests.decision.helpers import blueprint, features
from tests.security.helpers import TokensFile, give_services_credentials, wait_for
from tests.support import new_launcher


@pytest.fixture(scope="module")
def mtls_stack(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Launcher, TokensFile]]:
    """The four services with mutual TLS, tokens, and a plaintext Health-only port each."""
    root = tmp_path_factory.mktemp("mtls_stack")
    tokens = TokensFile(root / "tokens.yaml")
    tokens.add("team-a", {"team_a": ["admin"]})
    launcher = new_launcher(root / "stack", LOOPWISE_ALLOW_PLAINTEXT="false",
                            LOOPWISE_TOKENS_FILE=str(tokens.path),
                            LOOPWISE_TLS_CA_FILE=str(pki / "ca.crt"))
    for name in SERVICES:
        launcher.service_env[name] = {"LOOPWISE_TLS_CERT_FILE": str(pki / f"{name}.crt"),
                                      "LOOPWISE_TLS_KEY_FILE": str(pki / f"{name}.key"),
                                      "LOOPWISE_HEALTH_PORT": str(free_port())}
    give_services_credentials(launcher, tokens)
    try:
        launcher.start_all()
        yield launcher, tokens
    finally:
        launcher.stop_all()


def client_settings(launcher: Launcher, pki: Path, token: str = "", cert: bool = True) -> Settings:
    """Settings of an SDK client holding the ``client`` certificate (or none)."""
    extra = ({"tls_client_cert_file": pki / "client.crt", "tls_client_key_file": pki / "client.key"}
             if cert else {})
    return Settings(allow_plaintext=False, tls_ca_file=pki / "ca.crt", token=token,
                    **{f"{s}_address": launcher.address(s) for s in SERVICES}, **extra)


async def test_mutual_tls_end_to_end(mtls_stack, pki) -> None:
    """A client with a certificate and a token decides; the decision service logs it
    to feedback over mTLS with its own certificate and token; the client reads it back."""
    launcher, tokens = mtls_stack
    settings = client_settings(launcher, pki, token=tokens.secrets["team-a"])
    decision_channel = security.aio_channel(settings, settings.decision_address)
    feedback_channel = security.aio_channel(settings, settings.feedback_address)
    try:
        decision = dgrpc.DecisionServiceStub(decision_channel)
        feedback = fgrpc.FeedbackServiceStub(feedback_channel)
        await decision.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=blueprint("team_a")), timeout=30)
        reply = await decision.Decide(dpb.DecideRequest(use_case="team_a", unit_id="u1", features=features()),
                                      timeout=30)

        async def logged() -> bool:
            try:
                await feedback.GetDecision(fpb.GetDecisionRequest(
                    use_case="team_a", decision_id=reply.decision.decision_id), timeout=10)
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND, error
                return False
            return True

        assert await wait_for(logged, timeout=60)
    finally:
        await decision_channel.close()
        await feedback_channel.close()


async def test_callers_without_certificate_or_tls_are_refused(mtls_stack, pki) -> None:
    launcher, tokens = mtls_stack
    request = dpb.ListUseCasesRequest()
    no_cert = client_settings(launcher, pki, token=tokens.secrets["team-a"], cert=False)
    channels = [security.aio_channel(no_cert, no_cert.decision_address),
                grpc.aio.insecure_channel(launcher.address("decision"))]
    try:
        for channel in channels:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await dgrpc.DecisionServiceStub(channel).ListUseCases(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        for channel in channels:
            await channel.close()
    # A certificate without a token gets through TLS and is refused by the guard.
    cert_only = client_settings(launcher, pki)
    channel = security.aio_channel(cert_only, cert_only.decision_address)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await dgrpc.DecisionServiceStub(channel).ListUseCases(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await channel.close()


async def test_health_port_serves_only_health_in_plaintext(mtls_stack) -> None:
    launcher, _ = mtls_stack
    for name in SERVICES:
        async with grpc.aio.insecure_channel(launcher.health_address(name)) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await dgrpc.DecisionServiceStub(channel).ListUseCases(dpb.ListUseCasesRequest(), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_secure_default_refuses_to_serve_in_plaintext(make_settings) -> None:
    settings = make_settings(allow_plaintext=False)
    with pytest.raises(security.InsecureConfiguration) as err:
        security.check_configuration(settings)
    assert "LOOPWISE_TLS_CERT_FILE" in str(err.value) and "LOOPWISE_TOKENS_FILE" in str(err.value)
    host = ServiceHost("feedback", settings, settings.feedback_address)
    with pytest.raises(security.InsecureConfiguration):
        await host.start()
    assert security.channel_credentials(settings) is not None  # clients use TLS by default
