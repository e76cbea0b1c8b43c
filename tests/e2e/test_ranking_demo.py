"""The ranking loop through the running services: explore uniformly → clicks naming
their items → per-item training rows → per-item model (ONNX, position fixed at the
top) registered and deployed → greedy model-driven rankings. The rankings served by
the model close >= 50% of the gap in expected clicks between a random ordering and the
oracle (exact values from the simulator). Run with -s for the figures."""

from __future__ import annotations

import math
import time

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
    finally:
        launcher.stop_all()
    for label, value in summary.rows():
        print(f"{label}: {value}")
    assert summary.item_rows == 800 * 5 and summary.model_version >= 1
    assert summary.clicks_random < summary.clicks_oracle
    assert summary.gap_closed >= 0.5, summary
    assert math.isfinite(summary.ips_estimate)
