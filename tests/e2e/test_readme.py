"""The README's usage snippets run as written, against services that `make up` started.

A copy of the repository (its tracked files, so what a fresh clone has) gets the
project's virtual environment as its `.venv`, and the README's walk-through is run in
it in order: every ```sh block with bash (`set -e`; the venv's `bin` first on PATH, as
after `source .venv/bin/activate`), every ```python block with the venv's Python. The
first block is `make up`, given no settings: the environment has no LOOPWISE_* variable
at all, so the services start with the local credentials that `make up` creates and the
snippets connect through the profile it writes (mutual TLS and tokens). Any failing
block fails the test with its output. A block preceded by `<!-- readme: not run … -->`
is skipped and says why (e.g. `make test` itself). Then the command of the chart's
`helm test` hook (`python -m loopwise.smoke`) runs against the same services. `make
down` ends it and must leave no service running.

`make up` listens on the documented ports 50051-50054: the test fails with a clear
message when one is taken on this machine.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loopwise.launcher import DEFAULT_PORTS

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BLOCK = re.compile(r"(?P<skip><!-- readme: not run[^>]*-->\s*\n)?```(?P<lang>python|sh)\n(?P<code>.*?)```",
                   re.S)


def readme_blocks(text: str) -> list[tuple[str, str, bool]]:
    """(language, code, run) of every ```sh and ```python block, in order."""
    return [(m["lang"], m["code"], m["skip"] is None) for m in BLOCK.finditer(text)]


def _copy_repository(target: Path) -> None:
    """The tracked files of this checkout (as a fresh clone has them) and the venv."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if not source.is_file():
            continue
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    venv = Path(sys.prefix)
    # The copy shares this venv: `make up` in it must find the install stamp that the
    # Makefile expects for these very files, or it would reinstall the package from the
    # copy (and leave the venv pointing there).
    digest = subprocess.run("cat pyproject.toml setup.py constraints.txt | cksum", shell=True,
                            cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()[0]
    assert (venv / f".installed-{digest}").exists(), (
        f"{venv} was not installed from this checkout's pyproject.toml, setup.py and "
        "constraints.txt: run `make install` first")
    stamp = (venv / f".installed-{digest}").stat().st_mtime
    for name in ("pyproject.toml", "setup.py", "constraints.txt"):  # older than the stamp
        os.utime(target / name, (stamp - 1, stamp - 1))
    (target / ".venv").symlink_to(venv)


def _clean_env(venv_bin: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWISE_")}
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv_bin.parent)
    env.pop("PYTHONPATH", None)
    return env


def _run(command: list[str], cwd: Path, env: dict[str, str], what: str, timeout: float) -> str:
    started = time.monotonic()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    print(f"--- {what} ({time.monotonic() - started:.1f} s, exit {done.returncode})\n{output[-3000:]}")
    assert done.returncode == 0, f"{what} failed with exit {done.returncode}:\n{output[-6000:]}"
    return output


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_readme_blocks_are_found() -> None:
    """The walk-through starts with `make up` and has Python and shell blocks to run."""
    blocks = readme_blocks(README.read_text())
    run = [(lang, code) for lang, code, runs in blocks if runs]
    assert run[0] == ("sh", "make up\n") or run[0][1].startswith("make up\n"), run[0]
    assert any(lang == "python" for lang, _ in run) and sum(lang == "sh" for lang, _ in run) >= 3


@pytest.mark.timeout(600)
def test_readme_snippets_run_after_make_up(tmp_path: Path) -> None:
    """Every README block that is not marked runs without error, in order."""
    taken = [p for p in DEFAULT_PORTS.values() if _port_taken(p)]
    assert not taken, f"ports {taken} are in use on this machine: `make up` needs 50051-50054"
    clone = tmp_path / "loopwise"
    _copy_repository(clone)
    env = _clean_env(clone / ".venv" / "bin")
    python = str(clone / ".venv" / "bin" / "python")
    blocks = readme_blocks((clone / "README.md").read_text())
    try:
        for number, (lang, code, runs) in enumerate(blocks, 1):
            what = f"README block {number} ({lang}): {code.strip().splitlines()[0][:70]}"
            if not runs:
                print(f"--- {what}: not run (marked)")
                continue
            if lang == "sh":
                _run(["bash", "-e", "-o", "pipefail", "-c", code], clone, env, what, timeout=300)
            else:
                _run([python, "-c", code], clone, env, what, timeout=300)
        # The command of the chart's `helm test` hook, against this `make up`.
        smoke = _run([python, "-m", "loopwise.smoke"], clone, env, "python -m loopwise.smoke", 120)
        assert "smoke test passed" in smoke and "decide" in smoke
        local = clone / "var" / "local"
        assert (local / "profile.yaml").stat().st_mode & 0o077 == 0
        assert (local / "secrets" / "admin.token").stat().st_mode & 0o077 == 0
        # never committed: git ignores the local credentials
        assert subprocess.run(["git", "check-ignore", "-q", "var/local/secrets/admin.token"],
                              cwd=ROOT).returncode == 0
    finally:
        subprocess.run(["make", "down"], cwd=clone, env=env, capture_output=True, timeout=120)
    run_dir = clone / "var" / "run"
    left = sorted(p.name for p in run_dir.glob("*.pid")) if run_dir.exists() else []
    assert not left, f"make down left services running: {left}"
    assert not any(_port_taken(p) for p in DEFAULT_PORTS.values())


def test_readme_lists_every_rpc() -> None:
    """'The API at a glance' names every RPC of the four services."""
    from loopwise.decision.v1 import decision_service_pb2
    from loopwise.evaluator.v1 import evaluator_service_pb2
    from loopwise.feedback.v1 import feedback_service_pb2
    from loopwise.trainer.v1 import trainer_service_pb2

    text = README.read_text()
    section = text[text.index("## The API at a glance"):]
    section = section[:section.index("\n## ", 3)]
    missing = []
    for module in (decision_service_pb2, feedback_service_pb2, trainer_service_pb2, evaluator_service_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            head = section[section.index(f"`{service.full_name}`"):]
            head = head[:head.find("\n\n")]
            missing += [f"{service.name}.{m.name}" for m in service.methods if f"`{m.name}`" not in head]
    assert not missing, f"README's API section lacks {missing}"
