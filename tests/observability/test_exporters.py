"""Tracing configured by the standard OTEL_* variables in a real service process: spans
reach an OTLP/gRPC collector on loopback with the service's name; the process logs
JSON lines; without the variables nothing is exported."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

from loopwise import tracing
from loopwise.launcher import free_port
from tests.support import new_launcher


class Collector(otlp_grpc.TraceServiceServicer):
    """An OTLP trace receiver that keeps what it is sent."""

    def __init__(self) -> None:
        self.requests: list[otlp.ExportTraceServiceRequest] = []

    async def Export(self, request, context):
        self.requests.append(request)
        return otlp.ExportTraceServiceResponse()

    def spans(self) -> list[tuple[str, str]]:
        """(service.name, span name) of every span received."""
        out = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    out += [(attrs.get("service.name", ""), s.name) for s in scope.spans]
        return out


async def test_otlp_exporter_from_env_and_json_logs(tmp_path):
    collector = Collector()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    otlp_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    launcher = new_launcher(tmp_path, OTEL_TRACES_EXPORTER="otlp",
                            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
                            OTEL_EXPORTER_OTLP_INSECURE="true", OTEL_BSP_SCHEDULE_DELAY="100",
                            LOOPWISE_LOG_FORMAT="json")
    try:
        await asyncio.to_thread(launcher.start, "feedback")
        async with grpc.aio.insecure_channel(launcher.address("feedback")) as channel:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
        deadline = time.monotonic() + 60
        wanted = ("loopwise-feedback", "grpc.health.v1.Health/Check")
        while wanted not in collector.spans() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert wanted in collector.spans(), collector.spans()
    finally:
        await asyncio.to_thread(launcher.stop, "feedback")
        await server.stop(0)
    lines = [json.loads(line) for line in launcher.log_file("feedback").read_text().splitlines()
             if line.startswith("{")]
    assert any(e["level"] == "INFO" and e["service"] == "feedback" and "serving on" in e["message"] for e in lines)
    assert any("tracing on" in e["message"] for e in lines)


def test_configure_from_env_off_by_default_and_on_for_console():
    assert tracing.configure_from_env("decision", {}) is False
    assert tracing.configure_from_env("decision", {"OTEL_TRACES_EXPORTER": "none"}) is False
    assert tracing.configure_from_env("decision", {"OTEL_TRACES_EXPORTER": "console",
                                                   "OTEL_SDK_DISABLED": "true"}) is False
    assert not tracing.enabled()


@pytest.mark.parametrize("value", ["console", "otlp"])
def test_configure_from_env_turns_tracing_on(value, monkeypatch):
    from opentelemetry import trace

    monkeypatch.setattr(trace, "set_tracer_provider", lambda provider: None)  # keep the global one unset
    try:
        assert tracing.configure_from_env("trainer", {"OTEL_TRACES_EXPORTER": value})
        assert tracing.enabled() and len(tracing.client_interceptors()) == 4
        assert tracing._provider.resource.attributes["service.name"] == "loopwise-trainer"
    finally:
        tracing.uninstall()
    assert not tracing.enabled()
