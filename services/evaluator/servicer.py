"""The EvaluatorService servicer: protos in, core calls, protos out."""

from __future__ import annotations

from loopwise.errors import servicer
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.evaluator.v1 import evaluator_service_pb2_grpc as egrpc
from loopwise.operations import OperationsServicer
from loopwise.services.evaluator.core import Evaluator
from loopwise.tensors import F64, pack


@servicer
class EvaluatorServicer(OperationsServicer, egrpc.EvaluatorServiceServicer):
    """Effect estimation, reports, predictions, off-policy values, tuning and scorecards; the four
    operation RPCs come from :class:`OperationsServicer`."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator
        self.operations = evaluator.operations

    async def EstimateEffects(self, request: epb.EstimateEffectsRequest, context) -> epb.EstimateEffectsResponse:  # noqa: N802
        """Validate and start an effect estimation; returns its operation."""
        return epb.EstimateEffectsResponse(operation=await self.evaluator.estimate_effects(request))

    async def GetReport(self, request: epb.GetReportRequest, context) -> epb.GetReportResponse:  # noqa: N802
        """The structured result and the HTML page of a report."""
        report = await self.evaluator.get_report(request.report_id, request.use_case)
        return epb.GetReportResponse(result=report.result, html=report.html)

    async def ListReports(self, request: epb.ListReportsRequest, context) -> epb.ListReportsResponse:  # noqa: N802
        """Report results, newest first."""
        return epb.ListReportsResponse(reports=await self.evaluator.list_reports(request.use_case))

    async def PredictEffects(self, request: epb.PredictEffectsRequest, context) -> epb.PredictEffectsResponse:  # noqa: N802
        """CATE with 95% intervals for given rows, as float64 little-endian bytes."""
        effects, lower, upper = await self.evaluator.predict_effects(request)
        return epb.PredictEffectsResponse(
            effects=pack(effects, F64), effects_lower=pack(lower, F64), effects_upper=pack(upper, F64)
        )

    async def EvaluatePolicy(self, request: epb.EvaluatePolicyRequest, context) -> epb.EvaluatePolicyResponse:  # noqa: N802
        """Off-policy value (IPS, SNIPS, DR with 95% CIs) of a candidate policy; the work
        stops when the client's deadline passes."""
        return await self.evaluator.evaluate_policy(request)

    async def SuggestParameters(self, request: epb.SuggestParametersRequest, context) -> epb.SuggestParametersResponse:  # noqa: N802
        """Bayesian optimisation of blueprint parameters; the work stops when the
        client's deadline passes."""
        return await self.evaluator.suggest_parameters(request)

    async def GetScorecard(self, request: epb.GetScorecardRequest, context) -> epb.GetScorecardResponse:  # noqa: N802
        """An experiment scorecard (arms, or the canary against production); the work
        stops when the client's deadline passes."""
        return await self.evaluator.get_scorecard(request)
