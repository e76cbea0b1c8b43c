"""Admission control of every server: bounded work, the rest shed at once
(docs/architecture.md §6).

One :class:`Admission` per server process (built by ``ServiceHost``, applied after the
RPC observer and before the call guard), so all four services get it:

- **Per connection, in grpc's core** (:meth:`Admission.server_options`): at most
  ``max_streams_per_connection`` calls open at once on one client connection (the
  HTTP/2 ``MAX_CONCURRENT_STREAMS``); the core refuses more with REFUSED_STREAM (the
  caller sees UNAVAILABLE) before Python pays anything for them. A refusal in Python
  costs about what an empty call costs, so under a few times its capacity a process
  that refused only in Python would spend its CPU refusing.
- **Unary calls** hold one of ``max_concurrent_rpcs`` slots from the moment their
  handler starts in the call's own task until that task ends, i.e. until the answer
  was handed to the transport or the call failed. A call that finds every slot taken
  is answered RESOURCE_EXHAUSTED before its request is parsed, authenticated or looked
  at.
- **Streams** (any request- or response-streaming call: ``DecideStream``,
  ``WatchDeployments``, ``WatchOperation``, ``ReadTrainingData``, ``DownloadModel``,
  reflection) hold one of ``max_concurrent_streams`` slots for as long as they are
  open, counted apart from unary calls: a long watch never takes a unary call's slot,
  and a stream works on one message at a time, so N open streams add at most N
  messages in progress.
- **Deadlines**: a call whose remaining deadline, when its handler would start, is
  below ``admission_min_deadline_ms`` or below its method's observed service time (an
  exponentially weighted mean of the time from handler start to the end of the call,
  answer sent) is answered RESOURCE_EXHAUSTED instead of being worked on: its answer
  could not reach the caller in time.
- **Health** (``grpc.health.v1.Health``) is never counted and never shed (probes use
  their own connection, or the health port).

Every refusal of ours carries retry pushback twice: the ``grpc-retry-pushback-ms``
trailer (gRPC's retry design) and a ``google.rpc.RetryInfo`` detail in the status,
both saying how long to wait (the observed time an admitted call takes now, between
10 ms and 1 s; 1 s for streams). The SDK honours it (``loopwise.client``).

Nothing waits in a queue of ours: a call is admitted or refused when it reaches Python.
What grpc's core holds before that (calls it has received but Python has not asked
for yet) is bounded by the per-connection limit and in time: the core drops a call
whose caller gave up, or that it has held for ``CORE_QUEUE_S`` (its own default is
30 s), without handing it to Python, and a call handed over late is shed by the
deadline rule above.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from loopwise.metrics import Registry
from loopwise.settings import Settings

PUSHBACK_KEY = "grpc-retry-pushback-ms"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
HEALTH_SERVICE = "grpc.health.v1.Health"

# Pushback bounds, seconds: a unary refusal asks to wait the time an admitted call
# takes now, within these; a stream refusal asks for the upper bound.
MIN_PUSHBACK_S = 0.010
MAX_PUSHBACK_S = 1.0
# Seconds grpc's core may hold a call that Python has not asked for yet before it drops
# it (its own default is 30 s; whole seconds, 1 is the least that does not drop calls
# that only wait for the next turn of the event loop).
CORE_QUEUE_S = 1
# Weight of the newest observation in the running means.
EWMA_WEIGHT = 0.05

# Why a call was shed (the ``reason`` label of loopwise_admission_shed_total).
OVER_LIMIT = "over_limit"
DEADLINE = "deadline"
STREAMS = "streams"


class Ticket:
    """One call between its admission and its end."""

    __slots__ = ("admission", "method", "stream", "refusal", "admitted", "started")

    def __init__(self, admission: Admission, method: str, stream: bool, refusal: str) -> None:
        self.admission = admission
        self.method = method
        self.stream = stream
        self.refusal = refusal
        self.admitted = time.perf_counter()
        self.started = 0.0

    def end(self, _task: object = None) -> None:
        """Free the slot (the call's task is done) and learn its times."""
        self.admission._end(self)


# The ticket of the call being handled, set by intercept_service and read by the
# wrapped handler in the same task.
_TICKET: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("loopwise_admission_ticket",
                                                                        default=None)


def pushback_trailers(code: int, message: str, retry_after_s: float) -> tuple[tuple[str, Any], ...]:
    """Trailing metadata telling a caller to wait ``retry_after_s`` before retrying: the
    ``grpc-retry-pushback-ms`` trailer and a status with a ``google.rpc.RetryInfo``."""
    seconds = max(0.0, retry_after_s)
    whole = math.floor(seconds)
    delay = duration_pb2.Duration(seconds=int(whole), nanos=min(int(round((seconds - whole) * 1e9)), 999_999_999))
    packed = any_pb2.Any()
    packed.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=code, message=message, details=[packed])
    return ((PUSHBACK_KEY, str(int(math.ceil(seconds * 1000)))),
            (STATUS_DETAILS_KEY, status.SerializeToString()))


def pushback_of(error: Any) -> float | None:
    """The retry pushback a server attached to a failed call, in seconds: the
    ``grpc-retry-pushback-ms`` trailer, else the status's ``google.rpc.RetryInfo``; None
    when there is neither; a negative number when the server asked not to retry (a
    negative or unreadable pushback trailer, as in gRPC's retry design)."""
    try:
        metadata = tuple(error.trailing_metadata() or ())
    except Exception:  # not a call error (e.g. a closed channel)
        return None
    details = None
    for key, value in metadata:
        if key == PUSHBACK_KEY:
            try:
                ms = int(value.decode() if isinstance(value, bytes) else value)
            except ValueError:
                return -1.0
            return -1.0 if ms < 0 else ms / 1000.0
        if key == STATUS_DETAILS_KEY:
            details = value
    if details is None:
        return None
    try:
        status = status_pb2.Status.FromString(details)
    except Exception:  # a damaged status: no pushback to read
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return max(0.0, info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


class Admission(grpc.aio.ServerInterceptor):
    """Bounded unary calls, bounded streams and deadline shedding for one server."""

    def __init__(self, max_unary: int, max_streams: int, min_deadline_s: float,
                 registry: Registry | None = None, service: str = "") -> None:
        self.max_unary = max_unary
        self.max_streams = max_streams
        self.min_deadline_s = min_deadline_s
        self.service = service
        self.unary = 0  # unary calls admitted and not yet ended
        self.streams = 0  # streams admitted and not yet ended
        self.sojourn_s = 0.0  # running mean: admission to end of an admitted unary call
        self.service_s: dict[str, float] = {}  # running mean per method: handler start to end
        self.shed: dict[tuple[str, str], int] = {}  # (method, reason) -> calls shed
        self._handlers: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler | None]] = {}
        self._trailers: dict[tuple[str, int], tuple[str, tuple[tuple[str, Any], ...]]] = {}
        if registry is not None:
            self._register(registry)

    @classmethod
    def from_settings(cls, settings: Settings, registry: Registry | None = None,
                      service: str = "") -> Admission:
        """The admission control configured by ``settings``."""
        return cls(settings.max_concurrent_rpcs, settings.max_concurrent_streams,
                   settings.admission_min_deadline_ms / 1000.0, registry, service)

    @staticmethod
    def server_options(settings: Settings) -> list[tuple[str, Any]]:
        """grpc server options of admission control: the core drops a call it has held
        for CORE_QUEUE_S without Python asking for it (instead of 30 s), and refuses
        streams over ``max_streams_per_connection`` on one connection."""
        options: list[tuple[str, Any]] = [("grpc.server_max_unrequested_time_in_server", CORE_QUEUE_S)]
        if settings.max_streams_per_connection:
            options.append(("grpc.max_concurrent_streams", settings.max_streams_per_connection))
        return options

    # -- grpc.aio interceptor ----------------------------------------------------------
    async def intercept_service(self, continuation: Callable[[Any], Any],
                                details: grpc.HandlerCallDetails) -> Any:
        """The handler of ``details.method``, wrapped; admits or refuses the call."""
        handler = await continuation(details)
        if handler is None:
            return None
        method = details.method
        cached = self._handlers.get(method)
        if cached is None or cached[0] is not handler:
            cached = (handler, self._wrap(method, handler))
            self._handlers[method] = cached
        wrapped = cached[1]
        if wrapped is None:  # Health, or a synchronous handler: not counted
            return handler
        if asyncio.current_task() is None:
            return handler
        _TICKET.set(self.ticket(method, handler.request_streaming or handler.response_streaming))
        return wrapped

    def ticket(self, method: str, stream: bool) -> Ticket:
        """Count a call of ``method`` that reached Python (in its own task): its ticket,
        with ``refusal`` set when its bound is full. An admitted call holds its slot
        until its task is done."""
        if stream:
            refusal = STREAMS if self.max_streams and self.streams >= self.max_streams else ""
        else:
            refusal = OVER_LIMIT if self.max_unary and self.unary >= self.max_unary else ""
        ticket = Ticket(self, method, stream, refusal)
        if not refusal:
            task = asyncio.current_task()
            if task is not None:
                if stream:
                    self.streams += 1
                else:
                    self.unary += 1
                task.add_done_callback(ticket.end)
        return ticket

    def wrap_once(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` with admission control, for a server without interceptors: the
        ticket is taken inside the call's own task when its handler starts (Health and
        synchronous handlers are returned as they are)."""
        wrapped = self._wrap(method, handler)
        if wrapped is None:
            return handler
        stream = handler.request_streaming or handler.response_streaming
        take = self.ticket

        def taking(behavior: Any) -> Any:
            if inspect.isasyncgenfunction(behavior):
                async def gen(request: Any, context: Any) -> AsyncIterator[Any]:
                    _TICKET.set(take(method, stream))
                    async for response in behavior(request, context):
                        yield response
                return gen

            async def call(request: Any, context: Any) -> Any:
                _TICKET.set(take(method, stream))
                return await behavior(request, context)
            return call

        for kind, factory in (("unary_unary", grpc.unary_unary_rpc_method_handler),
                              ("unary_stream", grpc.unary_stream_rpc_method_handler),
                              ("stream_unary", grpc.stream_unary_rpc_method_handler),
                              ("stream_stream", grpc.stream_stream_rpc_method_handler)):
            behavior = getattr(wrapped, kind)
            if behavior is not None:
                return factory(taking(behavior), request_deserializer=wrapped.request_deserializer,
                               response_serializer=wrapped.response_serializer)
        return handler

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler | None:
        if method.startswith(f"/{HEALTH_SERVICE}/"):
            return None
        kwargs = {"request_deserializer": handler.request_deserializer,
                  "response_serializer": handler.response_serializer}
        if handler.unary_unary is not None and inspect.iscoroutinefunction(handler.unary_unary):
            return grpc.unary_unary_rpc_method_handler(self._unary(method, handler.unary_unary), **kwargs)
        for kind, factory in (("unary_stream", grpc.unary_stream_rpc_method_handler),
                              ("stream_stream", grpc.stream_stream_rpc_method_handler),
                              ("stream_unary", grpc.stream_unary_rpc_method_handler)):
            behavior = getattr(handler, kind)
            if behavior is None:
                continue
            if kind.startswith("stream") and inspect.iscoroutinefunction(behavior):
                # A client-streaming call, or a bidi stream answered with context.write.
                return factory(self._stream_in(method, behavior), **kwargs)
            if inspect.isasyncgenfunction(behavior):
                return factory(self._streaming(method, behavior, kind.startswith("stream")), **kwargs)
            return None
        return None

    # -- the checks --------------------------------------------------------------------
    def need_s(self, method: str) -> float:
        """The least remaining deadline a call of ``method`` must have to be started."""
        return max(self.min_deadline_s, self.service_s.get(method, 0.0))

    def pushback_s(self, stream: bool = False) -> float:
        """How long a refused caller should wait before trying again."""
        if stream:
            return MAX_PUSHBACK_S
        return min(MAX_PUSHBACK_S, max(MIN_PUSHBACK_S, self.sojourn_s))

    def _refusal(self, context: Any, ticket: Ticket) -> str:
        """Why the call must be shed now ("" to serve it)."""
        if ticket.refusal:
            return ticket.refusal
        remaining = context.time_remaining()
        if remaining is not None and remaining < (self.min_deadline_s if ticket.stream
                                                  else self.need_s(ticket.method)):
            return DEADLINE
        return ""

    async def _shed(self, context: Any, ticket: Ticket, reason: str) -> None:
        """Answer RESOURCE_EXHAUSTED with retry pushback (raises grpc's AbortError)."""
        key = (ticket.method, reason)
        self.shed[key] = self.shed.get(key, 0) + 1
        pushback = self.pushback_s(ticket.stream)
        message, trailers = self._refusal_status(reason, int(math.ceil(pushback * 1000)))
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message, trailers)

    def _refusal_status(self, reason: str, pushback_ms: int) -> tuple[str, tuple[tuple[str, Any], ...]]:
        """The message and trailers of a refusal (cached: shedding must stay cheap)."""
        cached = self._trailers.get((reason, pushback_ms))
        if cached is not None:
            return cached
        name = self.service or "server"
        if reason == OVER_LIMIT:
            text = f"{name} is at its bound of {self.max_unary} calls in progress (max_concurrent_rpcs)"
        elif reason == STREAMS:
            text = f"{name} is at its bound of {self.max_streams} open streams (max_concurrent_streams)"
        else:
            text = f"{name}: the call's deadline leaves less time than serving it takes"
        text += f"; retry in {pushback_ms} ms"
        if len(self._trailers) > 1024:
            self._trailers.clear()
        cached = self._trailers[(reason, pushback_ms)] = (
            text, pushback_trailers(code_pb2.RESOURCE_EXHAUSTED, text, pushback_ms / 1000.0))
        return cached

    def _end(self, ticket: Ticket) -> None:
        now = time.perf_counter()
        if ticket.stream:
            self.streams -= 1
            return
        self.unary -= 1
        if ticket.started:
            w = EWMA_WEIGHT
            self.sojourn_s += w * ((now - ticket.admitted) - self.sojourn_s)
            previous = self.service_s.get(ticket.method)
            took = now - ticket.started
            self.service_s[ticket.method] = took if previous is None else previous + w * (took - previous)

    # -- wrapped handlers --------------------------------------------------------------
    def _unary(self, method: str, behavior: Any) -> Any:
        async def call(request: Any, context: Any) -> Any:
            ticket = _TICKET.get()
            if ticket is not None:
                reason = self._refusal(context, ticket)
                if reason:
                    await self._shed(context, ticket, reason)
                ticket.started = time.perf_counter()
            return await behavior(request, context)

        return call

    def _stream_in(self, method: str, behavior: Any) -> Any:
        async def call(requests: Any, context: Any) -> Any:
            ticket = _TICKET.get()
            if ticket is not None:
                reason = self._refusal(context, ticket)
                if reason:
                    await _drain(requests)
                    await self._shed(context, ticket, reason)
            return await behavior(requests, context)

        return call

    def _streaming(self, method: str, behavior: Any, streaming_request: bool) -> Any:
        async def call(request: Any, context: Any) -> AsyncIterator[Any]:
            ticket = _TICKET.get()
            if ticket is not None:
                reason = self._refusal(context, ticket)
                if reason:
                    if streaming_request:
                        await _drain(request)
                    await self._shed(context, ticket, reason)
            async for response in behavior(request, context):
                yield response

        return call

    # -- metrics ------------------------------------------------------------------------
    def _register(self, registry: Registry) -> None:
        in_progress = registry.gauge("loopwise_admission_in_progress",
                                     "Calls admitted and not yet ended, by kind (unary, stream)",
                                     ["service", "kind"])
        bounds = registry.gauge("loopwise_admission_bound",
                                "Admission bounds: max_concurrent_rpcs (unary) and max_concurrent_streams "
                                "(stream); 0: none", ["service", "kind"])
        shed = registry.counter("loopwise_admission_shed_total",
                                "Calls answered RESOURCE_EXHAUSTED by admission control, by reason "
                                "(over_limit, deadline, streams)", ["service", "rpc", "reason"])
        service_time = registry.gauge("loopwise_admission_service_seconds",
                                      "Running mean of a method's time from handler start to the end of "
                                      "the call (what a deadline must leave for the call to be started)",
                                      ["service", "rpc"])
        sojourn = registry.gauge("loopwise_admission_sojourn_seconds",
                                 "Running mean of an admitted unary call's time from admission to its "
                                 "end (the pushback of a refusal)", ["service"])
        service = self.service

        def collect() -> None:
            in_progress.set((service, "unary"), self.unary)
            in_progress.set((service, "stream"), self.streams)
            bounds.set((service, "unary"), self.max_unary)
            bounds.set((service, "stream"), self.max_streams)
            sojourn.set((service,), self.sojourn_s)
            for (method, reason), count in list(self.shed.items()):
                shed.values[(service, _rpc(method), reason)] = float(count)
            for method, seconds in list(self.service_s.items()):
                service_time.set((service, _rpc(method)), seconds)

        registry.on_collect(collect)


def _rpc(method: str) -> str:
    return method.rsplit("/", 1)[-1]


async def _drain(requests: Any) -> None:
    """Read what a refused client-streaming caller is still sending before the refusal
    goes out (see loopwise.security: grpcio's asyncio client would report INTERNAL)."""
    from loopwise.security import _drain_before_refusal

    await _drain_before_refusal(requests)
