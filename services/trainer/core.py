"""Training jobs: read joined data, fit candidates, export, check parity, register, deploy.

Plain logic, no gRPC types. Each job is an operation of kind ``training`` (one at a
time per use case); fits, export and the parity check run in the process pool.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from loopwise.clock import Clock
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.errors import FailedPrecondition, InvalidArgument
from loopwise.jobs import ProcessPool
from loopwise.operations import OperationRunner, Progress
from loopwise.services.trainer.data import collect_rows, kind_of, prepare
from loopwise.services.trainer.models import (
    FAMILIES,
    CandidateFit,
    baseline_metrics,
    beats_baseline,
    check_parity,
    export_onnx,
    fit_candidate,
    score_output,
)
from loopwise.services.trainer.registry import Registry
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.upstream import DecisionUseCases, FeedbackTrainingData

KIND = "training"


@dataclass(frozen=True)
class TrainingJob:
    """A validated training request."""

    use_case: str
    blueprint: bp.Blueprint
    blueprint_version: int
    start_ms: int | None
    end_ms: int | None
    deploy: bool


class Trainer:
    """Starts training jobs and runs them to a registered (and maybe deployed) model."""

    def __init__(self, registry: Registry, operations: OperationRunner, pool: ProcessPool,
                 use_cases: DecisionUseCases, training_data: FeedbackTrainingData,
                 clock: Clock, seed: int) -> None:
        self.registry = registry
        self.operations = operations
        self.pool = pool
        self.use_cases = use_cases
        self.training_data = training_data
        self.clock = clock
        self.seed = seed

    async def validate(self, request: tpb.StartTrainingRequest) -> TrainingJob:
        """Check the request now: bad arguments and unknown use cases fail the RPC."""
        if not request.use_case:
            raise InvalidArgument("use_case", "required")
        start_ms = request.start_time.ToMilliseconds() if request.HasField("start_time") else None
        end_ms = request.end_time.ToMilliseconds() if request.HasField("end_time") else None
        if start_ms is not None and end_ms is not None and start_ms >= end_ms:
            raise InvalidArgument("end_time", "must be after start_time")
        blueprint, version = await self.use_cases.latest(request.use_case)
        kind_of(blueprint)
        if not blueprint.features:
            raise FailedPrecondition(f"use case {request.use_case!r} has no features to learn from")
        return TrainingJob(request.use_case, blueprint, version, start_ms, end_ms, request.deploy)

    async def start_training(self, request: tpb.StartTrainingRequest) -> op_pb.Operation:
        """Validate, then start the job as an operation (a request_id retry returns it)."""
        job = await self.validate(request)
        return await self.operations.start(
            job.use_case, request.request_id, lambda progress: self._run(job, progress), exclusive=True,
        )

    async def _run(self, job: TrainingJob, progress: Progress) -> tpb.TrainingResult:
        await progress.stage("reading_data", 0.02, "reading joined decisions from feedback")
        rows = await collect_rows(
            self.training_data.read(job.use_case, job.start_ms, job.end_ms),
            job.blueprint, job.blueprint_version,
            lambda version: self.use_cases.version(job.use_case, version),
        )
        await progress.stage("preparing", 0.1, f"{rows.read} rows read; building targets and the time split")
        prepared = await asyncio.to_thread(prepare, rows, job.blueprint)
        training = prepared.training
        fits: list[CandidateFit] = []
        for k, family in enumerate(FAMILIES, start=1):
            await progress.stage("fitting", 0.15 + 0.55 * (k - 1) / len(FAMILIES),
                                 f"candidate {k} of {len(FAMILIES)}: {family} on {prepared.training_rows} rows")
            fits.append(await self.pool.run(fit_candidate, family, training, self.seed))
        winner = _winner(fits)
        baseline = await asyncio.to_thread(baseline_metrics, training)
        await progress.stage("exporting", 0.75, f"exporting {winner.family} to ONNX")
        onnx = await self.pool.run(export_onnx, winner.estimator, training.kind, training.input_width)
        await progress.stage("checking_parity", 0.82, f"ONNX Runtime vs scikit-learn on {prepared.holdout_rows} rows")
        parity = await self.pool.run(check_parity, onnx, winner.estimator, training)
        if not parity.ok:
            raise FailedPrecondition(f"ONNX parity check failed for {winner.family}, nothing registered: {parity.reason}")
        await progress.stage("registering", 0.9, f"registering {winner.family}")
        model = tpb.Model(
            use_case=job.use_case, family=winner.family, blueprint_version=job.blueprint_version,
            metrics={k: v for k, v in winner.metrics.items() if math.isfinite(v)},
            baseline_metrics={k: v for k, v in baseline.items() if math.isfinite(v)},
            training_rows=prepared.training_rows, holdout_rows=prepared.holdout_rows, source="trainer",
            input_width=training.input_width, score_output=score_output(training.kind),
            operation_id=progress.operation_id,
            description=f"{winner.family} trained on {prepared.training_rows} rows; "
                        f"max |ONNX - sklearn| on the holdout {parity.max_abs_diff:.2g}",
        )
        model.data_start_time.FromMilliseconds(prepared.start_ms)
        model.data_end_time.FromMilliseconds(prepared.end_ms)
        model = await self.registry.add_model(model, onnx, f"training:{progress.operation_id}")
        await progress.stage("deploying", 0.95, f"version {model.version} registered")
        deployed, reason = await self._deploy(job, model, training.kind, winner.metrics, baseline,
                                              progress.operation_id)
        return tpb.TrainingResult(
            model=model, deployed=deployed, deployment_reason=reason, rows=prepared.rows_read,
            candidates=[tpb.Candidate(family=f.family, score=f.score, metric=f.metric, fit_seconds=f.fit_seconds)
                        for f in fits],
        )

    async def _deploy(self, job: TrainingJob, model: tpb.Model, kind: str, metrics: dict[str, float],
                      baseline: dict[str, float], operation_id: str) -> tuple[bool, str]:
        """Deploy per the rules of the walking skeleton; returns (deployed, why)."""
        beats, comparison = beats_baseline(kind, metrics, baseline)
        if not beats:
            return False, f"not deployed: does not beat the default policy: {comparison}"
        current = await self.registry.current_deployment(job.use_case)
        serving = current is not None and current.HasField("production")
        if serving:
            if not job.deploy:
                return False, (f"not deployed: version {current.production.version} serves production and "
                               f"deploy was not requested ({comparison})")
            reason = f"deploy requested and the model beats the default policy: {comparison}"
        elif job.blueprint.rollout.hold_first_model:
            return False, f"not deployed: rollout.hold_first_model is set ({comparison})"
        else:
            reason = f"first model beats the default policy: {comparison}"
        await self.registry.set_deployment(tpb.SetDeploymentRequest(
            request_id=f"training-deploy:{operation_id}", use_case=job.use_case,
            production_version=model.version, reason=reason,
        ), action="training")
        return True, reason


def _winner(fits: list[CandidateFit]) -> CandidateFit:
    """The best holdout score; ties (and NaN) go to the simpler, earlier candidate."""
    best = fits[0]
    for fit in fits[1:]:
        best_score = best.score if math.isfinite(best.score) else -math.inf
        if math.isfinite(fit.score) and fit.score > best_score:
            best = fit
    return best
