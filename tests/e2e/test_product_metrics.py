"""Product metrics on the simulator, through the SDK against the four real services.

The checkout world has two metrics with known effects per action: purchases (the offer
helps some units and hurts others) and returns (the offer raises the return rate, more
on mobile). A blueprint declares both, a value model and (first) a guardrail on returns:

- ReadTrainingData carries both metric columns, and the reward is their weighted sum;
- a model that would raise returns beyond the guardrail's tolerance is not blessed, and
  the reason names the guardrail;
- without the guardrail, the trained per-metric models are deployed and the policy
  picks the action that maximizes the weighted value;
- a new blueprint version with other weights (set with the CLI) changes decisions at
  once, with the same model (no retraining), towards the action best under the new
  weights; setting them back (asyncio client) restores the earlier decisions exactly.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import numpy as np
import pytest
from typer.testing import CliRunner

from loopwise.cli import app
from loopwise.client import AsyncClient, Client, Outcome, metric_columns, operation_result
from loopwise.clock import uuid7_time_ms
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.launcher import Launcher
from loopwise.settings import Settings
from loopwise.simulator import CheckoutUpsell
from loopwise.tensors import F32, I32, unpack_vector
from loopwise.trainer.v1 import trainer_service_pb2 as tpb

USE_CASE = "metrics_loop"
DECISIONS = 2400
WINDOW_S = 60  # simulated seconds: one real second with the test clock
PURCHASES_ONLY = {"purchase": 1.0, "returns": 0.0}
RETURNS_COST = {"purchase": 1.0, "returns": -20.0}


@dataclass(frozen=True)
class Logged:
    """The world, client settings and the first blueprint version."""

    world: CheckoutUpsell
    settings: Settings
    blueprint_version: int


def _blueprint(world: CheckoutUpsell, weights: dict[str, float], returns_tolerance: float | None) -> bp.Blueprint:
    blueprint = world.metrics_blueprint(weights, epsilon=0.0, returns_tolerance=returns_tolerance)
    blueprint.use_case = USE_CASE
    blueprint.training.CopyFrom(bp.TrainingSpec(min_rows=200, candidate_families=["linear"],
                                                candidate_budget_seconds=20))
    return blueprint


@pytest.fixture(scope="module")
def logged(stack, stack_settings: Settings) -> Logged:
    """DECISIONS uniformly explored decisions with their purchases and returns; returns
    once every window has closed."""
    world = CheckoutUpsell(seed=31, window_s=WINDOW_S)
    with Client(settings=stack_settings, deadline_s=10) as client:
        version = client.apply_use_case(_blueprint(world, PURCHASES_ONLY, 0.02)).use_case.version
        for _ in range(DECISIONS // 800):
            units = world.sample_units(800)
            batch = client.decide_batch(USE_CASE, version, list(world.feature_names), units.matrix)
            assert not batch.fallback.any() and batch.explored.all()
            times = np.array([uuid7_time_ms(d) for d in batch.decision_ids], dtype=np.int64)
            rows, values, event_ms = world.sample_outcomes(units, batch.action_indices, times)
            outcomes = [Outcome(USE_CASE, batch.decision_ids[i], f"p-{batch.decision_ids[i]}", "purchase",
                                float(value), event_time=ms / 1000)
                        for i, value, ms in zip(rows, values, event_ms, strict=True)]
            returned, return_ms = world.sample_returns(units, batch.action_indices, times)
            outcomes += [Outcome(USE_CASE, batch.decision_ids[i], f"r-{batch.decision_ids[i]}", "return", 1.0,
                                 event_time=ms / 1000) for i, ms in zip(returned, return_ms, strict=True)]
            client.log_outcomes(outcomes)
        deadline = time.monotonic() + 60
        while True:
            stats = client.get_stats(USE_CASE)
            if stats.decisions >= DECISIONS and stats.closed_windows >= DECISIONS:
                break
            assert time.monotonic() < deadline, f"windows not closed: {stats}"
            time.sleep(0.2)
    return Logged(world, stack_settings, version)


def _train(client: Client) -> tpb.TrainingResult:
    started = client.start_training(USE_CASE, request_id=f"metrics-{time.time_ns()}")
    final = client.wait_operation(started, timeout=120)
    assert final.state == op_pb.OPERATION_STATE_SUCCEEDED, final.error
    result = operation_result(final)
    assert isinstance(result, tpb.TrainingResult)
    return result


def test_training_data_has_a_column_per_metric_and_the_weighted_reward(logged: Logged) -> None:
    with Client(settings=logged.settings) as client:
        batches = list(client.read_training_data(USE_CASE))
    assert sum(b.rows for b in batches) == DECISIONS
    returns, actions = [], []
    for batch in batches:
        assert list(batch.metric_names) == ["purchase", "returns"]
        metrics = metric_columns(batch)
        rewards = unpack_vector(batch.rewards, F32)
        np.testing.assert_allclose(rewards, metrics["purchase"], rtol=1e-6)  # returns weigh 0 in version 1
        assert set(np.unique(metrics["returns"]).tolist()) <= {0.0, 1.0}  # counted: at most one return each
        returns.append(metrics["returns"])
        actions.append(unpack_vector(batch.action_indices, I32))
    r, a = np.concatenate(returns), np.concatenate(actions)
    # The offer raises returns by 0.1 + 0.4 × mobile (0.34 on average) from a base of 0.05.
    assert np.mean(r[a == 0]) == pytest.approx(0.05, abs=0.03)
    assert np.mean(r[a == 1]) - np.mean(r[a == 0]) == pytest.approx(0.34, abs=0.06)


def test_a_guardrail_breach_blocks_blessing_then_weights_steer_decisions_without_retraining(
        logged: Logged, stack: Launcher) -> None:
    world = logged.world
    with Client(settings=logged.settings, deadline_s=10) as client:
        # Version 1 guards returns (tolerance 0.02 per decision) while only purchases
        # count: the model offers wherever purchases rise, returns rise far more than
        # the tolerance against the default policy (never offer), so nothing is blessed.
        blocked = _train(client)
        assert not blocked.blessing.blessed
        assert "guardrail" in blocked.blessing.reason and "returns" in blocked.blessing.reason
        [check] = blocked.blessing.guardrails
        assert check.name == "guardrail:returns" and not check.passed and check.value > 0.02
        assert blocked.blessing.slices[0].candidate > blocked.blessing.slices[0].serving  # the value improved
        assert not blocked.HasField("model") or blocked.model.version == 0

        # Version 2 drops the guardrail: the per-metric models are blessed and deployed.
        v2 = client.apply_use_case(_blueprint(world, PURCHASES_ONLY, None)).use_case.version
        trained = _train(client)
        assert trained.blessing.blessed and trained.deployed, trained.deployment_reason
        model_version = trained.model.version
        units = world.sample_units(1500)
        deadline = time.monotonic() + 30
        while True:
            before = client.decide_batch(USE_CASE, v2, list(world.feature_names), units.matrix)
            if before.model_version == model_version:
                break
            assert time.monotonic() < deadline, "the model never reached the decision service"
            time.sleep(0.2)
        best_before = world.best_actions(units, PURCHASES_ONLY)
        assert np.mean(before.action_indices == best_before) >= 0.8

        # Version 3 charges 20 per return (set with the CLI): decisions change at once,
        # same model.
        env = {k: v for k, v in stack.env.items() if k.startswith("LOOPWISE_")}
        changed_by_cli = CliRunner().invoke(app, ["weights", "-u", USE_CASE, "returns=-20", "--output", "json"],
                                            prog_name="loopwise", env=env)
        assert changed_by_cli.exit_code == 0, changed_by_cli.output
        shown = json.loads(changed_by_cli.stdout)
        v3 = shown["version"]
        assert v3 == v2 + 1 and {m["metric"]: m["weight"] for m in shown["metrics"]} == RETURNS_COST
        assert client.get_use_case(USE_CASE).blueprint == _blueprint(world, RETURNS_COST, None)
        after = client.decide_batch(USE_CASE, v3, list(world.feature_names), units.matrix)
        assert after.model_version == model_version and after.blueprint_version == v3
        best_after = world.best_actions(units, RETURNS_COST)
        changed = np.mean(after.action_indices != before.action_indices)
        assert changed >= 0.15
        assert np.mean(after.action_indices == best_after) >= 0.8
        assert np.mean(after.action_indices == best_after) > np.mean(after.action_indices == best_before)
        # The new policy's weighted value is close to the best achievable under the new weights.
        value = world.expected_value(units, after.action_indices, RETURNS_COST).mean()
        old_policy = world.expected_value(units, before.action_indices, RETURNS_COST).mean()
        oracle = world.expected_value(units, best_after, RETURNS_COST).mean()
        assert value > old_policy and (oracle - value) < 0.5 * (oracle - old_policy)
        assert [m.version for m in client.list_models(USE_CASE)] == [model_version]  # nothing retrained

    # Back to purchases only through the asyncio client: version 4 decides exactly as
    # version 2 did (same model, same weights, no exploration).
    async def restore() -> int:
        async with AsyncClient(settings=logged.settings) as aclient:
            return (await aclient.set_value_weights(USE_CASE, {"returns": 0.0})).use_case.version

    v4 = asyncio.run(restore())
    with Client(settings=logged.settings, deadline_s=10) as client:
        again = client.decide_batch(USE_CASE, v4, list(world.feature_names), units.matrix)
    assert v4 == v3 + 1 and again.model_version == model_version
    np.testing.assert_array_equal(again.action_indices, before.action_indices)
