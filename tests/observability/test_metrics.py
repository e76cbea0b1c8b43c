"""Every service's metrics endpoint answers, after real traffic, with the metrics the
operations issue names and values that follow from that traffic; the alert rules and
the dashboard only use metrics that the services expose."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.metrics import metrics_port
from tests.observability.helpers import (
    USE_CASE,
    families,
    free_port_block,
    sample,
    scrape,
    start_loop,
    training_rows,
    wait_until,
)

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
BATCH, SINGLE, STREAMED, JOINED = 300, 12, 7, 60


async def test_every_service_exposes_the_named_metrics_after_traffic(make_settings):
    base = free_port_block(4)
    settings = make_settings(metrics_port=base, decision_log_flush_interval_s=0.05, stats_interval_s=0.2,
                             drift_interval_s=0.2, drift_window_decisions=400, allow_plaintext=True)
    loop = await start_loop(settings, evaluator=True)
    ports = {s: metrics_port(settings, s) for s in ("decision", "feedback", "trainer", "evaluator")}
    try:
        x, labels = training_rows(400)
        model = await loop.register(x, labels, 1_700_000_000_000, 1_700_086_400_000)
        batch = await loop.decide_batch(training_rows(BATCH, seed=1)[0])
        ids = list(batch.decision_ids)
        decision = loop.decision
        for i in range(SINGLE):
            reply = await decision.Decide(dpb.DecideRequest(use_case=USE_CASE, unit_id=f"u{i}", features={
                "x": dpb.FeatureValue(number=0.1 * i), "y": dpb.FeatureValue(number=0.0),
                "country": dpb.FeatureValue(category="fr")}), timeout=30)
            ids.append(reply.decision.decision_id)
        streamed = [dpb.DecideRequest(use_case=USE_CASE, unit_id=f"s{i}", features={
            "x": dpb.FeatureValue(number=0.2 * i), "y": dpb.FeatureValue(number=1.0),
            "country": dpb.FeatureValue(category="fr")}) for i in range(STREAMED)]
        async for reply in decision.DecideStream(iter(streamed), timeout=30):
            ids.append(reply.decision.decision_id)
        try:
            await decision.Decide(dpb.DecideRequest(use_case="nope"), timeout=30)
        except Exception as exc:  # NOT_FOUND, counted with its code
            assert "nope" in str(exc)
        served = BATCH + SINGLE + STREAMED
        decided = await scrape(ports["decision"])

        async def logged() -> bool:
            # >=: a LogDecisions that timed out under load is sent again (stored idempotently)
            return (sample(await scrape(ports["feedback"]), "loopwise_feedback_decisions_logged_total",
                           use_case=USE_CASE) or 0) >= served

        await wait_until(logged)
        feedback = loop.feedback
        outcomes = [fpb.Outcome(use_case=USE_CASE, decision_id=d, outcome_id=f"o{k}", name="purchase", value=1.0)
                    for k, d in enumerate(ids[:JOINED])]
        outcomes.append(fpb.Outcome(use_case=USE_CASE, decision_id=ids[0], outcome_id="o0", name="purchase",
                                    value=1.0))  # a retry: duplicate
        outcomes.append(fpb.Outcome(use_case=USE_CASE, decision_id="not-a-uuid", outcome_id="x", name="purchase",
                                    value=1.0))  # an orphan
        result = await feedback.LogOutcomes(fpb.LogOutcomesRequest(outcomes=outcomes), timeout=30)
        assert (result.accepted, result.duplicates, result.orphans) == (JOINED, 1, 1)
        health = health_pb2_grpc.HealthStub(loop._channel(settings.evaluator_address))
        await health.Check(health_pb2.HealthCheckRequest(), timeout=30)

        # decision ---------------------------------------------------------------
        async def acked() -> dict[str, float] | None:
            s = await scrape(ports["decision"])
            return s if sample(s, "loopwise_decision_log_decisions_total", state="acked") == served else None

        d = await wait_until(acked)
        assert sample(d, "loopwise_rpc_requests_total", service="decision", rpc="Decide", use_case=USE_CASE,
                      code="OK") == SINGLE
        assert sample(d, "loopwise_rpc_requests_total", rpc="Decide", use_case="nope", code="NOT_FOUND") == 1
        assert sample(d, "loopwise_rpc_requests_total", rpc="DecideBatch", use_case=USE_CASE, code="OK") == 1
        assert sample(d, "loopwise_rpc_requests_total", rpc="DecideStream", code="OK") == 1
        assert sample(d, "loopwise_rpc_latency_seconds_count", rpc="Decide", use_case=USE_CASE) == SINGLE
        assert 0 < sample(d, "loopwise_rpc_latency_seconds_sum", rpc="Decide", use_case=USE_CASE) < 30 * SINGLE
        le = sample(d, "loopwise_rpc_latency_seconds_bucket", rpc="Decide", use_case=USE_CASE, le="+Inf")
        assert le == SINGLE
        assert sample(d, "loopwise_decisions_total", use_case=USE_CASE) == served
        assert sample(d, "loopwise_decision_fallbacks_total", use_case=USE_CASE) == 0
        assert sample(d, "loopwise_decision_explored_total", use_case=USE_CASE) == 0
        assert sample(d, "loopwise_model_version", use_case=USE_CASE, role="production") == model.version
        assert sample(d, "loopwise_decision_log_spool_depth") == 0
        assert sample(d, "loopwise_decision_log_decisions_total", state="dropped") == 0
        assert decided  # the endpoint answered while traffic was being logged too

        # feedback ----------------------------------------------------------------
        async def joined() -> dict[str, float] | None:
            # The join rate and the drift report come from two periodic tasks: both must have run.
            s = await scrape(ports["feedback"])
            ready = (sample(s, "loopwise_join_rate", use_case=USE_CASE) or 0) > 0 \
                and sample(s, "loopwise_feature_drift_psi", use_case=USE_CASE, feature="x") is not None
            return s if ready else None

        f = await wait_until(joined)
        assert sample(f, "loopwise_rpc_requests_total", service="feedback", rpc="LogDecisions", code="OK") >= 1
        assert sample(f, "loopwise_feedback_decisions_logged_total", use_case=USE_CASE) >= served
        assert sample(f, "loopwise_feedback_outcomes_received_total", use_case=USE_CASE) == JOINED + 2
        assert sample(f, "loopwise_feedback_outcome_results_total", result="accepted") == JOINED
        assert sample(f, "loopwise_feedback_outcome_results_total", result="duplicate") == 1
        assert sample(f, "loopwise_feedback_outcome_results_total", result="orphan") == 1
        assert abs(sample(f, "loopwise_join_rate", use_case=USE_CASE) - JOINED / served) < 1e-9
        assert sample(f, "loopwise_orphan_outcomes", use_case=USE_CASE) == 1
        assert sample(f, "loopwise_late_outcomes", use_case=USE_CASE) == 0
        assert sample(f, "loopwise_feedback_spool_depth") == 0
        assert sample(f, "loopwise_feature_drift_psi", use_case=USE_CASE, feature="x") is not None

        # trainer and evaluator -----------------------------------------------------
        t = await scrape(ports["trainer"])
        assert sample(t, "loopwise_rpc_requests_total", service="trainer", rpc="RegisterModel", code="OK") == 1
        assert sample(t, "loopwise_rpc_requests_total", rpc="SetDeployment", use_case=USE_CASE, code="OK") == 1
        assert sample(t, "loopwise_jobs_running", kind="training") == 0  # durations: test_jobs.py
        e = await scrape(ports["evaluator"])
        assert sample(e, "loopwise_rpc_requests_total", service="evaluator", rpc="Check", code="OK") >= 1
        assert sample(e, "loopwise_jobs_running") == 0
        exposed = set().union(*[await families(p) for p in ports.values()])
    finally:
        await loop.stop()

    _check_monitoring_uses_only(exposed)


def _metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\bloopwise_[a-z_]+", expr))
    return {re.sub(r"_(bucket|count|sum)$", "", n) if n.startswith("loopwise_rpc_latency") or
            n.startswith("loopwise_job_duration") else n for n in names}


def _check_monitoring_uses_only(exposed: set[str]) -> None:
    """Every loopwise_* metric in the alert rules and the dashboard is exposed."""
    base = {re.sub(r"_(bucket|count|sum)$", "", n) for n in exposed}
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 10
    runbook = (MONITORING.parent.parent / "docs" / "operations.md").read_text()
    for rule in alerts:
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page == "docs/operations.md" and f'<a id="{anchor}"></a>' in runbook, rule["alert"]
        missing = _metric_names(rule["expr"]) - base
        assert not missing, f"{rule['alert']} uses unexposed metrics {missing}"
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 12
    for expr in exprs:
        missing = _metric_names(expr) - base
        assert not missing, f"dashboard query {expr!r} uses unexposed metrics {missing}"
    assert np.all([p["title"] for p in dashboard["panels"]])
