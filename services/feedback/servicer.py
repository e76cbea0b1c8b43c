"""The FeedbackService servicer: protos in, core calls, protos out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from loopwise import tracing
from loopwise.errors import Unavailable, servicer
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.server import Stopping
from loopwise.services.feedback.core import Feedback
from loopwise.services.feedback.monitoring import FeedbackMonitor
from loopwise.services.feedback.privacy import delete_unit


@servicer
class FeedbackServicer(fgrpc.FeedbackServiceServicer):
    """Decision and outcome logging, joined reads and statistics."""

    def __init__(self, feedback: Feedback, stopping: Stopping | None = None,
                 monitor: FeedbackMonitor | None = None, pii_key: str = "") -> None:
        self.feedback = feedback
        # The server's stopping signal (long reads end with UNAVAILABLE once it is set).
        self.stopping = stopping if stopping is not None else Stopping("feedback")
        self.monitor = monitor
        self.pii_key = pii_key

    async def DeleteUnitData(self, request: fpb.DeleteUnitDataRequest,
                             context) -> fpb.DeleteUnitDataResponse:
        """Delete one unit's decisions and their outcomes (privacy requests)."""
        decisions, outcomes = await delete_unit(self.feedback.store, self.feedback.clock, request.use_case,
                                                request.unit_id, self.pii_key)
        return fpb.DeleteUnitDataResponse(decisions_deleted=decisions, outcomes_deleted=outcomes)

    async def LogDecisions(self, request: fpb.LogDecisionsRequest, context) -> fpb.LogDecisionsResponse:
        """Store decisions; answers only once they are committed."""
        accepted = await self.feedback.log_decisions(request.decisions)
        if self.monitor is not None:
            self.monitor.decisions_logged(request.decisions)
        return fpb.LogDecisionsResponse(accepted=accepted)

    async def LogOutcomes(self, request: fpb.LogOutcomesRequest, context) -> fpb.LogOutcomesResponse:
        """Store outcomes; answers only once they are committed."""
        counts = await self.feedback.log_outcomes(request.outcomes, request.columns)
        if self.monitor is not None:
            self.monitor.outcomes_logged(request, counts)
        return fpb.LogOutcomesResponse(accepted=counts.accepted, duplicates=counts.duplicates, orphans=counts.orphans)

    async def ReadTrainingData(
        self, request: fpb.ReadTrainingDataRequest, context
    ) -> AsyncIterator[fpb.ReadTrainingDataResponse]:
        """Stream joined, columnar batches; ends with UNAVAILABLE when the server stops."""
        async for batch in self.feedback.read_training_data(request):
            if self.stopping.is_set():
                raise Unavailable("the feedback service is shutting down; read again")
            yield batch

    async def GetDecision(self, request: fpb.GetDecisionRequest, context) -> fpb.GetDecisionResponse:
        """One decision with its outcomes, reward and model lineage."""
        tracing.set_attributes(decision_id=request.decision_id)
        return await self.feedback.get_decision(request.use_case, request.decision_id)

    async def GetStats(self, request: fpb.GetStatsRequest, context) -> fpb.GetStatsResponse:
        """Counts computed from the stored data."""
        response = await self.feedback.stats(request.use_case)
        if self.monitor is not None:
            self.monitor.fill_stats(request.use_case, response)
        return response
