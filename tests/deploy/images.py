"""What a service image would run, without Docker: a wheel of loopwise built from the
files the Dockerfiles copy, installed non-editable with one extra into its own venv,
and the container's command and environment taken from the rendered manifest.

The venvs are cached under ``~/.cache/loopwise/image-venvs/<extra>-<key>``, the key
hashing the constraints, pyproject.toml and the Python version: a change of any
dependency builds a fresh venv. loopwise itself is reinstalled from a new wheel on
every run (``--no-deps --force-reinstall``), so the code under test is always the tree's.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.deploy.tools import ROOT

CACHE = Path(os.environ.get("LOOPWISE_TOOLS_DIR", Path.home() / ".cache" / "loopwise" / "tools")).parent / "image-venvs"
# What each Dockerfile copies into its build stage.
BUILD_CONTEXT = ("pyproject.toml", "setup.py", "README.md", "constraints.txt", "lib", "services")


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=1500, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return done


def build_wheel(out: Path) -> Path:
    """A loopwise wheel built from a copy of the Dockerfiles' build context."""
    context = out / "context"
    context.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in BUILD_CONTEXT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=ignore)
        else:
            shutil.copy2(source, context / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(out / "dist"), str(context)])
    (wheel,) = (out / "dist").glob("loopwise-*.whl")
    return wheel


def _key() -> str:
    digest = hashlib.sha256()
    for name in ("constraints.txt", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()[:12]


def venv_for(extra: str, wheel: Path) -> Path:
    """A venv with ``loopwise[extra]`` installed from ``wheel`` (not editable)."""
    venv = CACHE / f"{extra}-{_key()}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        for stale in CACHE.glob(f"{extra}-*"):  # venvs of earlier dependency sets
            shutil.rmtree(stale, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(venv)])
        # pip's own wheel cache, kept beside the venvs, makes a rebuild after a
        # dependency change an install from local wheels.
        _run([str(python), "-m", "pip", "install", "-q", "--cache-dir", str(CACHE.parent / "pip"),
              "-c", str(ROOT / "constraints.txt"), f"{wheel}[{extra}]"])
        (venv / ".complete").write_text(wheel.name)
    else:
        _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)])
    return venv


def installed(venv: Path) -> set[str]:
    """Normalised names of the distributions installed in a venv."""
    done = _run([str(venv / "bin" / "python"), "-c",
                 "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'] for d in m.distributions()))"])
    return {line.strip().lower().replace("_", "-") for line in done.stdout.splitlines() if line.strip()}


def container_env(objects: list[dict[str, Any]], container: dict[str, Any],
                  external_secrets: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """A container's environment as Kubernetes would set it: envFrom ConfigMaps, then
    env entries (values and Secret references resolved from the rendered objects, or
    from ``external_secrets`` for Secrets the operator creates)."""
    config_maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    secrets = dict(external_secrets or {})
    for obj in objects:
        if obj["kind"] == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
            secrets[obj["metadata"]["name"]] = {**data, **obj.get("stringData", {})}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def imported_modules(import_log: str) -> set[str]:
    """Top-level module names in a ``PYTHONPROFILEIMPORTTIME`` log (``-X importtime``)."""
    names = set()
    for line in import_log.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                names.add(name.split(".")[0])
    return names
