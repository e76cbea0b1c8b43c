"""Helpers for the security tests: tokens files, per-service credentials, and a generic
caller that reaches every RPC of every service by name with a minimal request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from loopwise.auth import new_token
from loopwise.decision.v1 import decision_service_pb2
from loopwise.evaluator.v1 import evaluator_service_pb2
from loopwise.feedback.v1 import feedback_service_pb2
from loopwise.launcher import Launcher
from loopwise.local_profile import SERVICE_SCOPES
from loopwise.settings import SERVICES
from loopwise.trainer.v1 import trainer_service_pb2

SERVICE_MODULES = {"decision": decision_service_pb2, "feedback": feedback_service_pb2,
                   "trainer": trainer_service_pb2, "evaluator": evaluator_service_pb2}



@dataclass(frozen=True)
class Rpc:
    """One RPC of a loopwise service."""

    area: str
    service: str
    method: MethodDescriptor

    @property
    def name(self) -> str:
        """The method name, e.g. ``Decide``."""
        return self.method.name

    @property
    def path(self) -> str:
        """The wire path ``/loopwise.decision.v1.DecisionService/Decide``."""
        return f"/{self.service}/{self.method.name}"

    def request_class(self) -> type[Message]:
        """The generated request class."""
        return message_factory.GetMessageClass(self.method.input_type)


def all_rpcs() -> Iterator[Rpc]:
    """Every RPC of the four services."""
    for area, module in SERVICE_MODULES.items():
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                yield Rpc(area, service.full_name, method)


def names_use_case(descriptor: Descriptor) -> bool:
    """True when requests of this type name a use case (directly or in their records)."""
    for field in descriptor.fields:
        if field.name in ("use_case", "use_cases") and field.type == FieldDescriptor.TYPE_STRING:
            return True
        if (field.type == FieldDescriptor.TYPE_MESSAGE and not field.message_type.GetOptions().map_entry
                and "use_case" in field.message_type.fields_by_name):
            return True
    return False


def minimal_request(rpc: Rpc, use_case: str) -> Message:
    """A small request of ``rpc`` that names ``use_case`` wherever a use case goes."""
    request = rpc.request_class()()
    for field in request.DESCRIPTOR.fields:
        if field.name == "use_case" and field.type == FieldDescriptor.TYPE_STRING:
            setattr(request, field.name, use_case)
        elif field.name == "use_cases" and field.type == FieldDescriptor.TYPE_STRING:
            getattr(request, field.name).append(use_case)
        elif (field.type == FieldDescriptor.TYPE_MESSAGE
              and not field.message_type.GetOptions().map_entry
              and "use_case" in field.message_type.fields_by_name):
            item = getattr(request, field.name).add() if field.is_repeated else getattr(request, field.name)
            item.use_case = use_case
    return request


async def call_code(channel: grpc.aio.Channel, rpc: Rpc, request: Message,
                    metadata: tuple[tuple[str, str], ...] = (), timeout: float = 20.0
                    ) -> grpc.StatusCode:
    """Call ``rpc`` with ``request`` and return the final status code."""
    serialize, deserialize = type(request).SerializeToString, (lambda raw: raw)
    method = rpc.method
    try:
        if method.client_streaming:
            async def requests() -> Any:
                yield request

            if method.server_streaming:
                call = channel.stream_stream(rpc.path, serialize, deserialize)(
                    requests(), metadata=metadata, timeout=timeout)
                async for _ in call:
                    pass
            else:
                await channel.stream_unary(rpc.path, serialize, deserialize)(
                    requests(), metadata=metadata, timeout=timeout)
        elif method.server_streaming:
            call = channel.unary_stream(rpc.path, serialize, deserialize)(
                request, metadata=metadata, timeout=timeout)
            async for _ in call:
                pass
        else:
            await channel.unary_unary(rpc.path, serialize, deserialize)(
                request, metadata=metadata, timeout=timeout)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def bearer(secret: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``secret`` as a bearer token."""
    return (("authorization", f"Bearer {secret}"),)


class TokensFile:
    """A tokens file the test writes; secrets stay in memory, the file holds hashes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[dict[str, Any]] = []
        self.secrets: dict[str, str] = {}

    def add(self, name: str, scopes: Mapping[str, list[str]], service: bool = False) -> str:
        """Create a token, write the file, return the secret."""
        secret, entry = new_token(name, scopes, service=service)
        self.entries.append(entry)
        self.secrets[name] = secret
        self.write()
        return secret

    def remove(self, name: str) -> None:
        """Revoke a token (rewrite the file without it)."""
        self.entries = [e for e in self.entries if e["name"] != name]
        self.write()

    def write(self) -> None:
        """Write the file atomically (as a mounted Secret is swapped)."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump({"tokens": self.entries}))
        tmp.replace(self.path)


def give_services_credentials(launcher: Launcher, tokens: TokensFile) -> None:
    """Each service gets its own token (in its own environment) with the scopes it needs."""
    for name in SERVICES:
        secret = tokens.add(f"{name}-service", {"*": SERVICE_SCOPES[name]}, service=True)
        launcher.service_env.setdefault(name, {})["LOOPWISE_TOKEN"] = secret


async def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.2) -> bool:
    """Poll an async predicate until true or ``timeout`` (generous: machines are shared)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval)
    return False
