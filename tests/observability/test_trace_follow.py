"""One decision id, followed with an in-memory span exporter from Decide through its
logging (linked batch, LogDecisions across the process boundary) to its outcome and
to the lineage of the model that served it; the JSON logs carry the same id and the
trace ids of those spans."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from loopwise import tracing
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.logs import JsonFormatter
from tests.observability.helpers import USE_CASE, start_loop, training_rows, wait_until

LOGGERS = ("loopwise.decision", "loopwise.decision.log", "loopwise.feedback.monitoring")


@pytest.fixture
def spans():
    """Spans of this process go to memory while the test runs."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.uninstall()


@pytest.fixture
def json_logs():
    """DEBUG records of the decision path as JSON lines in memory."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    handler.setLevel(logging.DEBUG)
    saved = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    try:
        yield stream
    finally:
        for logger, level in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)


def named(spans, suffix: str, kind: SpanKind | None = None):
    return [s for s in spans if s.name.endswith(suffix) and (kind is None or s.kind == kind)]


async def test_one_decision_id_leads_to_its_logging_outcome_and_model_lineage(make_settings, spans, json_logs):
    loop = await start_loop(make_settings(decision_log_flush_interval_s=0.05, allow_plaintext=True))
    try:
        x, labels = training_rows(400)
        start_ms, end_ms = 1_700_000_000_000, 1_700_086_400_000
        model = await loop.register(x, labels, start_ms, end_ms)

        reply = await loop.decision.Decide(dpb.DecideRequest(
            use_case=USE_CASE, unit_id="u1",
            features={"x": dpb.FeatureValue(number=0.5), "y": dpb.FeatureValue(number=-1.0),
                      "country": dpb.FeatureValue(category="de")}), timeout=30)
        decision = reply.decision
        did = decision.decision_id
        assert decision.model_version == model.version and not decision.fallback

        # Its logging: the shipper's batch reaches feedback (GetDecision finds it).
        feedback = loop.feedback

        async def stored() -> bool:
            try:
                await feedback.GetDecision(fpb.GetDecisionRequest(use_case=USE_CASE, decision_id=did), timeout=10)
                return True
            except Exception:
                return False

        await wait_until(stored)

        assert (await loop.outcome(did, "o-1")).accepted == 1
        found = await feedback.GetDecision(fpb.GetDecisionRequest(use_case=USE_CASE, decision_id=did), timeout=30)
        assert [o.outcome_id for o in found.outcomes] == ["o-1"]
        # The model's lineage, read from the trainer's registry: its training data range.
        assert found.model_lineage["model_version"] == str(model.version)
        assert found.model_lineage["data_start_time"] == model.data_start_time.ToJsonString()
        assert found.model_lineage["data_end_time"] == model.data_end_time.ToJsonString()

        # A DecideBatch: one request span, so one link carrying all its decision ids.
        batch = list((await loop.decide_batch(training_rows(3, seed=5)[0])).decision_ids)
        await wait_until(lambda: any(set(batch) <= set(s.attributes.get(tracing.ATTR_DECISION_IDS, ()))
                                     for s in named(spans.get_finished_spans(), "FeedbackService/LogDecisions",
                                                    SpanKind.SERVER)))
    finally:
        await loop.stop()

    finished = spans.get_finished_spans()

    # 1. Decide: a server span with the decision id and the model version.
    decide = [s for s in named(finished, "DecisionService/Decide", SpanKind.SERVER)
              if s.attributes.get(tracing.ATTR_DECISION_ID) == did]
    assert len(decide) == 1
    decide_ctx = decide[0].context
    assert decide[0].attributes[tracing.ATTR_MODEL_VERSION] == model.version
    assert decide[0].attributes[tracing.ATTR_USE_CASE] == USE_CASE

    # 2. Its logging: a batch span linking to that Decide span, with the id on the link.
    ships = [s for s in named(finished, "decision_log.ship")
             if any(link.context.span_id == decide_ctx.span_id for link in s.links)]
    assert len(ships) == 1, "exactly one batch carried the decision"
    ship = ships[0]
    link = next(link for link in ship.links if link.context.span_id == decide_ctx.span_id)
    assert link.context.trace_id == decide_ctx.trace_id
    assert link.attributes[tracing.ATTR_DECISION_ID] == did
    assert did in ship.attributes[tracing.ATTR_DECISION_IDS]

    # ... whose LogDecisions call crossed to the feedback service in the same trace.
    client = [s for s in named(finished, "FeedbackService/LogDecisions", SpanKind.CLIENT)
              if s.parent is not None and s.parent.span_id == ship.context.span_id]
    assert len(client) == 1
    server = [s for s in named(finished, "FeedbackService/LogDecisions", SpanKind.SERVER)
              if s.parent is not None and s.parent.span_id == client[0].context.span_id]
    assert len(server) == 1, "the trace context did not travel in the gRPC metadata"
    assert server[0].context.trace_id == ship.context.trace_id
    assert did in server[0].attributes[tracing.ATTR_DECISION_IDS]
    assert server[0].attributes["rpc.grpc.status_code"] == 0

    # 3. Its outcome.
    outcomes = [s for s in named(finished, "FeedbackService/LogOutcomes", SpanKind.SERVER)
                if did in s.attributes.get(tracing.ATTR_DECISION_IDS, ())]
    assert len(outcomes) == 1
    assert outcomes[0].attributes["loopwise.accepted"] == 1

    # 4. The model: GetDecision carries the lineage, and its GetModel call reached the
    # trainer as a child in the same trace.
    lookups = [s for s in named(finished, "FeedbackService/GetDecision", SpanKind.SERVER)
               if s.attributes.get(tracing.ATTR_DECISION_ID) == did
               and s.attributes.get(tracing.ATTR_MODEL_VERSION) == model.version]
    assert lookups
    lookup = lookups[-1]
    assert lookup.attributes["loopwise.model_data_start_time"] == model.data_start_time.ToJsonString()
    assert lookup.attributes["loopwise.model_data_end_time"] == model.data_end_time.ToJsonString()
    trainer_side = [s for s in named(finished, "TrainerService/GetModel", SpanKind.SERVER)
                    if s.context.trace_id == lookup.context.trace_id]
    assert trainer_side and trainer_side[0].attributes[tracing.ATTR_USE_CASE] == USE_CASE

    batch_span = [s for s in named(finished, "DecisionService/DecideBatch", SpanKind.SERVER)
                  if s.attributes.get("loopwise.first_decision_id") == batch[0]]
    assert len(batch_span) == 1 and batch_span[0].attributes[tracing.ATTR_DECISION_COUNT] == 3
    batch_links = [link for s in named(finished, "decision_log.ship") for link in s.links
                   if link.context.span_id == batch_span[0].context.span_id]
    assert len(batch_links) == 1 and list(batch_links[0].attributes[tracing.ATTR_DECISION_IDS]) == batch

    # The JSON logs: the id as a field, with the trace ids of the spans above.
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    decided = [e for e in lines if e.get("decision_id") == did]
    assert decided and decided[0]["trace_id"] == format(decide_ctx.trace_id, "032x")
    assert decided[0]["span_id"] == format(decide_ctx.span_id, "016x")
    shipped = [e for e in lines if e["message"] == "decisions logged" and did in e.get("decision_ids", ())]
    assert shipped and shipped[0]["trace_id"] == format(ship.context.trace_id, "032x")
    stored_lines = [e for e in lines if e["message"] == "decisions stored" and did in e.get("decision_ids", ())]
    assert stored_lines and stored_lines[0]["trace_id"] == format(ship.context.trace_id, "032x")
    outcome_lines = [e for e in lines if e["message"] == "outcomes stored" and did in e.get("decision_ids", ())]
    assert outcome_lines and outcome_lines[0]["trace_id"] == format(outcomes[0].context.trace_id, "032x")
    assert np.all([e["service"] == "test" for e in lines])


async def test_tracing_off_adds_no_client_interceptor_and_records_nothing():
    assert not tracing.enabled()
    assert tracing.client_interceptors() == []
    assert tracing.current_span_context() is None
    with tracing.linked_span("x", []):
        tracing.set_attributes(decision_id="d")  # no-op, no error
