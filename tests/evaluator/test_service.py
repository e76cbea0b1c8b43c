"""The evaluator over gRPC, against test decision, feedback and trainer servers on loopback:
estimation, reports, predictions, bad input."""

from __future__ import annotations

import base64
import re

import grpc
import numpy as np
import pytest

from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.errors import field_violations
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.evaluator.v1 import evaluator_service_pb2_grpc as egrpc
from loopwise.services.evaluator import formatting as F
from loopwise.services.evaluator.server import start_server
from loopwise.tensors import F32, F64, pack, unpack_vector
from tests.evaluator.service import SERVING, Estimated, Evaluator, wait_final
from tests.evaluator.simulation import World, arm_experiment, propensity, tau

# Estimations share the machine with other test runs: be generous.
pytestmark = pytest.mark.timeout(1200)


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
        epb.EstimateEffectsRequest(use_case="hte", request_id="hte-1"), timeout=60)).operation
    assert again.id == estimated.operation.id


REPORT_SECTIONS = ("verdict", "data-quality", "overlap", "nuisance", "ate", "cate-distribution", "effect-modifier",
                   "intervals", "segments", "validation", "policy", "refutation", "reproducibility")


def report_sections(html: str) -> dict[str, str]:
    """The report's sections by id, each with its inner HTML."""
    return dict(re.findall(r'<section id="([a-z-]+)">(.*?)</section>', html, flags=re.S))


def report_pngs(html: str) -> list[bytes]:
    """The embedded PNG images of a report."""
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    return [base64.b64decode(image) for image in images]


async def test_report_html_is_self_contained(evaluator: Evaluator, estimated: Estimated) -> None:
    report = await evaluator.stub.GetReport(epb.GetReportRequest(report_id=estimated.result.report_id), timeout=60)
    assert report.result == estimated.result
    html = report.html.decode("utf-8")
    sections = report_sections(html)
    assert set(REPORT_SECTIONS) <= set(sections)
    images = report_pngs(html)
    assert len(images) >= 5
    assert all(image[:8] == b"\x89PNG\r\n\x1a\n" for image in images)
    r = estimated.result
    assert F.with_ci(r.ate, r.ate_ci_lower, r.ate_ci_upper, sign=True) in sections["verdict"]
    assert "<code>x0</code>" in sections["effect-modifier"]  # the strongest effect modifier
    assert "placebo treatment" in sections["refutation"] and "random common cause" in sections["refutation"]
    assert "econml" in sections["reproducibility"]
    assert "http://" not in html and "https://" not in html


async def test_a_report_named_with_another_use_case_is_not_found(evaluator: Evaluator,
                                                               estimated: Estimated) -> None:
    """GetReport and PredictEffects with the report's use case find it (a token scoped to
    that use case may ask); with another use case the report is NOT_FOUND."""
    report_id, use_case = estimated.result.report_id, estimated.result.use_case
    found = await evaluator.stub.GetReport(epb.GetReportRequest(report_id=report_id, use_case=use_case),
                                           timeout=60)
    assert found.result.report_id == report_id
    for request in (epb.GetReportRequest(report_id=report_id, use_case="another_use_case"),
                    epb.PredictEffectsRequest(report_id=report_id, use_case="another_use_case", rows=1,
                                              feature_names=list(estimated.result.feature_names))):
        method = evaluator.stub.GetReport if isinstance(request, epb.GetReportRequest) \
            else evaluator.stub.PredictEffects
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await method(request, timeout=60)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert "another_use_case" in refused.value.details()


async def test_result_carries_every_report_part(estimated: Estimated, world: World) -> None:
    r = estimated.result
    # Overlap: the logged e(x) = sigmoid(0.8·x1 − 0.3) stays away from 0 and 1 here.
    assert not r.overlap.poor and 0 < r.overlap.effective_sample_size <= r.rows
    assert sum(r.overlap.treated_counts) == r.treated_rows
    assert sum(r.overlap.control_counts) == r.rows - r.treated_rows
    scores = {(s.model, s.metric): s.value for s in r.nuisance_scores}
    assert scores[("outcome", "r2")] > 0.3  # y = x1 + 0.5·x2² + T·τ(x) + noise is learnable
    assert 0.5 < scores[("treatment", "auc")] < 1.0
    # Segments: x0 drives τ = 1 + 2·x0, so the x0 quartiles' effects increase.
    tree = [s for s in r.segments if s.source == "tree"]
    assert tree and all("x0" in s.rule for s in tree)
    assert all(s.ci_lower <= s.effect <= s.ci_upper for s in r.segments)
    # Validation: real heterogeneity, well calibrated.
    assert r.validation.rows > 0 and r.validation.blp_slope > 0.5 and r.validation.blp_p_value < 0.01
    assert r.validation.qini_ci_lower > 0 and r.validation.calibration_r2 > 0.5
    # Policy (cost 0): treating those with τ̂ > 0 beats treating no one.
    values = {v.name: v for v in r.policy.values}
    assert set(values) == {"cate_policy", "treat_all", "treat_none"}
    assert values["cate_policy"].value > values["treat_none"].value
    assert 0.4 < r.policy.treated_share < 0.9  # true share with τ > 0: P(x0 > −0.5) ≈ 0.69
    refutations = {f.method: f for f in r.refutations}
    assert refutations["placebo_treatment"].passed
    assert refutations["placebo_treatment"].ci_lower <= 0 <= refutations["placebo_treatment"].ci_upper
    assert refutations["random_common_cause"].passed
    repro = r.reproducibility
    assert repro.rows_used == r.rows and repro.rows_read == len(world.hte.y) and repro.seed == 7
    assert "LinearDML" in repro.estimator_settings and "HistGradientBoosting" in repro.estimator_settings
    # Where the analysis works on samples is stated with the sizes used.
    assert f"DRTester on {r.validation.rows} held-out rows" in repro.estimator_settings
    assert f"refutations refitted on {r.rows} rows" in repro.estimator_settings
    assert {"econml", "scikit-learn", "numpy"} <= set(repro.versions)


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
            await evaluator.stub.PredictEffects(request, timeout=60)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in [f for f, _ in field_violations(info.value)]


async def test_unknown_report_is_not_found(evaluator: Evaluator) -> None:
    for call in (
        evaluator.stub.GetReport(epb.GetReportRequest(report_id="no-such-report"), timeout=60),
        evaluator.stub.PredictEffects(epb.PredictEffectsRequest(
            report_id="no-such-report", rows=1, feature_names=["x0"], features=b"\0" * 4), timeout=60),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_experiment_arms_as_treatments(evaluator: Evaluator) -> None:
    started = (await evaluator.stub.EstimateEffects(epb.EstimateEffectsRequest(
        use_case="arms", treatment_source=epb.TREATMENT_SOURCE_ARMS), timeout=60)).operation
    final = await wait_final(evaluator, started.id)
    assert final.state == op_pb.OPERATION_STATE_SUCCEEDED, final.error_message
    result = epb.EstimateEffectsResult()
    final.result.Unpack(result)
    sim, _ = arm_experiment(2000, seed=13)
    assert result.treatment_source == epb.TREATMENT_SOURCE_ARMS and not result.logged_propensities_used
    assert (result.treatment_action, result.control_action) == ("b", "a")  # the blueprint's 2nd and 1st arms
    assert result.rows == 2000 and result.treated_rows == int((sim.actions == "treat").sum())
    # The arms' traffic shares are the propensity: 0.7 / (0.7 + 0.3).
    assert result.min_propensity == pytest.approx(0.7) and result.max_propensity == pytest.approx(0.7)
    assert result.ate_ci_lower <= tau(sim.x).mean() <= result.ate_ci_upper


async def test_unknown_use_case_is_not_found_at_once(evaluator: Evaluator, world: World) -> None:
    reads = len(world.feedback.reads)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await evaluator.stub.EstimateEffects(epb.EstimateEffectsRequest(use_case="nope"), timeout=60)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(world.feedback.reads) == reads  # refused before any data was read
    listed = await evaluator.stub.ListOperations(op_pb.ListOperationsRequest(use_case="nope"), timeout=60)
    assert list(listed.operations) == []


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"use_case": ""}, "use_case"),
        ({"use_case": "hte", "treatment_action": "upsell"}, "treatment_action"),
        ({"use_case": "hte", "control_action": "nothing"}, "control_action"),
        ({"use_case": "hte", "treatment_action": "control"}, "treatment_action"),
        ({"use_case": "hte", "estimator": 9}, "estimator"),
        ({"use_case": "hte", "segment_features": ["nope"]}, "segment_features"),
        ({"use_case": "hte", "treatment_cost": -1.0}, "treatment_cost"),
        ({"use_case": "hte", "forest_trees": -4}, "forest_trees"),
        ({"use_case": "hte", "treatment_source": epb.TREATMENT_SOURCE_ARMS}, "treatment_source"),
    ],
)
async def test_bad_arguments_are_invalid(evaluator: Evaluator, request_fields: dict, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await evaluator.stub.EstimateEffects(epb.EstimateEffectsRequest(**request_fields), timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [f for f, _ in field_violations(info.value)]


@pytest.mark.parametrize(
    ("use_case", "reason"),
    [("tiny", "too few rows"), ("onesided", "single treatment value"), ("empty", "no joined decisions"),
     ("nooutcomes", "no outcomes joined"), ("constant", "constant features"), ("nooverlap", "no overlap")],
)
async def test_unusable_data_fails_the_operation(evaluator: Evaluator, use_case: str, reason: str) -> None:
    started = (await evaluator.stub.EstimateEffects(epb.EstimateEffectsRequest(use_case=use_case), timeout=60)).operation
    final = await wait_final(evaluator, started.id)
    assert final.state == op_pb.OPERATION_STATE_FAILED
    assert final.error_code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert reason in final.error_message


async def test_list_reports_newest_first_and_by_use_case(evaluator: Evaluator, estimated: Estimated,
                                                         registered: epb.EstimateEffectsResult) -> None:
    listed = (await evaluator.stub.ListReports(epb.ListReportsRequest(use_case="hte"), timeout=60)).reports
    ids = [r.report_id for r in listed]
    # Newest first (report ids are UUIDv7); other tests of the module add reports of "hte" too.
    assert ids == sorted(ids, reverse=True)
    assert ids.index(registered.report_id) < ids.index(estimated.result.report_id)
    assert (await evaluator.stub.ListReports(epb.ListReportsRequest(use_case="tiny"), timeout=60)).reports == []
    everything = (await evaluator.stub.ListReports(epb.ListReportsRequest(), timeout=60)).reports
    assert len(everything) >= 2


async def test_reports_and_predictions_survive_a_restart(world: World, estimated: Estimated) -> None:
    settings = world.settings.model_copy(update={"evaluator_address": "127.0.0.1:0"})
    host = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            stub = egrpc.EvaluatorServiceStub(channel)
            report = await stub.GetReport(epb.GetReportRequest(report_id=estimated.result.report_id), timeout=60)
            assert report.result == estimated.result
            response = await stub.PredictEffects(epb.PredictEffectsRequest(
                report_id=estimated.result.report_id, rows=1, feature_names=["x0", "x1", "x2"],
                features=pack(np.array([[1.0, 0.0, 0.0]]), F32)), timeout=30)
            assert unpack_vector(response.effects, F64)[0] == pytest.approx(3.0, abs=0.35)
            operation = (await stub.GetOperation(
                op_pb.GetOperationRequest(id=estimated.operation.id), timeout=60)).operation
            assert operation.state == op_pb.OPERATION_STATE_SUCCEEDED
    finally:
        await host.stop(0)
