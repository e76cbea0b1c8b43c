"""A bare grpcio echo server with the decision service's process setup: the same
ServiceHost (grpc.aio, same options, health and reflection), one process, and
generic handlers that take and return raw bytes (no protobuf work).

``python -m bench.echo --port P --reply NAME=BYTES ...`` serves ``/bench.Echo/NAME``
answering every request with a fixed reply of BYTES bytes (the size of the decision
service's real reply for the same request).
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import grpc

from loopwise.server import Registration, ServiceHost, configure_logging
from loopwise.settings import Settings


class EchoHandler(grpc.GenericRpcHandler):
    """``/bench.Echo/<name>`` → a fixed reply per name."""

    def __init__(self, replies: dict[str, bytes]) -> None:
        self.handlers = {f"/bench.Echo/{name}": grpc.unary_unary_rpc_method_handler(self._reply(blob))
                         for name, blob in replies.items()}

    @staticmethod
    def _reply(blob: bytes):
        async def echo(request: bytes, context) -> bytes:
            return blob

        return echo

    def service(self, handler_call_details):
        """The handler of a method, or None."""
        return self.handlers.get(handler_call_details.method)


async def serve(port: int, replies: dict[str, bytes]) -> None:
    """Run until SIGTERM."""
    settings = Settings(decision_address=f"127.0.0.1:{port}", log_level="WARNING",
                        allow_plaintext=True)
    configure_logging(settings)
    host = ServiceHost("echo", settings, settings.decision_address)
    handler = EchoHandler(replies)
    host.add([Registration(lambda _servicer, server: server.add_generic_rpc_handlers((handler,)), None,
                           "bench.Echo")])
    await host.start()
    logging.getLogger("bench.echo").warning("echo serving on %d", host.port)
    await host.serve_until_signal()


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reply", action="append", default=[], help="NAME=BYTES")
    args = parser.parse_args()
    replies = {}
    for spec in args.reply:
        name, size = spec.split("=")
        replies[name] = b"\x07" * int(size)
    asyncio.run(serve(args.port, replies))


if __name__ == "__main__":
    main()
