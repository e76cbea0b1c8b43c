"""The floor a gRPC service in Python can reach here: a bare ``grpc.aio`` server (the same
grpcio and channel options as loopwise's servers, no interceptors, no health, no
reflection) serving ``/loopwise.decision.v1.DecisionService/Decide``.

``python -m bench.bare --port P --reply-bytes N [--raw]``: by default each request is
parsed as a ``DecideRequest`` and a ``DecideResponse`` of N bytes is serialized per
call; with ``--raw`` the bytes are neither parsed nor built (a fixed reply of N bytes).
"""

from __future__ import annotations

import argparse
import asyncio

import grpc

from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.grpc_options import channel_options
from loopwise.settings import Settings

DECIDE = "/loopwise.decision.v1.DecisionService/Decide"


def reply_of(size: int) -> dpb.DecideResponse:
    """A DecideResponse of exactly ``size`` bytes (padding in the decision id)."""
    reply = dpb.DecideResponse(decision=dpb.Decision(use_case="bench_lr", action="yes", score=0.5,
                                                     action_probabilities=[0.5, 0.5]))
    pad = max(0, size - reply.ByteSize() - 3)
    reply.decision.decision_id = "x" * pad
    while reply.ByteSize() > size and reply.decision.decision_id:
        reply.decision.decision_id = reply.decision.decision_id[:-1]
    while reply.ByteSize() < size:
        reply.decision.decision_id += "x"
    return reply


class Bare(grpc.GenericRpcHandler):
    """Decide only, parsed (or raw bytes)."""

    def __init__(self, size: int, raw: bool) -> None:
        if raw:
            blob = reply_of(size).SerializeToString()  # valid reply bytes, built once

            async def decide_raw(request: bytes, context) -> bytes:
                return blob

            self.handler = grpc.unary_unary_rpc_method_handler(decide_raw)
        else:
            template = reply_of(size)

            async def decide(request: dpb.DecideRequest, context) -> dpb.DecideResponse:
                reply = dpb.DecideResponse()
                reply.CopyFrom(template)
                return reply

            self.handler = grpc.unary_unary_rpc_method_handler(
                decide, request_deserializer=dpb.DecideRequest.FromString,
                response_serializer=dpb.DecideResponse.SerializeToString)

    def service(self, handler_call_details):
        """The handler of Decide, or None."""
        return self.handler if handler_call_details.method == DECIDE else None


async def serve(port: int, size: int, raw: bool) -> None:
    """Run until killed."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0), *channel_options(Settings(allow_plaintext=True))])
    server.add_generic_rpc_handlers((Bare(size, raw),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reply-bytes", type=int, required=True)
    parser.add_argument("--raw", action="store_true")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.reply_bytes, args.raw))


if __name__ == "__main__":
    main()
