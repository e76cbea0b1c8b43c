"""Client interceptors for ``grpc.aio`` channels, filed under every call type.

``grpc.aio`` files an interceptor object under the *first* interceptor interface it
implements only (unary-unary before unary-stream, stream-unary and stream-stream), so
one object that implements all four acts on unary-unary calls alone: a bearer token or
a trace context added that way never reaches a streaming call. :func:`for_every_call_type`
hands the channel four adapters instead, one per interface, each delegating to the
same object. Blocking channels (``grpc.intercept_channel``) do not need this.
"""

from __future__ import annotations

from typing import Any

import grpc


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self.inner.intercept_unary_unary(continuation, details, request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self.inner.intercept_unary_stream(continuation, details, request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await self.inner.intercept_stream_unary(continuation, details, request_iterator)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return await self.inner.intercept_stream_stream(continuation, details, request_iterator)


def for_every_call_type(interceptor: Any) -> list[grpc.aio.ClientInterceptor]:
    """Adapters that file ``interceptor`` (which implements all four
    ``intercept_*`` methods) under each of the four aio call types."""
    return [_UnaryUnary(interceptor), _UnaryStream(interceptor),
            _StreamUnary(interceptor), _StreamStream(interceptor)]
