"""The trainer as the evaluator uses it: register CATE models (``RegisterModel``),
download registered models to evaluate them (``DownloadModel``), and read the
deployment in force for canary scorecards (``ListDeploymentAudit``, ``WatchDeployments``)."""

from __future__ import annotations

import hashlib
from typing import Protocol

import grpc

from loopwise.channels import ServiceChannels
from loopwise.errors import FailedPrecondition
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.upstream import translate_rpc_error

CALL_TIMEOUT_S = 60.0
DEPLOYMENT_TIMEOUT_S = 10.0


class ModelRegistry(Protocol):
    """Register and download models."""

    async def register(self, model: tpb.Model, onnx: bytes, request_id: str) -> tpb.Model: ...

    async def download(self, use_case: str, version: int) -> tuple[tpb.Model, bytes]: ...


class TrainerRegistry:
    """:class:`ModelRegistry` over the trainer's gRPC API."""

    def __init__(self, channels: ServiceChannels) -> None:
        self.channels = channels

    async def register(self, model: tpb.Model, onnx: bytes, request_id: str) -> tpb.Model:
        """Register an ONNX model; returns it with its assigned version."""
        request = tpb.RegisterModelRequest(request_id=request_id, model=model, onnx=onnx,
                                           sha256=hashlib.sha256(onnx).hexdigest())
        try:
            return (await self.channels.trainer().RegisterModel(request, timeout=CALL_TIMEOUT_S)).model
        except grpc.aio.AioRpcError as exc:
            raise translate_rpc_error("trainer", exc) from exc

    async def download(self, use_case: str, version: int) -> tuple[tpb.Model, bytes]:
        """A registered model and its ONNX bytes (sha256 checked)."""
        model, chunks, sha = tpb.Model(), [], ""
        try:
            async for chunk in self.channels.trainer().DownloadModel(
                    tpb.DownloadModelRequest(use_case=use_case, version=version), timeout=CALL_TIMEOUT_S):
                if chunk.HasField("model"):
                    model = chunk.model
                chunks.append(chunk.data)
                sha = chunk.sha256
        except grpc.aio.AioRpcError as exc:
            raise translate_rpc_error("trainer", exc) from exc
        data = b"".join(chunks)
        if sha and hashlib.sha256(data).hexdigest() != sha:
            raise FailedPrecondition(f"model v{version} of {use_case!r} arrived corrupted (sha256 mismatch)")
        return model, data


class Deployments(Protocol):
    """The deployment in force of a use case."""

    async def current(self, use_case: str) -> tpb.Deployment | None: ...


class TrainerDeployments:
    """:class:`Deployments` over the trainer's gRPC API: ``ListDeploymentAudit`` says
    whether the use case ever had a deployment (``WatchDeployments`` sends nothing for
    one that has none), then the first message of ``WatchDeployments`` is the
    deployment in force."""

    def __init__(self, channels: ServiceChannels, timeout_s: float = DEPLOYMENT_TIMEOUT_S) -> None:
        self.channels = channels
        self.timeout_s = timeout_s

    async def current(self, use_case: str) -> tpb.Deployment | None:
        """The deployment in force, or None when nothing was ever deployed."""
        trainer = self.channels.trainer()
        try:
            audit = await trainer.ListDeploymentAudit(tpb.ListDeploymentAuditRequest(use_case=use_case),
                                                      timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise translate_rpc_error("trainer", exc) from exc
        if not audit.entries:
            return None
        call = trainer.WatchDeployments(tpb.WatchDeploymentsRequest(use_cases=[use_case]), timeout=self.timeout_s)
        try:
            async for update in call:
                if update.deployment.use_case == use_case:
                    return update.deployment
        except grpc.aio.AioRpcError as exc:
            raise translate_rpc_error("trainer", exc) from exc
        finally:
            call.cancel()
        return None
