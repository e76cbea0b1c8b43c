"""The one server builder used by all four services.

Every service is a ``grpc.aio`` server with health and reflection, ``SO_REUSEPORT``
explicitly off (a stale process must not silently share the port), message-size
limits from settings, and SIGTERM handling (docs/architecture.md §6): health turns NOT_SERVING,
open streams end with UNAVAILABLE (clients resume), unary calls get the grace
period to finish, then shutdown hooks run (e.g. draining a spool).

Every RPC goes through one server interceptor (:class:`RpcObserver`): request count and
latency per RPC, use case and status code in the host's metrics registry, and, when
tracing is on, a server span continuing the caller's W3C trace context. The host also
serves its registry at ``GET /metrics`` when ``metrics_port`` is set (the decision
service's multi-worker supervisor serves the merged one instead).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from loopwise import logs, security, tracing
from loopwise.admission import HEALTH_SERVICE, Admission
from loopwise.auth import OPEN_SERVICES
from loopwise.errors import LoopwiseError, Unavailable
from loopwise.grpc_options import channel_options
from loopwise.metrics import MetricsEndpoint, Registry, RpcMetrics, metrics_port
from loopwise.settings import SERVICES, Settings

log = logging.getLogger("loopwise.server")

ShutdownHook = Callable[[], Awaitable[None]]


@dataclass
class Registration:
    """A servicer to add: the generated ``add_…_to_server`` function, the servicer and
    the full service name (``loopwise.decision.v1.DecisionService``)."""

    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    service_name: str


def connection_options(settings: Settings, max_age: bool = False) -> list[tuple[str, Any]]:
    """Keepalive of a server (it pings idle clients, and accepts their pings every half
    of ``keepalive_time_s``, without calls too) and, with ``max_age``, a connection age:
    each client connection is closed (GOAWAY) after about ``max_connection_age_s``, calls
    in progress get ``max_connection_age_grace_s``, and the client reconnects, re-resolving
    its target (docs/operations.md: how clients reach every replica)."""
    keepalive_ms = int(settings.keepalive_time_s * 1000)
    options: list[tuple[str, Any]] = [
        ("grpc.keepalive_time_ms", keepalive_ms),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_ping_interval_without_data_ms", keepalive_ms // 2),
    ]
    if max_age and settings.max_connection_age_s > 0:
        options += [("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
                    ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * 1000))]
    return options


def _code_of(context: Any, error: BaseException | None) -> grpc.StatusCode:
    """The status an RPC ended with, as far as the server knows it."""
    try:
        code = context.code()
    except Exception:  # not every context implementation exposes it
        code = None
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):  # some grpc versions give the raw value
        return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


# The use case of the RPC being handled, filled in by RequestProbe for RpcObserver
# (which may only see raw bytes when an interceptor between them parses requests).
_USE_CASE: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("loopwise_rpc_use_case",
                                                                              default=None)


def _use_case_of(request: Any) -> str:
    use_case = getattr(request, "use_case", "")
    return use_case if isinstance(use_case, str) else ""


class RequestProbe(grpc.aio.ServerInterceptor):
    """The innermost interceptor: hands the parsed request's ``use_case`` to the
    RpcObserver of the same call (metrics label and span attribute)."""

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        """The servicer's handler, its unary-request behaviours wrapped once."""
        handler = await continuation(details)
        if handler is None or handler.request_streaming:
            return handler
        cached = self._handlers.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        if handler.unary_unary is not None and inspect.iscoroutinefunction(handler.unary_unary):
            wrapped = grpc.unary_unary_rpc_method_handler(
                self._probe_unary(handler.unary_unary), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        elif handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            wrapped = grpc.unary_stream_rpc_method_handler(
                self._probe_stream(handler.unary_stream), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        else:
            return handler
        self._handlers[details.method] = (handler, wrapped)
        return wrapped

    @staticmethod
    def _note(request: Any) -> None:
        holder = _USE_CASE.get()
        if holder is not None and not holder[0]:
            use_case = _use_case_of(request)
            if use_case:
                holder[0] = use_case
                tracing.set_attributes(use_case=use_case)

    def _probe_unary(self, behavior: Any) -> Any:
        note = self._note

        async def call(request: Any, context: Any) -> Any:
            note(request)
            return await behavior(request, context)

        return call

    def _probe_stream(self, behavior: Any) -> Any:
        note = self._note

        async def call(request: Any, context: Any) -> Any:
            note(request)
            async for response in behavior(request, context):
                yield response

        return call


class RpcObserver(grpc.aio.ServerInterceptor):
    """The server interceptor of every loopwise service: per-RPC metrics and (when
    tracing is on) a server span. The last wrapped handler of each method is kept and
    reused while the rest of the chain returns the same handler object (interceptors
    after this one may also return a new handler per call: it is then wrapped anew)."""

    def __init__(self, metrics: RpcMetrics) -> None:
        self.metrics = metrics
        self._handlers: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        """The handler of ``details.method``, wrapped."""
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        cached = self._handlers.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._handlers[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        rpc = tracing.split_method(method)[1]
        for kind, factory in (("unary_unary", grpc.unary_unary_rpc_method_handler),
                              ("unary_stream", grpc.unary_stream_rpc_method_handler),
                              ("stream_unary", grpc.stream_unary_rpc_method_handler),
                              ("stream_stream", grpc.stream_stream_rpc_method_handler)):
            behavior = getattr(handler, kind)
            if behavior is None:
                continue
            streaming_request = kind.startswith("stream")
            if inspect.isasyncgenfunction(behavior):
                wrapped = self._wrap_stream(method, rpc, behavior, streaming_request)
            elif inspect.iscoroutinefunction(behavior):
                wrapped = self._wrap_unary(method, rpc, behavior, streaming_request)
            else:
                return handler  # a synchronous handler: left as it is
            return factory(wrapped, request_deserializer=handler.request_deserializer,
                           response_serializer=handler.response_serializer)
        return handler

    def _wrap_unary(self, method: str, rpc: str, behavior: Any, streaming_request: bool) -> Any:
        record = self.metrics.record

        async def call(request: Any, context: Any) -> Any:
            observed = _ObservedCall(method, request, context, streaming_request)
            error: BaseException | None = None
            try:
                return await behavior(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                observed.end(record, rpc, context, error)

        return call

    def _wrap_stream(self, method: str, rpc: str, behavior: Any, streaming_request: bool) -> Any:
        record = self.metrics.record

        async def call(request: Any, context: Any) -> Any:
            observed = _ObservedCall(method, request, context, streaming_request)
            error: BaseException | None = None
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as exc:
                error = exc
                raise
            finally:
                observed.end(record, rpc, context, error)

        return call


class _ObservedCall:
    """One call between its start and its end: its use case (a holder the servicer
    fills for streamed requests), span and start time."""

    __slots__ = ("holder", "token", "span", "started")

    def __init__(self, method: str, request: Any, context: Any, streaming_request: bool) -> None:
        self.holder = ["" if streaming_request else _use_case_of(request)]
        self.token = _USE_CASE.set(self.holder)
        self.span = tracing.start_server_span(method, context.invocation_metadata(), self.holder[0]) \
            if tracing.enabled() else None
        self.started = time.perf_counter()

    def end(self, record: Callable[..., None], rpc: str, context: Any, error: BaseException | None) -> None:
        """Record the call's status and duration and end its span (a closed stream
        generator counts as CANCELLED)."""
        code = grpc.StatusCode.CANCELLED if isinstance(error, GeneratorExit) else _code_of(context, error)
        record(rpc, self.holder[0], code, time.perf_counter() - self.started)
        try:
            _USE_CASE.reset(self.token)
        except ValueError:  # a stream resumed in another context: nothing to restore there
            pass
        if self.span is not None:
            tracing.end_server_span(self.span, code, error)


class CallPipeline:
    """The per-call work of a ServiceHost (metrics, tracing, admission, the call guard
    and the use-case probe) fused into one wrapper per method, built once when the
    method is registered: no grpc interceptors run per call and no handler is built per
    call. Same behaviour as the interceptor chain ``RpcObserver → Admission → CallGuard →
    RequestProbe``: refused calls are counted and traced, admission refuses before the
    request is parsed, unparseable requests get INVALID_ARGUMENT, Health is neither
    guarded nor shed. Unary calls run a single fused function; streaming methods chain
    the layers' wrappers, also built once."""

    def __init__(self, metrics: RpcMetrics, admission: Admission | None,
                 guard: security.CallGuard | None) -> None:
        self.metrics = metrics
        self.admission = admission
        self.guard = guard
        self.observer = RpcObserver(metrics)
        self.probe = RequestProbe()

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The handler serving ``method`` (``/service/Method``)."""
        if handler.unary_unary is not None and inspect.iscoroutinefunction(handler.unary_unary):
            return self._fused_unary(method, handler)
        inner = handler
        if not handler.request_streaming and handler.unary_stream is not None \
                and inspect.isasyncgenfunction(handler.unary_stream):
            inner = grpc.unary_stream_rpc_method_handler(
                self.probe._probe_stream(handler.unary_stream), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if self.guard is not None:
            inner = self.guard.wrap_once(method, inner)
        if self.admission is not None:
            inner = self.admission.wrap_once(method, inner)
        return self.observer._wrap(method, inner)

    def _fused_unary(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        service, rpc = tracing.split_method(method)
        behavior = handler.unary_unary
        parse = handler.request_deserializer
        record = self.metrics.record
        admission = None if self.admission is None or service == HEALTH_SERVICE else self.admission
        guard = None if self.guard is None or service in OPEN_SERVICES else self.guard
        perf_counter = time.perf_counter
        set_use_case = _USE_CASE.set
        reset_use_case = _USE_CASE.reset

        async def call(request: Any, context: Any) -> Any:
            holder = [""]
            token = set_use_case(holder)
            span = tracing.start_server_span(method, context.invocation_metadata(), "") \
                if tracing.enabled() else None
            started = perf_counter()
            error: BaseException | None = None
            try:
                if admission is not None:
                    ticket = admission.ticket(method, False)
                    reason = admission._refusal(context, ticket)
                    if reason:
                        await admission._shed(context, ticket, reason)
                    ticket.started = perf_counter()
                if guard is not None:
                    try:
                        request = guard.screen(context, rpc, request, parse)
                    except LoopwiseError as refused:
                        await guard.refuse(context, rpc, refused)
                use_case = getattr(request, "use_case", "")
                if use_case and isinstance(use_case, str):
                    holder[0] = use_case
                    if span is not None:
                        tracing.set_attributes(use_case=use_case)
                return await behavior(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                code = _code_of(context, error)
                record(rpc, holder[0], code, perf_counter() - started)
                try:
                    reset_use_case(token)
                except ValueError:
                    pass
                if span is not None:
                    tracing.end_server_span(span, code, error)

        return grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=None if guard is not None else parse,
            response_serializer=handler.response_serializer)


class _Capture:
    """Stands in for a server while a generated ``add_…_to_server`` (or reflection)
    registers its method handlers, and collects them by full method name."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}
        self.opaque: list[Any] = []

    def add_generic_rpc_handlers(self, generic_handlers: Iterable[Any]) -> None:
        for generic in generic_handlers:
            table = getattr(generic, "_method_handlers", None)
            if isinstance(table, dict):
                self.handlers.update(table)
            else:
                self.opaque.append(generic)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler


class _MethodTable(grpc.GenericRpcHandler):
    """The server's one generic handler: method name → prebuilt wrapped handler (and,
    for handlers registered without a table, their wrapped handler cached per method)."""

    def __init__(self, pipeline: CallPipeline) -> None:
        self.pipeline = pipeline
        self.table: dict[str, grpc.RpcMethodHandler] = {}
        self.opaque: list[Any] = []

    def add(self, capture: _Capture) -> None:
        for method, handler in capture.handlers.items():
            self.table[method] = self.pipeline.wrap(method, handler)
        self.opaque.extend(capture.opaque)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        handler = self.table.get(method)
        if handler is not None or not self.opaque:
            return handler
        for generic in self.opaque:
            found = generic.service(handler_call_details)
            if found is not None:
                wrapped = self.table[method] = self.pipeline.wrap(method, found)
                return wrapped
        return None


class Stopping(asyncio.Event):
    """The one signal that a server is stopping, handed to its servicers.

    Set once by :meth:`ServiceHost.stop`. A servicer checks it (:meth:`check`: a long
    stream ends with UNAVAILABLE so that the client reconnects), waits on it
    (``await stopping.wait()``), or awaits something until it is set (:meth:`until`)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        # Tasks awaiting in until() -> True once set() cancelled them.
        self._waiting: dict[asyncio.Task[Any], bool] = {}

    def set(self) -> None:
        """Mark the server stopping and end every wait in :meth:`until` (UNAVAILABLE)."""
        if self.is_set():
            return
        super().set()
        for task in list(self._waiting):  # streams waiting for their next message
            self._waiting[task] = True
            task.cancel()

    def check(self) -> None:
        """Raise UNAVAILABLE when the server is stopping (for long streams)."""
        if self.is_set():
            raise Unavailable(f"{self.name} is shutting down; reconnect")

    async def until(self, awaitable: Awaitable[Any]) -> Any:
        """Await ``awaitable`` unless the server starts stopping first (then UNAVAILABLE).

        No task is created per call: the calling task is noted while it waits, and
        :meth:`set` cancels it (a stream waiting for its next message ends with
        UNAVAILABLE; a cancellation from anywhere else stays a cancellation)."""
        if self.is_set():
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            self.check()
        task = asyncio.current_task()
        if task is None:  # not in a task: nothing to cancel
            return await awaitable
        self._waiting[task] = False
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._waiting.get(task):
                task.uncancel()
                self.check()
            raise
        finally:
            self._waiting.pop(task, None)


@dataclass
class ServiceHost:
    """A running gRPC server for one loopwise service, with health and graceful stop."""

    name: str
    settings: Settings
    address: str
    server: grpc.aio.Server = field(init=False)
    health: health.aio.HealthServicer = field(init=False)
    # Set when stop() begins; servicers are handed it (see Stopping).
    stopping: Stopping = field(init=False)
    port: int = 0
    # Share the port with sibling processes (SO_REUSEPORT). Only the decision service's
    # explicit multi-worker mode sets it; every other server keeps it off (docs/architecture.md §6).
    reuse_port: bool = False
    # Close client connections after ``max_connection_age_s`` (servers of short calls:
    # the decision service), so that clients spread onto new replicas.
    max_connection_age: bool = False
    # Serve ``registry`` on the service's metrics port (when ``metrics_port`` is set).
    serve_metrics: bool = True
    registry: Registry = field(default_factory=Registry)
    metrics_endpoint: MetricsEndpoint | None = None
    # The plaintext Health-only server and its port (``health_port``), when on.
    health_server: tuple[grpc.aio.Server, int] | None = None
    # Per-call observation, swappable for measurement only (bench/libraries.py compares
    # library instrumentation against the own): what records each call's count and
    # latency, and grpc server interceptors run before the call pipeline (none by
    # default; any interceptor takes the server off grpc's interceptor-free path).
    rpc_metrics_factory: Callable[[Registry, str], RpcMetrics] = RpcMetrics
    interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
    _hooks: list[ShutdownHook] = field(default_factory=list)
    _services: list[str] = field(default_factory=list)
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.stopping = Stopping(self.name)
        options = [("grpc.so_reuseport", 1 if self.reuse_port else 0), *channel_options(self.settings),
                   *Admission.server_options(self.settings)]
        options += connection_options(self.settings, self.max_connection_age)
        self.rpc_metrics = self.rpc_metrics_factory(self.registry, self.name)
        # Admission control (bounded work, the rest shed at once: docs/architecture.md §6).
        self.admission = Admission.from_settings(self.settings, self.registry, self.name)
        # No grpc interceptors: each method's handler is wrapped once, when it is added,
        # by the call pipeline (metrics and tracing outermost, so refused calls are
        # counted and traced too; admission next, before anything parses; then the call
        # guard; the use case of the parsed request names the call).
        self.pipeline = CallPipeline(self.rpc_metrics, self.admission, security.CallGuard(self.settings))
        self._methods = _MethodTable(self.pipeline)
        self.server = grpc.aio.server(options=options, interceptors=list(self.interceptors) or None)
        self.server.add_generic_rpc_handlers((self._methods,))
        self.health = health.aio.HealthServicer()
        self._register(lambda target: health_pb2_grpc.add_HealthServicer_to_server(self.health, target))

    def _register(self, add_to: Callable[[Any], None]) -> None:
        capture = _Capture()
        add_to(capture)
        self._methods.add(capture)

    def add(self, registrations: Iterable[Registration]) -> None:
        """Add servicers; their services are announced by health and reflection."""
        for reg in registrations:
            self._register(lambda target, reg=reg: reg.add_to_server(reg.servicer, target))
            self._services.append(reg.service_name)

    def on_shutdown(self, hook: ShutdownHook) -> None:
        """Run ``hook`` after the server stopped accepting calls (in registration order)."""
        self._hooks.append(hook)

    async def start_or_close(self, close: ShutdownHook, before: ShutdownHook | None = None) -> int:
        """Register ``close`` (what the service opened) as a shutdown hook, run ``before``
        (e.g. loading state) and start; if either fails, run ``close`` and re-raise."""
        self.on_shutdown(close)
        try:
            if before is not None:
                await before()
            return await self.start()
        except BaseException:
            await close()
            raise

    async def start(self) -> int:
        """Bind, start and mark every service SERVING; returns the bound port."""
        names = [*self._services, health.SERVICE_NAME, reflection.SERVICE_NAME]
        self._register(lambda target: reflection.enable_server_reflection(names, target))
        self.port = security.bind(self.server, self.address, self.settings)
        if self.port == 0:
            raise RuntimeError(f"{self.name}: cannot bind {self.address}")
        await self.server.start()
        self.health_server = await security.start_health_server(self.health, self.address,
                                                                self.settings)
        port = metrics_port(self.settings, self.name) if self.name in SERVICES and self.serve_metrics else 0  # type: ignore[arg-type]
        if port:
            self.metrics_endpoint = MetricsEndpoint(lambda: {"0": self.registry.snapshot()}, port,
                                                    host=self.settings.metrics_host)
            try:
                await self.metrics_endpoint.start()
            except BaseException:
                if self.health_server is not None:
                    await self.health_server[0].stop(0)
                await self.server.stop(0)
                raise
        for svc in ["", *self._services]:
            await self.health.set(svc, health_pb2.HealthCheckResponse.SERVING)
        log.info("%s serving on %s", self.name, self.address.rsplit(":", 1)[0] + f":{self.port}")
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop: NOT_SERVING, streams end, unary calls finish, hooks run."""
        if self.stopping.is_set():
            await self._stopped.wait()
            return
        self.stopping.set()  # streams waiting for their next message end (UNAVAILABLE)
        await self.health.enter_graceful_shutdown()
        grace = self.settings.grace_period_s if grace is None else grace
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server[0].stop(0)
        if self.metrics_endpoint is not None:
            await self.metrics_endpoint.stop()
        for hook in self._hooks:
            try:
                await hook()
            except Exception:  # a failing hook must not block the others
                log.exception("%s: shutdown hook failed", self.name)
        self._stopped.set()
        log.info("%s stopped", self.name)

    async def serve_until_signal(self) -> None:
        """Block until SIGTERM/SIGINT, then stop gracefully."""
        loop = asyncio.get_running_loop()
        requested = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, requested.set)
        stopped = asyncio.ensure_future(self._stopped.wait())
        signalled = asyncio.ensure_future(requested.wait())
        await asyncio.wait([stopped, signalled], return_when=asyncio.FIRST_COMPLETED)
        if requested.is_set():
            log.info("%s: signal received, shutting down", self.name)
        await self.stop()
        stopped.cancel()
        signalled.cancel()


def configure_logging(settings: Settings, service: str = "") -> None:
    """One logger setup for all services: JSON lines unless ``log_format`` is text."""
    logs.configure(settings.log_level, settings.log_format, service)


def configure_process(settings: Settings, service: str) -> None:
    """Logging and (when the OTEL_* variables ask for it) tracing of a service process."""
    configure_logging(settings, service)
    tracing.configure_from_env(service)


def run(main: Callable[[Settings], Awaitable[None]], settings: Settings | None = None,
        service: str = "") -> None:
    """Process entry point: configure logging and tracing, run a service's ``main``
    coroutine. ``service`` defaults to the name in ``main``'s module path."""
    from loopwise.settings import get_settings

    settings = settings or get_settings()
    service = service or main.__module__.split(".")[-2]
    configure_process(settings, service)
    try:
        asyncio.run(main(settings))
    finally:
        tracing.uninstall()  # flush spans still in the batch processor
