"""Backup and restore: ``loopwise backup export`` from one set of real services and
``loopwise backup import`` into fresh ones, then the restored installation serves the
restored model and matches the original."""

from __future__ import annotations

import hashlib
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from loopwise.cli import app
from loopwise.client import Client
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.launcher import Launcher
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.decision.helpers import blueprint, features, onnx_model
from tests.support import launcher_settings, new_launcher

runner = CliRunner()
SERVING = ("decision", "trainer")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """Decision and trainer holding what _populate puts there (read-only for the tests)."""
    launcher = new_launcher(tmp_path_factory.mktemp("source"))
    try:
        launcher.start_all(SERVING)
        _populate(launcher)
        yield launcher
    finally:
        launcher.stop_all(SERVING)


@pytest.fixture
def destination(tmp_path: Path) -> Iterator[Launcher]:
    launcher = new_launcher(tmp_path / "destination")
    try:
        launcher.start_all(SERVING)
        yield launcher
    finally:
        launcher.stop_all(SERVING)


def _env(launcher: Launcher) -> dict[str, str]:
    return {k: v for k, v in launcher.env.items() if k.startswith("LOOPWISE_")}


def _binary_onnx(seed: int) -> bytes:
    x = np.random.default_rng(seed).normal(size=(300, 3)).astype(np.float32)
    return onnx_model(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), 3)


def _register(trainer: tgrpc.TrainerServiceStub, use_case: str, onnx: bytes, blueprint_version: int,
              description: str) -> tpb.Model:
    model = tpb.Model(use_case=use_case, family="logistic_regression", input_width=3,
                      score_output="probabilities", blueprint_version=blueprint_version,
                      description=description, metrics={"auc": 0.75})
    return trainer.RegisterModel(tpb.RegisterModelRequest(
        request_id=f"{use_case}-{description}", model=model, onnx=onnx,
        sha256=hashlib.sha256(onnx).hexdigest()), timeout=30).model


def _populate(launcher: Launcher) -> None:
    """Two use cases: 'offer' with two blueprint versions, two models (v2 in production,
    v1 as shadow); 'paused' with its kill switch on and no models."""
    settings = launcher_settings(launcher)
    with Client(settings=settings) as client, grpc.insecure_channel(launcher.address("trainer")) as channel:
        client.apply_use_case(blueprint("offer"))
        second = blueprint("offer")
        second.description = "wider exploration"
        assert client.apply_use_case(second).use_case.version == 2
        client.apply_use_case(blueprint("paused"))
        client.set_kill_switch("paused", True, reason="incident")
        trainer = tgrpc.TrainerServiceStub(channel)
        _register(trainer, "offer", _binary_onnx(1), 1, "first")
        _register(trainer, "offer", _binary_onnx(2), 2, "second")
        trainer.SetDeployment(tpb.SetDeploymentRequest(
            request_id="deploy", use_case="offer", production_version=2, shadow_versions=[1],
            reason="better auc"), timeout=30)


def _snapshot(launcher: Launcher) -> dict:
    """What a restore must reproduce, without ids and times."""
    settings = launcher_settings(launcher)
    with Client(settings=settings) as client, grpc.insecure_channel(launcher.address("trainer")) as channel:
        trainer = tgrpc.TrainerServiceStub(channel)
        out = {}
        for uc in client.decision_stub.ListUseCases(dpb.ListUseCasesRequest(include_archived=True),
                                                    timeout=30).use_cases:
            name = uc.blueprint.use_case
            versions = [client.get_use_case(name, v).blueprint.SerializeToString(deterministic=True)
                        for v in range(1, uc.version + 1)]
            models = trainer.ListModels(tpb.ListModelsRequest(use_case=name), timeout=30).models
            deployment = None
            if models:
                stream = trainer.WatchDeployments(tpb.WatchDeploymentsRequest(use_cases=[name]), timeout=30)
                d = next(iter(stream)).deployment
                stream.cancel()
                deployment = (d.production.version, d.production.sha256, [s.version for s in d.shadows],
                              d.canary_share)
            out[name] = {
                "versions": versions, "kill_switch": uc.kill_switch, "archived": uc.archived,
                "models": sorted((m.version, m.artifact_sha256, m.blueprint_version, m.description,
                                  dict(m.metrics)) for m in models),
                "deployment": deployment,
            }
        return out


def _wait_for_model(launcher: Launcher, use_case: str, version: int) -> dpb.Decision:
    """Decide until the decision service serves ``version`` (it follows the trainer's
    deployments and downloads the model in the background)."""
    with Client(settings=launcher_settings(launcher), deadline_s=10) as client:
        deadline = time.monotonic() + 120
        while True:
            reply = client.decision_stub.Decide(dpb.DecideRequest(use_case=use_case, unit_id="u1",
                                                                  features=features()), timeout=10)
            if reply.decision.model_version == version or time.monotonic() > deadline:
                return reply.decision
            time.sleep(0.2)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and p.name != "manifest.json"}


def test_backup_round_trip_into_fresh_services(source: Launcher, destination: Launcher,
                                               tmp_path: Path) -> None:
    original = _snapshot(source)
    assert original["offer"]["deployment"][0] == 2 and original["paused"]["kill_switch"]

    # A directory and an archive of the same installation hold the same files.
    directory, out = tmp_path / "backup", tmp_path / "backup.tar.gz"
    for target in (directory, out):
        exported = runner.invoke(app, ["backup", "export", "--out", str(target)], env=_env(source))
        assert exported.exit_code == 0, exported.output
        assert "exported 2 use case(s), 3 blueprint version(s), 2 model(s), 1 deployment(s)" in exported.output
    assert (directory / "use_cases" / "offer" / "models" / "2.onnx").read_bytes() == _binary_onnx(2)
    unpacked = tmp_path / "unpacked"
    with tarfile.open(out) as archive:
        archive.extractall(unpacked, filter="data")
    assert _files(unpacked / "loopwise-backup") == _files(directory)

    restored = runner.invoke(app, ["backup", "import", str(out)], env=_env(destination))
    assert restored.exit_code == 0, restored.output
    assert "restored 2 use case(s), 3 blueprint version(s), 2 model(s), 1 deployment(s)" in restored.output
    assert _snapshot(destination) == original

    # The restored installation serves the restored production model, and the kill
    # switch still forces the default decision.
    decision = _wait_for_model(destination, "offer", 2)
    assert decision.model_version == 2 and not decision.fallback
    with Client(settings=launcher_settings(destination)) as client:
        paused = client.decision_stub.Decide(dpb.DecideRequest(use_case="paused", features=features()),
                                             timeout=10).decision
    assert paused.fallback and paused.action == "no"

    # A second import changes nothing: existing use cases are skipped, not duplicated.
    again = runner.invoke(app, ["backup", "import", str(out)], env=_env(destination))
    assert again.exit_code == 0, again.output
    assert "restored 0 use case(s)" in again.output and "skipped offer: exists" in again.output
    assert _snapshot(destination) == original


def test_import_refuses_what_is_not_a_backup(source: Launcher, tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "manifest.json").write_text('{"format": "something-else"}')
    done = runner.invoke(app, ["backup", "import", str(tmp_path / "junk")], env=_env(source))
    assert done.exit_code == 1 and "expected 'loopwise-backup/1'" in done.output


def test_export_refuses_a_non_empty_directory(source: Launcher, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    done = runner.invoke(app, ["backup", "export", "--out", str(tmp_path / "full")], env=_env(source))
    assert done.exit_code == 1 and "is not empty" in done.output
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
