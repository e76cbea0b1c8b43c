"""The canary of a ranking model through the running services: a first model trained
on few rankings (linear) serves production; a second StartTraining (boosting, on many
more rankings) is blessed against it by prefix-IPS expected clicks and starts a rollout
straight at the canary step (rankings have no shadow step); the rollout compares the
clicks per ranking of the canary's rankings with production's and ends promoted or
rolled back with both values recorded. Run with -s for the figures."""

from __future__ import annotations

import time
import uuid

from loopwise.client import Client
from loopwise.simulator.ranking import SHOWN, USE_CASE, ProductFeed
from loopwise.simulator.ranking_demo import _Feed
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from tests.support import launcher_settings, new_launcher

TIMEOUT_S = 240.0
CANARY_MIN_OUTCOMES = 150


def _train(client: Client) -> tpb.TrainingResult:
    operation = client.start_training(USE_CASE, request_id=uuid.uuid4().hex)
    operation = client.wait_operation(operation, TIMEOUT_S)
    result = tpb.TrainingResult()
    operation.result.Unpack(result)
    return result


def _serve(feed: _Feed, world: ProductFeed, n: int, offset: int) -> None:
    """``n`` rankings for new units (``user-<offset + k>``), their clicks logged."""
    for k in range(n):
        request = world.sample_request()
        context, items = request.named()
        ranking = feed.client.rank(USE_CASE, context, items, unit_id=f"user-{offset + k}", top_k=SHOWN)
        feed.served += 1
        feed.click(request, ranking)
    feed.flush()


def _wait_rows(client: Client, rows: int, deadline: float) -> None:
    while sum(b.rows for b in client.read_training_data(USE_CASE)) < rows:
        assert time.monotonic() < deadline, "reward windows did not close"
        time.sleep(0.2)


def test_a_ranking_model_rolls_out_through_a_canary(tmp_path) -> None:
    launcher = new_launcher(tmp_path / "var", seed=13, LOOPWISE_CLOCK_SPEED="240",
                            LOOPWISE_TRAINER_ROLLOUT_INTERVAL_S="0.5")
    settings = launcher_settings(launcher)
    world = ProductFeed(13, 10)
    try:
        launcher.start_all()
        with Client(settings=settings) as client:
            blueprint = world.blueprint(0.5, SHOWN, 60.0)
            blueprint.training.candidate_families[:] = ["linear"]
            blueprint.rollout.canary_share = 0.5
            blueprint.rollout.canary_min_outcomes = CANARY_MIN_OUTCOMES
            client.apply_use_case(blueprint, reason="ranking canary test")
            feed = _Feed(client, world)
            deadline = time.monotonic() + TIMEOUT_S
            _serve(feed, world, 60, 0)
            _wait_rows(client, 60 * SHOWN, deadline)
            first = _train(client)
            assert first.deployed, first.deployment_reason
            probe = world.sample_request()
            while client.rank(USE_CASE, *probe.named(), top_k=SHOWN).model_version != first.model.version:
                assert time.monotonic() < deadline, "the first model never served"
                time.sleep(0.2)
            _serve(feed, world, 600, 1000)
            _wait_rows(client, 661 * SHOWN, deadline)

            blueprint.training.candidate_families[:] = ["hist_gradient_boosting"]
            client.apply_use_case(blueprint, reason="ranking canary test: boosting")
            second = _train(client)
            assert second.blessing.blessed, second.blessing.reason
            assert second.rollout.step == tpb.ROLLOUT_STEP_CANARY and not second.deployed
            assert second.blessing.compared_with == f"model v{first.model.version}"
            offset = 10_000
            rollout = client.get_rollout(USE_CASE)
            while rollout.step == tpb.ROLLOUT_STEP_CANARY:
                assert time.monotonic() < deadline + TIMEOUT_S, f"the canary never ended: {rollout.message}"
                _serve(feed, world, 50, offset)
                offset += 50
                rollout = client.get_rollout(USE_CASE)
    finally:
        launcher.stop_all()
    print(f"first: {first.blessing.reason}")
    print(f"second: {second.blessing.reason}; {second.deployment_reason}")
    print(f"rollout: {tpb.RolloutStep.Name(rollout.step)}: {rollout.message}")
    print(f"canary clicks per ranking {rollout.canary_reward:.3f} over {rollout.decisions} rankings, production "
          f"{rollout.production_reward:.3f}")
    assert rollout.step in (tpb.ROLLOUT_STEP_PROMOTED, tpb.ROLLOUT_STEP_ROLLED_BACK)
    assert rollout.model_version == second.model.version and rollout.decisions >= CANARY_MIN_OUTCOMES
    # Clicks per ranking (a sum over the shown items), not per shown item.
    assert rollout.canary_reward > 0.4 and rollout.production_reward > 0.4
    assert any(g.name == "canary_reward" for g in rollout.guardrails)
