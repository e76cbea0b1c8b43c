"""TLS to a real Cassandra: the launcher's ``--tls-keystore`` makes the CQL port TLS-only,
``cassandra://…?tls=true&tls_ca=…`` URLs connect over it (verifying the server's
certificate against ``tls_ca``), plain connections are refused, and a real store opened
from settings works over TLS.

The certificate is a throw-away self-signed one (SAN IP:127.0.0.1) made with the JDK's
``keytool`` into a PKCS12 keystore; its PEM export is the CA file. Skipped only without
Java locally; in CI (CI=true) a missing Java fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from loopwise.settings import Settings
from loopwise.store.cassandra import CassandraConnection, CassandraUrl
from loopwise.store.feedback import StoredDecision, open_feedback_store
from tests.feedback.helpers import id_at, record
from tests.support import CassandraInstance, java_available

PASSWORD = "loopwise-test-" + uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class Cert:
    keystore: Path  # PKCS12: the server's key and self-signed certificate
    ca_pem: Path  # the certificate in PEM, for the client's tls_ca


def make_cert(directory: Path, name: str) -> Cert:
    """A self-signed RSA certificate for 127.0.0.1/localhost in a PKCS12 keystore plus its PEM."""
    keytool = shutil.which("keytool")
    assert keytool, "keytool (JDK) is needed to make the test certificate"
    keystore, pem = directory / f"{name}.p12", directory / f"{name}.pem"
    subprocess.run(
        [keytool, "-genkeypair", "-alias", "cassandra", "-keyalg", "RSA", "-keysize", "2048",
         "-validity", "2", "-dname", f"CN={name},O=loopwise-test",
         "-ext", "SAN=IP:127.0.0.1,DNS:localhost",
         "-storetype", "PKCS12", "-keystore", str(keystore), "-storepass", PASSWORD, "-keypass", PASSWORD],
        check=True, capture_output=True,
    )
    subprocess.run(
        [keytool, "-exportcert", "-rfc", "-alias", "cassandra", "-storetype", "PKCS12",
         "-keystore", str(keystore), "-storepass", PASSWORD, "-file", str(pem)],
        check=True, capture_output=True,
    )
    assert pem.read_text().startswith("-----BEGIN CERTIFICATE-----")
    return Cert(keystore, pem)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Cert]:
    if not java_available() or shutil.which("keytool") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs Java (java and keytool) to run the Cassandra TLS test")
        pytest.skip("no java/keytool on this machine: the Cassandra TLS test needs Java 17")
    directory = tmp_path_factory.mktemp("tls")
    return {"server": make_cert(directory, "server"), "other": make_cert(directory, "other")}


@pytest.fixture(scope="module")
def tls_cassandra(certs: dict[str, Cert], tmp_path_factory: pytest.TempPathFactory) -> Iterator[CassandraInstance]:
    """Its own Cassandra whose CQL port speaks TLS only."""
    instance = CassandraInstance(tmp_path_factory.mktemp("cassandra_tls"), tls_keystore=certs["server"].keystore,
                                 tls_keystore_password=PASSWORD, tls_store_type="PKCS12")
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


def keyspace_url(instance: CassandraInstance, prefix: str) -> str:
    return f"{instance.url}/{prefix}_{uuid.uuid4().hex[:12]}"


def test_launcher_wrote_client_encryption(tls_cassandra: CassandraInstance, certs: dict[str, Cert]) -> None:
    yaml = (tls_cassandra.dir / "cassandra.yaml").read_text()
    section = yaml[yaml.index("client_encryption_options:"):]
    assert "enabled: true" in section and "optional: false" in section
    assert f"keystore: '{certs['server'].keystore}'" in section
    assert "store_type: 'PKCS12'" in section


async def test_tls_connection_writes_and_reads(tls_cassandra: CassandraInstance, certs: dict[str, Cert]) -> None:
    url = CassandraUrl.parse(keyspace_url(tls_cassandra, "tls") + f"?tls=true&tls_ca={certs['server'].ca_pem}")
    assert url.tls and url.tls_ca == str(certs["server"].ca_pem)
    conn = CassandraConnection(url)
    try:
        conn.ensure_keyspace()
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {url.keyspace}.kv (k text PRIMARY KEY, v int)")
        await conn.write(f"INSERT INTO {url.keyspace}.kv (k, v) VALUES (?, ?)", ("answer", 42))
        rows = await conn.execute(f"SELECT k, v FROM {url.keyspace}.kv WHERE k = ?", ("answer",))
        assert [(r[0], r[1]) for r in rows] == [("answer", 42)]
        # The session really is on TLS: the driver's connection wraps an SSL socket.
        pool_conn = next(iter(conn.session.get_pools())).borrow_connection(timeout=5)[0]
        assert pool_conn.ssl_context is not None and type(pool_conn._socket).__name__ == "SSLSocket"
    finally:
        conn.close()


def test_plain_connection_is_refused(tls_cassandra: CassandraInstance) -> None:
    from cassandra.cluster import NoHostAvailable

    with pytest.raises(NoHostAvailable):
        CassandraConnection(CassandraUrl.parse(keyspace_url(tls_cassandra, "plain")))


def test_tls_with_untrusted_ca_is_refused(tls_cassandra: CassandraInstance, certs: dict[str, Cert]) -> None:
    """The server certificate is verified: a CA file that did not sign it fails the handshake."""
    from cassandra.cluster import NoHostAvailable

    with pytest.raises(NoHostAvailable) as failure:
        CassandraConnection(CassandraUrl.parse(
            keyspace_url(tls_cassandra, "wrongca") + f"?tls=true&tls_ca={certs['other'].ca_pem}"))
    assert "CERTIFICATE_VERIFY_FAILED" in str(failure.value)


async def test_feedback_store_over_tls(tls_cassandra: CassandraInstance, certs: dict[str, Cert],
                                       tmp_path: Path) -> None:
    url = keyspace_url(tls_cassandra, "feedback") + f"?tls=true&tls_ca={certs['server'].ca_pem}"
    store = open_feedback_store(Settings(feedback_store_url=url, data_dir=tmp_path))
    try:
        t = int(time.time() * 1000) - 60_000
        uc, did = f"uc_{uuid.uuid4().hex[:10]}", id_at(t)
        assert await store.put_decisions([StoredDecision(record(uc, did, arm="tls"), t)]) == 1
        got = await store.get_decision(uc, did)
        assert got is not None and got.record.decision_id == did and got.record.arm == "tls"
        assert store.conn.url.tls  # the store's own connection came from the TLS URL
    finally:
        store.close()
