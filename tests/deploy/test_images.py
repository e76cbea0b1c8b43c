"""The image checks, without a Docker engine: for each service, its extra installed
non-editable into its own venv, started with the exact command and environment of the
rendered manifest, answering Health; the decision service never loads scikit-learn,
skl2onnx or EconML. The one Dockerfile (its SERVICE build argument picks the extra and
the command) is checked for the shape the images rely on."""

from __future__ import annotations

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
from tests.deploy.images import (
    DOCKERFILE,
    build_wheel,
    container_env,
    dockerfile_stages,
    image_config,
    imported_modules,
    installed,
    venv_for,
)
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
    """The ENV of a service image (the Dockerfile built with SERVICE=<name>), with
    /opt/venv standing for ``venv``."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    for key, value in image_config(name).env.items():
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


IMAGES = (*SERVICES, "console")


def _rendered_command(name: str) -> list[str]:
    objects = render([CI_VALUES / "sqlite.yaml"], {"console.enabled": "true"})
    kind = "StatefulSet" if name == "feedback" else "Deployment"
    return find(objects, kind, f"lw-loopwise-{name}")["spec"]["template"]["spec"]["containers"][0]["command"]


def test_one_dockerfile_builds_every_image() -> None:
    """The per-service Dockerfiles are gone; the base image is pinned by digest, and
    the build stage installs one extra (the SERVICE build argument) into a venv without
    pip using the base interpreter's pip."""
    assert not list((ROOT / "services").glob("*/Dockerfile"))
    assert not (ROOT / "lib" / "loopwise" / "console" / "Dockerfile").exists()
    global_args, stages = dockerfile_stages(DOCKERFILE.read_text())
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", global_args["PYTHON_IMAGE"])
    images = {s.name: s.base for s in stages if not s.base.startswith("${SERVICE")}
    assert {name for name, base in images.items() if base == "${PYTHON_IMAGE}"} == {"build", "runtime-base"}
    build = next(s for s in stages if s.name == "build")
    runs = [rest for instruction, rest in build.instructions if instruction == "RUN"]
    assert "python -m venv --without-pip /opt/venv" in runs
    assert [r for r in runs if "pip" in r.split("venv")[0]] == [
        'python -m pip --python /opt/venv/bin/python install -c constraints.txt ".[${SERVICE}]"']
    copies = [rest.split()[0] for instruction, rest in build.instructions if instruction == "COPY"]
    assert copies == ["pyproject.toml", "lib", "services"]


@pytest.mark.parametrize("name", IMAGES)
def test_image_is_slim_non_root_without_pip_and_labelled(name: str) -> None:
    config = image_config(name, {"VERSION": "9.9.9", "REVISION": "abc123"})
    assert config.base_image.startswith("python:3.11-slim-bookworm@sha256:")
    assert [s.name for s in config.chain][0] == "runtime-base" and config.chain[-1].name == "runtime"
    assert name in [s.name for s in config.chain]
    instructions = [(i, rest) for stage in config.chain for i, rest in stage.instructions]
    runs = " ".join(rest for i, rest in instructions if i == "RUN")
    assert "pip install" not in runs and "python -m pip uninstall -y -q pip" in runs
    copies = [rest for i, rest in instructions if i == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv"]
    assert config.user.split(":")[0] not in ("0", "root")
    assert config.env["PATH"].startswith("/opt/venv/bin:")
    assert config.cmd == _rendered_command(name)
    labels = config.labels
    assert labels["org.opencontainers.image.title"] == f"loopwise-{name}"
    assert labels["org.opencontainers.image.version"] == "9.9.9"
    assert labels["org.opencontainers.image.revision"] == "abc123"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.base.name"] == config.base_image
    for key in ("created", "source", "description"):
        assert f"org.opencontainers.image.{key}" in labels
    if name in SERVICES:
        port = {"decision": 50051, "feedback": 50052, "trainer": 50053, "evaluator": 50054}[name]
        assert config.env[f"LOOPWISE_{name.upper()}_ADDRESS"] == f"0.0.0.0:{port}"
        assert port in config.expose
    openmp = "libgomp1" in runs
    assert openmp == (name in ("trainer", "evaluator")), name


def test_venvs_hold_no_pip(venvs: dict[str, Path]) -> None:
    """The image's venv is made --without-pip and filled from outside: no pip in it."""
    for name, venv in venvs.items():
        assert "pip" not in installed(venv), name
        assert not (venv / "bin" / "pip").exists(), name


def test_make_images_builds_the_five_images_from_the_one_dockerfile() -> None:
    makefile = (ROOT / "Makefile").read_text()
    target = makefile[makefile.index("\nimages:"):]
    target = target[:target.index("\n\n")]
    assert "for s in decision feedback trainer evaluator console" in target
    assert "--build-arg SERVICE=$$s" in target and "-f Dockerfile" in target
    for arg in ("VERSION", "REVISION", "CREATED"):
        assert f"--build-arg {arg}=" in target


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
