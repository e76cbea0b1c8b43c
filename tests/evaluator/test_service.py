"""The evaluator over gRPC, against test decision and feedback servers on loopback."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.errors import field_violations
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.evaluator.v1 import evaluator_service_pb2_grpc as egrpc
from loopwise.server import ServiceHost
from loopwise.services.evaluator.server import start_server
from loopwise.tensors import F32, F64, pack, unpack_vector
from tests.evaluator.simulation import World, propensity, tau

FINAL = (op_pb.OPERATION_STATE_SUCCEEDED, op_pb.OPERATION_STATE_FAILED, op_pb.OPERATION_STATE_CANCELLED)
SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass
class Evaluator:
    """A running evaluator and stubs to it."""

    host: ServiceHost
    stub: egrpc.EvaluatorServiceStub
    health: health_pb2_grpc.HealthStub
    address: str


@pytest_asyncio.fixture(scope="module")
async def evaluator(world: World) -> AsyncIterator[Evaluator]:
    """The evaluator in-process for the module."""
    host = await start_server(world.settings)
    address = world.settings.evaluator_address
    async with grpc.aio.insecure_channel(address) as channel:
        yield Evaluator(host, egrpc.EvaluatorServiceStub(channel), health_pb2_grpc.HealthStub(channel), address)
    await host.stop(0)


async def wait_final(ev: Evaluator, operation_id: str) -> op_pb.Operation:
    """Follow WatchOperation until the operation is final."""
    last = None
    async for update in ev.stub.WatchOperation(op_pb.WatchOperationRequest(id=operation_id), timeout=240):
        last = update.operation
    assert last is not None and last.state in FINAL
    return last


@dataclass
class Estimated:
    """The fixture estimation of use case ``hte`` and what was seen while it ran."""

    operation: op_pb.Operation
    result: epb.EstimateEffectsResult
    health: list[int]
    states: set[int]
    stages: list[str]


@pytest_asyncio.fixture(scope="module")
async def estimated(evaluator: Evaluator) -> Estimated:
    """Estimate effects for ``hte``, polling Health and the operation while it runs."""
    started = (await evaluator.stub.EstimateEffects(
        epb.EstimateEffectsRequest(use_case="hte", request_id="hte-1"), timeout=10)).operation
    assert started.kind == "estimate_effects"
    watched = asyncio.create_task(watched_stages(evaluator, started.id))
    health, states = [], set()
    operation = started
    for _ in range(20_000):
        operation = (await evaluator.stub.GetOperation(op_pb.GetOperationRequest(id=started.id), timeout=5)).operation
        states.add(operation.state)
        if operation.state in FINAL:
            break
        if operation.state == op_pb.OPERATION_STATE_RUNNING:
            check = await evaluator.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            health.append(check.status)
        await asyncio.sleep(0.02)
    assert operation.state == op_pb.OPERATION_STATE_SUCCEEDED, operation.error_message
    result = epb.EstimateEffectsResult()
    assert operation.result.Unpack(result)
    return Estimated(operation, result, health, states, await watched)


async def watched_stages(ev: Evaluator, operation_id: str) -> list[str]:
    """The distinct stages WatchOperation streams, in order."""
    stages: list[str] = []
    async for update in ev.stub.WatchOperation(op_pb.WatchOperationRequest(id=operation_id), timeout=240):
        if not stages or stages[-1] != update.operation.stage:
            stages.append(update.operation.stage)
    return stages


async def test_estimate_effects_recovers_the_true_effect(estimated: Estimated, world: World) -> None:
    result = estimated.result
    sim = world.hte
    pair = sim.pair()
    true_ate = tau(sim.x[pair]).mean()
    assert result.rows == int(pair.sum())
    assert result.treated_rows == int((sim.actions == "treat").sum())
    assert result.ate_ci_lower <= true_ate <= result.ate_ci_upper
    assert result.ate_ci_upper - result.ate_ci_lower < 0.3
    assert result.treatment_action == "treat" and result.control_action == "control"
    assert list(result.feature_names) == ["x0", "x1", "x2"]
    assert result.logged_propensities_used
    assert result.estimator == epb.ESTIMATOR_LINEAR_DML
    e = propensity(sim.x[pair])
    assert result.min_propensity == pytest.approx(e.min(), abs=1e-5)
    assert result.max_propensity == pytest.approx(e.max(), abs=1e-5)
    levels = [q.level for q in result.cate_quantiles]
    values = [q.value for q in result.cate_quantiles]
    assert levels == [0.05, 0.25, 0.5, 0.75, 0.95]
    assert values == sorted(values)
    true_quantiles = np.quantile(tau(sim.x[pair]), levels)
    assert np.allclose(values, true_quantiles, atol=0.4)
    assert result.create_time.seconds > 0
    # The watch starts after the job may have begun, so the first stage can be missed;
    # from "fitting" on, every stage is streamed, in order.
    stages = [stage for stage in estimated.stages if stage not in ("pending", "reading_data")]
    assert stages == ["fitting", "segments", "validating", "refuting", "reporting", "done"]


async def test_health_serves_while_the_job_runs(estimated: Estimated) -> None:
    assert op_pb.OPERATION_STATE_RUNNING in estimated.states
    assert len(estimated.health) >= 3
    assert all(status == SERVING for status in estimated.health)


async def test_request_id_returns_the_same_operation(evaluator: Evaluator, estimated: Estimated) -> None:
    again = (await evaluator.stub.EstimateEffects(
        epb.EstimateEffectsRequest(use_case="hte", request_id="hte-1"), timeout=10)).operation
    assert again.id == estimated.operation.id


async def test_report_html_is_self_contained(evaluator: Evaluator, estimated: Estimated) -> None:
    report = await evaluator.stub.GetReport(epb.GetReportRequest(report_id=estimated.result.report_id), timeout=10)
    assert report.result == estimated.result
    html = report.html.decode("utf-8")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) >= 3
    assert all(base64.b64decode(image)[:8] == b"\x89PNG\r\n\x1a\n" for image in images)
    for section in ("summary", "cate-distribution", "overlap", "effect-modifier", "coefficients"):
        assert f'<section id="{section}">' in html
    assert f"{estimated.result.ate:.4f}" in html
    assert "<code>x0</code>" in html  # the strongest effect modifier
    assert "http://" not in html and "https://" not in html


async def test_cate_correlates_with_the_true_effect(evaluator: Evaluator, estimated: Estimated, world: World) -> None:
    x = world.hte.x[:1000]
    response = await evaluator.stub.PredictEffects(epb.PredictEffectsRequest(
        report_id=estimated.result.report_id, rows=len(x), feature_names=["x0", "x1", "x2"],
        features=pack(x, F32)), timeout=30)
    effects = unpack_vector(response.effects, F64)
    assert effects.shape == (1000,)
    assert np.corrcoef(effects, tau(x))[0, 1] > 0.8


async def test_predict_effects_on_given_rows(evaluator: Evaluator, estimated: Estimated) -> None:
    x = np.array([[-1.0, 0.0, 0.0], [0.0, 1.0, -1.0], [1.0, -1.0, 1.0], [0.5, np.nan, 0.0]])
    response = await evaluator.stub.PredictEffects(epb.PredictEffectsRequest(
        report_id=estimated.result.report_id, rows=4, feature_names=["x0", "x1", "x2"],
        features=pack(x, F32)), timeout=30)
    effects = unpack_vector(response.effects, F64)
    lower = unpack_vector(response.effects_lower, F64)
    upper = unpack_vector(response.effects_upper, F64)
    assert np.allclose(effects, tau(np.nan_to_num(x)), atol=0.35)
    assert np.all(lower < effects) and np.all(effects < upper)


async def test_predict_effects_rejects_bad_input(evaluator: Evaluator, estimated: Estimated) -> None:
    report_id = estimated.result.report_id
    bad = [
        (epb.PredictEffectsRequest(report_id=report_id, rows=2, feature_names=["x0", "x1", "x2"],
                                   features=b"\0" * 20), "features"),
        (epb.PredictEffectsRequest(report_id=report_id, rows=1, feature_names=["x1", "x0", "x2"],
                                   features=b"\0" * 12), "feature_names"),
        (epb.PredictEffectsRequest(report_id=report_id, rows=0, feature_names=["x0", "x1", "x2"]), "rows"),
        (epb.PredictEffectsRequest(report_id=report_id, rows=1, feature_names=["x0", "x1", "x2"],
                                   features=pack(np.array([[np.inf, 0, 0]]), F32)), "features"),
    ]
    for request, field in bad:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await evaluator.stub.PredictEffects(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in [f for f, _ in field_violations(info.value)]


async def test_unknown_report_is_not_found(evaluator: Evaluator) -> None:
    for call in (
        evaluator.stub.GetReport(epb.GetReportRequest(report_id="no-such-report"), timeout=5),
        evaluator.stub.PredictEffects(epb.PredictEffectsRequest(
            report_id="no-such-report", rows=1, feature_names=["x0"], features=b"\0" * 4), timeout=5),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_unknown_use_case_is_not_found_at_once(evaluator: Evaluator, world: World) -> None:
    reads = len(world.feedback.reads)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await evaluator.stub.EstimateEffects(epb.EstimateEffectsRequest(use_case="nope"), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(world.feedback.reads) == reads  # refused before any data was read
    listed = await evaluator.stub.ListOperations(op_pb.ListOperationsRequest(use_case="nope"), timeout=5)
    assert list(listed.operations) == []


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"use_case": ""}, "use_case"),
        ({"use_case": "hte", "treatment_action": "upsell"}, "treatment_action"),
        ({"use_case": "hte", "control_action": "nothing"}, "control_action"),
        ({"use_case": "hte", "treatment_action": "control"}, "treatment_action"),
        ({"use_case": "hte", "estimator": 9}, "estimator"),
    ],
)
async def test_bad_arguments_are_invalid(evaluator: Evaluator, request_fields: dict, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await evaluator.stub.EstimateEffects(epb.EstimateEffectsRequest(**request_fields), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [f for f, _ in field_violations(info.value)]


@pytest.mark.parametrize(
    ("use_case", "reason"),
    [("tiny", "too few rows"), ("onesided", "single treatment value"), ("empty", "no joined decisions")],
)
async def test_unusable_data_fails_the_operation(evaluator: Evaluator, use_case: str, reason: str) -> None:
    started = (await evaluator.stub.EstimateEffects(epb.EstimateEffectsRequest(use_case=use_case), timeout=10)).operation
    final = await wait_final(evaluator, started.id)
    assert final.state == op_pb.OPERATION_STATE_FAILED
    assert final.error_code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert reason in final.error_message


async def test_list_reports_newest_first_and_by_use_case(evaluator: Evaluator, estimated: Estimated) -> None:
    second = (await evaluator.stub.EstimateEffects(
        epb.EstimateEffectsRequest(use_case="hte", seed=3, treatment_action="other"), timeout=10)).operation
    final = await wait_final(evaluator, second.id)
    assert final.state == op_pb.OPERATION_STATE_SUCCEEDED, final.error_message
    newer = epb.EstimateEffectsResult()
    final.result.Unpack(newer)
    assert newer.treatment_action == "other"
    listed = (await evaluator.stub.ListReports(epb.ListReportsRequest(use_case="hte"), timeout=5)).reports
    ids = [r.report_id for r in listed]
    assert ids[:2] == [newer.report_id, estimated.result.report_id]
    assert (await evaluator.stub.ListReports(epb.ListReportsRequest(use_case="tiny"), timeout=5)).reports == []
    everything = (await evaluator.stub.ListReports(epb.ListReportsRequest(), timeout=5)).reports
    assert len(everything) >= 2


async def test_later_versions_answer_unimplemented(evaluator: Evaluator) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await evaluator.stub.EvaluatePolicy(epb.EvaluatePolicyRequest(use_case="hte"), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await evaluator.stub.SuggestParameters(epb.SuggestParametersRequest(use_case="hte"), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_reports_and_predictions_survive_a_restart(world: World, estimated: Estimated) -> None:
    settings = world.settings.model_copy(update={"evaluator_address": "127.0.0.1:0"})
    host = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            stub = egrpc.EvaluatorServiceStub(channel)
            report = await stub.GetReport(epb.GetReportRequest(report_id=estimated.result.report_id), timeout=10)
            assert report.result == estimated.result
            response = await stub.PredictEffects(epb.PredictEffectsRequest(
                report_id=estimated.result.report_id, rows=1, feature_names=["x0", "x1", "x2"],
                features=pack(np.array([[1.0, 0.0, 0.0]]), F32)), timeout=30)
            assert unpack_vector(response.effects, F64)[0] == pytest.approx(3.0, abs=0.35)
            operation = (await stub.GetOperation(
                op_pb.GetOperationRequest(id=estimated.operation.id), timeout=5)).operation
            assert operation.state == op_pb.OPERATION_STATE_SUCCEEDED
    finally:
        await host.stop(0)
