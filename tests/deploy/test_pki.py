"""Development certificates for a Helm release (``make_certs(fullname=…)``,
``scripts/make_certs.py --fullname``): they name the Services the chart's pods dial,
``<fullname>-<service>``, so a client verifying that name completes the TLS handshake
(and one verifying another name does not), and the full name the documents tell users
to pass is the prefix of the chart's Services."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from loopwise.pki import NAMES, make_certs
from tests.deploy.tools import ROOT, find, render

FULLNAME = "rel-loopwise"
NAMESPACE = "ns"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("pki"), namespace=NAMESPACE, fullname=FULLNAME)


def san(path: Path) -> tuple[set[str], set[str]]:
    """The DNS names and IP addresses in a certificate's subject alternative names."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (set(names.get_values_for_type(x509.DNSName)),
            {str(ip) for ip in names.get_values_for_type(x509.IPAddress)})


def test_certificates_name_the_release_services_and_keep_the_old_names(certs: Path) -> None:
    for name in NAMES:
        dns, ips = san(certs / f"{name}.crt")
        # The decision service is also dialled through its headless Service.
        services = [f"rel-loopwise-{name}"] + ([f"rel-loopwise-{name}-headless"] if name == "decision" else [])
        assert dns == {name, f"{name}.ns", f"{name}.ns.svc", "localhost",
                       *(h for s in services for h in (s, f"{s}.ns", f"{s}.ns.svc"))}
        assert ips == {"127.0.0.1", "::1"}
    dns, _ = san(certs / "decision.crt")
    assert {"rel-loopwise-decision", "rel-loopwise-decision.ns.svc"} <= dns
    assert "rel-loopwise-feedback" not in dns


def test_without_fullname_the_names_are_unchanged(tmp_path: Path) -> None:
    make_certs(tmp_path, names=["decision"], namespace=NAMESPACE)
    dns, ips = san(tmp_path / "decision.crt")
    assert dns == {"decision", "decision.ns", "decision.ns.svc", "localhost"}
    assert ips == {"127.0.0.1", "::1"}


@pytest.mark.parametrize("fullname", ["Rel", "rel_loopwise", "-rel", "r" * 60])
def test_a_fullname_that_makes_no_service_name_is_refused_before_writing(tmp_path: Path,
                                                                       fullname: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes Service name"):
        make_certs(tmp_path / "out", fullname=fullname)
    assert not (tmp_path / "out").exists()


def test_command_line_fullname(tmp_path: Path) -> None:
    script = str(ROOT / "scripts" / "make_certs.py")
    done = subprocess.run([sys.executable, script, "--out", str(tmp_path / "ok"), "--namespace", "ns",
                           "--fullname", FULLNAME], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    dns, _ = san(tmp_path / "ok" / "trainer.crt")
    assert {"trainer", "trainer.ns.svc", "rel-loopwise-trainer", "rel-loopwise-trainer.ns",
            "rel-loopwise-trainer.ns.svc"} <= dns
    done = subprocess.run([sys.executable, script, "--out", str(tmp_path / "bad"), "--fullname", "Bad"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not a Kubernetes Service name" in done.stderr
    assert not (tmp_path / "bad").exists()


async def _check(certs: Path, port: int, server_name: str) -> health_pb2.HealthCheckResponse:
    """Health.Check over mutual TLS with the client certificate, verifying ``server_name``."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.crt").read_bytes(),
        private_key=(certs / "client.key").read_bytes(),
        certificate_chain=(certs / "client.crt").read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials,
                                       options=[("grpc.ssl_target_name_override", server_name)]) as channel:
        return await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)


async def test_tls_handshake_verifies_the_release_service_name(certs: Path) -> None:
    """A server holding the decision certificate passes a client that verifies
    ``rel-loopwise-decision`` (the name the chart's pods dial) and fails one that
    verifies a name the certificate does not carry."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    credentials = grpc.ssl_server_credentials(
        [((certs / "decision.key").read_bytes(), (certs / "decision.crt").read_bytes())],
        root_certificates=(certs / "ca.crt").read_bytes(), require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        for name in ("rel-loopwise-decision", "rel-loopwise-decision.ns.svc", "decision"):
            response = await _check(certs, port, name)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, name
        for name in ("other-decision", "rel-loopwise-feedback"):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await _check(certs, port, name)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, name
    finally:
        await server.stop(None)


def documented_fullname(release: str, override: str = "") -> str:
    """The full name as the chart README and docs/operations.md explain it."""
    if override:
        return override
    return release if "loopwise" in release else f"{release}-loopwise"


@pytest.mark.parametrize(("release", "override"), [("rel", ""), ("loopwise", ""),
                                                   ("my-loopwise-prod", ""), ("rel", "lw-prod")])
def test_the_documented_fullname_is_the_prefix_of_the_services_the_pods_dial(
        tmp_path: Path, release: str, override: str) -> None:
    fullname = documented_fullname(release, override)
    objects = render(sets={"fullnameOverride": override} if override else None, release=release)
    decision = [obj["metadata"]["name"] for obj in objects if obj["kind"] == "Service"
                and obj["metadata"]["labels"]["app.kubernetes.io/component"] == "decision"]
    assert sorted(decision) == [f"{fullname}-decision", f"{fullname}-decision-headless"]
    config = find(objects, "ConfigMap", f"{fullname}-config")["data"]
    for name in ("decision", "feedback", "trainer", "evaluator"):
        host = config[f"LOOPWISE_{name.upper()}_ADDRESS"].rsplit(":", 1)[0]
        assert host == f"{fullname}-{name}"
        find(objects, "Service", host)
    # Certificates made with that full name carry the host the pods dial.
    make_certs(tmp_path, names=["decision"], namespace="loopwise", fullname=fullname)
    dns, _ = san(tmp_path / "decision.crt")
    assert {f"{fullname}-decision", f"{fullname}-decision.loopwise.svc",
            f"{fullname}-decision-headless.loopwise.svc"} <= dns
