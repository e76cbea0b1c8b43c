"""A development CA and certificates for mutual TLS (``make certs``, ``loopwise up``).

:func:`make_certs` writes into a directory: ``ca.crt``/``ca.key`` and, for each of
the four services and for a ``client`` (SDK, CLI, operators), ``<name>.crt`` and
``<name>.key``. Every certificate is valid for server and client authentication and
names ``<name>``, ``<name>.<namespace>``, ``<name>.<namespace>.svc``, ``localhost``,
``127.0.0.1`` and ``::1``, so the same files serve a loopback test and a Kubernetes
namespace. With ``fullname`` (the Helm release's full name, e.g. ``loopwise``) each also
names the chart's Service ``<fullname>-<name>``, ``<fullname>-<name>.<namespace>`` and
``<fullname>-<name>.<namespace>.svc``, the host names the chart's pods dial. For
production use your own CA (e.g. cert-manager); these keys are for development only.
From a shell::

    python scripts/make_certs.py --out var/certs --namespace loopwise --fullname loopwise
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NAMES = ("decision", "feedback", "trainer", "evaluator", "client")

# A Kubernetes Service name (RFC 1123 label): what <fullname>-<name> must be.
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


# Services whose chart also has a headless Service that clients dial to spread their
# calls over the pods (dns:///<fullname>-decision-headless.<namespace>.svc:50051).
HEADLESS = ("decision",)


def release_hosts(name: str, namespace: str, fullname: str = "") -> list[str]:
    """The host names of the chart's Service for ``name`` in a release whose full name
    is ``fullname``: ``<fullname>-<name>``, ``<fullname>-<name>.<namespace>`` and
    ``<fullname>-<name>.<namespace>.svc``, and the same of its headless Service
    ``<fullname>-<name>-headless`` for the names in :data:`HEADLESS`; none when
    ``fullname`` is empty. Raises ValueError when ``<fullname>-<name>`` is not a valid
    Service name."""
    if not fullname:
        return []
    service = f"{fullname}-{name}"
    services = [service, f"{service}-headless"] if name in HEADLESS else [service]
    for svc in services:
        if not _LABEL.fullmatch(svc):
            raise ValueError(f"fullname {fullname!r}: {svc!r} is not a Kubernetes Service name "
                             "(lowercase letters, digits and '-', at most 63 characters)")
    return [host for svc in services for host in (svc, f"{svc}.{namespace}", f"{svc}.{namespace}.svc")]


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "loopwise development"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(out: Path, days: int = 365) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA written to ``out/ca.crt`` and ``out/ca.key``."""
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("loopwise development CA"))
            .issuer_name(_name("loopwise development CA")).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    (out / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, out / "ca.key")
    return cert, key


def make_leaf(out: Path, name: str, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
              namespace: str = "loopwise", extra_hosts: Iterable[str] = (), days: int = 365,
              fullname: str = "") -> None:
    """``out/<name>.crt`` and ``.key`` signed by ``ca``, for server and client auth.

    The certificate names ``<name>``, ``<name>.<namespace>``, ``<name>.<namespace>.svc``,
    ``localhost``, ``extra_hosts``, ``127.0.0.1`` and ``::1``; with ``fullname`` also the
    release's Service names (:func:`release_hosts`)."""
    ca_cert, ca_key = ca
    dns = [name, f"{name}.{namespace}", f"{name}.{namespace}.svc",
           *release_hosts(name, namespace, fullname), "localhost", *extra_hosts]
    key = _key()
    now = dt.datetime.now(dt.UTC)
    san = x509.SubjectAlternativeName(
        [x509.DNSName(h) for h in dict.fromkeys(dns)]
        + [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
           x509.IPAddress(ipaddress.ip_address("::1"))])
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (out / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, out / f"{name}.key")


def make_certs(out: Path, names: Iterable[str] = NAMES, namespace: str = "loopwise",
               days: int = 365, fullname: str = "") -> Path:
    """A development CA and one certificate per name under ``out``; returns ``out``.

    ``fullname`` is the full name of the Helm release the certificates are for (the
    prefix of its Services, ``<fullname>-<service>``): each certificate then also names
    its Service (:func:`release_hosts`), so the services verify each other by the names
    they dial. Empty: the names without a release."""
    names = list(names)
    for name in names:
        release_hosts(name, namespace, fullname)  # refuse a bad fullname before writing
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ca = make_ca(out, days)
    for name in names:
        make_leaf(out, name, ca, namespace, days=days, fullname=fullname)
    return out
