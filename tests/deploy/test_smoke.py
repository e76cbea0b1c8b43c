"""``python -m loopwise.smoke`` (the chart's helm test) against the four services run as
real processes on loopback with mutual TLS and tokens: it passes with a token scoped to
the smoke use case (and adds no blueprint version when run again), and fails with exit
status 1 and a message naming the service and the setting with a token of another use
case, or an address where no service listens."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopwise.launcher import Launcher, free_port
from loopwise.settings import SERVICES
from tests.deploy.tools import ROOT
from tests.security.helpers import TokensFile, give_services_credentials
from tests.support import new_launcher

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A development CA and certificates for the four services and a client."""
    from scripts.make_certs import make_certs

    return make_certs(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure_stack(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Launcher, TokensFile]]:
    """The four services with mutual TLS, tokens, and a plaintext Health-only port each."""
    root = tmp_path_factory.mktemp("smoke_stack")
    tokens = TokensFile(root / "tokens.yaml")
    tokens.add("helm-test", {"loopwise_smoke": ["admin"]})
    tokens.add("other-team", {"other_case": ["admin"]})
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


def smoke(launcher: Launcher, pki: Path, token: str, *args: str,
          **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m loopwise.smoke`` as a client of the stack would: the addresses, the
    CA, the client certificate and a token in LOOPWISE_* variables, nothing inherited."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWISE_")}
    settings = {
        **{f"LOOPWISE_{s.upper()}_ADDRESS": launcher.address(s) for s in SERVICES},
        "LOOPWISE_ALLOW_PLAINTEXT": "false",
        "LOOPWISE_TLS_CA_FILE": str(pki / "ca.crt"),
        "LOOPWISE_TLS_CERT_FILE": str(pki / "client.crt"),
        "LOOPWISE_TLS_KEY_FILE": str(pki / "client.key"),
        "LOOPWISE_TOKEN": token,
        **env,
    }
    return subprocess.run([sys.executable, "-m", "loopwise.smoke", "--timeout", "10", *args],
                          env={**clean, **settings}, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_smoke_passes_and_adds_no_version_when_run_again(secure_stack, pki: Path) -> None:
    launcher, tokens = secure_stack
    first = smoke(launcher, pki, tokens.secrets["helm-test"])
    assert first.returncode == 0, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    for name in SERVICES:
        assert f"health {name} {launcher.address(name)}: SERVING" in lines, first.stdout
    assert "use case loopwise_smoke: created (blueprint v1)" in lines, first.stdout
    (decided,) = [line for line in lines if line.startswith("decide loopwise_smoke: action ")]
    assert "(score 0.000, default decision)" in decided  # no model yet: the blueprint's default
    assert lines[-1] == "smoke test passed"

    again = smoke(launcher, pki, tokens.secrets["helm-test"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "use case loopwise_smoke: present (blueprint v1)" in again.stdout.splitlines()


def test_token_of_another_use_case_is_permission_denied(secure_stack, pki: Path) -> None:
    launcher, tokens = secure_stack
    done = smoke(launcher, pki, tokens.secrets["other-team"])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "SERVING" in done.stdout  # Health needs no token; the use case step fails
    assert "decide " not in done.stdout
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("smoke test FAILED: GetUseCase/ApplyUseCase on decision at "), message
    assert "PERMISSION_DENIED" in message and "needs admin on use case 'loopwise_smoke'" in message


def test_unreachable_service_is_named_with_its_setting(secure_stack, pki: Path) -> None:
    launcher, tokens = secure_stack
    nowhere = f"127.0.0.1:{free_port()}"
    done = smoke(launcher, pki, tokens.secrets["helm-test"], LOOPWISE_TRAINER_ADDRESS=nowhere)
    assert done.returncode == 1, done.stdout + done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert f"health check on trainer at {nowhere}: UNAVAILABLE" in message, message
    assert "LOOPWISE_TRAINER_ADDRESS" in message
    assert "health evaluator" in done.stdout  # the others were still checked
