"""Local credentials for ``make up`` and the profile that clients find by themselves.

``loopwise up`` (``make up``) serves the secure configuration on loopback with no
manual step. On its first start it creates, under ``<data_dir>/local/`` (directories
0700, files 0600, never committed — ``var/`` is ignored by git):

- ``certs/``: a development CA and one certificate per service and for ``client``
  (mutual TLS, valid for ``localhost`` and ``127.0.0.1``);
- ``tokens.yaml``: the hashed tokens file the services read — an ``admin`` token for
  every use case and one service token per service with the scopes it needs;
- ``secrets/<name>.token``: the secrets of those tokens;
- ``profile.yaml``: what a client needs — addresses, the CA, the client certificate and
  the admin token.

:class:`ProfileSource` feeds ``profile.yaml`` into :class:`loopwise.settings.Settings`
below the environment, so ``loopwise.Client()``, ``loopwise.AsyncClient()`` and the CLI
connect securely without any setting. The profile is found at ``LOOPWISE_PROFILE``, else
at ``<LOOPWISE_DATA_DIR or var>/local/profile.yaml``. It is not used when the
environment configures security itself (any of ``LOOPWISE_ALLOW_PLAINTEXT``,
``LOOPWISE_TLS_*``, ``LOOPWISE_TOKEN``, ``LOOPWISE_TOKENS_FILE``) and
``LOOPWISE_PROFILE`` is not set: explicit settings are never mixed with local ones.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SERVICE_NAMES = ("decision", "feedback", "trainer", "evaluator")

# What each service calls on the others (docs/security.md), so the scopes of its token.
SERVICE_SCOPES: dict[str, list[str]] = {
    "decision": ["decide"],             # LogDecisions, WatchDeployments, DownloadModel
    "feedback": ["report"],             # GetUseCase, GetModel
    "trainer": ["train"],               # ReadTrainingData, GetStats, GetUseCase
    "evaluator": ["report", "train"],   # ReadTrainingData, DownloadModel, RegisterModel
}

# Environment variables that configure security explicitly: with any of them set (and no
# LOOPWISE_PROFILE), the local profile stays out of the settings.
SECURITY_ENV = ("LOOPWISE_ALLOW_PLAINTEXT", "LOOPWISE_TOKEN", "LOOPWISE_TOKENS_FILE")
SECURITY_ENV_PREFIX = "LOOPWISE_TLS_"

# Certificates are renewed when they expire within this long.
RENEW_BEFORE = dt.timedelta(days=7)


def profile_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the profile is looked for: ``LOOPWISE_PROFILE`` or ``<data_dir>/local/profile.yaml``."""
    env = os.environ if environ is None else environ
    explicit = env.get("LOOPWISE_PROFILE", "")
    if explicit:
        return Path(explicit)
    return Path(env.get("LOOPWISE_DATA_DIR") or "var") / "local" / "profile.yaml"


def security_from_environment(environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment sets any security setting itself."""
    env = os.environ if environ is None else environ
    return any(env.get(name) for name in SECURITY_ENV) or any(
        key.startswith(SECURITY_ENV_PREFIX) and value for key, value in env.items())


def read_profile(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The profile's settings (field names of Settings), or {} when none applies."""
    env = os.environ if environ is None else environ
    if security_from_environment(env) and not env.get("LOOPWISE_PROFILE"):
        return {}
    path = profile_path(env)
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        if env.get("LOOPWISE_PROFILE"):
            raise FileNotFoundError(f"LOOPWISE_PROFILE={path}: no such file "
                                    "(make up writes it; or unset LOOPWISE_PROFILE)") from None
        return {}
    if not isinstance(document, dict) or not isinstance(document.get("settings"), dict):
        raise ValueError(f"{path}: expected a mapping with a 'settings' mapping")
    return dict(document["settings"])


def is_loopback(address: str) -> bool:
    """True when ``host:port`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class LocalCredentials:
    """The files of a local secure stack (all under ``root``)."""

    root: Path

    @property
    def certs(self) -> Path:
        """The development CA and certificates."""
        return self.root / "certs"

    @property
    def tokens_file(self) -> Path:
        """The hashed tokens file the services read."""
        return self.root / "tokens.yaml"

    @property
    def profile(self) -> Path:
        """The client profile (addresses, CA, client certificate, admin token)."""
        return self.root / "profile.yaml"

    def secret_file(self, name: str) -> Path:
        """The file holding the secret of token ``name``."""
        return self.root / "secrets" / f"{name}.token"

    def secret(self, name: str) -> str:
        """The secret of token ``name`` (``admin`` or ``<service>-service``)."""
        return self.secret_file(name).read_text().strip()

    def service_env(self, service: str) -> dict[str, str]:
        """The environment of one service process: its certificate, the CA, the tokens
        file and its own token."""
        return {
            "LOOPWISE_ALLOW_PLAINTEXT": "false",
            "LOOPWISE_TLS_CERT_FILE": str(self.certs / f"{service}.crt"),
            "LOOPWISE_TLS_KEY_FILE": str(self.certs / f"{service}.key"),
            "LOOPWISE_TLS_CA_FILE": str(self.certs / "ca.crt"),
            "LOOPWISE_TOKENS_FILE": str(self.tokens_file),
            "LOOPWISE_TOKEN": self.secret(f"{service}-service"),
        }

    def client_settings(self) -> dict[str, Any]:
        """The settings of an administrator's client (SDK, CLI)."""
        return {
            "allow_plaintext": False,
            "tls_ca_file": str(self.certs / "ca.crt"),
            "tls_client_cert_file": str(self.certs / "client.crt"),
            "tls_client_key_file": str(self.certs / "client.key"),
            "token": self.secret("admin"),
        }


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only (created 0600, never wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)


def _certs_valid(certs: Path, now: dt.datetime) -> bool:
    from cryptography import x509

    names = ["ca", *SERVICE_NAMES, "client"]
    if not all((certs / f"{n}.crt").exists() and (certs / f"{n}.key").exists() for n in names):
        return False
    for name in names:
        cert = x509.load_pem_x509_certificate((certs / f"{name}.crt").read_bytes())
        if cert.not_valid_after_utc - now < RENEW_BEFORE:
            return False
    return True


def ensure_local_credentials(data_dir: Path, addresses: Mapping[str, str]) -> tuple[LocalCredentials, list[str]]:
    """Create what is missing of the local credentials under ``<data_dir>/local`` and
    write the profile for ``addresses``. Returns the credentials and what was created."""
    from loopwise.auth import new_token
    from loopwise.pki import make_certs

    creds = LocalCredentials(Path(data_dir).resolve() / "local")
    created: list[str] = []
    _private_dir(creds.root)
    _private_dir(creds.root / "secrets")
    if not _certs_valid(creds.certs, dt.datetime.now(dt.UTC)):
        make_certs(creds.certs)
        created.append(f"a development CA and certificates in {creds.certs}")
    _private_dir(creds.certs)
    for path in creds.certs.iterdir():
        path.chmod(0o600)

    wanted = {"admin": ({"*": ["admin"]}, False),
              **{f"{s}-service": ({"*": SERVICE_SCOPES[s]}, True) for s in SERVICE_NAMES}}
    if not creds.tokens_file.exists() or not all(creds.secret_file(n).exists() for n in wanted):
        entries = []
        for name, (scopes, service) in wanted.items():
            secret, entry = new_token(name, scopes, service=service)
            _write_private(creds.secret_file(name), secret + "\n")
            entries.append(entry)
        _write_private(creds.tokens_file, yaml.safe_dump({"tokens": entries}, sort_keys=False))
        created.append(f"an admin token and four service tokens (hashes in {creds.tokens_file})")

    profile = {"settings": {**{f"{s}_address": addresses[s] for s in SERVICE_NAMES},
                            "data_dir": str(Path(data_dir).resolve()),
                            **creds.client_settings()}}
    header = ("# Written by `loopwise up`: how a client on this machine reaches the local\n"
              "# services (mutual TLS, admin token). Keep it private.\n")
    _write_private(creds.profile, header + yaml.safe_dump(profile, sort_keys=False))
    return creds, created
