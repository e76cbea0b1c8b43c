"""What a service image would run, without Docker: a wheel of loopwise built from the
files the Dockerfile copies, installed non-editable with one extra into its own venv
without pip (as the Dockerfile's build stage does: the base interpreter's pip installs
into a ``--without-pip`` venv), the image's ENV, CMD and USER read from the Dockerfile
stages its SERVICE build argument selects, and the container's command and environment
taken from the rendered manifest.

The venvs are cached under ``~/.cache/loopwise/image-venvs/<extra>-<key>``, the key
hashing the constraints, pyproject.toml and the Python version: a change of any
dependency builds a fresh venv. loopwise itself is reinstalled from a new wheel on
every run (``--no-deps --force-reinstall``), so the code under test is always the tree's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.deploy.tools import ROOT

CACHE = Path(os.environ.get("LOOPWISE_TOOLS_DIR", Path.home() / ".cache" / "loopwise" / "tools")).parent / "image-venvs"
DOCKERFILE = ROOT / "Dockerfile"
# What the Dockerfile copies into its build stage.
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
    digest.update(b"venv --without-pip")
    return digest.hexdigest()[:12]


def venv_for(extra: str, wheel: Path) -> Path:
    """A venv with ``loopwise[extra]`` installed from ``wheel`` (not editable)."""
    venv = CACHE / f"{extra}-{_key()}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        for stale in CACHE.glob(f"{extra}-*"):  # venvs of earlier dependency sets
            shutil.rmtree(stale, ignore_errors=True)
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
        # pip's own wheel cache, kept beside the venvs, makes a rebuild after a
        # dependency change an install from local wheels.
        _run([*_pip_into(python), "install", "-q", "--cache-dir", str(CACHE.parent / "pip"),
              "-c", str(ROOT / "constraints.txt"), f"{wheel}[{extra}]"])
        (venv / ".complete").write_text(wheel.name)
    else:
        _run([*_pip_into(python), "install", "-q", "--no-deps", "--force-reinstall", str(wheel)])
    return venv


def _pip_into(python: Path) -> list[str]:
    """pip of this interpreter installing into another environment (``pip --python``)."""
    return [sys.executable, "-m", "pip", "--python", str(python)]


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


@dataclass
class Stage:
    """One ``FROM`` stage of a Dockerfile: its base (an image or an earlier stage),
    its name and its instructions (continuation lines joined)."""

    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def dockerfile_stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    """The global ARG defaults (before the first FROM) and the stages of a Dockerfile."""
    joined = re.sub(r"\\\n", " ", text)
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), flags=re.IGNORECASE)
            assert match, line
            stages.append(Stage(match[1], match[2] or str(len(stages))))
        elif not stages:
            assert instruction == "ARG", line
            key, _, value = rest.partition("=")
            global_args[key.strip()] = value.strip().strip('"')
        else:
            stages[-1].instructions.append((instruction, rest.strip()))
    return global_args, stages


def _substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), text)


def _pairs(text: str) -> list[tuple[str, str]]:
    """``KEY=value KEY2="a b"`` pairs of an ENV or LABEL instruction."""
    return [(k, v.strip('"')) for k, v in re.findall(r'([\w.-]+)=("[^"]*"|\S*)', text)]


@dataclass
class ImageConfig:
    """What ``docker build --build-arg SERVICE=<service>`` would configure: the chain of
    stages from the base image to the final one, and the final ENV, LABELs, CMD, USER
    and EXPOSEd ports."""

    base_image: str
    chain: list[Stage]
    env: dict[str, str]
    labels: dict[str, str]
    cmd: list[str]
    user: str
    expose: list[int]


def image_config(service: str, build_args: dict[str, str] | None = None,
                 dockerfile: Path = DOCKERFILE) -> ImageConfig:
    """The runtime image's configuration for one SERVICE build argument."""
    global_args, stages = dockerfile_stages(dockerfile.read_text())
    args = {**global_args, "SERVICE": service, **(build_args or {})}
    by_name = {s.name: s for s in stages}
    chain = []
    stage = stages[-1]
    while True:
        chain.insert(0, stage)
        base = _substitute(stage.base, args)
        if base not in by_name:
            break
        stage = by_name[base]
    env: dict[str, str] = {}
    labels: dict[str, str] = {}
    cmd: list[str] = []
    user, expose = "root", []
    for stage in chain:
        scope = dict(args)  # ARGs are redeclared per stage; build args and defaults apply
        for instruction, rest in stage.instructions:
            if instruction == "ARG":
                key, _, default = rest.partition("=")
                scope[key] = args[key] if key in args else default.strip('"')
            elif instruction == "ENV":
                for key, value in _pairs(rest):
                    env[key] = _substitute(value, {**scope, **env})
            elif instruction == "LABEL":
                labels.update((k, _substitute(v, scope)) for k, v in _pairs(rest))
            elif instruction == "CMD":
                cmd = json.loads(rest)
            elif instruction == "USER":
                user = rest
            elif instruction == "EXPOSE":
                expose += [int(p) for p in rest.split()]
    return ImageConfig(_substitute(chain[0].base, args), chain, env, labels, cmd, user, expose)
