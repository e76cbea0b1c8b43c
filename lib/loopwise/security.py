"""Transport security and the one call guard of every server.

- :func:`server_interceptors`: one :class:`CallGuard` per server that authenticates the
  bearer token, enforces input limits, authorises the scope on the request's use
  case(s) and applies rate limits, all before the servicer does any work. Health and
  reflection are open.
- :func:`bind`: TLS or mutual TLS from settings; plaintext only when
  ``allow_plaintext`` is set (demo, tests, benchmarks on loopback).
- :func:`start_health_server`: an optional plaintext port that serves only Health, for
  Kubernetes probes that hold neither a client certificate nor a token.
- :func:`aio_channel` / :func:`sync_channel`: channels for service-to-service and SDK
  calls with the process's own TLS client certificate and bearer token.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2_grpc

from loopwise.auth import (
    ANONYMOUS,
    OPEN_SERVICES,
    Principal,
    TokenStore,
    authenticate,
    authorize,
    request_use_cases,
    split_method,
)
from loopwise.call_types import for_every_call_type
from loopwise.errors import InvalidArgument, LoopwiseError, to_status
from loopwise.limits import InputLimits, RateLimits
from loopwise.settings import Settings
from loopwise.targets import Address, channel_target

log = logging.getLogger("loopwise.security")


class InsecureConfiguration(RuntimeError):
    """TLS or tokens are missing and plaintext was not explicitly allowed."""


def check_configuration(settings: Settings) -> None:
    """Refuse to serve without TLS and tokens unless ``allow_plaintext`` is set."""
    if settings.allow_plaintext:
        return
    missing = [name for name in ("tls_cert_file", "tls_key_file") if getattr(settings, name) is None]
    if settings.tokens_file is None:
        missing.append("tokens_file")
    if missing:
        env = ", ".join(f"LOOPWISE_{m.upper()}" for m in missing)
        raise InsecureConfiguration(
            f"secure mode needs {env}; set LOOPWISE_ALLOW_PLAINTEXT=true only for loopback "
            "development, tests and benchmarks")


# ---------------------------------------------------------------- server side


class CallGuard(grpc.aio.ServerInterceptor):
    """Authentication, input limits, authorisation and rate limits for one server."""

    def __init__(self, settings: Settings) -> None:
        self.tokens = (TokenStore(settings.tokens_file, settings.tokens_reload_s)
                       if settings.tokens_file is not None else None)
        self.limits = InputLimits.from_settings(settings)
        self.rates = RateLimits(settings)
        self._handlers: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(self, continuation: Callable[[Any], Any],
                                details: grpc.HandlerCallDetails) -> Any:
        """Wrap the method handler of every RPC except Health and reflection (wrapped
        once per method while the rest of the chain returns the same handler)."""
        handler = await continuation(details)
        if handler is None:
            return handler
        cached = self._handlers.get(details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap_once(details.method, handler)
        self._handlers[details.method] = (handler, wrapped)
        return wrapped

    def wrap_once(self, full_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The guarded handler of ``full_method`` (``/service/Method``); Health and
        reflection are returned as they are."""
        service, method = split_method(full_method)
        if service in OPEN_SERVICES:
            return handler
        return self._wrap(handler, method)

    def screen(self, context: grpc.aio.ServicerContext, method: str, raw: Any,
               parse: Callable[[bytes], Any] | None) -> Any:
        """Authenticate, parse and check one unary request (synchronously); returns the
        parsed request or raises a LoopwiseError (answer it with :meth:`refuse`)."""
        principal = self.admit(context) if self.tokens is not None else ANONYMOUS
        request = _parse(raw, parse)
        self.check(principal, method, request, context)
        return request

    async def refuse(self, context: grpc.aio.ServicerContext, method: str, error: LoopwiseError,
                     principal: Principal | None = None) -> None:
        """End the call with ``error``'s status (raises grpc's abort)."""
        _log_refusal(method, error, principal)
        await context.abort_with_status(to_status(error))

    def admit(self, context: grpc.aio.ServicerContext) -> Principal:
        """The caller's principal (Unauthenticated when tokens are on and it has none)."""
        if self.tokens is None:
            return ANONYMOUS
        return authenticate(self.tokens, context.invocation_metadata())

    def check(self, principal: Principal, method: str, request: Message,
              context: grpc.aio.ServicerContext) -> None:
        """Limits, scope and rate of one request message; raises a LoopwiseError.
        Handlers of raw bytes (no protobuf request) get the rate limit only."""
        if not isinstance(request, Message):
            if self.tokens is not None:
                authorize(principal, method, set())
            if not principal.service:
                self.rates.check(_client_key(principal, context), set())
            return
        self.limits.check(request)
        if self.tokens is None and not self.rates.enabled:
            return
        use_cases = request_use_cases(request)
        if self.tokens is not None:
            authorize(principal, method, use_cases)
        if not principal.service:
            self.rates.check(_client_key(principal, context), use_cases)

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        # Requests are parsed here, not by gRPC, so that bytes that are not a valid
        # message get INVALID_ARGUMENT naming the request instead of UNKNOWN.
        parse = handler.request_deserializer
        kwargs = {"request_deserializer": None, "response_serializer": handler.response_serializer}
        if handler.request_streaming and handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                self._stream_in(handler.stream_stream, method, parse, streaming_out=True), **kwargs)
        if handler.request_streaming:
            return grpc.stream_unary_rpc_method_handler(
                self._stream_in(handler.stream_unary, method, parse, streaming_out=False), **kwargs)
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._unary_stream(handler.unary_stream, method, parse), **kwargs)
        return grpc.unary_unary_rpc_method_handler(
            self._unary_unary(handler.unary_unary, method, parse), **kwargs)

    async def _guard(self, context: grpc.aio.ServicerContext, method: str, raw: Any,
                     parse: Callable[[bytes], Any] | None, principal: Principal | None = None,
                     pending: AsyncIterator[Any] | None = None) -> tuple[Principal, Any]:
        """Authenticate, parse ``raw`` (unless None) and check it; aborts the call
        with the error's status. Returns the principal and the parsed request.
        ``pending``: the request stream of a client-streaming call, drained before a
        refusal is sent (see :func:`_drain_before_refusal`)."""
        request = None
        try:
            principal = principal or self.admit(context)
            if raw is not None:
                request = _parse(raw, parse)
                self.check(principal, method, request, context)
            return principal, request
        except LoopwiseError as error:
            if pending is not None:
                await _drain_before_refusal(pending)
            await self.refuse(context, method, error, principal)
            raise  # abort_with_status raises; this keeps type checkers honest

    def _unary_unary(self, behavior: Callable[..., Any], method: str,
                     parse: Callable[[bytes], Any] | None) -> Callable[..., Any]:
        async def call(raw: Any, context: grpc.aio.ServicerContext) -> Any:
            _, request = await self._guard(context, method, raw, parse)
            return await behavior(request, context)

        return call

    def _unary_stream(self, behavior: Callable[..., Any], method: str,
                      parse: Callable[[bytes], Any] | None) -> Callable[..., Any]:
        async def call(raw: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            _, request = await self._guard(context, method, raw, parse)
            result = behavior(request, context)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            else:
                await result

        return call

    def _stream_in(self, behavior: Callable[..., Any], method: str,
                   parse: Callable[[bytes], Any] | None, streaming_out: bool) -> Callable[..., Any]:
        async def call_coroutine(requests: AsyncIterator[Any],
                                 context: grpc.aio.ServicerContext) -> Any:
            principal, _ = await self._guard(context, method, None, parse, pending=requests)
            try:
                return await behavior(CheckedRequests(self, method, parse, principal, requests, context), context)
            except LoopwiseError as error:
                await context.abort_with_status(to_status(error))

        async def call_stream(requests: AsyncIterator[Any],
                              context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            principal, _ = await self._guard(context, method, None, parse, pending=requests)
            try:
                async for item in behavior(CheckedRequests(self, method, parse, principal, requests, context), context):
                    yield item
            except LoopwiseError as error:
                await context.abort_with_status(to_status(error))

        # A bidi stream answered with context.write is a coroutine, as a client-streaming one.
        return call_stream if streaming_out and inspect.isasyncgenfunction(behavior) else call_coroutine


class CheckedRequests:
    """The request messages of a client-streaming call as an async iterator, each
    parsed and checked (limits, scope, rate) as it is read with ``context.read``: one
    coroutine per message, no generator between the servicer and grpc.

    A refused message is raised to the reader, not aborted here: the servicer may read
    its requests in a task of its own while it still answers earlier ones (DecideStream
    reads ahead). The call's own task ends the call with the error's status after those
    answers (the servicer's error mapping, or CallGuard's wrappers). The rest of what
    the client is sending is read and discarded first (:func:`_drain_before_refusal`)."""

    __slots__ = ("_guard", "_method", "_parse", "_principal", "_requests", "_context", "_read")

    def __init__(self, guard: CallGuard, method: str, parse: Callable[[bytes], Any] | None,
                 principal: Principal, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
        self._guard = guard
        self._method = method
        self._parse = parse
        self._principal = principal
        self._requests = requests  # grpc's iterator of the same messages: drained on a refusal
        self._context = context
        self._read = context.read

    def __aiter__(self) -> CheckedRequests:
        return self

    async def __anext__(self) -> Any:
        raw = await self._read()
        if raw is grpc.aio.EOF:
            raise StopAsyncIteration
        try:
            request = _parse(raw, self._parse)
            self._guard.check(self._principal, self._method, request, self._context)
        except LoopwiseError as error:
            await _drain_before_refusal(self._requests)
            _log_refusal(self._method, error, self._principal)
            raise
        return request


# A refused client-streaming call first reads (and discards) what the client is still
# sending: until it half-closes, goes quiet for REFUSAL_QUIET_S, or REFUSAL_DRAIN_S or
# REFUSAL_DRAIN_MESSAGES are used up. Sending the status while the client is still
# writing makes grpcio's asyncio client report "INTERNAL: Internal error from Core" in
# place of the server's status (its failed write overwrites the status already
# received; grpc/grpc#36066); blocking clients and other languages are not affected.
# The quiet period is what a writing client may stall (a garbage collection, a busy
# machine) without being misread as done: at 0.25 s a client stalled for 0.3 s got
# INTERNAL on every stream. It is also how long a client that writes one message and
# waits for an answer without half-closing waits for its refusal.
REFUSAL_QUIET_S = 1.0
REFUSAL_DRAIN_S = 5.0
REFUSAL_DRAIN_MESSAGES = 1000


def _log_refusal(method: str, error: LoopwiseError, principal: Principal | None) -> None:
    log.info("%s refused for %s: %s %s", method, principal.name if principal else "?",
             error.code.name, error.message)


async def _drain_before_refusal(requests: AsyncIterator[Any]) -> int:
    """Read and discard the rest of a refused request stream (bounded); returns the
    number of messages discarded. Nothing read is parsed or acted upon."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REFUSAL_DRAIN_S
    iterator = requests.__aiter__()
    discarded = 0
    while discarded < REFUSAL_DRAIN_MESSAGES:
        left = deadline - loop.time()
        if left <= 0:
            break
        try:
            await asyncio.wait_for(iterator.__anext__(), min(left, REFUSAL_QUIET_S))
        except (StopAsyncIteration, TimeoutError):
            break
        except Exception:  # the call is already broken: nothing more to read
            break
        discarded += 1
    return discarded


def _parse(raw: Any, parse: Callable[[bytes], Any] | None) -> Any:
    """The request message of raw bytes (INVALID_ARGUMENT when they are not one)."""
    if parse is None or not isinstance(raw, bytes | bytearray | memoryview):
        return raw
    try:
        return parse(bytes(raw))
    except Exception as error:  # DecodeError and friends: bad bytes, not a server fault
        raise InvalidArgument("request", f"not a valid request message ({type(error).__name__})") from None


def _client_key(principal: Principal, context: grpc.aio.ServicerContext) -> str:
    """Rate-limit key: the token's name, or the peer's host without its port."""
    if principal is not ANONYMOUS:
        return principal.name
    peer = context.peer() or "unknown"
    return peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer


def server_interceptors(settings: Settings) -> list[grpc.aio.ServerInterceptor]:
    """The security interceptors of a server (one :class:`CallGuard`)."""
    return [CallGuard(settings)]


def _read(path: Path | None) -> bytes | None:
    return Path(path).read_bytes() if path is not None else None


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS (mutual when a client CA is set and required) credentials, or None for
    plaintext (only with ``allow_plaintext``)."""
    check_configuration(settings)
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    ca = _read(settings.tls_ca_file)
    return grpc.ssl_server_credentials(
        [(_read(settings.tls_key_file), _read(settings.tls_cert_file))],
        root_certificates=ca,
        require_client_auth=bool(ca is not None and settings.tls_require_client_cert),
    )


def bind(server: grpc.aio.Server, address: str, settings: Settings) -> int:
    """Add the service port, with TLS when configured; returns the bound port."""
    credentials = server_credentials(settings)
    if credentials is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, credentials)


async def start_health_server(servicer: Any, address: str, settings: Settings
                              ) -> tuple[grpc.aio.Server, int] | None:
    """A plaintext server serving only ``servicer`` (Health) on ``health_port``.

    It shares the main server's HealthServicer, so probes see the same status
    (NOT_SERVING as soon as a graceful stop begins). None when ``health_port`` is 0.
    """
    if not settings.health_port:
        return None
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    host = address.rsplit(":", 1)[0] if settings.health_host == "" else settings.health_host
    port = server.add_insecure_port(f"{host}:{settings.health_port}")
    await server.start()
    return server, port


# ---------------------------------------------------------------- client side


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """TLS credentials for outgoing calls (with the client certificate for mTLS), or
    None for plaintext: only when plaintext is allowed and no CA is configured. Without
    a CA file, secure mode verifies servers against the system's roots."""
    if settings.tls_ca_file is None and settings.allow_plaintext:
        return None
    cert = settings.tls_client_cert_file or settings.tls_cert_file
    key = settings.tls_client_key_file or settings.tls_key_file
    return grpc.ssl_channel_credentials(root_certificates=_read(settings.tls_ca_file),
                                        private_key=_read(key) if cert else None,
                                        certificate_chain=_read(cert) if key else None)


def _channel_options(settings: Settings, options: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    out = list(options)
    if settings.tls_server_name:
        out.append(("grpc.ssl_target_name_override", settings.tls_server_name))
    return out


class _Bearer(NamedTuple):
    """``authorization`` metadata entry added to every outgoing call."""

    key: str
    value: str


def _bearer(settings: Settings) -> _Bearer | None:
    secret = settings.token.get_secret_value()
    return _Bearer("authorization", f"Bearer {secret}") if secret else None


def _authorized(metadata: Any) -> bool:
    """Whether a call carries its own ``authorization`` entry (a caller's token that a
    service acts for, see :func:`loopwise.auth.caller_authorization`): it is kept."""
    return any(key.lower() == "authorization" for key, _ in (metadata or ()))


class _AioBearerInterceptor:
    """Adds the bearer token to every call of an aio channel that has none (filed under
    each call type by :func:`for_every_call_type`)."""

    def __init__(self, bearer: _Bearer) -> None:
        self._entry = (bearer.key, bearer.value)

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        if _authorized(details.metadata):
            return details
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self._entry)
        return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata,
                                          details.credentials, details.wait_for_ready)

    async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[override]
        return await continuation(self._details(details), request)

    async def intercept_unary_stream(self, continuation, details, request):  # type: ignore[override]
        return await continuation(self._details(details), request)

    async def intercept_stream_unary(self, continuation, details, request_iterator):  # type: ignore[override]
        return await continuation(self._details(details), request_iterator)

    async def intercept_stream_stream(self, continuation, details, request_iterator):  # type: ignore[override]
        return await continuation(self._details(details), request_iterator)


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


class _SyncBearerInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                             grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the bearer token to every call of a blocking channel that has none."""

    def __init__(self, bearer: _Bearer) -> None:
        self._entry = (bearer.key, bearer.value)

    def _details(self, details: Any) -> _CallDetails:
        entries = list(details.metadata or ())
        return _CallDetails(details.method, details.timeout,
                            entries if _authorized(entries) else [*entries, self._entry], details.credentials,
                            getattr(details, "wait_for_ready", None),
                            getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[override]
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):  # type: ignore[override]
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):  # type: ignore[override]
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):  # type: ignore[override]
        return continuation(self._details(details), request_iterator)


def aio_channel(settings: Settings, address: Address, options: Sequence[tuple[str, Any]] = (),
                interceptors: Sequence[Any] = ()) -> grpc.aio.Channel:
    """An aio channel to ``address`` (one or several, see loopwise.targets) with this
    process's TLS identity and token."""
    credentials = channel_credentials(settings)
    bearer = _bearer(settings)
    chain = [*interceptors, *(for_every_call_type(_AioBearerInterceptor(bearer)) if bearer else [])]
    target, spread = channel_target(settings, address)
    opts = _channel_options(settings, [*options, *spread])
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=opts, interceptors=chain or None)
    return grpc.aio.secure_channel(target, credentials, options=opts, interceptors=chain or None)


def sync_channel(settings: Settings, address: Address,
                 options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A blocking channel to ``address`` (one or several, see loopwise.targets) with this
    process's TLS identity and token."""
    credentials = channel_credentials(settings)
    target, spread = channel_target(settings, address)
    opts = _channel_options(settings, [*options, *spread])
    channel = (grpc.insecure_channel(target, options=opts) if credentials is None
               else grpc.secure_channel(target, credentials, options=opts))
    bearer = _bearer(settings)
    return grpc.intercept_channel(channel, _SyncBearerInterceptor(bearer)) if bearer else channel
