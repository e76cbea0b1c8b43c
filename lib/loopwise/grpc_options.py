"""gRPC options shared by servers, inter-service channels and the SDK's channels
(a small module, so that a client needs none of the server's imports)."""

from __future__ import annotations

from typing import Any

from loopwise.settings import Settings


def channel_options(settings: Settings) -> list[tuple[str, Any]]:
    """Channel/server options shared by servers and their clients: the largest message
    sent or received (``LOOPWISE_MAX_MESSAGE_BYTES``)."""
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
    ]
