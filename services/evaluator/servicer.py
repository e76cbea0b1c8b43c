"""The EvaluatorService servicer: protos in, core calls, protos out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from loopwise.auth import caller_authorization
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.errors import FailedPrecondition, servicer
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.evaluator.v1 import evaluator_service_pb2_grpc as egrpc
from loopwise.operations import OperationsServicer
from loopwise.services.evaluator.core import Evaluator
from loopwise.services.evaluator.tuning_requests import TUNING_KIND, Tuning
from loopwise.tensors import F64, pack


@servicer
class EvaluatorServicer(OperationsServicer, egrpc.EvaluatorServiceServicer):
    """Effect estimation, reports, predictions, off-policy values, tuning and scorecards; the four
    operation RPCs come from :class:`OperationsServicer`."""

    def __init__(self, evaluator: Evaluator, tuning: Tuning | None = None) -> None:
        self.evaluator = evaluator
        self.operations = evaluator.operations
        self.tuning = tuning

    async def _runner_of(self, operation_id: str, use_case: str):
        """The runner that runs an operation (tuning jobs have their own)."""
        operation = await self.operations.get(operation_id, use_case)
        if self.tuning is not None and operation.kind == TUNING_KIND:
            return self.tuning.operations
        return self.operations

    async def CancelOperation(self, request: op_pb.CancelOperationRequest, context) -> op_pb.CancelOperationResponse:
        """Cancel an operation (estimation or tuning)."""
        runner = await self._runner_of(request.id, request.use_case)
        return op_pb.CancelOperationResponse(operation=await runner.cancel(request.id, request.use_case))

    async def WatchOperation(self, request: op_pb.WatchOperationRequest, context) -> AsyncIterator[op_pb.WatchOperationResponse]:
        """Stream an operation's updates (estimation or tuning) until it is final."""
        runner = await self._runner_of(request.id, request.use_case)
        async for operation in runner.watch(request.id, request.use_case):
            yield op_pb.WatchOperationResponse(operation=operation)

    async def StartTuning(self, request: epb.StartTuningRequest, context) -> epb.StartTuningResponse:
        """Validate and start online tuning; returns its operation."""
        if self.tuning is None:
            raise FailedPrecondition("this evaluator runs no tuning")
        # The tuning applies blueprint versions with the caller's rights (StartTuning
        # needs ``admin`` on the use case, as ApplyUseCase does).
        authorization = caller_authorization(context.invocation_metadata())
        return epb.StartTuningResponse(operation=await self.tuning.start(request, authorization))

    async def EstimateEffects(self, request: epb.EstimateEffectsRequest, context) -> epb.EstimateEffectsResponse:
        """Validate and start an effect estimation; returns its operation."""
        return epb.EstimateEffectsResponse(operation=await self.evaluator.estimate_effects(request))

    async def GetReport(self, request: epb.GetReportRequest, context) -> epb.GetReportResponse:
        """The structured result and the HTML page of a report."""
        report = await self.evaluator.get_report(request.report_id, request.use_case)
        return epb.GetReportResponse(result=report.result, html=report.html)

    async def ListReports(self, request: epb.ListReportsRequest, context) -> epb.ListReportsResponse:
        """Report results, newest first."""
        return epb.ListReportsResponse(reports=await self.evaluator.list_reports(request.use_case))

    async def PredictEffects(self, request: epb.PredictEffectsRequest, context) -> epb.PredictEffectsResponse:
        """CATE with 95% intervals for given rows, as float64 little-endian bytes."""
        effects, lower, upper = await self.evaluator.predict_effects(request)
        return epb.PredictEffectsResponse(
            effects=pack(effects, F64), effects_lower=pack(lower, F64), effects_upper=pack(upper, F64)
        )

    async def EvaluatePolicy(self, request: epb.EvaluatePolicyRequest, context) -> epb.EvaluatePolicyResponse:
        """Off-policy value (IPS, SNIPS, DR with 95% CIs) of a candidate policy; the work
        stops when the client's deadline passes."""
        return await self.evaluator.evaluate_policy(request)

    async def SuggestParameters(self, request: epb.SuggestParametersRequest, context) -> epb.SuggestParametersResponse:
        """Bayesian optimisation of blueprint parameters; the work stops when the
        client's deadline passes."""
        return await self.evaluator.suggest_parameters(request)

    async def GetScorecard(self, request: epb.GetScorecardRequest, context) -> epb.GetScorecardResponse:
        """An experiment scorecard (arms, or the canary against production); the work
        stops when the client's deadline passes."""
        return await self.evaluator.get_scorecard(request)
