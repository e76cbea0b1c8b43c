"""The analyst's CLI against the evaluator and the test servers: ``loopwise report hte``,
``loopwise report list`` and ``loopwise export`` (Parquet and CSV)."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from loopwise.cli import app
from tests.evaluator.service import Estimated, Evaluator
from tests.evaluator.simulation import World

runner = CliRunner()
# Estimations share the machine with other test runs: be generous.
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture
def cli_env(world: World) -> dict[str, str]:
    """LOOPWISE_* variables pointing the CLI at the test servers and the evaluator."""
    s = world.settings
    return {"LOOPWISE_DECISION_ADDRESS": s.decision_address, "LOOPWISE_FEEDBACK_ADDRESS": s.feedback_address,
            "LOOPWISE_TRAINER_ADDRESS": s.trainer_address, "LOOPWISE_EVALUATOR_ADDRESS": s.evaluator_address,
            "LOOPWISE_ALLOW_PLAINTEXT": "true", "LOOPWISE_DATA_DIR": str(s.data_dir)}


async def invoke(args: list[str], env: dict[str, str]):
    """Run the CLI in a thread: its blocking calls must not stall the in-process evaluator."""
    return await asyncio.to_thread(runner.invoke, app, args, env=env)


async def test_report_hte_writes_the_report_and_lists_it(evaluator: Evaluator, estimated: Estimated,
                                                         cli_env: dict[str, str], tmp_path) -> None:
    out = tmp_path / "hte.html"
    result = await invoke(["report", "hte", "-u", "hte", "-o", str(out), "--segment", "x0", "--cost", "0.5"],
                          cli_env)
    assert result.exit_code == 0, result.output
    assert "ATE of treat vs control" in result.output and "report:" in result.output
    html = out.read_text()
    assert '<section id="policy">' in html and "0.5" in html
    listed = await invoke(["report", "list", "-u", "hte"], cli_env)
    assert listed.exit_code == 0, listed.output
    assert estimated.result.report_id[:8] in listed.output
    bad = await invoke(["report", "hte", "-u", "hte", "--estimator", "magic"], cli_env)
    assert bad.exit_code == 2


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
async def test_export_writes_the_joined_rows(world: World, cli_env: dict[str, str], tmp_path, suffix: str) -> None:
    out = tmp_path / f"hte.{suffix}"
    result = await invoke(["export", "-u", "hte", "-o", str(out)], cli_env)
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(out) if suffix == "parquet" else pd.read_csv(out)
    sim = world.hte
    assert len(frame) == len(sim.y)
    assert {"decision_id", "decision_time", "action", "propensity", "p_control", "p_treat", "p_other", "reward",
            "x0", "x1", "x2"} <= set(frame.columns)
    # Rows of blueprint v1 (other column and action order) are aligned by name.
    assert list(frame["action"]) == list(sim.actions)
    assert np.allclose(frame["x0"], sim.x[:, 0], atol=1e-6)
    assert np.allclose(frame["reward"], sim.y, atol=1e-4)
    assert np.allclose(frame["p_treat"], sim.probs["treat"], atol=1e-6)
