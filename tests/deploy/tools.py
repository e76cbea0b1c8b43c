"""Helpers of the deploy checks: the Go-built tools (helm, buf) cached by version, and
rendering the Helm chart.

The tools come from ``scripts/install_tools.sh`` (``go install`` into
``~/.cache/loopwise/tools/<name>-<version>``); CI installs them before the tests, so
here the script only finds them. Without Go they cannot be had, and the tests fail
(never skip)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "k8s" / "helm" / "loopwise"
CI_VALUES = CHART / "ci"
KUBE_VERSION = "1.33.0"
SERVICES = ("decision", "feedback", "trainer", "evaluator")


def tool(name: str) -> str:
    """The path of a Go-built tool (helm, buf, protoc-gen-go, protoc-gen-go-grpc)."""
    if shutil.which("go") is None:
        pytest.fail("Go is needed to build the deploy tools (helm, buf); install Go")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "install_tools.sh"), name],
                          capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        pytest.fail(f"installing {name} failed:\n{done.stderr[-3000:]}")
    return str(Path(done.stdout.strip().splitlines()[-1]) / name)


def tools_env(*names: str) -> dict[str, str]:
    """The environment with these tools' directories first on PATH."""
    dirs = [str(Path(tool(name)).parent) for name in names]
    return {**os.environ, "PATH": os.pathsep.join([*dirs, os.environ.get("PATH", "")])}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm; with ``check`` a failure fails the test with helm's message."""
    done = subprocess.run([tool("helm"), *args], capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{done.stderr}")
    return done


def template_args(values: list[Path] | None = None, sets: dict[str, Any] | None = None,
                  release: str = "lw") -> list[str]:
    """Arguments of ``helm template`` for a release with value files and --set pairs."""
    args = ["template", release, str(CHART), "--namespace", "loopwise",
            "--kube-version", KUBE_VERSION]
    for path in values or []:
        args += ["-f", str(path)]
    for key, value in (sets or {}).items():
        args += ["--set", f"{key}={value}"]
    return args


def render_text(values: list[Path] | None = None, sets: dict[str, Any] | None = None,
                release: str = "lw") -> str:
    """The rendered chart as YAML text (each distinct rendering runs helm once)."""
    return _rendered(tuple(template_args(values, sets, release)))


@functools.lru_cache(maxsize=64)
def _rendered(args: tuple[str, ...]) -> str:
    return helm(*args).stdout


def render(values: list[Path] | None = None, sets: dict[str, Any] | None = None,
           release: str = "lw") -> list[dict[str, Any]]:
    """The rendered chart as a list of Kubernetes objects."""
    return [doc for doc in yaml.safe_load_all(render_text(values, sets, release)) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The object of a kind and name (fails the test when it is missing)."""
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    pytest.fail(f"no {kind} {name} in {[(o['kind'], o['metadata']['name']) for o in objects]}")


def kubernetes_validate(*files: Path) -> subprocess.CompletedProcess[str]:
    """``kubernetes-validate --strict`` over rendered files (one process for all)."""
    exe = Path(sys.executable).with_name("kubernetes-validate")
    return subprocess.run([str(exe), "--strict", "-k", KUBE_VERSION, *map(str, files)],
                          capture_output=True, text=True, timeout=600)
