"""The effect report's intervals, verdict and data quality through the gRPC API, against
the test decision and feedback servers (tests.evaluator.simulation: true effect
τ(x) = 1 + 2·x0, reward "purchase", GetStats answering STATS)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.services.evaluator import formatting as F
from tests.evaluator.service import Estimated, Evaluator, wait_final
from tests.evaluator.simulation import MODEL_OF_VERSION, STATS, World, tau
from tests.evaluator.test_service import report_sections
from tests.evaluator.test_verdict import ENUM_CONSTANT, without_images

# Estimations share the machine with other test runs: be generous.
pytestmark = pytest.mark.timeout(1200)


async def test_forest_ate_has_a_proper_interval_through_the_api(evaluator: Evaluator, world: World) -> None:
    started = (await evaluator.stub.EstimateEffects(epb.EstimateEffectsRequest(
        use_case="hte", estimator=epb.ESTIMATOR_CAUSAL_FOREST_DML, forest_trees=24, seed=3), timeout=60)).operation
    final = await wait_final(evaluator, started.id)
    assert final.state == op_pb.OPERATION_STATE_SUCCEEDED, final.error_message
    r = epb.EstimateEffectsResult()
    assert final.result.Unpack(r)
    sim = world.hte
    pair = sim.pair()
    assert r.estimator == epb.ESTIMATOR_CAUSAL_FOREST_DML
    assert r.ate_ci_lower <= tau(sim.x[pair]).mean() <= r.ate_ci_upper
    # The normal interval of the doubly robust estimate, not EconML's conservative bound
    # (which was several times wider for a forest).
    assert r.ate_ci_upper - r.ate_ci_lower == pytest.approx(2 * 1.959963984540054 * r.ate_stderr, rel=1e-9)
    assert r.ate_ci_upper - r.ate_ci_lower < 0.3
    assert r.verdict.significant and r.ate_p_value < 0.0001
    assert "doubly robust (AIPW)" in r.reproducibility.estimator_settings
    check = r.interval_calibration
    assert check.rows == r.validation.rows == r.sample_split.estimation_rows
    assert check.nominal_coverage == 0.95 and 0 < check.coverage_upper_bound <= 1
    report = await evaluator.stub.GetReport(epb.GetReportRequest(report_id=r.report_id), timeout=60)
    sections = report_sections(report.html.decode("utf-8"))
    assert "EconML CausalForestDML" in report.html.decode("utf-8")
    assert "coverage of the true effect, at most" in sections["intervals"]


async def test_verdict_and_data_quality_through_the_api(evaluator: Evaluator, estimated: Estimated,
                                                        world: World) -> None:
    r = estimated.result
    v = r.verdict
    assert v.outcome_name == "purchase"
    assert v.outcome_definition == "the sum of “purchase” outcomes within 10 min of the decision; 0 when there is none"
    assert v.significant and v.relative_lift_defined
    assert v.control_mean_ci_lower < v.control_mean < v.control_mean_ci_upper
    q = r.data_quality
    assert q.stats_available and not q.stats_error
    assert (q.decisions, q.join_rate, q.orphan_outcomes, q.late_outcomes) == (
        STATS.decisions, STATS.join_rate, STATS.orphan_outcomes, STATS.late_outcomes)
    pair = world.hte.pair()
    v1_rows, v2_rows = int(pair[:1200].sum()), int(pair[1200:].sum())
    assert {(b.version, b.rows) for b in q.blueprint_versions} == {(1, v1_rows), (2, v2_rows)}
    assert {(m.version, m.rows) for m in q.model_versions} == {(MODEL_OF_VERSION[1], v1_rows),
                                                               (MODEL_OF_VERSION[2], v2_rows)}
    assert q.rows_with_outcome == r.rows
    assert any("arrived after their window" in note for note in q.notes)
    report = await evaluator.stub.GetReport(epb.GetReportRequest(report_id=r.report_id), timeout=60)
    html = report.html.decode("utf-8")
    sections = report_sections(html)
    assert list(sections)[0] == "verdict"
    assert "purchase" in sections["verdict"]
    assert F.with_ci(r.ate, r.ate_ci_lower, r.ate_ci_upper, sign=True) in sections["verdict"]
    assert "not significant" not in sections["verdict"]
    assert "90%" in sections["data-quality"] and "model v4" in sections["data-quality"]
    visible = without_images(html)
    assert ENUM_CONSTANT.findall(visible) == [] and "0.0000" not in visible
    # Segment effects come from the held-out rows only.
    tree = [s for s in r.segments if s.source == "tree"]
    assert sum(s.rows for s in tree) == r.sample_split.estimation_rows
    assert re.search(r"estimated on the [\d,]+ held-out rows only", sections["segments"])
    assert np.isfinite(r.ate_stderr) and r.ate_stderr > 0
