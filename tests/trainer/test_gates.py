"""The trainer's gates on scripted data: data validation, the latency budget, ONNX
parity of HistGradientBoosting, blessing against the serving model, lineage and
profiles, the start of a rollout, and the canary statistics over fixed seeds.

Candidate latency comes from a fixed probe (the injectable one), so the budget
tests do not depend on the machine's load.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
import pytest_asyncio

from loopwise.channels import ServiceChannels
from loopwise.clock import Clock
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.jobs import ProcessPool
from loopwise.services.trainer.candidates import (
    fixed_latency_probe,
    package_candidate,
    search_candidate,
)
from loopwise.services.trainer.data import Rows, importance_weights, shadow_rows
from loopwise.services.trainer.models import (
    PARITY_ATOL,
    PARITY_RTOL,
    TrainingSet,
    export_onnx,
    make_estimator,
    predict_scores,
    run_onnx,
)
from loopwise.services.trainer.registry import Registry
from loopwise.services.trainer.rollout import RolloutController
from loopwise.services.trainer.server import start_server
from loopwise.store.trainer import open_trainer_store
from loopwise.tensors import F32, I32, I64, pack
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from loopwise.upstream import DecisionUseCases, FeedbackTrainingData
from tests.trainer.worlds import T0_MS, World, batch, binary_blueprint, numeric, tier

FINAL = (op_pb.OPERATION_STATE_SUCCEEDED, op_pb.OPERATION_STATE_FAILED, op_pb.OPERATION_STATE_CANCELLED)
LATENCIES = {"logistic_regression": 0.2, "hist_gradient_boosting": 5.0, "random_forest": 5.0}
AA_SEEDS = range(20)


def rows_batches(x: np.ndarray, y: np.ndarray, names: list[str]) -> list:
    """Binary rows as one scripted batch (logged action 1 with probability 1)."""
    n = x.shape[0]
    return [batch(1, names, x, y, np.ones(n, dtype=np.int64), np.tile([0.0, 1.0], (n, 1)), 0)]


def add_use_case(world: World, blueprint: bp.Blueprint, x: np.ndarray, y: np.ndarray) -> None:
    """Register a use case (next blueprint version) and its rows in the scripted servers."""
    assert world.decision is not None
    versions = world.decision.blueprints.setdefault(blueprint.use_case, {})
    versions[max(versions, default=0) + 1] = blueprint
    world.feedback.data[blueprint.use_case] = rows_batches(x, y, [f.name for f in blueprint.features])


@pytest_asyncio.fixture(scope="module")
async def stub(world: World) -> AsyncIterator[tgrpc.TrainerServiceStub]:
    """An in-process trainer with a fixed latency probe."""
    host = await start_server(world.settings, latency_probe=fixed_latency_probe(LATENCIES))
    async with grpc.aio.insecure_channel(world.settings.trainer_address) as channel:
        yield tgrpc.TrainerServiceStub(channel)
    await host.stop(0)


async def run_job(stub: tgrpc.TrainerServiceStub, use_case: str) -> op_pb.Operation:
    operation = (await stub.StartTraining(tpb.StartTrainingRequest(use_case=use_case), timeout=10)).operation
    async for update in stub.WatchOperation(op_pb.WatchOperationRequest(id=operation.id), timeout=300):
        operation = update.operation
    assert operation.state in FINAL
    return operation


def result(operation: op_pb.Operation) -> tpb.TrainingResult:
    assert operation.state == op_pb.OPERATION_STATE_SUCCEEDED, operation.error_message
    out = tpb.TrainingResult()
    operation.result.Unpack(out)
    return out


def gaussian(n: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, width)).astype(np.float32)


async def test_validation_failures_stop_the_job_with_their_reasons(stub, world: World) -> None:
    x = gaussian(600, 2, 20)
    y = (x[:, 0] > 0).astype(np.float32)
    gappy = x.copy()
    gappy[np.random.default_rng(21).random(600) < 0.8, 1] = np.nan
    add_use_case(world, binary_blueprint("gappy", 2), gappy, y)
    add_use_case(world, binary_blueprint("flat", 2), x, np.zeros(600, np.float32))
    for use_case, words in (("gappy", ["x1", "missing"]), ("flat", ["positive-label rate 0.0000"])):
        operation = await run_job(stub, use_case)
        assert operation.state == op_pb.OPERATION_STATE_FAILED
        assert operation.error_message.startswith("data validation failed, no model trained")
        assert all(w in operation.error_message for w in words), operation.error_message
        models = await stub.ListModels(tpb.ListModelsRequest(use_case=use_case), timeout=5)
        assert not models.models


async def test_drift_against_the_previous_training_set_fails_the_job(stub, world: World) -> None:
    x = gaussian(800, 3, 22)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.float32)
    add_use_case(world, binary_blueprint("drift", 3), x, y)
    first = result(await run_job(stub, "drift"))
    assert first.model.version == 1
    assert not [c for c in first.validation if c.check == "drift_psi"]  # nothing to compare with yet
    shifted = x.copy()
    shifted[:, 2] += 3.0
    world.feedback.data["drift"] = rows_batches(shifted, y, ["x0", "x1", "x2"])
    operation = await run_job(stub, "drift")
    assert operation.state == op_pb.OPERATION_STATE_FAILED
    assert "x2: PSI" in operation.error_message and "x0: PSI" not in operation.error_message


async def test_latency_budget_picks_the_best_candidate_that_fits(stub, world: World) -> None:
    x = gaussian(800, 3, 23)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.float32)  # trees win on quality, but are too slow here
    add_use_case(world, binary_blueprint("budget", 3, latency_budget_ms=1.0), x, y)
    out = result(await run_job(stub, "budget"))
    by_family = {c.family: c for c in out.candidates}
    assert set(by_family) == set(LATENCIES)
    assert out.model.family == "logistic_regression" and by_family["logistic_regression"].chosen
    assert out.model.latency_p99_ms == pytest.approx(0.2)
    for family in ("hist_gradient_boosting", "random_forest"):
        assert not by_family[family].within_budget and "latency budget" in by_family[family].error
        assert by_family[family].score > by_family["logistic_regression"].score
    assert all(c.configurations >= 1 and c.params and c.fit_seconds > 0 for c in out.candidates)
    add_use_case(world, binary_blueprint("budget", 3, latency_budget_ms=0.01), x, y)
    operation = await run_job(stub, "budget")
    assert operation.state == op_pb.OPERATION_STATE_FAILED and "no candidate is usable" in operation.error_message


def test_hist_gradient_boosting_exports_with_parity() -> None:
    rng = np.random.default_rng(24)
    x = rng.normal(size=(3000, 6)).astype(np.float32) * 50.0  # large values: float32 sums differ most
    x[rng.random(x.shape) < 0.1] = np.nan
    y = (np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) > 0).astype(np.int64)
    data = TrainingSet(kind="binary", n_actions=2, x_train=x[:2400], y_train=y[:2400],
                       x_holdout=x[2400:], y_holdout=y[2400:])
    searched = search_candidate("hist_gradient_boosting", data, 7, 60.0)
    onnx, parity = package_candidate(searched.fit.estimator, data)
    assert parity.ok, parity.reason
    expected = predict_scores(searched.fit.estimator, "binary", data.x_holdout.astype(np.float64))
    got = run_onnx(onnx, "probabilities", data.x_holdout)
    assert np.all(np.abs(got - expected) <= PARITY_ATOL + PARITY_RTOL * np.abs(expected))
    regression = make_estimator("regression", "hist_gradient_boosting", 7)
    target = np.nan_to_num(x[:2400, 0]) * 1000.0
    regression.fit(x[:2400].astype(np.float64), target)
    values = run_onnx(export_onnx(regression, "regression", 6), "variable", x[2400:])[:, 0]
    reference = regression.predict(x[2400:].astype(np.float64))
    assert np.all(np.abs(values - reference) <= 1e-3 + PARITY_RTOL * np.abs(reference))


async def test_blessing_lineage_profiles_and_the_start_of_a_rollout(stub, world: World) -> None:
    rng = np.random.default_rng(25)
    n = 1500
    x = np.column_stack([rng.normal(size=(n, 2)), rng.integers(0, 3, n)]).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.float32)
    features = [numeric("x0"), numeric("x1"), tier(["gold", "silver", "bronze"])]
    base = bp.Blueprint(use_case="xor", kind=bp.DECISION_KIND_BINARY, actions=["no", "yes"], features=features,
                        slices=["tier"], training=bp.TrainingSpec(
                            candidate_families=["hist_gradient_boosting", "random_forest"]))
    add_use_case(world, base, x, y)
    first = result(await run_job(stub, "xor"))
    model = first.model
    assert first.deployed and first.blessing.blessed and first.blessing.compared_with == "default policy"
    assert [s.slice for s in first.blessing.slices] == ["all", "tier=gold", "tier=silver", "tier=bronze"]
    assert model.code_version.startswith("loopwise ") and model.parent_version == 0
    assert model.labelled_rows == n and model.blessing == first.blessing and len(model.artifact_sha256) == 64
    assert [p.name for p in model.feature_profiles] == ["x0", "x1", "tier"]
    for profile in model.feature_profiles:
        assert profile.count == model.training_rows
        assert sum(profile.bin_counts) + profile.missing_count == profile.count
    assert list(model.feature_profiles[2].vocabulary) == ["gold", "silver", "bronze"]
    assert len(model.feature_profiles[2].bin_counts) == 4 and len(model.feature_profiles[0].bin_edges) == 9
    assert set(first.stage_seconds) >= {"reading", "validating", "fitting", "exporting", "blessing"}
    scores = model.prediction_profile  # the reference of live prediction drift
    assert scores.count == model.training_rows and sum(scores.bin_counts) == scores.count
    assert len(scores.bin_counts) == len(scores.bin_edges) + 1 >= 5 and 0 < scores.quantiles[3] < 1

    # A deliberately worse candidate: only a linear model for an interaction.
    worse = bp.Blueprint()
    worse.CopyFrom(base)
    worse.training.candidate_families[:] = ["linear"]
    add_use_case(world, worse, x, y)
    rejected = result(await run_job(stub, "xor"))
    assert not rejected.blessing.blessed and rejected.blessing.compared_with == "model v1"
    assert not rejected.HasField("model") and rejected.deployment_reason.startswith("nothing registered")
    head = rejected.blessing.slices[0]
    assert head.slice == "all" and not head.passed and head.candidate > head.serving  # log loss: lower is better
    listed = await stub.ListModels(tpb.ListModelsRequest(use_case="xor"), timeout=5)
    assert [m.version for m in listed.models] == [1]

    # As good a model: blessed, registered with its parent, and rolled out from shadow.
    add_use_case(world, base, x, y)
    second = result(await run_job(stub, "xor"))
    assert second.blessing.blessed and second.model.version == 2 and second.model.parent_version == 1
    assert not second.deployed and second.rollout.step == tpb.ROLLOUT_STEP_SHADOW
    assert {c.check for c in second.validation} >= {"schema", "missing_rate", "label_rate", "drift_psi"}
    assert max(c.value for c in second.validation if c.check == "drift_psi") < 0.05
    rollout = (await stub.GetRollout(tpb.GetRolloutRequest(use_case="xor"), timeout=5)).rollout
    assert (rollout.model_version, rollout.production_version) == (2, 1)
    assert rollout.step == tpb.ROLLOUT_STEP_SHADOW
    audit = (await stub.ListDeploymentAudit(tpb.ListDeploymentAuditRequest(use_case="xor"), timeout=5)).entries
    assert [e.action for e in audit] == ["training", "rollout_shadow"]
    stages = []
    operation = (await stub.ListOperations(op_pb.ListOperationsRequest(use_case="xor"), timeout=5)).operations[0]
    assert operation.stage == "done"
    # A manual change supersedes the rollout at the next look.
    await stub.SetDeployment(tpb.SetDeploymentRequest(use_case="xor", production_version=1, reason="hold"),
                             timeout=5)
    for _ in range(200):
        rollout = (await stub.GetRollout(tpb.GetRolloutRequest(use_case="xor"), timeout=5)).rollout
        stages.append(rollout.step)
        if rollout.step == tpb.ROLLOUT_STEP_SUPERSEDED:
            break
        await asyncio.sleep(0.1)
    assert rollout.step == tpb.ROLLOUT_STEP_SUPERSEDED


async def test_watch_operation_streams_every_stage(stub, world: World) -> None:
    x = gaussian(600, 2, 26)
    add_use_case(world, binary_blueprint("stages", 2), x, (x[:, 0] > 0).astype(np.float32))
    operation = (await stub.StartTraining(tpb.StartTrainingRequest(use_case="stages"), timeout=10)).operation
    seen = []
    async for update in stub.WatchOperation(op_pb.WatchOperationRequest(id=operation.id), timeout=300):
        seen.append((update.operation.stage, update.operation.message))
    stages = [s for s, _ in seen]
    for stage in ("reading_data", "validating", "fitting", "exporting", "blessing", "registering", "rollout", "done"):
        assert stage in stages, stages
    fitting = [m for s, m in seen if s == "fitting"]
    assert [m.split(":")[0] for m in fitting] == ["candidate 1 of 3", "candidate 2 of 3", "candidate 3 of 3"]


def canary_batch(versions: np.ndarray, rewards: np.ndarray, latencies_ms: np.ndarray | None = None) -> object:
    """Scripted joined rows of an action-value use case served by two model versions."""
    n = versions.size
    response = batch(1, ["x0"], np.zeros((n, 1), np.float32), rewards, np.zeros(n, np.int64),
                     np.tile([0.5, 0.5], (n, 1)), 0)
    response.model_versions = pack(versions, I64)
    response.action_indices = pack(np.zeros(n), I32)
    response.propensities = pack(np.full(n, 0.5), F32)
    if latencies_ms is not None:
        response.serving_latencies_ms = pack(latencies_ms, F32)
    return response


class Canaries:
    """A rollout controller of its own over scripted feedback: each look puts a use
    case's model v2 in canary next to production v1 and advances it once."""

    def __init__(self, world: World, tmp_path) -> None:
        settings = world.settings.model_copy(update={"data_dir": tmp_path / "var"})
        self.world = world
        self.store = open_trainer_store(settings)
        self.pool = ProcessPool(1)
        self.channels = ServiceChannels(settings)
        clock = Clock.from_settings(settings)
        self.registry = Registry(self.store.registry, self.pool, clock, settings.model_chunk_bytes)
        self.controller = RolloutController(self.registry, self.store.registry, DecisionUseCases(self.channels),
                                            FeedbackTrainingData(self.channels), self.pool, clock, 60.0)
        self.onnx = export_onnx(make_estimator("binary", "linear", 0).fit(np.array([[0.0], [1.0]]), [0, 1]),
                                "binary", 1)

    async def look(self, use_case: str, rollout: bp.RolloutSpec, rows: object) -> tpb.Rollout:
        """One look at a canary whose period's joined rows are ``rows``."""
        assert self.world.decision is not None
        self.world.decision.blueprints[use_case] = {1: bp.Blueprint(
            use_case=use_case, kind=bp.DECISION_KIND_ACTION_VALUE, actions=["control", "treat"],
            features=[numeric("x0")], rollout=rollout)}
        for _ in range(2):
            await self.registry.add_model(tpb.Model(use_case=use_case, family="logistic_regression",
                                                    blueprint_version=1, input_width=1,
                                                    score_output="probabilities"), self.onnx, "")
        await self.registry.set_deployment(tpb.SetDeploymentRequest(
            use_case=use_case, production_version=1, canary_version=2, canary_share=0.1))
        self.world.feedback.data[use_case] = [rows]
        started = tpb.Rollout(use_case=use_case, model_version=2, production_version=1,
                              step=tpb.ROLLOUT_STEP_CANARY)
        started.step_start_time.FromMilliseconds(T0_MS)
        await self.store.registry.save_rollout(started)
        return await self.controller.advance(use_case)

    async def close(self) -> None:
        self.pool.shutdown()
        await self.channels.close()
        self.store.close()


async def test_canary_statistics_over_fixed_seeds(world: World, tmp_path) -> None:
    """A/A canaries (same reward and latency distributions) over 20 seeds at alpha 0.05
    roll back at most 3 times (expected 1); canaries worse by 0.15 in mean reward (0.30
    vs 0.15, 400 joined outcomes each, z about 5) are rolled back in at least 19 of 20."""
    canaries = Canaries(world, tmp_path)
    outcomes: dict[str, list[int]] = {"aa": [], "worse": []}
    try:
        for name, canary_mean in (("aa", 0.30), ("worse", 0.15)):
            for seed in AA_SEEDS:
                rng = np.random.default_rng(seed)
                versions = np.array([2] * 400 + [1] * 3600)
                means = np.where(versions == 2, canary_mean, 0.30)
                rewards = (rng.random(versions.size) < means).astype(np.float32)
                latencies = rng.lognormal(np.log(2.0), 0.5, versions.size)  # same for both slots
                final = await canaries.look(f"{name}{seed}", bp.RolloutSpec(canary_min_outcomes=400,
                                                                            canary_alpha=0.05),
                                            canary_batch(versions, rewards, latencies))
                assert final.step in (tpb.ROLLOUT_STEP_PROMOTED, tpb.ROLLOUT_STEP_ROLLED_BACK)
                assert final.joined_outcomes == 400
                assert [g.name for g in final.guardrails][:2] == ["canary_fallback_rate", "canary_latency_p99"]
                outcomes[name].append(int(final.step == tpb.ROLLOUT_STEP_ROLLED_BACK))
    finally:
        await canaries.close()
    print(f"A/A rollbacks {sum(outcomes['aa'])} of 20; worse-canary rollbacks {sum(outcomes['worse'])} of 20")
    assert sum(outcomes["aa"]) <= 3
    assert sum(outcomes["worse"]) >= 19


async def test_a_canary_over_the_latency_guardrail_is_rolled_back(world: World, tmp_path) -> None:
    """Same rewards, but the canary's serving latency is 3x production's (30 vs 10 ms): rolled back on
    the first look, before its reward is judged, with the latency guardrail as the
    reason; a ratio that allows it, or a check turned off, lets the same canary on."""
    canaries = Canaries(world, tmp_path)
    versions = np.array([2] * 150 + [1] * 850)
    rewards = np.full(versions.size, 0.3, np.float32)
    latencies = np.where(versions == 2, 30.0, 10.0) + np.random.default_rng(0).uniform(0, 0.1, versions.size)
    rows = canary_batch(versions, rewards, latencies)
    try:
        slow = await canaries.look("slow", bp.RolloutSpec(canary_min_outcomes=400), rows)
        assert slow.step == tpb.ROLLOUT_STEP_ROLLED_BACK
        latency = next(g for g in slow.guardrails if g.name == "canary_latency_p99")
        assert not latency.passed and latency.value == pytest.approx(30.1, abs=0.01)
        assert latency.threshold == pytest.approx(1.5 * 10.1, abs=0.01)
        assert "canary p99 serving latency" in slow.message and "rolled back to production v1" in slow.message
        assert "reward" not in slow.message  # judged before the reward
        deployment = await canaries.registry.current_deployment("slow")
        assert deployment.production.version == 1 and not deployment.canary.version
        last = (await canaries.registry.audit("slow"))[-1]
        assert last.action == "rollout_rollback" and "p99 serving latency" in last.reason
        for name, spec in (("tolerant", bp.RolloutSpec(canary_min_outcomes=400, canary_max_latency_ratio=4.0)),
                           ("unchecked", bp.RolloutSpec(canary_min_outcomes=400, canary_max_latency_ratio=-1))):
            waiting = await canaries.look(name, spec, rows)
            assert waiting.step == tpb.ROLLOUT_STEP_CANARY, waiting.message  # waits for 400 joined outcomes
            assert next(g for g in waiting.guardrails if g.name == "canary_latency_p99").passed
        unmeasured = await canaries.look("old_records", bp.RolloutSpec(canary_min_outcomes=400),
                                         canary_batch(versions, rewards))
        assert unmeasured.step == tpb.ROLLOUT_STEP_CANARY
        assert "not judged yet" in next(g for g in unmeasured.guardrails if g.name == "canary_latency_p99").detail
    finally:
        await canaries.close()


def test_rows_of_shadow_only_models_are_left_out_of_training() -> None:
    times = np.array([100, 200, 300, 400, 500], dtype=np.int64)
    versions = np.array([1, 2, 1, 2, 2], dtype=np.int64)
    rows = Rows(np.zeros((5, 1), np.float32), times, np.zeros(5, np.int64), np.ones(5), np.ones(5),
                ["", "", "", "", ""], 5, model_versions=versions)
    first, shadow, canary = (tpb.Deployment(production=tpb.ModelRef(version=1)) for _ in range(3))
    shadow.shadows.add(version=2)
    canary.canary.CopyFrom(tpb.ModelRef(version=2))
    for deployment, at in ((first, 50), (shadow, 150), (canary, 450)):
        deployment.update_time.FromMilliseconds(at)
    drop = shadow_rows(rows, [canary, shadow, first])
    assert drop.tolist() == [False, True, False, True, False]
    kept = rows.without(drop)
    assert kept.read == 3 and kept.model_versions.tolist() == [1, 1, 2] and kept.dropped["shadow"] == 2


def test_importance_weights_correct_for_the_logging_policy() -> None:
    w = importance_weights(np.array([0.5, 0.25, 0.01, np.nan, 0.0]))
    raw = np.array([2.0, 4.0, 20.0, 1.0, 1.0])  # 1/p, clipped at 20; unknown propensities weigh 1
    assert np.allclose(w, raw / raw.mean()) and w.mean() == pytest.approx(1.0)


async def test_unusable_rollout_settings_fail_at_start(stub, world: World) -> None:
    x = gaussian(300, 2, 27)
    add_use_case(world, binary_blueprint("badshare", 2, rollout=bp.RolloutSpec(canary_share=1.5)), x,
                 (x[:, 0] > 0).astype(np.float32))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.StartTraining(tpb.StartTrainingRequest(use_case="badshare"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "rollout.canary_share" in refused.value.details()
