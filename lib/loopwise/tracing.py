"""Tracing with OpenTelemetry: a span per RPC on both sides, W3C trace context in gRPC
metadata, and the few loopwise attributes that let one decision id be followed from
``Decide`` through its logging to its outcomes and the model that served it.

Tracing is off unless the standard variables turn it on: ``OTEL_TRACES_EXPORTER``
(``otlp``, ``console``, or a comma-separated list; ``none`` or unset: off) and
``OTEL_SDK_DISABLED``. Everything else is read by the SDK and the exporters from their
usual variables: ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_BSP_*``,
``OTEL_EXPORTER_OTLP_*``, ``OTEL_PROPAGATORS``. Off costs one module-level ``None`` check
per RPC: no interceptor is put on client channels and the server interceptor only
keeps its metrics.

In-process tests install their own provider (e.g. with an in-memory exporter) with
:func:`install` before starting servers, and remove it with :func:`uninstall`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode

from loopwise.call_types import for_every_call_type

log = logging.getLogger("loopwise.tracing")

TRACER_NAME = "loopwise"
# A decision log batch links to every decision it carries: the SDK's default of 128
# links per span would cut a 500-decision batch short.
DEFAULT_MAX_LINKS = 4096

# Attribute names (one place, so tests, dashboards and docs agree).
ATTR_USE_CASE = "loopwise.use_case"
ATTR_DECISION_ID = "loopwise.decision_id"
ATTR_DECISION_IDS = "loopwise.decision_ids"
ATTR_DECISION_COUNT = "loopwise.decision_count"
ATTR_MODEL_VERSION = "loopwise.model_version"

_tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None


def enabled() -> bool:
    """True when spans are recorded in this process."""
    return _tracer is not None


def tracer() -> trace.Tracer | None:
    """The loopwise tracer, or None when tracing is off."""
    return _tracer


def install(provider: TracerProvider) -> None:
    """Record spans with ``provider`` in this process (tests; :func:`configure_from_env`
    for services). Channels created afterwards carry the client interceptors."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer(TRACER_NAME)


def uninstall() -> None:
    """Stop recording spans (the provider is flushed and shut down)."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def _exporter(name: str) -> SpanExporter | None:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name == "otlp":
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        if protocol != "grpc":
            log.error("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported; use grpc", protocol)
            return None
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    log.error("unknown OTEL_TRACES_EXPORTER value %r (supported: otlp, console, none)", name)
    return None


def configure_from_env(service: str, environ: dict[str, str] | None = None) -> bool:
    """Turn tracing on for a service process when ``OTEL_TRACES_EXPORTER`` asks for it;
    returns whether it is on. The service name defaults to ``loopwise-<service>``."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "none").split(",")]
    exporters = [e for e in (_exporter(n) for n in names if n and n != "none") if e is not None]
    if not exporters:
        return False
    attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": f"loopwise-{service}"}
    limits = SpanLimits() if env.get("OTEL_SPAN_LINK_COUNT_LIMIT") else SpanLimits(max_links=DEFAULT_MAX_LINKS)
    provider = TracerProvider(resource=Resource.create(attributes), span_limits=limits)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    install(provider)
    log.info("tracing on: exporters %s", ", ".join(n for n in names if n and n != "none"))
    return True


# -- helpers for spans on the loopwise paths --------------------------------------------
def current_span_context() -> SpanContext | None:
    """The context of the current span when tracing is on and one is recording."""
    if _tracer is None:
        return None
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def set_attributes(**attributes: Any) -> None:
    """Set ``loopwise.<name>`` attributes on the current span (no-op when off)."""
    if _tracer is None:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({f"loopwise.{k}": v for k, v in attributes.items() if v is not None})


def add_event(name: str, **attributes: Any) -> None:
    """Add an event with ``loopwise.<name>`` attributes to the current span (no-op when off)."""
    if _tracer is None:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(name, {f"loopwise.{k}": v for k, v in attributes.items() if v is not None})


def linked_span(name: str, links: Sequence[tuple[SpanContext, str]], **attributes: Any) -> Any:
    """A context manager for a producer span linking to other spans: one link per
    distinct span context, with ``loopwise.decision_id`` (one decision) or
    ``loopwise.decision_ids`` (a DecideBatch: many decisions, one request span) on
    it; a no-op context when tracing is off."""
    if _tracer is None:
        return _NULL_SPAN
    grouped: dict[tuple[int, int], tuple[SpanContext, list[str]]] = {}
    for ctx, decision_id in links:
        grouped.setdefault((ctx.trace_id, ctx.span_id), (ctx, []))[1].append(decision_id)
    return _tracer.start_as_current_span(
        name, kind=SpanKind.PRODUCER,
        links=[Link(ctx, {ATTR_DECISION_ID: ids[0]} if len(ids) == 1 else {ATTR_DECISION_IDS: ids})
               for ctx, ids in grouped.values()],
        attributes={f"loopwise.{k}": v for k, v in attributes.items() if v is not None},
    )


class _NullSpan:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NULL_SPAN = _NullSpan()


def job_span(kind: str, use_case: str, operation_id: str) -> Any:
    """A context manager for a span around one background job (no-op when off)."""
    if _tracer is None:
        return _NULL_SPAN
    return _tracer.start_as_current_span(
        f"job {kind}", kind=SpanKind.INTERNAL,
        attributes={ATTR_USE_CASE: use_case, "loopwise.operation_id": operation_id},
    )


# -- server side ------------------------------------------------------------------------
def split_method(method: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` → ``(pkg.Service, Method)``."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


def start_server_span(method: str, metadata: Iterable[tuple[str, Any]] | None, use_case: str) -> Any:
    """Start (not enter) the server span of one RPC, continuing the caller's trace from
    the W3C headers in ``metadata``; returns ``(span, context token)`` to close with
    :func:`end_server_span`. Only called when tracing is on."""
    assert _tracer is not None
    carrier = {k: v for k, v in (metadata or ()) if isinstance(v, str)}
    parent = propagate.extract(carrier)
    service, name = split_method(method)
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
    if use_case:
        attributes[ATTR_USE_CASE] = use_case
    span = _tracer.start_span(method.lstrip("/"), context=parent, kind=SpanKind.SERVER, attributes=attributes)
    token = otel_context.attach(trace.set_span_in_context(span, parent))
    return span, token


def end_server_span(handle: Any, code: grpc.StatusCode, error: BaseException | None = None) -> None:
    """End a span from :func:`start_server_span` with the RPC's status code."""
    span, token = handle
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code != grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name))
        if error is not None and not isinstance(error, grpc.aio.AbortError):
            span.record_exception(error)
    try:
        otel_context.detach(token)
    except ValueError:  # an async generator resumed in another context; the span still ends
        pass
    span.end()


# -- client side ------------------------------------------------------------------------
def _with_trace_headers(details: grpc.aio.ClientCallDetails, span: trace.Span) -> grpc.aio.ClientCallDetails:
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    metadata = grpc.aio.Metadata(*(tuple(details.metadata) if details.metadata else ()), *carrier.items())
    return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials,
                                      details.wait_for_ready)


def _client_span(details: grpc.aio.ClientCallDetails) -> trace.Span:
    assert _tracer is not None
    method = details.method.decode() if isinstance(details.method, bytes) else details.method
    service, name = split_method(method)
    return _tracer.start_span(method.lstrip("/"), kind=SpanKind.CLIENT,
                              attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name})


def _end_when_done(span: trace.Span) -> Callable[[Any], None]:
    def done(call: Any) -> None:
        span.end()

    return done


class _ClientInterceptor:
    """A client span per call, its context sent as ``traceparent`` metadata."""

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        span = _client_span(details)
        try:
            call = await continuation(_with_trace_headers(details, span), request)
            code = await call.code()
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            span.end()
            raise
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code != grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, code.name))
        span.end()
        return call

    async def _streaming(self, continuation: Any, details: Any, request: Any) -> Any:
        span = _client_span(details)
        try:
            call = await continuation(_with_trace_headers(details, span), request)
        except BaseException:
            span.end()
            raise
        call.add_done_callback(_end_when_done(span))
        return call

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self._streaming(continuation, details, request)

    async def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await self._streaming(continuation, details, request_iterator)

    async def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await self._streaming(continuation, details, request_iterator)


def client_interceptors() -> list[Any]:
    """Interceptors for an aio channel to another service: none when tracing is off."""
    return for_every_call_type(_ClientInterceptor()) if _tracer is not None else []


# -- callers (SDK) ----------------------------------------------------------------------
def _caller_headers() -> list[tuple[str, str]]:
    """W3C headers of the caller's current span (its own OpenTelemetry setup, or
    loopwise's), or none when there is no valid current span."""
    if not trace.get_current_span().get_span_context().is_valid:
        return []
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return list(carrier.items())


class _CallerContextAio:
    """Sends the caller's trace context with each call (no spans of its own)."""

    @staticmethod
    def _details(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        headers = _caller_headers()
        if not headers:
            return details
        metadata = grpc.aio.Metadata(*(tuple(details.metadata) if details.metadata else ()), *headers)
        return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials,
                                          details.wait_for_ready)

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(details), request_iterator)

    async def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(details), request_iterator)


class _SyncDetails:
    """Call details of a blocking channel with extra metadata."""

    def __init__(self, details: Any, metadata: list[tuple[str, str]]) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class _CallerContextSync(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                         grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """The blocking-channel variant of :class:`_CallerContextAio`."""

    @staticmethod
    def _details(details: Any) -> Any:
        headers = _caller_headers()
        return _SyncDetails(details, [*(details.metadata or ()), *headers]) if headers else details

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(details), request_iterator)


def caller_interceptors() -> list[Any]:
    """For the SDK's aio channels: the caller's trace context goes with each call, so a
    product's trace continues into Decide (a no-op without a current span)."""
    return for_every_call_type(_CallerContextAio())


def with_caller_context(channel: grpc.Channel) -> grpc.Channel:
    """The SDK's blocking channel, sending the caller's trace context with each call."""
    return grpc.intercept_channel(channel, _CallerContextSync())
