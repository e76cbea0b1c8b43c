"""The report of the demo's world (checkout_upsell) renders as a readable page: a headless
Chromium screenshot of the HTML shows text and the embedded plots.

Chromium comes from Debian (``apt-get install chromium``; .ci/run installs it). Without
it the test is skipped locally, with the reason; in CI (CI=true) it fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from loopwise.services.evaluator.analysis import EffectTask, run_analysis
from loopwise.simulator.checkout import FEATURES, REGIONS, CheckoutUpsell

WIDTH, HEIGHT = 1280, 9000
# #3b75af, the report's plot colour, as RGB in [0, 1].
PLOT_BLUE = np.array([0x3B, 0x75, 0xAF]) / 255.0


def chromium() -> str:
    """The Chromium executable; skip locally (fail in CI) when there is none."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("CI needs chromium to check the rendered report (apt-get install chromium)")
    pytest.skip("no chromium on this machine: apt-get install chromium")


def demo_world_report(seed: int = 3, n: int = 3000) -> bytes:
    """The report of the demo's world: uniformly explored offers, purchases as rewards."""
    world = CheckoutUpsell(seed=seed)
    units = world.sample_units(n)
    rng = np.random.default_rng(seed)
    actions = (rng.random(n) < 0.5).astype(int)
    rows, amounts, _ = world.sample_outcomes(units, actions, np.zeros(n, dtype=np.int64))
    rewards = np.zeros(n)
    rewards[rows] = amounts
    task = EffectTask(
        x=units.matrix, t=actions, y=rewards, propensity=np.full(n, 0.5), times_ms=np.arange(n) * 1000,
        feature_names=list(FEATURES), estimator="LinearDML", seed=seed, rows_read=n,
        meta={"use_case": world.use_case, "report_id": "demo-report", "treatment": "offer",
              "control": "no_offer", "create_time": "2026-11-23T12:00:00Z"},
        categories={"region": list(REGIONS)}, segment_features=["region", "mobile"], treatment_cost=1.0,
    )
    with threadpool_limits(1):
        return run_analysis(task, lambda *_: None).html


@pytest.mark.timeout(900)
def test_demo_report_renders_as_a_readable_page(tmp_path) -> None:
    browser = chromium()
    html = demo_world_report()
    page = tmp_path / "report.html"
    page.write_bytes(html)
    shot = tmp_path / "report.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={shot}", page.as_uri()],
        check=True, capture_output=True, timeout=300,
    )
    import matplotlib.image

    image = matplotlib.image.imread(shot)[:, :, :3]
    assert image.shape[:2] == (HEIGHT, WIDTH)
    ink = np.any(image < 0.8, axis=2)  # text, tables and plots
    assert ink.mean() > 0.01
    # The plots were decoded and drawn: their blue fills a visible area, spread down the page.
    blue = np.all(np.abs(image - PLOT_BLUE) < 0.06, axis=2)
    assert blue.sum() > 5000
    rows_with_blue = np.flatnonzero(blue.any(axis=1))
    assert rows_with_blue.max() - rows_with_blue.min() > HEIGHT // 4
    # The page is laid out within the width (no horizontal overflow of the content column).
    assert not ink[:, WIDTH - 40:].any()
