"""The TrainerService servicer: protos in, core calls, protos out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from loopwise.errors import InvalidArgument, NotFound, quote, servicer
from loopwise.names import use_case_name_problem
from loopwise.operations import OperationsServicer
from loopwise.server import Stopping
from loopwise.services.trainer.core import Trainer
from loopwise.services.trainer.registry import Registry
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc


@servicer
class TrainerServicer(OperationsServicer, tgrpc.TrainerServiceServicer):
    """Training, models and deployments; the four operation RPCs come from
    :class:`OperationsServicer`."""

    def __init__(self, trainer: Trainer, registry: Registry, stopping: Stopping) -> None:
        self.trainer = trainer
        self.registry = registry
        self.operations = trainer.operations
        self.stopping = stopping  # deployment watches end when the server stops

    async def StartTraining(self, request: tpb.StartTrainingRequest, context) -> tpb.StartTrainingResponse:
        """Validate and start a training job; returns its operation."""
        return tpb.StartTrainingResponse(operation=await self.trainer.start_training(request))

    async def ListModels(self, request: tpb.ListModelsRequest, context) -> tpb.ListModelsResponse:
        """The models of a use case, newest first."""
        return tpb.ListModelsResponse(models=await self.registry.list_models(request.use_case))

    async def GetModel(self, request: tpb.GetModelRequest, context) -> tpb.GetModelResponse:
        """One model version (0: the latest)."""
        return tpb.GetModelResponse(model=await self.registry.get_model(request.use_case, request.version))

    async def DownloadModel(self, request: tpb.DownloadModelRequest, context) -> AsyncIterator[tpb.DownloadModelResponse]:
        """The ONNX artifact in chunks; every chunk carries sha256 and size, the first the model."""
        model, chunks = await self.registry.download(request.use_case, request.version)
        first = True
        async for offset, data in chunks:
            chunk = tpb.DownloadModelResponse(
                offset=offset, data=data, total_size=model.artifact_size, sha256=model.artifact_sha256)
            if first:
                chunk.model.CopyFrom(model)
                first = False
            yield chunk

    async def RegisterModel(self, request: tpb.RegisterModelRequest, context) -> tpb.RegisterModelResponse:
        """Register a model made elsewhere after checking its bytes."""
        model = await self.registry.register_model(request.model, request.onnx, request.sha256, request.request_id)
        return tpb.RegisterModelResponse(model=model)

    async def SetDeployment(self, request: tpb.SetDeploymentRequest, context) -> tpb.SetDeploymentResponse:
        """Make a new deployment revision."""
        return tpb.SetDeploymentResponse(deployment=await self.registry.set_deployment(request))

    async def Rollback(self, request: tpb.RollbackRequest, context) -> tpb.RollbackResponse:
        """Restore the previous deployment as a new revision."""
        deployment = await self.registry.rollback(request.use_case, request.reason, request.request_id)
        return tpb.RollbackResponse(deployment=deployment)

    async def WatchDeployments(self, request: tpb.WatchDeploymentsRequest, context) -> AsyncIterator[tpb.WatchDeploymentsResponse]:
        """Current deployments, then every change; UNAVAILABLE when the server stops.
        Every use case named must be a valid use case name (INVALID_ARGUMENT naming
        ``use_cases[i]``); none named means all."""
        violations = [(f"use_cases[{i}]", problem) for i, name in enumerate(request.use_cases)
                      if (problem := use_case_name_problem(name))]
        if violations:
            raise InvalidArgument(violations[0][0], violations[0][1], violations[1:])
        async for deployment in self.registry.watch(list(request.use_cases), self.stopping):
            yield tpb.WatchDeploymentsResponse(deployment=deployment)

    async def ListDeploymentAudit(self, request: tpb.ListDeploymentAuditRequest, context) -> tpb.ListDeploymentAuditResponse:
        """Every deployment change of a use case with its reason, oldest first."""
        if not request.use_case:
            raise InvalidArgument("use_case", "required")
        response = tpb.ListDeploymentAuditResponse()
        for entry in await self.registry.audit(request.use_case):
            item = response.entries.add(use_case=entry.use_case, revision=entry.revision, action=entry.action,
                                        reason=entry.reason, request_id=entry.request_id)
            item.time.FromMilliseconds(entry.time_ms)
        return response

    async def GetRollout(self, request: tpb.GetRolloutRequest, context) -> tpb.GetRolloutResponse:
        """The latest automatic rollout of a use case."""
        if self.trainer.rollouts is None:
            raise NotFound(f"use case {quote(request.use_case)} has no rollout")
        return tpb.GetRolloutResponse(rollout=await self.trainer.rollouts.get(request.use_case))
