"""The evaluator's logic, free of gRPC: effect estimation jobs, reports, predictions,
off-policy evaluation and parameter tuning.

``EstimateEffects`` validates at once (use case, treatments, estimator, segments) and
then runs as an operation: ``reading_data`` then the analysis' own stages
(``selecting`` with auto, ``fitting``, ``segments``, ``validating``, ``refuting``,
``exporting``, ``reporting``) and ``registering`` when the effect model goes to the
trainer. Heavy work runs in a process of its own (:mod:`.isolation`), so the event
loop keeps serving, and a cancel or a timeout stops it for real.
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
from loopwise.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound, quote
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.operations import OperationRunner, Progress
from loopwise.services.evaluator import estimators as E
from loopwise.services.evaluator.analysis import EffectOutput, EffectTask, run_analysis
from loopwise.services.evaluator.data import EffectData, collect_arm_data, collect_effect_data
from loopwise.services.evaluator.estimation import MIN_ROWS, MIN_ROWS_PER_ARM, EffectModel
from loopwise.services.evaluator.isolation import run_isolated
from loopwise.services.evaluator.policy_check import PolicyRequests, time_range
from loopwise.services.evaluator.quality import Stats, read_quality
from loopwise.services.evaluator.registry import Deployments, ModelRegistry
from loopwise.services.evaluator.scorecard_requests import ScorecardRequests
from loopwise.services.evaluator.verdict import describe_reward
from loopwise.store.evaluator import ReportStore, StoredReport
from loopwise.tensors import F32, unpack_matrix
from loopwise.trainer.v1 import trainer_service_pb2 as tpb

KIND = "estimate_effects"
MAX_LISTED_REPORTS = 200
MODEL_CACHE_SIZE = 8
DEFAULT_TIMEOUT_S = 3600.0
# Rows whose propensity of treatment is within [OVERLAP_LOW, 1 - OVERLAP_LOW] carry
# the comparison; fewer than MIN_ROWS of them means no overlap at all.
OVERLAP_LOW = 0.01
ESTIMATOR_NAMES = {epb.ESTIMATOR_UNSPECIFIED: E.LINEAR_DML, epb.ESTIMATOR_LINEAR_DML: E.LINEAR_DML,
                   epb.ESTIMATOR_CAUSAL_FOREST_DML: E.CAUSAL_FOREST_DML, epb.ESTIMATOR_DR_LEARNER: E.DR_LEARNER,
                   epb.ESTIMATOR_AUTO: E.AUTO}


class UseCases(Protocol):
    """Blueprints of use cases (raises NotFound for an unknown use case)."""

    async def latest(self, use_case: str) -> tuple[blueprint_pb2.Blueprint, int]: ...

    async def version(self, use_case: str, version: int) -> blueprint_pb2.Blueprint: ...


class TrainingData(Protocol):
    """Joined decision rows of a use case."""

    def read(self, use_case: str, start_ms: int | None, end_ms: int | None,
             include_fallback: bool = False,
             include_unshown_items: bool = False) -> AsyncIterator[fpb.ReadTrainingDataResponse]: ...


@dataclasses.dataclass(frozen=True)
class EffectsJob:
    """A validated EstimateEffects request."""

    use_case: str
    blueprint_version: int
    feature_names: list[str]
    treatment: str
    control: str
    start_ms: int | None
    end_ms: int | None
    seed: int
    arms: bool = False
    estimator: str = E.LINEAR_DML
    segment_features: tuple[str, ...] = ()
    categories: tuple[tuple[str, tuple[str, ...]], ...] = ()
    treatment_cost: float = 0.0
    forest_trees: int = E.DEFAULT_FOREST_TREES
    register: bool = False
    n_actions: int = 2
    treatment_index: int = 1
    timeout_s: float = DEFAULT_TIMEOUT_S
    outcome_name: str = "reward"
    outcome_definition: str = ""


def _pair(requested_t: str, requested_c: str, names: list[str], fields: tuple[str, str], what: str) -> tuple[str, str]:
    if len(names) < 2:
        raise FailedPrecondition(f"the use case has {len(names)} {what}(s); effects need two")
    treatment = requested_t or names[1]
    control = requested_c or names[0]
    for value, name in ((treatment, fields[0]), (control, fields[1])):
        if value not in names:
            raise InvalidArgument(name, f"{quote(value)} is not one of the {what}s {names}")
    if treatment == control:
        raise InvalidArgument(fields[0], f"must differ from {fields[1]}")
    return treatment, control


class Evaluator(PolicyRequests, ScorecardRequests):
    """Estimates effects as operations, and serves reports, effect predictions,
    off-policy values, parameter suggestions and experiment scorecards."""

    def __init__(self, reports: ReportStore, operations: OperationRunner, registry: ModelRegistry,
                 use_cases: UseCases, training_data: TrainingData, clock: Clock, seed: int,
                 max_rows: int = 100_000, threads: int = 1, deployments: Deployments | None = None,
                 stats: Stats | None = None) -> None:
        self.reports = reports
        self.operations = operations
        self.registry = registry
        self.use_cases = use_cases
        self.training_data = training_data
        self.clock = clock
        self.seed = seed
        self.max_rows = max_rows
        self.threads = threads
        self.deployments = deployments
        self.stats = stats  # feedback's counts for the reports' data quality (best effort)
        self._models: OrderedDict[str, EffectModel] = OrderedDict()

    # EstimateEffects -------------------------------------------------------------

    async def validate(self, request: epb.EstimateEffectsRequest) -> EffectsJob:
        """Check the request now (bad arguments never become a failed operation)."""
        if not request.use_case:
            raise InvalidArgument("use_case", "required")
        if request.estimator not in ESTIMATOR_NAMES:
            raise InvalidArgument("estimator", f"unknown estimator {request.estimator}")
        if request.treatment_source not in epb.TreatmentSource.values():
            raise InvalidArgument("treatment_source", f"unknown treatment source {request.treatment_source}")
        if not 0 <= request.seed < 2**32:
            raise InvalidArgument("seed", "must be in [0, 2^32)")
        if not (np.isfinite(request.treatment_cost) and request.treatment_cost >= 0):
            raise InvalidArgument("treatment_cost", "must be a finite number >= 0")
        if request.forest_trees < 0 or request.forest_trees > 2000:
            raise InvalidArgument("forest_trees", "must be in [0, 2000]")
        timeout_s = request.timeout.ToTimedelta().total_seconds() if request.HasField("timeout") else 0.0
        if timeout_s < 0:
            raise InvalidArgument("timeout", "must be >= 0")
        start_ms, end_ms = time_range(request)
        blueprint, version = await self.use_cases.latest(request.use_case)
        actions = list(blueprint.actions)
        arms = request.treatment_source == epb.TREATMENT_SOURCE_ARMS
        if arms and len(blueprint.arms) < 2:
            raise InvalidArgument("treatment_source", f"use case {quote(request.use_case)} has "
                                  f"{len(blueprint.arms)} experiment arm(s); comparing arms needs two")
        if arms:
            treatment, control = _pair(request.treatment_arm, request.control_arm,
                                       [a.name for a in blueprint.arms], ("treatment_arm", "control_arm"), "arm")
        else:
            treatment, control = _pair(request.treatment_action, request.control_action, actions,
                                       ("treatment_action", "control_action"), "action")
        names = [f.name for f in blueprint.features]
        if not names:
            raise FailedPrecondition(f"use case {quote(request.use_case)} has no features to condition on")
        for name in request.segment_features:
            if name not in names:
                raise InvalidArgument("segment_features", f"{quote(name)} is not a feature of {quote(request.use_case)}")
        if request.register_cate_model and (arms or blueprint.kind != blueprint_pb2.DECISION_KIND_ACTION_VALUE):
            raise InvalidArgument("register_cate_model", "an effect model can be served only for two actions "
                                  "of an action-value use case")
        segments = list(request.segment_features) or [s for s in blueprint.slices if s in names]
        outcome_name, outcome_definition = describe_reward(blueprint.reward)
        categories = tuple((f.name, tuple(f.vocabulary)) for f in blueprint.features
                           if f.type == blueprint_pb2.FEATURE_TYPE_CATEGORICAL)
        return EffectsJob(
            request.use_case, version, names, treatment, control, start_ms, end_ms, request.seed or self.seed,
            arms=arms, estimator=ESTIMATOR_NAMES[request.estimator], segment_features=tuple(segments),
            categories=categories, treatment_cost=request.treatment_cost,
            forest_trees=request.forest_trees or E.DEFAULT_FOREST_TREES, register=request.register_cate_model,
            n_actions=len(actions), treatment_index=actions.index(treatment) if not arms else 1,
            timeout_s=timeout_s or DEFAULT_TIMEOUT_S,
            outcome_name=outcome_name, outcome_definition=outcome_definition,
        )

    async def estimate_effects(self, request: epb.EstimateEffectsRequest) -> op_pb.Operation:
        """Validate, then start the estimation as an operation."""
        job = await self.validate(request)
        return await self.operations.start(
            job.use_case, request.request_id, lambda progress: self._run_with_timeout(job, progress)
        )

    async def _run_with_timeout(self, job: EffectsJob, progress: Progress) -> epb.EstimateEffectsResult:
        try:
            return await asyncio.wait_for(self._run(job, progress), timeout=job.timeout_s)
        except TimeoutError as exc:
            raise DeadlineExceeded(f"the estimation ran longer than its timeout of {job.timeout_s:g} s "
                                   "and was stopped") from exc

    async def _run(self, job: EffectsJob, progress: Progress) -> epb.EstimateEffectsResult:
        await progress.stage("reading_data", 0.05, "reading joined decisions from feedback")
        data = await self._read(job)
        self._check(job, data)
        create_time = self.clock.now_ms()
        report_id = self.clock.new_id()
        stamp = epb.EstimateEffectsResult()
        stamp.create_time.FromMilliseconds(create_time)
        task = EffectTask(
            x=data.x, t=data.t, y=data.y, propensity=data.propensity,
            times_ms=data.times_ms if data.times_ms is not None else np.empty(0), feature_names=data.feature_names,
            estimator=job.estimator, seed=job.seed, rows_read=data.rows_read,
            meta={"use_case": job.use_case, "report_id": report_id, "treatment": job.treatment,
                  "control": job.control, "create_time": stamp.create_time.ToJsonString()},
            categories={name: list(vocab) for name, vocab in job.categories},
            segment_features=list(job.segment_features), treatment_cost=job.treatment_cost,
            forest_trees=job.forest_trees, export_onnx=job.register, n_actions=job.n_actions,
            treatment_index=job.treatment_index, arms=job.arms, outcome_name=job.outcome_name,
            outcome_definition=job.outcome_definition, outcome_counts=data.outcome_counts,
            blueprint_versions=data.blueprint_versions, model_versions=data.model_versions,
            quality=await read_quality(self.stats, job.use_case),
        )
        output: EffectOutput = await run_isolated(run_analysis, task, on_stage=progress.stage, threads=self.threads)
        result = output.result
        result.treatment_source = epb.TREATMENT_SOURCE_ARMS if job.arms else epb.TREATMENT_SOURCE_ACTIONS
        result.logged_propensities_used = not job.arms
        if job.register and output.onnx:
            await progress.stage("registering", 0.95, "registering the effect model with the trainer")
            model = await self._register(job, result, output.onnx, progress.operation_id)
            result.cate_model.model_version = model.version
        await self.reports.save(result, output.html, output.model)
        return result

    async def _register(self, job: EffectsJob, result: epb.EstimateEffectsResult, onnx: bytes,
                        operation_id: str) -> tpb.Model:
        cate = result.cate_model
        model = tpb.Model(
            use_case=job.use_case, family=f"cate_{cate.family}", blueprint_version=job.blueprint_version,
            metrics={"fidelity_r2": cate.fidelity_r2, "ate": result.ate}, training_rows=result.rows,
            source="evaluator", input_width=cate.input_width, score_output="value", operation_id=operation_id,
            description=(f"effect of {job.treatment!r} vs {job.control!r} from report {result.report_id}; "
                         f"serve with policy.action_costs[{job.treatment!r}] = cost (uplift policy)"),
        )
        return await self.registry.register(model, onnx, f"cate-{result.report_id}")

    async def _read(self, job: EffectsJob) -> EffectData:
        batches = self.training_data.read(job.use_case, job.start_ms, job.end_ms)
        if job.arms:
            async def arms_of(version: int) -> dict[str, float]:
                blueprint = await self.use_cases.version(job.use_case, version)
                return {a.name: a.traffic_share for a in blueprint.arms}

            return await collect_arm_data(batches, job.feature_names, job.treatment, job.control, arms_of)

        async def actions_of(version: int) -> list[str]:
            return list((await self.use_cases.version(job.use_case, version)).actions)

        return await collect_effect_data(batches, job.feature_names, job.treatment, job.control, actions_of)

    @staticmethod
    def _check(job: EffectsJob, data: EffectData) -> None:
        rows = int(data.t.size)
        pair = f"{job.treatment!r} or {job.control!r}"
        if rows == 0:
            raise FailedPrecondition(
                f"no joined decisions with {'arm' if job.arms else 'action'} {pair} and a closed reward "
                f"window ({data.rows_read} rows read)"
            )
        if rows < MIN_ROWS:
            raise FailedPrecondition(f"too few rows: {rows} with {pair}, need at least {MIN_ROWS}")
        treated = int(data.t.sum())
        if treated == 0 or treated == rows:
            only = job.treatment if treated else job.control
            raise FailedPrecondition(f"a single treatment value: all {rows} rows took {only!r}")
        if min(treated, rows - treated) < MIN_ROWS_PER_ARM:
            raise FailedPrecondition(
                f"too few rows per treatment: {treated} treated and {rows - treated} control, "
                f"need at least {MIN_ROWS_PER_ARM} of each"
            )
        if data.outcomes == 0:
            raise FailedPrecondition(
                f"no outcomes joined: none of the {rows} rows has an outcome in its reward window, "
                "so every reward is the default"
            )
        x = data.x
        present = ~np.isnan(x)
        constant = [name for j, name in enumerate(data.feature_names)
                    if not present[:, j].any() or np.ptp(x[present[:, j], j]) == 0]
        if len(constant) == len(data.feature_names):
            raise FailedPrecondition(f"constant features: every feature ({', '.join(constant)}) has a single "
                                     "value, so effects cannot vary with them")
        e = data.propensity
        inside = int(((e >= OVERLAP_LOW) & (e <= 1 - OVERLAP_LOW)).sum())
        if inside < MIN_ROWS:
            raise FailedPrecondition(
                f"no overlap: only {inside} of {rows} rows have a propensity of treatment within "
                f"[{OVERLAP_LOW}, {1 - OVERLAP_LOW}]; the treated and control units cannot be compared"
            )

    # Reports -----------------------------------------------------------------------

    async def get_report(self, report_id: str, use_case: str = "") -> StoredReport:
        """One report; NOT_FOUND if unknown, or if ``use_case`` is given and the
        report belongs to another one."""
        if not report_id:
            raise InvalidArgument("report_id", "required")
        report = await self.reports.get(report_id)
        if report is None or (use_case and report.result.use_case != use_case):
            where = f" of use case {quote(use_case)}" if use_case else ""
            raise NotFound(f"report {quote(report_id)}{where} not found")
        return report

    async def list_reports(self, use_case: str) -> list[epb.EstimateEffectsResult]:
        """Reports, newest first, optionally of one use case."""
        return await self.reports.list(use_case, MAX_LISTED_REPORTS)

    async def predict_effects(self, request: epb.PredictEffectsRequest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CATE and 95% intervals for the given rows with a report's estimator."""
        report = await self.get_report(request.report_id, request.use_case)
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

    async def model_bytes(self, report_id: str) -> bytes:
        """The pickled effect model of a report; NOT_FOUND if unknown."""
        blob = await self.reports.get_estimator(report_id)
        if blob is None:
            raise NotFound(f"report {quote(report_id)} has no stored estimator")
        return blob

    async def _model(self, report_id: str) -> EffectModel:
        if report_id in self._models:
            self._models.move_to_end(report_id)
            return self._models[report_id]
        model: EffectModel = await asyncio.to_thread(pickle.loads, await self.model_bytes(report_id))
        self._models[report_id] = model
        while len(self._models) > MODEL_CACHE_SIZE:
            self._models.popitem(last=False)
        return model
