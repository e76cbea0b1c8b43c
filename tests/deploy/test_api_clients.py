"""The API beyond Python: buf lint, buf breaking against the committed v1 baseline, the
committed Go and TypeScript stubs in sync with protos/, and a Go and a JavaScript
program calling Decide and LogOutcomes on a real decision/feedback pair."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from loopwise.client import Client
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.launcher import Launcher
from tests.decision.helpers import blueprint
from tests.deploy.tools import ROOT, tool, tools_env
from tests.support import launcher_settings, new_launcher

BASELINE = ROOT / "protos" / "baseline" / "loopwise-v1.binpb"
GO_CLIENT = ROOT / "clients" / "go"
TS_CLIENT = ROOT / "clients" / "typescript"


def buf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("buf"), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_buf_lint() -> None:
    done = buf("lint")
    assert done.returncode == 0, done.stdout + done.stderr


def test_baseline_is_committed() -> None:
    """`buf breaking` compares with a committed image, not with the tree itself."""
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", str(BASELINE)], cwd=ROOT,
                             capture_output=True, text=True)
    assert tracked.returncode == 0, "protos/baseline/loopwise-v1.binpb must be committed"


def test_buf_breaking_against_the_v1_baseline(tmp_path: Path) -> None:
    done = buf("breaking", "--against", str(BASELINE))
    assert done.returncode == 0, done.stdout + done.stderr
    # A renumbered field and a removed RPC in a copy of the tree are caught.
    shutil.copytree(ROOT / "protos", tmp_path / "protos", ignore=shutil.ignore_patterns("baseline"))
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    proto = tmp_path / "protos" / "loopwise" / "decision" / "v1" / "decision_service.proto"
    text = proto.read_text()
    assert "  string unit_id = 2;\n" in text and "  rpc SetKillSwitch(" in text
    text = text.replace("  string unit_id = 2;\n", "  string unit_id = 42;\n", 1)
    text = "\n".join(line for line in text.splitlines() if not line.startswith("  rpc SetKillSwitch("))
    proto.write_text(text + "\n")
    broken = buf("breaking", "--against", str(BASELINE), cwd=tmp_path)
    assert broken.returncode != 0
    assert '"unit_id"' in broken.stdout and "SetKillSwitch" in broken.stdout, broken.stdout


STUBS = {  # language: (generator script, committed directory)
    "go": ("gen_go.sh", GO_CLIENT / "gen"),
    "typescript": ("gen_ts.sh", TS_CLIENT / "gen"),
}


@pytest.mark.parametrize("language", sorted(STUBS))
def test_stubs_match_protos(tmp_path: Path, language: str) -> None:
    script, committed = STUBS[language]
    out = tmp_path / "gen"
    done = subprocess.run(["bash", str(ROOT / "scripts" / script), str(out)], cwd=ROOT,
                          env=tools_env("buf"), capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert fresh == sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file())
    assert len(fresh) >= 10
    drifted = [str(p) for p in fresh if not filecmp.cmp(out / p, committed / p, shallow=False)]
    assert not drifted, f"{committed} drifted from protos/: {drifted}; run scripts/{script}"


@pytest.fixture(scope="module")
def smoke_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """The smoke program of each language, ready to run: the Go one built (the Go build
    cache makes it fast after the first time), the JavaScript one with its pinned
    packages installed (npm ci, skipped when node_modules matches the lock file)."""
    for command in ("go", "node", "npm"):
        if shutil.which(command) is None:
            pytest.fail(f"the client smoke tests need {command}")
    binary = tmp_path_factory.mktemp("go") / "smoke"
    done = subprocess.run(["go", "build", "-o", str(binary), "./cmd/smoke"], cwd=GO_CLIENT,
                          env={**os.environ, "CGO_ENABLED": "0"}, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run(["bash", str(ROOT / "scripts" / "npm_client.sh")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"go": [str(binary)], "typescript": ["node", str(TS_CLIENT / "smoke.mjs")]}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """Real decision and feedback services on free loopback ports, with a use case."""
    launcher = new_launcher(tmp_path_factory.mktemp("pair"))
    try:
        launcher.start_all(("decision", "feedback"))
        with Client(settings=launcher_settings(launcher)) as client:
            client.apply_use_case(blueprint("client_offer"))
        yield launcher
    finally:
        launcher.stop_all(("decision", "feedback"))


def _smoke(program: list[str], pair: Launcher, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*program, "--decision", pair.address("decision"), "--feedback", pair.address("feedback"),
                           *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("language", ["go", "typescript"])
def test_client_decides_and_logs_an_outcome(smoke_programs: dict[str, list[str]], pair: Launcher,
                                            language: str) -> None:
    done = _smoke(smoke_programs[language], pair, "--use-case", "client_offer", "--unit", f"unit-{language}",
                  "--feature", "x=1.5", "--feature", "y=2", "--feature", "country=de",
                  "--outcome", "purchase", "--value", "3.5")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    decision_id = uuid.UUID(result["decision_id"])
    assert decision_id.version == 7
    assert result["action"] in ("no", "yes") and result["fallback"]  # no model deployed
    assert 0.0 < result["probability"] <= 1.0
    assert (result["accepted"], result["duplicates"], result["retry_accepted"]) == (1, 1, 0)

    # The feedback service holds the decision (logged by the decision service) with the
    # client's outcome, stored once.
    with Client(settings=launcher_settings(pair)) as client:
        deadline = time.monotonic() + 60
        while True:
            try:
                reply = client.feedback_stub.GetDecision(fpb.GetDecisionRequest(
                    use_case="client_offer", decision_id=str(decision_id)), timeout=10)
                if reply.decision.decision_id:
                    break
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                    raise
            time.sleep(0.2)
    assert reply.decision.action == result["action"] and reply.decision.unit_id == f"unit-{language}"
    assert [(o.name, o.value) for o in reply.outcomes] == [("purchase", 3.5)]


@pytest.mark.parametrize("language", ["go", "typescript"])
def test_client_reports_errors(smoke_programs: dict[str, list[str]], pair: Launcher, language: str) -> None:
    done = _smoke(smoke_programs[language], pair, "--use-case", "no_such_use_case")
    assert done.returncode == 1
    assert "use case 'no_such_use_case' does not exist" in done.stderr, done.stderr
