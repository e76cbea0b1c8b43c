"""Exploration seeds (docs/architecture.md §11): without LOOPWISE_SEED every process
draws its own seed from the operating system and logs it, so two fresh starts explore
differently; with it two starts draw the same actions. Real decision processes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.launcher import Launcher, free_port
from loopwise.seeds import worker_seed
from loopwise.settings import Settings
from tests.decision.helpers import blueprint
from tests.support import stack_env

ROWS = 2000


def _launcher(root: Path, seed: str, **env: str) -> Launcher:
    """A decision service alone (logging off) with LOOPWISE_SEED=``seed`` ("" = unset)."""
    values = {**stack_env(time.time()), "LOOPWISE_SEED": seed, "LOOPWISE_DECISION_LOG_ENABLED": "false",
              "LOOPWISE_LOG_FORMAT": "json", **env}
    return Launcher(root, env=values, ports={"decision": free_port(), "feedback": free_port(),
                                             "trainer": free_port(), "evaluator": free_port()})


def _explore(launcher: Launcher) -> list[int]:
    """Apply an exploring use case and return the actions of its first ROWS decisions."""
    with grpc.insecure_channel(launcher.address("decision")) as channel:
        stub = dgrpc.DecisionServiceStub(channel)
        stub.ApplyUseCase(dpb.ApplyUseCaseRequest(
            blueprint=blueprint(name="seeded", kind="action_value", explore_without_model=True)), timeout=30)
        rows = np.zeros((ROWS, 3), np.float32)
        reply = stub.DecideBatch(dpb.DecideBatchRequest(
            use_case="seeded", blueprint_version=1, rows=ROWS, feature_names=["x", "y", "country"],
            features=rows.tobytes(), unit_ids=[f"u{i}" for i in range(ROWS)]), timeout=30)
    return np.frombuffer(reply.action_indices, "<i4").tolist()


def _seed_lines(launcher: Launcher) -> list[dict]:
    """The JSON log lines that announce a seed."""
    lines = []
    for line in launcher.log_file("decision").read_text().splitlines():
        if line.startswith("{") and '"seed"' in line:
            entry = json.loads(line)
            if entry.get("logger") == "loopwise.seed":
                lines.append(entry)
    return lines


def _run(root: Path, seed: str, **env: str) -> tuple[list[int], list[dict]]:
    launcher = _launcher(root, seed, **env)
    try:
        launcher.start("decision")
        actions = _explore(launcher)
    finally:
        launcher.stop("decision")
    return actions, _seed_lines(launcher)


def test_fresh_starts_explore_differently_and_log_their_seed(tmp_path: Path) -> None:
    first, first_log = _run(tmp_path / "a", "")
    second, second_log = _run(tmp_path / "b", "")
    assert len(first) == len(second) == ROWS
    assert set(first) == {0, 1, 2}  # exploring among the three actions
    assert first != second
    # One line with the seed per process, each drawn from the operating system.
    assert len(first_log) == len(second_log) == 1
    assert first_log[0]["seed_source"] == second_log[0]["seed_source"] == "drawn from the operating system"
    assert first_log[0]["seed"] != second_log[0]["seed"]


def test_seeded_starts_draw_the_same_sequence(tmp_path: Path) -> None:
    first, first_log = _run(tmp_path / "a", "11")
    second, _ = _run(tmp_path / "b", "11")
    other, _ = _run(tmp_path / "c", "12")
    assert first == second
    assert other != first
    assert [(e["seed"], e["seed_source"]) for e in first_log] == [(11, "LOOPWISE_SEED")]


@pytest.mark.parametrize("seed", ["", "11"])
def test_each_worker_of_a_multi_worker_process_has_its_own_seed(tmp_path: Path, seed: str) -> None:
    launcher = _launcher(tmp_path, seed, LOOPWISE_DECISION_WORKERS="2")
    try:
        launcher.start("decision")
        deadline = time.monotonic() + 30
        while len(_seed_lines(launcher)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        launcher.stop("decision")
    lines = _seed_lines(launcher)
    assert sorted(e["worker"] for e in lines) == [0, 1]
    seeds = {e["worker"]: e["seed"] for e in lines}
    assert seeds[0] != seeds[1]
    if seed:  # reproducible: derived from the setting and the worker index
        assert seeds == {0: worker_seed(11, 0), 1: worker_seed(11, 1)}


def test_an_empty_seed_setting_is_unset() -> None:
    assert Settings(seed=None).seed is None
    assert Settings(seed=" ").seed is None
    assert Settings(seed=7).seed == 7
    with pytest.raises(ValueError):
        Settings(seed=-1)
