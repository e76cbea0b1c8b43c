"""The CLI against services with mutual TLS and tokens (as 'loopwise up' runs them), given
its credentials by the global options (--ca-file, --cert-file, --key-file, --token,
--token-file) or by the LOOPWISE_* variables, the option winning over the variable and the
variable over the profile; and the messages for a bad token, no token, a CA that does not
verify the services and a missing client certificate."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from loopwise.cli import app
from loopwise.launcher import Launcher, free_port
from loopwise.local_profile import LocalCredentials, ensure_local_credentials
from loopwise.pki import make_certs
from loopwise.settings import Settings
from tests.support import new_launcher

runner = CliRunner()

BLUEPRINT = """
useCase: cli_tls
kind: DECISION_KIND_ACTION_VALUE
actions: [no_offer, offer]
features:
  - {name: basket_value, type: FEATURE_TYPE_NUMERIC}
policy: {type: POLICY_TYPE_EPSILON_GREEDY, epsilon: 0.1, exploreWithoutModel: true}
defaultDecision: {action: no_offer}
reward: {outcomeNames: [purchase], window: 60s}
"""

# Variables of the test process that would choose credentials for the CLI.
CLEARED = {"LOOPWISE_ALLOW_PLAINTEXT": None, "LOOPWISE_TOKEN": None, "LOOPWISE_PROFILE": None,
           "LOOPWISE_TLS_CA_FILE": None, "LOOPWISE_TLS_CERT_FILE": None, "LOOPWISE_TLS_KEY_FILE": None,
           "LOOPWISE_TLS_CLIENT_CERT_FILE": None, "LOOPWISE_TLS_CLIENT_KEY_FILE": None}


@dataclass(frozen=True)
class Secure:
    """Decision and feedback with mutual TLS and tokens, and the local credentials."""

    launcher: Launcher
    credentials: LocalCredentials
    root: Path

    @property
    def certs(self) -> Path:
        return self.credentials.certs

    def addresses(self) -> list[str]:
        return ["--decision-address", self.launcher.address("decision"),
                "--feedback-address", self.launcher.address("feedback")]

    def tls(self, ca: Path | None = None) -> list[str]:
        return ["--ca-file", str(ca or self.certs / "ca.crt"), "--cert-file", str(self.certs / "client.crt"),
                "--key-file", str(self.certs / "client.key")]

    def run(self, *args: str, env: dict[str, str | None] | None = None) -> Result:
        return runner.invoke(app, list(args), prog_name="loopwise",
                             env={**CLEARED, "LOOPWISE_DATA_DIR": str(self.root / "cli"), "COLUMNS": "200",
                                  **(env or {})})


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    root = tmp_path_factory.mktemp("cli_tls")
    launcher = new_launcher(root / "var")
    addresses = {name: launcher.address(name) for name in ("decision", "feedback", "trainer", "evaluator")}
    credentials, _ = ensure_local_credentials(root / "var", addresses)
    for name in ("decision", "feedback"):
        launcher.service_env[name] = credentials.service_env(name)
    launcher.client = Settings(**{f"{s}_address": a for s, a in addresses.items()}, **credentials.client_settings())
    try:
        launcher.start("decision")
        launcher.start("feedback")
        yield Secure(launcher, credentials, root)
    finally:
        launcher.stop_all()


def _words(result: Result) -> str:
    return " ".join(result.output.split())


def test_the_options_carry_the_credentials(secure: Secure) -> None:
    path = secure.root / "bp.yaml"
    path.write_text(BLUEPRINT)
    token = secure.credentials.secret("admin")
    applied = secure.run(*secure.addresses(), *secure.tls(), "--token", token, "apply", "-f", str(path))
    assert applied.exit_code == 0 and "cli_tls: version 1 created" in applied.output, applied.output
    listed = secure.run(*secure.addresses(), *secure.tls(), "--token-file",
                        str(secure.credentials.secret_file("admin")), "use-cases", "--output", "json")
    assert listed.exit_code == 0, listed.output
    assert "cli_tls" in listed.stdout
    stats = secure.run(*secure.addresses(), *secure.tls(), "--token", token, "stats", "-u", "cli_tls")
    assert stats.exit_code == 0 and "decisions" in stats.stdout, stats.output


def test_the_variables_carry_them_and_an_option_wins(secure: Secure) -> None:
    certs = secure.certs
    env = {"LOOPWISE_DECISION_ADDRESS": secure.launcher.address("decision"),
           "LOOPWISE_TLS_CA_FILE": str(certs / "ca.crt"), "LOOPWISE_TLS_CLIENT_CERT_FILE": str(certs / "client.crt"),
           "LOOPWISE_TLS_CLIENT_KEY_FILE": str(certs / "client.key"), "LOOPWISE_TOKEN": "lw_not_a_token"}
    refused = secure.run("use-cases", env=env)
    assert refused.exit_code == 1
    assert "did not accept the token" in _words(refused) and "comes from the variable LOOPWISE_TOKEN" in _words(refused)
    listed = secure.run("--token", secure.credentials.secret("admin"), "use-cases", env=env)
    assert listed.exit_code == 0 and "cli_tls" in listed.output, listed.output


def test_the_profile_comes_last(secure: Secure) -> None:
    """A profile (as 'loopwise up' writes it) gives everything; a variable replaces one of
    its addresses, and an option the variable."""
    profile = secure.root / "profile.yaml"
    settings = {"decision_address": secure.launcher.address("decision"), **secure.credentials.client_settings()}
    profile.write_text(yaml.safe_dump({"settings": settings}))
    env = {"LOOPWISE_PROFILE": str(profile)}
    assert secure.run("use-cases", env=env).exit_code == 0
    wrong = f"127.0.0.1:{free_port()}"
    moved = secure.run("use-cases", env={**env, "LOOPWISE_DECISION_ADDRESS": wrong})
    assert moved.exit_code == 1 and f"decision service at {wrong} cannot be reached" in _words(moved)
    assert "comes from the variable LOOPWISE_DECISION_ADDRESS" in _words(moved)
    back = secure.run("--decision-address", secure.launcher.address("decision"), "use-cases",
                      env={**env, "LOOPWISE_DECISION_ADDRESS": wrong})
    assert back.exit_code == 0, back.output


def test_a_bad_or_missing_token_names_the_token_setting(secure: Secure) -> None:
    bad = secure.run(*secure.addresses(), *secure.tls(), "--token", "lw_wrong", "use-cases")
    assert bad.exit_code == 1
    text = _words(bad)
    assert f"the decision service at {secure.launcher.address('decision')} did not accept the token" in text
    assert "The token (set) comes from the option --token; set it with --token or LOOPWISE_TOKEN" in text
    none = secure.run(*secure.addresses(), *secure.tls(), "use-cases")
    assert none.exit_code == 1
    assert "The token (not set) comes from the default; set it with --token or LOOPWISE_TOKEN" in _words(none)


def test_tls_failures_name_the_ca_and_certificate_settings(secure: Secure) -> None:
    other = secure.root / "other-ca"
    make_certs(other)
    token = secure.credentials.secret("admin")
    wrong_ca = secure.run(*secure.addresses(), *secure.tls(ca=other / "ca.crt"), "--token", token, "use-cases")
    assert wrong_ca.exit_code == 1
    text = _words(wrong_ca)
    assert f"the TLS handshake with the decision service at {secure.launcher.address('decision')} failed" in text
    assert "comes from the option --ca-file" in text and "--ca-file or LOOPWISE_TLS_CA_FILE" in text

    no_client_cert = secure.run(*secure.addresses(), "--ca-file", str(secure.certs / "ca.crt"), "--token", token,
                                "use-cases")
    assert no_client_cert.exit_code == 1
    text = _words(no_client_cert)
    assert "closed the connection during the TLS handshake" in text
    assert "--cert-file or LOOPWISE_TLS_CLIENT_CERT_FILE" in text

    plaintext = secure.run(*secure.addresses(), "use-cases", env={"LOOPWISE_ALLOW_PLAINTEXT": "true"})
    assert plaintext.exit_code == 1
    assert "serves TLS only" in _words(plaintext) and "--ca-file or LOOPWISE_TLS_CA_FILE" in _words(plaintext)

    unreadable = secure.run(*secure.addresses(), *secure.tls(ca=secure.root / "missing.crt"), "use-cases")
    assert unreadable.exit_code == 2
    assert "missing.crt (from the option --ca-file" in _words(unreadable)
