"""Training schedules: retrain every N hours and/or after M new labelled decisions.

A background loop (:meth:`Scheduler.run`) looks at every use case of the decision
service each ``interval_s`` seconds (real time); "hours" are on the settings clock.
A use case is due when its blueprint's ``training.retrain_every`` has passed since
its last training job started, or when the feedback service counts at least
``training.retrain_after_labelled`` more closed-window decisions than the last
successful job saw at its start. Jobs are started like manual ones (one per use
case at a time: a running job makes the schedule wait); after a failed scheduled
job the use case waits ``retrain_every`` (or ``FAILURE_BACKOFF_TICKS`` looks).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from loopwise.clock import Clock
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.errors import FailedPrecondition, LoopwiseError
from loopwise.operations import FINAL_STATES, OperationRunner
from loopwise.periodic import every
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.upstream import DecisionUseCases, FeedbackStats

log = logging.getLogger(__name__)

FAILURE_BACKOFF_TICKS = 10
HISTORY = 20  # operations looked at per use case to find the last successful one

Starter = Callable[[tpb.StartTrainingRequest], Awaitable[op_pb.Operation]]


def result_of(operation: op_pb.Operation) -> tpb.TrainingResult | None:
    """The training result of a succeeded operation, else None."""
    if operation.state != op_pb.OPERATION_STATE_SUCCEEDED or not operation.HasField("result"):
        return None
    result = tpb.TrainingResult()
    return result if operation.result.Unpack(result) else None


class Scheduler:
    """Starts training jobs when a use case's schedule is due."""

    def __init__(self, start: Starter, operations: OperationRunner, use_cases: DecisionUseCases,
                 stats: FeedbackStats, clock: Clock, interval_s: float) -> None:
        self.start = start
        self.operations = operations
        self.use_cases = use_cases
        self.stats = stats
        self.clock = clock
        self.interval_s = interval_s

    async def run(self) -> None:
        """Look at the schedules every ``interval_s`` seconds, until cancelled."""
        await every(self.interval_s, self.tick, "schedule check", log)

    async def tick(self) -> list[op_pb.Operation]:
        """Start every due job; returns the operations started."""
        started: list[op_pb.Operation] = []
        try:
            names = await self.use_cases.names()
        except LoopwiseError as exc:
            log.warning("schedules: cannot list use cases: %s", exc.message)
            return started
        for use_case in names:
            try:
                why = await self.due(use_case)
                if why:
                    started.append(await self.start(tpb.StartTrainingRequest(
                        request_id=f"schedule:{use_case}:{self.clock.now_ms()}", use_case=use_case,
                        trigger="schedule")))
                    log.info("scheduled training of %s started: %s", use_case, why)
            except FailedPrecondition as exc:  # a job runs already, or the use case cannot train
                log.info("schedule of %s: %s", use_case, exc.message)
            except LoopwiseError as exc:
                log.warning("schedule of %s: %s", use_case, exc.message)
        return started

    async def due(self, use_case: str) -> str:
        """Why the use case's schedule is due now ("" when it is not)."""
        blueprint, _ = await self.use_cases.latest(use_case)
        spec = blueprint.training
        every_ms = spec.retrain_every.ToMilliseconds() if spec.HasField("retrain_every") else 0
        after = spec.retrain_after_labelled
        if every_ms <= 0 and after <= 0:
            return ""
        history, _ = await self.operations.list(use_case, HISTORY, "")
        if any(op.state not in FINAL_STATES for op in history):
            return ""
        now = self.clock.now_ms()
        last = history[0] if history else None
        if last is not None:
            since = now - last.create_time.ToMilliseconds()
            backoff = every_ms or int(FAILURE_BACKOFF_TICKS * self.interval_s * 1000 * self.clock.speed)
            if last.state != op_pb.OPERATION_STATE_SUCCEEDED and since < backoff:
                return ""
            if every_ms > 0 and since >= every_ms:
                return f"retrain_every: {since / 3_600_000:.2f} h since the last job"
        elif every_ms > 0 and after <= 0:
            return "retrain_every: no job yet"
        if after > 0:
            closed = (await self.stats.get(use_case)).closed_windows
            seen = next((r.closed_windows_at_start for r in map(result_of, history) if r is not None), 0)
            if closed - seen >= after:
                return f"retrain_after_labelled: {closed - seen} new labelled decisions (>= {after})"
        return ""
