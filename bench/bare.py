"""The floor a gRPC service in Python can reach here: a bare ``grpc.aio`` server (the same
grpcio and channel options as loopwise's servers, no interceptors, no health, no
reflection) serving ``/loopwise.decision.v1.DecisionService/Decide`` and ``DecideStream``,
and ``/loopwise.feedback.v1.FeedbackService/LogOutcomes`` (each request parsed, its
outcomes counted, nothing stored: the transport floor of an ingest).

``python -m bench.bare --port P --reply-bytes N [--raw]``: by default each request (each
message of a stream) is parsed as a ``DecideRequest`` and a ``DecideResponse`` of N
bytes is serialized per answer; with ``--raw`` the bytes are neither parsed nor built (a
fixed reply of N bytes).
"""

from __future__ import annotations

import argparse
import asyncio

import grpc

from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.grpc_options import channel_options
from loopwise.settings import Settings

DECIDE = "/loopwise.decision.v1.DecisionService/Decide"
DECIDE_STREAM = "/loopwise.decision.v1.DecisionService/DecideStream"
LOG_OUTCOMES = "/loopwise.feedback.v1.FeedbackService/LogOutcomes"


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
    """Decide and DecideStream, parsed (or raw bytes): one answer per request; and
    LogOutcomes, parsed and counted."""

    def __init__(self, size: int, raw: bool) -> None:
        if raw:
            blob = reply_of(size).SerializeToString()  # valid reply bytes, built once

            async def decide_raw(request: bytes, context) -> bytes:
                return blob

            async def stream_raw(requests, context):
                async for _ in requests:
                    yield blob

            self.handlers = {DECIDE: grpc.unary_unary_rpc_method_handler(decide_raw),
                             DECIDE_STREAM: grpc.stream_stream_rpc_method_handler(stream_raw)}
        else:
            template = reply_of(size)

            def answer() -> dpb.DecideResponse:
                reply = dpb.DecideResponse()
                reply.CopyFrom(template)
                return reply

            async def decide(request: dpb.DecideRequest, context) -> dpb.DecideResponse:
                return answer()

            async def stream(requests, context):
                async for _ in requests:
                    yield answer()

            codec = {"request_deserializer": dpb.DecideRequest.FromString,
                     "response_serializer": dpb.DecideResponse.SerializeToString}
            self.handlers = {DECIDE: grpc.unary_unary_rpc_method_handler(decide, **codec),
                             DECIDE_STREAM: grpc.stream_stream_rpc_method_handler(stream, **codec)}

        async def log_outcomes(request: fpb.LogOutcomesRequest, context) -> fpb.LogOutcomesResponse:
            return fpb.LogOutcomesResponse(
                accepted=len(request.outcomes) + sum(len(c.decision_ids) for c in request.columns))

        self.handlers[LOG_OUTCOMES] = grpc.unary_unary_rpc_method_handler(
            log_outcomes, request_deserializer=fpb.LogOutcomesRequest.FromString,
            response_serializer=fpb.LogOutcomesResponse.SerializeToString)

    def service(self, handler_call_details):
        """The handler of Decide, DecideStream or LogOutcomes, or None."""
        return self.handlers.get(handler_call_details.method)


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
