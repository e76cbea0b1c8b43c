"""A product's trace continues into Decide: the SDK (blocking and asyncio clients)
sends the caller's current span context; without one it sends nothing extra."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from loopwise import tracing
from loopwise.client import AsyncClient, Client
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.services.decision.server import start_server
from tests.observability.helpers import USE_CASE, blueprint

FEATURES = {"x": 0.5, "y": 1.0, "country": "fr"}


async def test_sdk_calls_continue_the_callers_trace(make_settings):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    settings = make_settings(decision_log_enabled=False, allow_plaintext=True)
    host = await start_server(settings)
    try:
        import grpc

        async with grpc.aio.insecure_channel(settings.decision_address) as channel:
            await dgrpc.DecisionServiceStub(channel).ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=blueprint()))
            # A DecideStream: one server span for the stream, one event per decision.
            stream = dgrpc.DecisionServiceStub(channel).DecideStream(iter([
                dpb.DecideRequest(use_case=USE_CASE, features={"x": dpb.FeatureValue(number=float(i))})
                for i in range(2)]), timeout=30)
            streamed = [r.decision.decision_id async for r in stream]
        product = tracing.tracer()
        async_client = AsyncClient(settings=settings, deadline_s=30)
        with product.start_as_current_span("checkout page") as page:
            async_decision = await async_client.decide(USE_CASE, FEATURES)
        untraced = await async_client.decide(USE_CASE, FEATURES)  # no current span
        await async_client.close()
        with Client(settings=settings, deadline_s=30) as client:
            with product.start_as_current_span("cart page") as cart:
                sync_decision = await asyncio.to_thread(client.decide, USE_CASE, FEATURES)
    finally:
        await host.stop(0.5)
        tracing.uninstall()

    decides = {s.attributes[tracing.ATTR_DECISION_ID]: s for s in exporter.get_finished_spans()
               if s.name.endswith("DecisionService/Decide") and s.kind == SpanKind.SERVER}
    server = decides[async_decision.decision_id]
    assert server.parent is not None and server.parent.span_id == page.get_span_context().span_id
    assert server.context.trace_id == page.get_span_context().trace_id
    sync_server = decides[sync_decision.decision_id]
    assert sync_server.parent is not None and sync_server.parent.span_id == cart.get_span_context().span_id
    assert decides[untraced.decision_id].parent is None  # a root span of its own
    stream_span = [s for s in exporter.get_finished_spans() if s.name.endswith("DecisionService/DecideStream")]
    assert len(stream_span) == 1 and stream_span[0].attributes["rpc.grpc.status_code"] == 0
    assert [e.attributes[tracing.ATTR_DECISION_ID] for e in stream_span[0].events] == streamed
