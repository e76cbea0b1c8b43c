"""StartTraining on a ranking use case through the running services: the trainer reads
the per-item rows, fits the per-item click model, blesses it by its prefix-IPS expected
clicks on the holdout rankings against the logged policy (the first model) and deploys
it; the greedy rankings it then serves beat a random ordering in exact expected clicks
(from the simulator). A second job is compared with the serving model. Run with -s for
the figures."""

from __future__ import annotations

import re
import time
import uuid

import numpy as np
import pytest

from loopwise.client import Client, OperationFailed
from loopwise.simulator.ranking import SHOWN, USE_CASE, ProductFeed
from loopwise.simulator.ranking_demo import _Feed
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from tests.support import launcher_settings, new_launcher

N_EXPLORE = 600
N_EXPLOIT = 150
TIMEOUT_S = 240.0


def _train(client: Client, deploy: bool) -> tpb.TrainingResult:
    operation = client.start_training(USE_CASE, deploy=deploy, request_id=uuid.uuid4().hex)
    operation = client.wait_operation(operation, TIMEOUT_S)
    result = tpb.TrainingResult()
    operation.result.Unpack(result)
    return result


def _values(reason: str) -> list[float]:
    """The two expected-click values a blessing reason states (candidate, compared)."""
    return [float(v) for v in re.findall(r" (\d+\.\d+) \[", reason)]


def test_start_training_blesses_a_ranking_model_that_beats_random(tmp_path) -> None:
    launcher = new_launcher(tmp_path / "var", seed=11, LOOPWISE_CLOCK_SPEED="240")
    settings = launcher_settings(launcher)
    world = ProductFeed(11, 10)
    try:
        launcher.start_all()
        with Client(settings=settings) as client:
            blueprint = world.blueprint(0.5, SHOWN, 60.0)
            blueprint.training.candidate_families[:] = ["linear", "hist_gradient_boosting"]
            client.apply_use_case(blueprint, reason="ranking training test")
            with pytest.raises(OperationFailed) as empty:  # no ranking logged yet
                _train(client, deploy=False)
            feed = _Feed(client, world)
            for _ in range(N_EXPLORE):
                request = world.sample_request()
                feed.click(request, feed.rank(request))
            feed.flush()
            deadline = time.monotonic() + TIMEOUT_S
            while sum(b.rows for b in client.read_training_data(USE_CASE)) < N_EXPLORE * SHOWN:
                assert time.monotonic() < deadline, "reward windows did not close"
                time.sleep(0.2)

            first = _train(client, deploy=False)
            version = first.model.version
            probe = world.sample_request()
            while client.rank(USE_CASE, *probe.named(), top_k=SHOWN).model_version != version:
                assert time.monotonic() < deadline + TIMEOUT_S, "the model never served"
                time.sleep(0.2)
            model_clicks, random_clicks = [], []
            for _ in range(N_EXPLOIT):
                request = world.sample_request()
                ranking = feed.rank(request, disable_exploration=True)
                order = np.array([request.item_ids.index(i) for i in ranking.ranked_ids])
                model_clicks.append(world.expected_clicks(request, order))
                random_clicks.append(world.random_clicks(request))

            second = _train(client, deploy=False)
    finally:
        launcher.stop_all()
    print(f"first job: {first.blessing.reason}; {first.deployment_reason}")
    print(f"stages: {dict(first.stage_seconds)}; closed windows at start {first.closed_windows_at_start}")
    print(f"candidates: {[(c.family, round(c.score, 4), c.chosen) for c in first.candidates]}")
    print(f"greedy rankings of v{version}: expected clicks {np.mean(model_clicks):.3f} vs random "
          f"{np.mean(random_clicks):.3f} over {N_EXPLOIT} requests")
    print(f"second job: {second.blessing.reason}; {second.deployment_reason}")
    assert "too few rows" in empty.value.error_message and "0 rankings" in empty.value.error_message
    assert first.blessing.blessed and first.blessing.compared_with == "logged policy"
    assert first.blessing.metric == "expected_clicks_prefix_ips" and first.deployed and version >= 1
    candidate, logged = _values(first.blessing.reason)
    assert candidate > logged
    assert abs(first.model.metrics["expected_clicks_prefix_ips"] - candidate) < 1e-3
    assert abs(first.model.baseline_metrics["expected_clicks_prefix_ips"] - logged) < 1e-3
    assert first.rows == N_EXPLORE * SHOWN and sum(c.chosen for c in first.candidates) == 1
    assert {"reading", "fitting", "blessing", "registering"} <= set(first.stage_seconds)
    assert np.mean(model_clicks) > np.mean(random_clicks)
    assert second.blessing.compared_with == f"model v{version}" and len(_values(second.blessing.reason)) == 2
    assert not second.deployed
