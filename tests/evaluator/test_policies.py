"""EvaluatePolicy, SuggestParameters and the uplift policy served from the ONNX effect
model, against the simulated ``hte`` world (true effects known); cancellation, job
timeouts and client deadlines stop the worker process."""

from __future__ import annotations

import asyncio
import multiprocessing

import grpc
import numpy as np
import pytest
from google.protobuf import duration_pb2

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.services.decision.encoding import UseCaseVersion
from loopwise.services.decision.models import build_scorer
from loopwise.services.decision.policy import decide_rows
from loopwise.store.decision import BlueprintVersion
from loopwise.tensors import F32, F64, pack, unpack_vector
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from tests.evaluator.conftest import UPLIFT_COST
from tests.evaluator.service import Estimated, Evaluator, native_thread_pools, wait_final
from tests.evaluator.simulation import ACTIONS_V2, World, blueprint, mu0, simulate, tau

CALL_TIMEOUT_S = 600  # generous: the machine is shared
# Each test may start a few worker processes; on a busy shared machine that is slow.
pytestmark = pytest.mark.timeout(1200)


async def predicted(ev: Evaluator, report_id: str, x: np.ndarray) -> np.ndarray:
    """τ̂ of a report for rows x."""
    response = await ev.stub.PredictEffects(epb.PredictEffectsRequest(
        report_id=report_id, rows=len(x), feature_names=["x0", "x1", "x2"], features=pack(x, F32)), timeout=60)
    return unpack_vector(response.effects, F64)


def covers(estimate: epb.PolicyEstimate, truth: float) -> bool:
    """Whether the 95% CI covers the truth."""
    return estimate.ci_lower <= truth <= estimate.ci_upper


async def test_constant_policies_dr_and_ips_cover_the_truth(evaluator: Evaluator, world: World) -> None:
    x = world.hte.x
    truths = {"treat": float(np.mean(mu0(x) + tau(x))), "control": float(np.mean(mu0(x)))}
    for action, truth in truths.items():
        r = await evaluator.stub.EvaluatePolicy(
            epb.EvaluatePolicyRequest(use_case="hte", constant_action=action), timeout=CALL_TIMEOUT_S)
        assert r.rows == len(x)
        assert covers(r.doubly_robust, truth), (action, r.doubly_robust, truth)
        assert r.ips_ci_lower <= truth <= r.ips_ci_upper, (action, r.ips_value, truth)
        assert covers(r.snips, truth)
        # The reward model takes most of the noise away: DR is tighter than IPS.
        dr_width = r.doubly_robust.ci_upper - r.doubly_robust.ci_lower
        assert dr_width < r.ips_ci_upper - r.ips_ci_lower
        assert 0 < r.effective_sample_size < r.rows
        assert r.logged_value == pytest.approx(float(np.mean(world.hte.y)), abs=1e-3)


async def test_exploding_weights_are_warned(evaluator: Evaluator) -> None:
    # Treat-all's weights are 1 / (0.8·e(x)) on treated rows: ≥ 1.25, and far more where e is small.
    r = await evaluator.stub.EvaluatePolicy(
        epb.EvaluatePolicyRequest(use_case="hte", constant_action="treat", max_weight=5.0), timeout=CALL_TIMEOUT_S)
    assert r.max_importance_weight > 5.0
    assert any("weights blow up" in w for w in r.warnings)


async def test_missing_propensities_are_a_clear_error(evaluator: Evaluator) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await evaluator.stub.EvaluatePolicy(
            epb.EvaluatePolicyRequest(use_case="nopropensities", constant_action="treat"), timeout=CALL_TIMEOUT_S)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "missing propensities: 300 of 300" in info.value.details()


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"use_case": "hte"}, grpc.StatusCode.INVALID_ARGUMENT),  # no candidate
        ({"use_case": "hte", "constant_action": "treat", "report_id": "x"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"use_case": "hte", "constant_action": "upsell"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"use_case": "hte", "report_id": "no-such-report"}, grpc.StatusCode.NOT_FOUND),
        ({"use_case": "hte", "model_version": 99}, grpc.StatusCode.NOT_FOUND),
        ({"use_case": "nope", "constant_action": "treat"}, grpc.StatusCode.NOT_FOUND),
    ],
)
async def test_bad_candidates_are_refused(evaluator: Evaluator, fields: dict, code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await evaluator.stub.EvaluatePolicy(epb.EvaluatePolicyRequest(**fields), timeout=CALL_TIMEOUT_S)
    assert info.value.code() == code


async def test_uplift_candidates_from_a_report_and_its_registered_model_agree(
        evaluator: Evaluator, world: World, registered: epb.EstimateEffectsResult) -> None:
    x = world.hte.x
    variant = bp.Policy(action_costs={"treat": UPLIFT_COST})
    from_report = await evaluator.stub.EvaluatePolicy(epb.EvaluatePolicyRequest(
        use_case="hte", report_id=registered.report_id, policy_variant=variant), timeout=CALL_TIMEOUT_S)
    from_model = await evaluator.stub.EvaluatePolicy(epb.EvaluatePolicyRequest(
        use_case="hte", model_version=registered.cate_model.model_version, policy_variant=variant),
        timeout=CALL_TIMEOUT_S)
    # The ONNX model is the report's linear effect model in float32: the same decisions.
    assert from_model.doubly_robust.value == pytest.approx(from_report.doubly_robust.value, abs=1e-3)
    tau_hat = await predicted(evaluator, registered.report_id, x)
    # Reward net of the treatment's cost: the truth of "treat when τ̂ > cost".
    truth = float(np.mean(mu0(x) + (tau_hat > UPLIFT_COST) * tau(x)))
    assert covers(from_report.doubly_robust, truth)


async def test_uplift_policy_served_from_onnx_beats_treat_all_and_treat_none(
        world: World, registered: epb.EstimateEffectsResult, tmp_path) -> None:
    model, onnx = world.trainer.models[("hte", registered.cate_model.model_version)]
    assert model.source == "evaluator" and model.score_output == "value"
    assert model.input_width == registered.cate_model.input_width == 3 + len(ACTIONS_V2)
    assert registered.cate_model.family == "linear" and registered.cate_model.fidelity_r2 > 0.999
    path = tmp_path / "cate.onnx"
    path.write_bytes(onnx)
    served = blueprint("hte", 2)
    served.policy.type = bp.POLICY_TYPE_GREEDY
    served.default_decision.action = "control"
    served.policy.action_costs["treat"] = UPLIFT_COST
    uc = UseCaseVersion(BlueprintVersion("hte", 2, served, 0))
    ref = tpb.ModelRef(version=model.version, sha256=model.artifact_sha256, input_width=model.input_width,
                       score_output=model.score_output, blueprint_version=2)
    scorer = build_scorer("hte", ref, path, uc)
    units = simulate(20_000, seed=99)
    n = len(units.y)
    choices = decide_rows(uc, units.x.astype(np.float32), ["default"] * n, np.zeros(n), scorer,
                          np.random.default_rng(0))
    assert not choices.fallback.any()
    treated = choices.action_index == ACTIONS_V2.index("treat")
    net = tau(units.x) - UPLIFT_COST  # what treating one unit really brings, net of its cost

    def value(mask: np.ndarray) -> float:
        return float(np.mean(mask * net))

    uplift, treat_all, treat_none = value(treated), value(np.ones(n, bool)), value(np.zeros(n, bool))
    # Truth: treat-all −0.5, treat-none 0, the oracle (τ > 1.5 ⇔ x0 > 0.25) ≈ 0.55.
    assert uplift > treat_all + 0.5 and uplift > treat_none + 0.3
    assert np.mean(treated == (net > 0)) > 0.95


def _trials(response: epb.SuggestParametersResponse) -> list[float]:
    return [t.parameters["action_costs.treat"] for t in response.history]


async def test_suggest_parameters_finds_the_known_optimum(evaluator: Evaluator, estimated: Estimated,
                                                          world: World) -> None:
    x = world.hte.x
    response = await evaluator.stub.SuggestParameters(epb.SuggestParametersRequest(
        use_case="hte", report_id=estimated.result.report_id, parameters=["action_costs.treat"],
        ranges=[epb.ParameterRange(low=-1.5, high=3.0)], iterations=12, seed=5), timeout=CALL_TIMEOUT_S)
    cost = response.suggestion["action_costs.treat"]
    tau_hat = await predicted(evaluator, estimated.result.report_id, x)

    def true_value(c: float) -> float:
        return float(np.mean(mu0(x) + (tau_hat > c) * tau(x)))

    # Known optimum: treat exactly when the effect is positive, i.e. a cost of 0.
    best = max(true_value(c) for c in np.linspace(-1.5, 3.0, 451))
    assert abs(cost) <= 0.6
    assert true_value(cost) >= best - 0.05
    assert len(response.history) == 12 and all(-1.5 <= c <= 3.0 for c in _trials(response))
    assert response.ci_lower <= response.metrics["reward"] <= response.ci_upper
    assert response.expected_value_stddev >= 0
    assert response.expected_value == pytest.approx(response.metrics["reward"], abs=0.3)


async def test_suggest_parameters_respects_the_constraint(evaluator: Evaluator, estimated: Estimated,
                                                          world: World) -> None:
    # Through the running evaluator (its worker process), on the 3600 logged rows of hte.
    response = await evaluator.stub.SuggestParameters(epb.SuggestParametersRequest(
        use_case="hte", report_id=estimated.result.report_id, parameters=["action_costs.treat"],
        ranges=[epb.ParameterRange(low=-1.5, high=3.0)], iterations=12, seed=5,
        constraints=[epb.Constraint(metric="share:treat", max=0.3)]), timeout=CALL_TIMEOUT_S)
    cost = response.suggestion["action_costs.treat"]
    tau_hat = await predicted(evaluator, estimated.result.report_id, world.hte.x)
    # Value falls as the cost rises past 0, so the best feasible cost treats exactly 30%.
    boundary = float(np.quantile(tau_hat, 0.7))
    assert response.metrics["share:treat"] <= 0.3
    assert float(np.mean(tau_hat > cost)) <= 0.3 + 1e-9
    assert boundary - 0.05 <= cost <= boundary + 0.35
    assert len(response.history) == 12 and all(-1.5 <= c <= 3.0 for c in _trials(response))
    for trial in response.history:
        assert trial.feasible == (trial.metrics["share:treat"] <= 0.3)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"parameters": ["policy.nope"], "ranges": [{"low": 0, "high": 1}]}, "parameters"),
        ({"parameters": ["policy.epsilon"], "ranges": []}, "ranges"),
        ({"parameters": ["policy.epsilon"], "ranges": [{"low": 1, "high": 0}]}, "ranges"),
        ({"parameters": ["policy.epsilon"], "ranges": [{"low": 0, "high": 1}], "objective": "clicks"}, "objective"),
        ({"parameters": ["policy.epsilon"], "ranges": [{"low": 0, "high": 1}],
          "constraints": [{"metric": "share:treat"}]}, "constraints"),
    ],
)
async def test_suggest_parameters_rejects_bad_input(evaluator: Evaluator, estimated: Estimated,
                                                    fields: dict, field: str) -> None:
    from loopwise.errors import field_violations

    request = epb.SuggestParametersRequest(use_case="hte", report_id=estimated.result.report_id, **fields)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await evaluator.stub.SuggestParameters(request, timeout=CALL_TIMEOUT_S)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [f for f, _ in field_violations(info.value)]


async def _no_workers_left(timeout_s: float = 60.0) -> bool:
    """Wait until this process has no live child processes (the evaluator runs in-process)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while multiprocessing.active_children():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


async def test_a_worker_limits_the_native_threads_of_libraries_it_loads_later() -> None:
    from loopwise.services.evaluator.isolation import run_isolated

    pools = await run_isolated(native_thread_pools, threads=1)
    assert {api for api, _ in pools} >= {"openmp", "openblas"}
    assert all(threads == 1 for _, threads in pools), pools


async def test_cancel_operation_stops_the_worker(evaluator: Evaluator, estimated: Estimated) -> None:
    started = (await evaluator.stub.EstimateEffects(epb.EstimateEffectsRequest(
        use_case="hte", estimator=epb.ESTIMATOR_CAUSAL_FOREST_DML, forest_trees=2000, seed=21), timeout=60)).operation
    async for update in evaluator.stub.WatchOperation(op_pb.WatchOperationRequest(id=started.id), timeout=300):
        if update.operation.stage == "fitting":
            break
    assert multiprocessing.active_children()  # the worker is fitting the forest
    await evaluator.stub.CancelOperation(op_pb.CancelOperationRequest(id=started.id), timeout=30)
    final = await wait_final(evaluator, started.id)
    assert final.state == op_pb.OPERATION_STATE_CANCELLED
    assert await _no_workers_left()


async def test_a_job_past_its_timeout_fails_and_stops(evaluator: Evaluator, estimated: Estimated) -> None:
    started = (await evaluator.stub.EstimateEffects(epb.EstimateEffectsRequest(
        use_case="hte", estimator=epb.ESTIMATOR_CAUSAL_FOREST_DML, forest_trees=2000, seed=22,
        timeout=duration_pb2.Duration(seconds=3)), timeout=60)).operation
    final = await wait_final(evaluator, started.id)
    assert final.state == op_pb.OPERATION_STATE_FAILED
    assert final.error_code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert "timeout" in final.error_message
    assert await _no_workers_left()


async def test_a_client_deadline_stops_the_worker(evaluator: Evaluator, estimated: Estimated) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await evaluator.stub.SuggestParameters(epb.SuggestParametersRequest(
            use_case="hte", report_id=estimated.result.report_id, parameters=["action_costs.treat"],
            ranges=[epb.ParameterRange(low=-1.5, high=3.0)], iterations=100), timeout=1.0)
    # DEADLINE_EXCEEDED: the worker ran and was stopped at the deadline; RESOURCE_EXHAUSTED:
    # admission control refused the call at once, because this method's observed service
    # time (earlier calls in this module) exceeds the 1 s deadline. Either way no worker
    # may be left running.
    assert info.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert await _no_workers_left()
