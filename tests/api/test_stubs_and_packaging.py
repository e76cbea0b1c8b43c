"""The API stubs match the .proto files, and the wheel installs and imports cleanly."""

from __future__ import annotations

import filecmp
import importlib
import os
import pkgutil
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import gen_protos  # noqa: E402


def test_committed_stubs_match_protos(tmp_path: Path) -> None:
    """Regenerating the stubs gives byte-identical files (run `make proto` if this fails)."""
    protos = gen_protos.generate(tmp_path)
    assert len(protos) >= 6
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "protoc wrote nothing"
    drifted = [str(rel) for rel in generated if not filecmp.cmp(tmp_path / rel, ROOT / "lib" / rel, shallow=False)]
    assert not drifted, f"stubs drifted from protos/: {drifted}; run `make proto`"
    committed = {p.relative_to(ROOT / "lib") for p in (ROOT / "lib" / "loopwise").rglob("*_pb2*.py*")
                 if "__pycache__" not in p.parts}
    assert committed == set(generated), "stale stub files without a .proto"


def test_every_message_and_field_is_commented() -> None:
    """Each message, field, enum value, service and RPC has a comment line above it."""
    missing = []
    for proto in (ROOT / "protos").rglob("*.proto"):
        lines = proto.read_text().splitlines()
        for i, line in enumerate(lines):
            text = line.strip()
            if not text or text.startswith(("//", "}", "syntax", "package", "import", "option")):
                continue
            if text.startswith(("oneof",)):
                continue
            previous = lines[i - 1].strip() if i else ""
            if not previous.startswith("//"):
                missing.append(f"{proto.name}:{i + 1}: {text}")
    assert not missing, "\n".join(missing)


def _module_names(package_root: Path, prefix: str) -> list[str]:
    names = [prefix]
    for info in pkgutil.walk_packages([str(package_root)], prefix + "."):
        if not info.name.endswith(".__main__"):  # importing __main__ would start a service
            names.append(info.name)
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the source tree: setuptools builds into build/ and
    leaves there what was built before, so a module removed from lib/ would still ship
    from the tree's own build/."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("lib", "services"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(source)],
        check=True, capture_output=True,
    )
    return next(dist.glob("loopwise-*.whl"))


@pytest.mark.timeout(300)
def test_wheel_ships_the_type_marker_the_cli_package_and_its_entry_point(wheel: Path) -> None:
    """py.typed (PEP 561: type checkers read the SDK's annotations), the CLI package with
    its __main__, the SDK's errors, and the console script loopwise = loopwise.cli:main."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "loopwise/py.typed" in names
    assert {"loopwise/cli/__init__.py", "loopwise/cli/__main__.py", "loopwise/cli/common.py",
            "loopwise/client.py", "loopwise/client_errors.py"} <= names
    assert "loopwise/cli.py" not in names
    assert "loopwise = loopwise.cli:main" in entry_points


@pytest.mark.timeout(300)
def test_wheel_installs_into_fresh_venv_and_imports_every_module(wheel: Path, tmp_path: Path) -> None:
    """Install the wheel (without the source tree) and import every module; the console
    script and ``python -m loopwise.cli`` run."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # Reuse the already installed third-party packages, but not the editable source.
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    Path(site, "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    modules = _module_names(ROOT / "lib" / "loopwise", "loopwise")
    modules += _module_names(ROOT / "services", "loopwise.services")[1:]
    script = (
        "import importlib, sys, loopwise\n"
        f"assert loopwise.__file__.startswith({site!r}), loopwise.__file__\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(len(sys.modules))\n"
    )
    run = subprocess.run([str(python), "-c", script], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": ""}, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (env_dir / "bin" / "loopwise").exists(), "console script missing"
    clean = {**os.environ, "PYTHONPATH": ""}
    for command in ([str(env_dir / "bin" / "loopwise"), "--version"], [str(python), "-m", "loopwise.cli", "--version"]):
        done = subprocess.run(command, capture_output=True, text=True, env=clean, cwd=tmp_path)
        assert done.returncode == 0 and done.stdout.startswith("loopwise "), (command, done.stdout, done.stderr)
    typed = subprocess.run([str(python), "-c", "import importlib.resources as r; "
                            "print(r.files('loopwise').joinpath('py.typed').is_file())"],
                           capture_output=True, text=True, env=clean, cwd=tmp_path)
    assert typed.stdout.strip() == "True", typed.stderr


def test_modules_importable_from_source() -> None:
    """Every module of the source tree imports (catches broken imports early)."""
    for name in _module_names(ROOT / "lib" / "loopwise", "loopwise"):
        importlib.import_module(name)
