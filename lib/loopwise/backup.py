"""Back up and restore what defines a loopwise installation, through the public RPCs.

A backup holds every use case (every blueprint version, the kill switch and the
archived flag), every model version with its ONNX artifact, and each use case's
current deployment. Decisions and outcomes are not in it: they live in the store,
which is backed up with the store's own tools (see docs/operations.md).

Layout of a backup directory (or of a ``.tar.gz`` archive of it)::

    manifest.json                                 format, creation time, counts
    use_cases/<use_case>/blueprints/<version>.json   UseCase messages (proto JSON)
    use_cases/<use_case>/models/<version>.json       Model messages
    use_cases/<use_case>/models/<version>.onnx       their artifacts
    use_cases/<use_case>/deployment.json             the Deployment in force, if any

A restore replays it into running services: ApplyUseCase for each blueprint version
in order, SetKillSwitch / ArchiveUseCase, RegisterModel for each model in version
order (checked by sha256), then SetDeployment with the restored versions. Use cases
that already exist at the destination are left untouched and reported as skipped.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.trainer.v1 import trainer_service_pb2 as tpb

FORMAT = "loopwise-backup/1"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
# Every current deployment arrives right after WatchDeployments opens; one that has
# not arrived by then does not exist (a use case with models never deployed).
DEPLOYMENT_WAIT_S = 10.0


@dataclass
class BackupSummary:
    """What an export wrote or an import restored."""

    use_cases: list[str] = field(default_factory=list)
    blueprint_versions: int = 0
    models: int = 0
    deployments: int = 0
    # Use cases left out of an import, with the reason.
    skipped: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The summary as plain data (manifest.json, CLI output)."""
        return {"use_cases": self.use_cases, "blueprint_versions": self.blueprint_versions,
                "models": self.models, "deployments": self.deployments, "skipped": self.skipped}


def _write_message(path: Path, message: Message) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json_format.MessageToJson(message, sort_keys=True) + "\n")


def _read_message(path: Path, message: Message) -> Any:
    return json_format.Parse(path.read_text(), message)


def _numbered(directory: Path, suffix: str) -> list[Path]:
    """Files ``<n><suffix>`` of a directory in numeric order."""
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"*{suffix}"), key=lambda p: int(p.name.removesuffix(suffix)))


# ---------------------------------------------------------------- export


def _all_use_cases(decision: Any, timeout: float) -> list[dpb.UseCase]:
    found: list[dpb.UseCase] = []
    token = ""
    while True:
        reply = decision.ListUseCases(dpb.ListUseCasesRequest(page_token=token, include_archived=True),
                                      timeout=timeout)
        found.extend(reply.use_cases)
        token = reply.next_page_token
        if not token:
            return found


def _deployments(trainer: Any, use_cases: list[str], wanted: set[str]) -> dict[str, tpb.Deployment]:
    """The deployment in force for each use case that has one."""
    found: dict[str, tpb.Deployment] = {}
    if not wanted:
        return found
    stream = trainer.WatchDeployments(tpb.WatchDeploymentsRequest(use_cases=use_cases),
                                      timeout=DEPLOYMENT_WAIT_S)
    try:
        for update in stream:
            found[update.deployment.use_case] = update.deployment
            if wanted <= set(found):
                break
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    finally:
        stream.cancel()
    return found


def _download(trainer: Any, model: tpb.Model, timeout: float) -> bytes:
    chunks = trainer.DownloadModel(tpb.DownloadModelRequest(use_case=model.use_case, version=model.version),
                                   timeout=timeout)
    data = b"".join(chunk.data for chunk in chunks)
    if hashlib.sha256(data).hexdigest() != model.artifact_sha256:
        raise RuntimeError(f"{model.use_case} model v{model.version}: downloaded bytes do not "
                           f"match sha256 {model.artifact_sha256}")
    return data


def export_to_directory(decision: Any, trainer: Any, root: Path, timeout: float = 60.0) -> BackupSummary:
    """Write a backup of the services behind the ``decision`` and ``trainer`` stubs
    (blocking stubs) into the empty or new directory ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    summary = BackupSummary()
    names: list[str] = []
    with_models: set[str] = set()
    for latest in _all_use_cases(decision, timeout):
        name = latest.blueprint.use_case
        names.append(name)
        base = root / "use_cases" / name
        for version in range(1, latest.version + 1):
            use_case = decision.GetUseCase(dpb.GetUseCaseRequest(use_case=name, version=version),
                                           timeout=timeout).use_case
            # The flags of the use case as it is now, on its latest version.
            if version == latest.version:
                use_case.kill_switch, use_case.archived = latest.kill_switch, latest.archived
            _write_message(base / "blueprints" / f"{version}.json", use_case)
            summary.blueprint_versions += 1
        models = trainer.ListModels(tpb.ListModelsRequest(use_case=name), timeout=timeout).models
        for model in sorted(models, key=lambda m: m.version):
            _write_message(base / "models" / f"{model.version}.json", model)
            (base / "models" / f"{model.version}.onnx").write_bytes(_download(trainer, model, timeout))
            summary.models += 1
            with_models.add(name)
    for name, deployment in _deployments(trainer, names, with_models).items():
        _write_message(root / "use_cases" / name / "deployment.json", deployment)
        summary.deployments += 1
    summary.use_cases = names
    manifest = {"format": FORMAT, "create_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **summary.as_dict()}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return summary


def export_backup(decision: Any, trainer: Any, target: Path, timeout: float = 60.0) -> BackupSummary:
    """Write a backup to ``target``: a directory, or a gzipped tar archive when the
    name ends in ``.tar.gz`` / ``.tgz``."""
    if not target.name.endswith(ARCHIVE_SUFFIXES):
        return export_to_directory(decision, trainer, target, timeout)
    if target.exists():
        raise FileExistsError(f"{target} exists")
    with tempfile.TemporaryDirectory() as tmp:
        summary = export_to_directory(decision, trainer, Path(tmp) / "backup", timeout)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(target, "w:gz") as archive:
            archive.add(Path(tmp) / "backup", arcname="loopwise-backup")
    return summary


# ---------------------------------------------------------------- import


@contextmanager
def opened_backup(source: Path) -> Iterator[Path]:
    """The backup directory of ``source`` (a directory or an archive, unpacked to a
    temporary directory); checks the format."""
    with tempfile.TemporaryDirectory() as tmp:
        root = source
        if source.is_file():
            with tarfile.open(source, "r:*") as archive:
                archive.extractall(tmp, filter="data")
            (root,) = [p.parent for p in Path(tmp).rglob("manifest.json")]
        manifest_path = root / "manifest.json"
        if not manifest_path.is_file():
            raise ValueError(f"{source}: no manifest.json, not a loopwise backup")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{source}: format {manifest.get('format')!r}, expected {FORMAT!r}")
        yield root


def _exists(decision: Any, name: str, timeout: float) -> bool:
    try:
        decision.GetUseCase(dpb.GetUseCaseRequest(use_case=name), timeout=timeout)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return False
        raise
    return True


def _restore_use_case(decision: Any, base: Path, new_id: Callable[[], str], author: str,
                      timeout: float) -> dict[int, int]:
    """Apply every blueprint version in order; returns backup version → restored version."""
    versions: dict[int, int] = {}
    latest = dpb.UseCase()
    for path in _numbered(base / "blueprints", ".json"):
        latest = _read_message(path, dpb.UseCase())
        reply = decision.ApplyUseCase(dpb.ApplyUseCaseRequest(
            request_id=new_id(), blueprint=latest.blueprint, author=author,
            reason=f"restored from backup (version {latest.version})"), timeout=timeout)
        versions[latest.version] = reply.use_case.version
    name = latest.blueprint.use_case
    if latest.kill_switch:
        decision.SetKillSwitch(dpb.SetKillSwitchRequest(
            request_id=new_id(), use_case=name, enabled=True, author=author,
            reason="restored from backup"), timeout=timeout)
    if latest.archived:
        decision.ArchiveUseCase(dpb.ArchiveUseCaseRequest(
            request_id=new_id(), use_case=name, archived=True, author=author,
            reason="restored from backup"), timeout=timeout)
    return versions


def _restore_models(trainer: Any, base: Path, blueprint_versions: dict[int, int],
                    new_id: Callable[[], str], timeout: float) -> dict[int, int]:
    """Register every model in version order; returns backup version → restored version."""
    versions: dict[int, int] = {}
    for path in _numbered(base / "models", ".json"):
        model = _read_message(path, tpb.Model())
        onnx = path.with_suffix(".onnx").read_bytes()
        model.blueprint_version = blueprint_versions.get(model.blueprint_version, model.blueprint_version)
        model.parent_version = versions.get(model.parent_version, 0)
        reply = trainer.RegisterModel(tpb.RegisterModelRequest(
            request_id=new_id(), model=model, onnx=onnx, sha256=model.artifact_sha256), timeout=timeout)
        versions[model.version] = reply.model.version
    return versions


def _restore_deployment(trainer: Any, base: Path, models: dict[int, int],
                        new_id: Callable[[], str], timeout: float) -> bool:
    path = base / "deployment.json"
    if not path.is_file():
        return False
    deployment = _read_message(path, tpb.Deployment())
    request = tpb.SetDeploymentRequest(
        request_id=new_id(), use_case=deployment.use_case, canary_share=deployment.canary_share,
        reason=f"restored from backup (revision {deployment.revision}): {deployment.reason}"[:500])
    if deployment.HasField("production"):
        request.production_version = models[deployment.production.version]
    if deployment.HasField("canary"):
        request.canary_version = models[deployment.canary.version]
    request.shadow_versions.extend(models[s.version] for s in deployment.shadows)
    trainer.SetDeployment(request, timeout=timeout)
    return True


def import_backup(decision: Any, trainer: Any, source: Path, new_id: Callable[[], str],
                  author: str = "backup", timeout: float = 60.0) -> BackupSummary:
    """Restore a backup (directory or archive) into the services behind the
    ``decision`` and ``trainer`` stubs; ``new_id`` makes request ids."""
    summary = BackupSummary()
    with opened_backup(source) as root:
        for base in sorted(p for p in (root / "use_cases").iterdir() if p.is_dir()):
            name = base.name
            if _exists(decision, name, timeout):
                summary.skipped[name] = "exists at the destination"
                continue
            blueprint_versions = _restore_use_case(decision, base, new_id, author, timeout)
            models = _restore_models(trainer, base, blueprint_versions, new_id, timeout)
            summary.deployments += _restore_deployment(trainer, base, models, new_id, timeout)
            summary.use_cases.append(name)
            summary.blueprint_versions += len(blueprint_versions)
            summary.models += len(models)
    return summary
