"""The evaluator's logic, free of gRPC: effect estimation jobs, reports, predictions.

``EstimateEffects`` validates at once (use case, actions, estimator) and then runs as
an operation with the stages ``reading_data`` → ``fitting`` → ``reporting``; the fit
and the report rendering run in the process pool, so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Protocol

import numpy as np

from loopwise.clock import Clock
from loopwise.common.v1 import blueprint_pb2
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.errors import FailedPrecondition, InvalidArgument, NotFound
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.jobs import ProcessPool
from loopwise.operations import OperationRunner, Progress
from loopwise.services.evaluator.data import EffectData, collect_effect_data
from loopwise.services.evaluator.estimation import (
    MIN_ROWS,
    MIN_ROWS_PER_ARM,
    EffectModel,
    fit_effects,
)
from loopwise.services.evaluator.report import render_report
from loopwise.store.evaluator import ReportStore, StoredReport
from loopwise.tensors import F32, unpack_matrix

KIND = "estimate_effects"
MAX_LISTED_REPORTS = 200
MODEL_CACHE_SIZE = 8


class UseCases(Protocol):
    """Blueprints of use cases (raises NotFound for an unknown use case)."""

    async def latest(self, use_case: str) -> tuple[blueprint_pb2.Blueprint, int]: ...

    async def version(self, use_case: str, version: int) -> blueprint_pb2.Blueprint: ...


class TrainingData(Protocol):
    """Joined decision rows of a use case."""

    def read(self, use_case: str, start_ms: int | None,
             end_ms: int | None) -> AsyncIterator[fpb.ReadTrainingDataResponse]: ...


@dataclasses.dataclass(frozen=True)
class EffectsJob:
    """A validated EstimateEffects request."""

    use_case: str
    feature_names: list[str]
    treatment: str
    control: str
    start_ms: int | None
    end_ms: int | None
    seed: int


class Evaluator:
    """Estimates effects as operations, and serves reports and effect predictions."""

    def __init__(self, reports: ReportStore, operations: OperationRunner, pool: ProcessPool,
                 use_cases: UseCases, training_data: TrainingData, clock: Clock, seed: int,
                 max_rows: int = 100_000) -> None:
        self.reports = reports
        self.operations = operations
        self.pool = pool
        self.use_cases = use_cases
        self.training_data = training_data
        self.clock = clock
        self.seed = seed
        self.max_rows = max_rows
        self._models: OrderedDict[str, EffectModel] = OrderedDict()

    # EstimateEffects -------------------------------------------------------------

    async def validate(self, request: epb.EstimateEffectsRequest) -> EffectsJob:
        """Check the request now (bad arguments never become a failed operation)."""
        if not request.use_case:
            raise InvalidArgument("use_case", "required")
        if request.estimator not in (epb.ESTIMATOR_UNSPECIFIED, epb.ESTIMATOR_LINEAR_DML):
            raise InvalidArgument("estimator", f"unknown estimator {request.estimator}")
        if not 0 <= request.seed < 2**32:
            raise InvalidArgument("seed", "must be in [0, 2^32)")
        start_ms = request.start_time.ToMilliseconds() if request.HasField("start_time") else None
        end_ms = request.end_time.ToMilliseconds() if request.HasField("end_time") else None
        if start_ms is not None and end_ms is not None and start_ms >= end_ms:
            raise InvalidArgument("end_time", "must be after start_time")
        blueprint, _ = await self.use_cases.latest(request.use_case)
        actions = list(blueprint.actions)
        if len(actions) < 2:
            raise FailedPrecondition(
                f"use case {request.use_case!r} has {len(actions)} action(s); effects need two"
            )
        treatment = request.treatment_action or actions[1]
        control = request.control_action or actions[0]
        if treatment not in actions:
            raise InvalidArgument("treatment_action", f"{treatment!r} is not one of the actions {actions}")
        if control not in actions:
            raise InvalidArgument("control_action", f"{control!r} is not one of the actions {actions}")
        if treatment == control:
            raise InvalidArgument("treatment_action", "must differ from control_action")
        names = [f.name for f in blueprint.features]
        if not names:
            raise FailedPrecondition(f"use case {request.use_case!r} has no features to condition on")
        return EffectsJob(request.use_case, names, treatment, control, start_ms, end_ms,
                          request.seed or self.seed)

    async def estimate_effects(self, request: epb.EstimateEffectsRequest) -> op_pb.Operation:
        """Validate, then start the estimation as an operation."""
        job = await self.validate(request)
        return await self.operations.start(
            job.use_case, request.request_id, lambda progress: self._run(job, progress)
        )

    async def _run(self, job: EffectsJob, progress: Progress) -> epb.EstimateEffectsResult:
        await progress.stage("reading_data", 0.05, "reading joined decisions from feedback")
        data = await self._read(job)
        self._check(job, data)
        treated = int(data.t.sum())
        await progress.stage("fitting", 0.3, f"LinearDML on {data.t.size} rows ({treated} treated)")
        fit = await self.pool.run(fit_effects, data.x, data.t, data.y, data.propensity,
                                  data.feature_names, job.seed)
        await progress.stage("reporting", 0.8, "rendering the HTML report")
        result = epb.EstimateEffectsResult(
            report_id=self.clock.new_id(), use_case=job.use_case, ate=fit.ate,
            ate_ci_lower=fit.ate_lower, ate_ci_upper=fit.ate_upper,
            cate_quantiles=[epb.Quantile(level=q, value=v) for q, v in fit.quantiles],
            rows=int(data.t.size), treated_rows=treated, treatment_action=job.treatment,
            control_action=job.control, feature_names=data.feature_names,
            estimator=epb.ESTIMATOR_LINEAR_DML, logged_propensities_used=True,
            min_propensity=float(data.propensity.min()), max_propensity=float(data.propensity.max()),
            warnings=fit.warnings,
        )
        result.create_time.FromMilliseconds(self.clock.now_ms())
        meta = {
            "use_case": job.use_case, "report_id": result.report_id, "treatment": job.treatment,
            "control": job.control, "create_time": result.create_time.ToJsonString(),
        }
        html = await self.pool.run(render_report, dataclasses.replace(fit, model=b""), meta)
        await self.reports.save(result, html, fit.model)
        return result

    async def _read(self, job: EffectsJob) -> EffectData:
        async def actions_of(version: int) -> list[str]:
            return list((await self.use_cases.version(job.use_case, version)).actions)

        return await collect_effect_data(
            self.training_data.read(job.use_case, job.start_ms, job.end_ms),
            job.feature_names, job.treatment, job.control, actions_of,
        )

    @staticmethod
    def _check(job: EffectsJob, data: EffectData) -> None:
        rows = int(data.t.size)
        pair = f"{job.treatment!r} or {job.control!r}"
        if rows == 0:
            raise FailedPrecondition(
                f"no joined decisions with action {pair} and a closed reward window "
                f"({data.rows_read} rows read)"
            )
        if rows < MIN_ROWS:
            raise FailedPrecondition(f"too few rows: {rows} with action {pair}, need at least {MIN_ROWS}")
        treated = int(data.t.sum())
        if treated == 0 or treated == rows:
            only = job.treatment if treated else job.control
            raise FailedPrecondition(f"a single treatment value: all {rows} rows took {only!r}")
        if min(treated, rows - treated) < MIN_ROWS_PER_ARM:
            raise FailedPrecondition(
                f"too few rows per action: {treated} treated and {rows - treated} control, "
                f"need at least {MIN_ROWS_PER_ARM} of each"
            )

    # Reports -----------------------------------------------------------------------

    async def get_report(self, report_id: str) -> StoredReport:
        """One report; NOT_FOUND if unknown."""
        if not report_id:
            raise InvalidArgument("report_id", "required")
        report = await self.reports.get(report_id)
        if report is None:
            raise NotFound(f"report {report_id!r} not found")
        return report

    async def list_reports(self, use_case: str) -> list[epb.EstimateEffectsResult]:
        """Reports, newest first, optionally of one use case."""
        return await self.reports.list(use_case, MAX_LISTED_REPORTS)

    async def predict_effects(self, request: epb.PredictEffectsRequest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CATE and 95% intervals for the given rows with a report's estimator."""
        report = await self.get_report(request.report_id)
        expected = list(report.result.feature_names)
        if list(request.feature_names) != expected:
            raise InvalidArgument("feature_names", f"must equal the report's feature names {expected}")
        if request.rows <= 0:
            raise InvalidArgument("rows", "must be > 0")
        if request.rows > self.max_rows:
            raise InvalidArgument("rows", f"at most {self.max_rows} rows per call")
        x = unpack_matrix(request.features, request.rows, len(expected), "features", F32)
        if np.isinf(x).any():
            raise InvalidArgument("features", "contains infinite values (NaN means missing)")
        model = await self._model(request.report_id)
        return await asyncio.to_thread(model.predict, x.astype(np.float64))

    async def _model(self, report_id: str) -> EffectModel:
        if report_id in self._models:
            self._models.move_to_end(report_id)
            return self._models[report_id]
        blob = await self.reports.get_estimator(report_id)
        if blob is None:
            raise NotFound(f"report {report_id!r} has no stored estimator")
        model: EffectModel = await asyncio.to_thread(pickle.loads, blob)
        self._models[report_id] = model
        while len(self._models) > MODEL_CACHE_SIZE:
            self._models.popitem(last=False)
        return model
