"""The image checks, without a Docker engine: for each service, its extra installed
non-editable into its own venv, started with the exact command and environment of the
rendered manifest, answering Health; the decision service never loads scikit-learn,
skl2onnx or EconML. The Dockerfiles are checked for the shape the images rely on."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.launcher import free_port, health_status
from tests.deploy.images import build_wheel, container_env, imported_modules, installed, venv_for
from tests.deploy.tools import CI_VALUES, ROOT, SERVICES, find, render

# The first run after a dependency change builds four venvs (minutes on a busy machine).
pytestmark = pytest.mark.timeout(1800)

FORBIDDEN_IN_DECISION = {"sklearn", "skl2onnx", "econml"}
FORBIDDEN_DISTRIBUTIONS = {"scikit-learn", "skl2onnx", "econml"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The trial manifest (SQLite, one replica, plaintext) rendered for this machine:
    loopback, free ports, a temporary data dir, no metrics port."""
    data_dir = tmp_path_factory.mktemp("data")
    sets = {"listenHost": "127.0.0.1", "dataDir": str(data_dir), "metrics.enabled": "false",
            **{f"{s}.port": free_port() for s in SERVICES}}
    objects = render([CI_VALUES / "sqlite.yaml"], sets)
    return {"objects": objects, "data_dir": data_dir}


def image_env(name: str, venv: Path) -> dict[str, str]:
    """The ENV of a service image's runtime stage (services/<name>/Dockerfile), with
    /opt/venv standing for ``venv``."""
    text = (ROOT / "services" / name / "Dockerfile").read_text()
    runtime = text[text.rindex("\nFROM "):].replace("\\\n", " ")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    for line in runtime.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                key, _, value = pair.partition("=")
                env[key] = value.replace("$PATH", env["PATH"]).replace("/opt/venv", str(venv))
    return env


class Started:
    """A service process started from its rendered container spec."""

    def __init__(self, name: str, venv: Path, rendered: dict, log_dir: Path, env_extra: dict[str, str],
                 external_secrets: dict[str, dict[str, str]] | None = None) -> None:
        objects = rendered["objects"]
        kind = "StatefulSet" if name == "feedback" else "Deployment"
        (self.container,) = find(objects, kind, f"lw-loopwise-{name}")["spec"]["template"]["spec"]["containers"]
        self.port = next(p["containerPort"] for p in self.container["ports"] if p["name"] == "grpc")
        env = container_env(objects, self.container, external_secrets)
        # The image's own ENV (its venv first on PATH), then the manifest's; nothing of the
        # developer's environment leaks in.
        self.env = {**image_env(name, venv), "HOME": str(log_dir), **env, **env_extra}
        self.log = log_dir / f"{name}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(self.container["command"], env=self.env, cwd=rendered["data_dir"],
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_serving(self, timeout: float = 180.0) -> str:
        deadline = time.monotonic() + timeout
        status = "UNREACHABLE"
        while time.monotonic() < deadline and self.proc.poll() is None:
            status = health_status(f"127.0.0.1:{self.port}", timeout=1.0)
            if status == "SERVING":
                break
            time.sleep(0.3)
        return status

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def venvs(wheel: Path) -> dict[str, Path]:
    return {name: venv_for(name, wheel) for name in SERVICES}


@pytest.fixture(scope="module")
def services(venvs: dict[str, Path], rendered: dict,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Started]]:
    """All four services started at once from their venvs, the decision service with
    its imports logged (PYTHONPROFILEIMPORTTIME, the env form of ``-X importtime``)."""
    logs = tmp_path_factory.mktemp("logs")
    started = {}
    try:
        for name in SERVICES:
            extra = {"PYTHONPROFILEIMPORTTIME": "1"} if name == "decision" else {}
            started[name] = Started(name, venvs[name], rendered, logs, extra)
        yield started
    finally:
        for service in started.values():
            service.stop()


def test_each_venv_holds_only_its_extra(venvs: dict[str, Path]) -> None:
    packages = {name: installed(venv) for name, venv in venvs.items()}
    for name, found in packages.items():
        assert "loopwise" in found, name
    assert not packages["decision"] & FORBIDDEN_DISTRIBUTIONS
    assert "onnxruntime" in packages["decision"]
    assert not packages["feedback"] & (FORBIDDEN_DISTRIBUTIONS | {"onnxruntime"})
    assert {"scikit-learn", "skl2onnx"} <= packages["trainer"] and "econml" not in packages["trainer"]
    assert {"econml", "scikit-learn", "matplotlib"} <= packages["evaluator"]
    # Not editable: the code comes from site-packages, not from the source tree.
    where = subprocess.run([str(venvs["decision"] / "bin" / "python"), "-c",
                            "import loopwise.services.decision as m; print(m.__file__)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert "site-packages" in where and not where.startswith(str(ROOT / "services"))


@pytest.mark.parametrize("name", SERVICES)
def test_service_serves_health_from_its_image_command(services: dict[str, Started], name: str) -> None:
    service = services[name]
    assert service.container["command"] == ["python", "-m", f"loopwise.services.{name}"]
    assert service.env[f"LOOPWISE_{name.upper()}_STORE_URL"].startswith("sqlite:///")
    status = service.wait_serving()
    assert status == "SERVING", f"{name}: {status}\n{service.log.read_text()[-4000:]}"


def test_decision_never_loads_training_libraries(services: dict[str, Started], rendered: dict,
                                                 tmp_path: Path) -> None:
    """From the import log of the image's decision server (after serving), and from the
    same command in the development venv, where scikit-learn, skl2onnx and EconML are
    installed: neither loads them, while onnxruntime shows that the log sees imports."""
    decision = services["decision"]
    assert decision.wait_serving() == "SERVING"
    assert decision.stop() == 0, decision.log.read_text()[-3000:]
    modules = imported_modules(decision.log.read_text())
    assert {"onnxruntime", "grpc", "loopwise"} <= modules
    assert not modules & FORBIDDEN_IN_DECISION

    dev_bin = Path(sys.executable).parent
    probe = Started("decision", dev_bin.parent, rendered, tmp_path,
                    {"PYTHONPROFILEIMPORTTIME": "1", "LOOPWISE_DECISION_ADDRESS": f"127.0.0.1:{free_port()}"})
    probe.port = int(probe.env["LOOPWISE_DECISION_ADDRESS"].rsplit(":", 1)[1])
    try:
        assert probe.wait_serving() == "SERVING", probe.log.read_text()[-3000:]
    finally:
        assert probe.stop() == 0
    dev_modules = imported_modules(probe.log.read_text())
    assert "onnxruntime" in dev_modules and not dev_modules & FORBIDDEN_IN_DECISION
    assert subprocess.run([str(dev_bin / "python"), "-c", "import sklearn, skl2onnx, econml"],
                          capture_output=True).returncode == 0  # they were there to be loaded


@pytest.mark.parametrize("name", SERVICES)
def test_dockerfile_builds_a_slim_non_root_image_of_one_extra(name: str) -> None:
    text = (ROOT / "services" / name / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?", text, flags=re.MULTILINE)
    assert len(stages) == 2 and all(image.endswith("-slim") for image, _ in stages)
    assert "COPY --from=build /opt/venv /opt/venv" in text
    assert re.findall(r'pip install -c constraints.txt "\.\[(\w+)\]"', text) == [name]
    (user,) = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert user.split(":")[0] not in ("0", "root")
    (cmd,) = re.findall(r"^CMD (.+)$", text, flags=re.MULTILINE)
    rendered_command = find(render([CI_VALUES / "sqlite.yaml"]),
                            "StatefulSet" if name == "feedback" else "Deployment",
                            f"lw-loopwise-{name}")["spec"]["template"]["spec"]["containers"][0]["command"]
    assert json.loads(cmd) == rendered_command


def test_decision_in_secure_mode_from_the_default_manifest(venvs: dict[str, Path], tmp_path: Path) -> None:
    """The chart's default (TLS on): the rendered TLS, tokens and health-port settings
    work with the image's server — Health answers on the plaintext health port without
    credentials, the gRPC port takes only TLS with a client certificate, and calls
    need a token."""
    from loopwise.auth import new_token
    from scripts.make_certs import make_certs

    pki = make_certs(tmp_path / "pki")
    tls_dir, auth_dir = tmp_path / "tls", tmp_path / "auth"
    tls_dir.mkdir()
    auth_dir.mkdir()
    for source, target in (("decision.crt", "tls.crt"), ("decision.key", "tls.key"), ("ca.crt", "ca.crt")):
        shutil.copy(pki / source, tls_dir / target)
    service_secret, service_entry = new_token("decision-service", {"*": ["decide"]}, service=True)
    operator_secret, operator_entry = new_token("operator", {"*": ["decide"]})
    (auth_dir / "tokens.yaml").write_text(yaml.safe_dump({"tokens": [service_entry, operator_entry]}))
    health_port = free_port()
    metrics = free_port()  # the decision service's metrics port is the base port
    sets = {"store.type": "sqlite", "listenHost": "127.0.0.1", "dataDir": str(tmp_path / "data"),
            "metrics.port": metrics, "decision.port": free_port(), "tls.healthPort": health_port,
            "tls.mountPath": str(tls_dir), "auth.mountPath": str(auth_dir),
            **{f"{s}.replicas": 1 for s in SERVICES},
            **{f"{s}.autoscaling.enabled": "false" for s in ("decision", "feedback")}}
    objects = render(sets=sets)
    config = find(objects, "ConfigMap", "lw-loopwise-config")["data"]
    assert config["LOOPWISE_ALLOW_PLAINTEXT"] == "false"
    (tmp_path / "data").mkdir()
    decision = Started("decision", venvs["decision"], {"objects": objects, "data_dir": tmp_path / "data"},
                       tmp_path, {}, {"loopwise-service-tokens": {"decision": service_secret}})
    try:
        probes = {p: decision.container[p]["grpc"]["port"] for p in ("readinessProbe", "livenessProbe")}
        assert set(probes.values()) == {health_port}
        deadline = time.monotonic() + 180
        while health_status(f"127.0.0.1:{health_port}") != "SERVING":
            assert decision.proc.poll() is None and time.monotonic() < deadline, decision.log.read_text()[-3000:]
            time.sleep(0.3)
        address = f"127.0.0.1:{decision.port}"
        assert health_status(address) == "UNREACHABLE"  # no plaintext on the gRPC port
        credentials = grpc.ssl_channel_credentials(
            root_certificates=(pki / "ca.crt").read_bytes(), private_key=(pki / "client.key").read_bytes(),
            certificate_chain=(pki / "client.crt").read_bytes())
        with grpc.secure_channel(address, credentials) as channel:
            stub = dgrpc.DecisionServiceStub(channel)
            reply = stub.ListUseCases(dpb.ListUseCasesRequest(), timeout=30,
                                      metadata=(("authorization", f"Bearer {operator_secret}"),))
            assert list(reply.use_cases) == []
            with pytest.raises(grpc.RpcError) as refused:
                stub.ListUseCases(dpb.ListUseCasesRequest(), timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Prometheus reaches the metrics port the pod annotations name.
        annotations = find(objects, "Deployment", "lw-loopwise-decision")["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(metrics)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=30) as response:
            text = response.read().decode()
        assert 'rpc="ListUseCases"' in text and "loopwise_rpc_requests_total" in text
    finally:
        assert decision.stop() == 0, decision.log.read_text()[-3000:]
