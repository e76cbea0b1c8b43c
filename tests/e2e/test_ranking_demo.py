"""The ranking loop through the running services: explore uniformly → clicks naming
their items → per-item training rows → per-item model (ONNX, position fixed at the
top) registered and deployed → greedy model-driven rankings. The rankings served by
the model close >= 50% of the gap in expected clicks between a random ordering and the
oracle (exact values from the simulator). Run with -s for the figures."""

from __future__ import annotations

import math
import time

import pytest

from loopwise.client import Client
from loopwise.client_errors import InvalidArgument
from loopwise.simulator.ranking import USE_CASE
from loopwise.simulator.ranking_demo import RankingDemoConfig, run_ranking_demo
from tests.support import launcher_settings, new_launcher


def test_ranking_demo_closes_the_gap(tmp_path) -> None:
    launcher = new_launcher(tmp_path / "var", seed=5, LOOPWISE_CLOCK_SPEED="240")
    settings = launcher_settings(launcher)
    began = time.monotonic()
    done: set[str] = set()

    def progress(stage: str, fraction: float, detail: str) -> None:
        if fraction >= 1.0 and stage not in done:
            done.add(stage)
            print(f"{time.monotonic() - began:6.1f} s  {stage}: {detail}")

    try:
        launcher.start_all()
        summary = run_ranking_demo(settings, RankingDemoConfig(n_explore=800, n_exploit=200, seed=5), progress)
        with Client(settings=settings) as client:  # EvaluatePolicy on the logged rankings
            evaluated = client.evaluate_policy(USE_CASE, model_version=summary.model_version)
            with pytest.raises(InvalidArgument) as refused:  # a ranking needs a model to evaluate
                client.evaluate_policy(USE_CASE, constant_action="x")
    finally:
        launcher.stop_all()
    for label, value in summary.rows():
        print(f"{label}: {value}")
    assert summary.item_rows == 800 * 5 and summary.model_version >= 1
    assert summary.clicks_random < summary.clicks_oracle
    assert summary.gap_closed >= 0.5, summary
    assert math.isfinite(summary.ips_estimate)
    print(f"EvaluatePolicy (model v{summary.model_version}, blueprint policy): prefix IPS {evaluated.ips_value:.3f} "
          f"[{evaluated.ips_ci_lower:.3f}, {evaluated.ips_ci_upper:.3f}] over {evaluated.rows} rankings, logged "
          f"{evaluated.logged_value:.3f}, ESS {evaluated.effective_sample_size:.1f}, warnings {list(evaluated.warnings)}")
    assert evaluated.rows >= 800 and evaluated.ips_ci_lower <= evaluated.ips_value <= evaluated.ips_ci_upper
    assert math.isfinite(evaluated.ips_value) and evaluated.logged_value > 0
    assert "model_version" in str(refused.value)
