"""Training jobs: read joined data, validate it, search candidates under a budget,
export them to ONNX (parity checked), bless the winner against what serves, register
it with its lineage, and deploy it (first model) or start its rollout (later ones).

Plain logic, no gRPC types. Each job is an operation of kind ``training`` (one at a
time per use case); fits, export, parity, latency and blessing run in the process pool.
"""

from __future__ import annotations

import asyncio
import functools
import math
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from loopwise import __version__
from loopwise.clock import Clock
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.errors import FailedPrecondition, InvalidArgument, LoopwiseError, quote
from loopwise.jobs import ProcessPool
from loopwise.operations import OperationRunner, Progress
from loopwise.services.trainer.blessing import (
    ServingModel,
    bless,
    guardrail_rules,
    slice_masks,
    tolerance_of,
)
from loopwise.services.trainer.candidates import (
    LatencyProbe,
    SearchedFit,
    measure_latency,
    package_candidate,
    params_text,
    search_candidate,
)
from loopwise.services.trainer.data import (
    PreparedData,
    Rows,
    align_to,
    collect_rows,
    kind_of,
    prepare,
    shadow_rows,
)
from loopwise.services.trainer.ensemble import (
    MEMBER_OUTPUT,
    BootstrapEnsemble,
    comparable_output,
    package_ensemble,
    search_family,
    wants_ensemble,
)
from loopwise.services.trainer.models import (
    ACTION_VALUE,
    FAMILIES,
    CandidateFit,
    baseline_metrics,
    beats_baseline,
    evaluate,
    score_output,
)
from loopwise.services.trainer.registry import Registry
from loopwise.services.trainer.rollout import RolloutController, RolloutLimits
from loopwise.services.trainer.scores import prediction_profile
from loopwise.services.trainer.validation import failures, profile_features, summary, validate
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.upstream import DecisionUseCases, FeedbackStats, FeedbackTrainingData

KIND = "training"
DEFAULT_CANDIDATE_BUDGET_S = 120.0


@functools.cache
def code_version() -> str:
    """``loopwise <version>`` plus the git commit of the source tree when it has one."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"loopwise {__version__}" + (f" ({commit})" if commit else "")


def onnxruntime_probe(pool: ProcessPool) -> LatencyProbe:
    """The real latency probe: single-decision ONNX Runtime timing in the process pool."""

    async def probe(family: str, onnx: bytes, kind: str, input_width: int, n_actions: int) -> float:
        return await pool.run(measure_latency, onnx, kind, input_width, n_actions)

    return probe


@dataclass(frozen=True)
class TrainingJob:
    """A validated training request."""

    use_case: str
    blueprint: bp.Blueprint
    blueprint_version: int
    start_ms: int | None
    end_ms: int | None
    deploy: bool
    trigger: str = "manual"


@dataclass
class Packaged:
    """A searched candidate with its ONNX bytes, parity and latency."""

    searched: SearchedFit
    onnx: bytes = b""
    latency_ms: float = 0.0
    error: str = ""
    within_budget: bool = True
    max_abs_diff: float = 0.0

    @property
    def usable(self) -> bool:
        """Exported, with parity, within the latency budget, with a finite score."""
        return not self.error and self.within_budget and math.isfinite(self.searched.fit.score)


@dataclass
class StageClock:
    """Seconds spent per stage of a job."""

    seconds: dict[str, float] = field(default_factory=dict)
    _at: float = field(default_factory=time.perf_counter)

    def lap(self, stage: str) -> None:
        """Charge the time since the last lap to ``stage``."""
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._at
        self._at = now


class Trainer:
    """Starts training jobs and runs them to a registered, blessed model and its rollout."""

    def __init__(self, registry: Registry, operations: OperationRunner, pool: ProcessPool,
                 use_cases: DecisionUseCases, training_data: FeedbackTrainingData,
                 clock: Clock, seed: int, rollouts: RolloutController | None = None,
                 stats: FeedbackStats | None = None, latency_probe: LatencyProbe | None = None) -> None:
        self.registry = registry
        self.operations = operations
        self.pool = pool
        self.use_cases = use_cases
        self.training_data = training_data
        self.clock = clock
        self.seed = seed
        self.rollouts = rollouts
        self.stats = stats
        self.latency_probe = latency_probe or onnxruntime_probe(pool)

    async def validate(self, request: tpb.StartTrainingRequest) -> TrainingJob:
        """Check the request now: bad arguments and unknown use cases fail the RPC."""
        if not request.use_case:
            raise InvalidArgument("use_case", "required")
        if request.trigger not in ("", "manual", "schedule"):
            raise InvalidArgument("trigger", "must be 'manual' or 'schedule'")
        start_ms = request.start_time.ToMilliseconds() if request.HasField("start_time") else None
        end_ms = request.end_time.ToMilliseconds() if request.HasField("end_time") else None
        if start_ms is not None and end_ms is not None and start_ms >= end_ms:
            raise InvalidArgument("end_time", "must be after start_time")
        blueprint, version = await self.use_cases.latest(request.use_case)
        if blueprint.kind != bp.DECISION_KIND_RANKING:  # rankings: services/trainer/ranking_job.py
            kind_of(blueprint)
        if not blueprint.features:
            raise FailedPrecondition(f"use case {quote(request.use_case)} has no features to learn from")
        unknown = [f for f in blueprint.training.candidate_families if f not in FAMILIES]
        if unknown:
            raise FailedPrecondition(f"use case {quote(request.use_case)}: training.candidate_families has unknown "
                                     f"families {unknown} (known: {list(FAMILIES)})")
        try:
            RolloutLimits.of(blueprint.rollout)
        except InvalidArgument as exc:
            raise FailedPrecondition(f"use case {quote(request.use_case)} has unusable rollout settings: "
                                     f"{exc.message}") from exc
        return TrainingJob(request.use_case, blueprint, version, start_ms, end_ms, request.deploy,
                           request.trigger or "manual")

    async def start_training(self, request: tpb.StartTrainingRequest) -> op_pb.Operation:
        """Validate, then start the job as an operation (a request_id retry returns it)."""
        job = await self.validate(request)
        return await self.operations.start(
            job.use_case, request.request_id, lambda progress: self._run(job, progress), exclusive=True,
        )

    # -- the job ----------------------------------------------------------------------

    async def _run(self, job: TrainingJob, progress: Progress) -> tpb.TrainingResult:
        laps = StageClock()
        result = tpb.TrainingResult(trigger=job.trigger)
        if self.stats is not None:
            try:
                result.closed_windows_at_start = (await self.stats.get(job.use_case)).closed_windows
            except LoopwiseError:
                pass  # only the count schedule needs it
        if job.blueprint.kind == bp.DECISION_KIND_RANKING:
            from loopwise.services.trainer.ranking_job import run_ranking_job

            await run_ranking_job(self, job, progress, result, laps)
            result.stage_seconds.update(laps.seconds)
            return result
        await progress.stage("reading_data", 0.02, "reading joined decisions from feedback")
        rows = await collect_rows(
            self.training_data.read(job.use_case, job.start_ms, job.end_ms),
            job.blueprint, job.blueprint_version,
            lambda version: self.use_cases.version(job.use_case, version),
        )
        rows = rows.without(shadow_rows(rows, await self.registry.store.revisions(job.use_case)))
        result.rows = rows.read
        laps.lap("reading")
        await progress.stage("validating", 0.1, f"{rows.read} rows read; validating schema, missing values, "
                                                "labels and drift")
        prepared, checks = await self._validate(job, rows)
        result.validation.extend(checks)
        laps.lap("validating")
        training = prepared.training
        await progress.stage("validating", 0.14, summary(checks))

        packaged = await self._candidates(job, prepared, progress, laps)
        result.candidates.extend(_candidate_report(p) for p in packaged)
        usable = [p for p in packaged if p.usable]
        if not usable:
            raise FailedPrecondition("no candidate is usable: " + "; ".join(
                f"{p.searched.fit.family}: {p.error or _latency_text(p, job.blueprint)}" for p in packaged))
        winner = _winner(usable)
        result.candidates[packaged.index(winner)].chosen = True
        members = wants_ensemble(job.blueprint, training.kind)
        if members:
            await progress.stage("exporting", 0.78, f"Thompson sampling: {members} bootstrap members")
            winner = await self._ensemble(usable, winner, prepared, members, job.blueprint.latency_budget_ms)
            laps.lap("ensemble")

        await progress.stage("blessing", 0.8, f"{winner.searched.fit.family} against what serves, "
                                              f"on {prepared.holdout_rows} holdout rows")
        current = await self.registry.current_deployment(job.use_case)
        serving_ref = current.production if current is not None and current.HasField("production") else None
        blessing = await self._bless(job, winner, prepared, serving_ref)
        result.blessing.CopyFrom(blessing)
        laps.lap("blessing")
        if not blessing.blessed:
            result.deployment_reason = f"nothing registered: {blessing.reason}"
            result.stage_seconds.update(laps.seconds)
            return result

        await progress.stage("registering", 0.88, f"registering {winner.searched.fit.family}")
        model = await self._register(job, winner, prepared, rows, blessing, serving_ref, progress.operation_id)
        result.model.CopyFrom(model)
        laps.lap("registering")
        await progress.stage("rollout", 0.94, f"version {model.version} registered; deciding how it serves")
        baseline = await asyncio.to_thread(baseline_metrics, training)
        deployed, reason, rollout = await self._deploy(job, model, training.kind, dict(winner.searched.fit.metrics),
                                                       baseline, serving_ref, progress.operation_id)
        result.deployed, result.deployment_reason = deployed, reason
        if rollout is not None:
            result.rollout.CopyFrom(rollout)
            await progress.stage("rollout", 0.98, f"rollout step shadow: v{model.version} next to production "
                                                  f"v{rollout.production_version}")
        laps.lap("registering")
        result.stage_seconds.update(laps.seconds)
        return result

    async def _validate(self, job: TrainingJob, rows: Rows) -> tuple[PreparedData, list[tpb.ValidationCheck]]:
        """Data validation, then the time split; FAILED_PRECONDITION with every reason."""
        previous = await self._previous_profiles(job.use_case)
        kind = kind_of(job.blueprint)
        checks = await asyncio.to_thread(validate, rows.features, rows.rewards, rows.labels, rows.actions,
                                         kind, job.blueprint, previous)
        failed = failures(checks)
        if failed:
            raise FailedPrecondition(f"data validation failed, no model trained: {failed}")
        prepared = await asyncio.to_thread(prepare, rows, job.blueprint)
        return prepared, checks

    async def _previous_profiles(self, use_case: str) -> list[tpb.FeatureProfile]:
        """The training profile of the latest model trained here (none: no drift check)."""
        for model in await self.registry.store.list_models(use_case):
            if model.source == "trainer" and model.feature_profiles:
                return list(model.feature_profiles)
        return []

    async def _candidates(self, job: TrainingJob, prepared: PreparedData, progress: Progress,
                          laps: StageClock) -> list[Packaged]:
        """Search every family under the budget, then export, check parity and time each."""
        training = prepared.training
        families = list(job.blueprint.training.candidate_families) or list(FAMILIES)
        budget = job.blueprint.training.candidate_budget_seconds or DEFAULT_CANDIDATE_BUDGET_S
        deadline = time.perf_counter() + budget
        searched: list[SearchedFit] = []
        for k, family in enumerate(families, start=1):
            await progress.stage("fitting", 0.15 + 0.5 * (k - 1) / len(families),
                                 f"candidate {k} of {len(families)}: {family} on {prepared.training_rows} rows")
            share = max(0.0, deadline - time.perf_counter()) / (len(families) - k + 1)
            searched.append(await self.pool.run(search_candidate, family, training, self.seed, share))
        laps.lap("fitting")
        packaged = []
        limit = job.blueprint.latency_budget_ms
        for k, found in enumerate(searched, start=1):
            await progress.stage("exporting", 0.65 + 0.15 * (k - 1) / len(searched),
                                 f"candidate {k} of {len(searched)}: {found.fit.family} to ONNX, parity on "
                                 f"{prepared.holdout_rows} rows")
            onnx, parity = await self.pool.run(package_candidate, found.fit.estimator, training)
            item = Packaged(found, onnx, max_abs_diff=parity.max_abs_diff)
            if not parity.ok:
                item.error = f"ONNX parity failed: {parity.reason}" if onnx else parity.reason
            else:
                item.latency_ms = await self.latency_probe(found.fit.family, onnx, training.kind,
                                                           training.input_width, training.n_actions)
                item.within_budget = limit <= 0 or item.latency_ms <= limit
            packaged.append(item)
        laps.lap("exporting")
        return packaged

    async def _ensemble(self, usable: list[Packaged], winner: Packaged, prepared: PreparedData,
                        members: int, latency_budget_ms: float) -> Packaged:
        """Thompson sampling: the winner refitted as a bootstrap ensemble of ``members``
        (services/trainer/ensemble.py); when its ensemble fails the parity check or the
        latency budget, the next best usable candidate's; FAILED_PRECONDITION when none
        passes."""
        training = prepared.training
        errors = []
        for item in [winner] + sorted((p for p in usable if p is not winner),
                                      key=lambda p: -p.searched.fit.score):
            fit = item.searched.fit
            ensemble, onnx, parity = await self.pool.run(
                package_ensemble, training, search_family(training.kind, fit.family), item.searched.params,
                members, self.seed)
            if not parity.ok:
                errors.append(f"{fit.family}: ONNX parity failed: {parity.reason}")
                continue
            latency = await self.latency_probe(fit.family, onnx, training.kind, training.input_width,
                                               training.n_actions)
            if 0 < latency_budget_ms < latency:
                errors.append(f"{fit.family}: the ensemble's single-row p99 {latency:.3f} ms is over the "
                              f"latency budget {latency_budget_ms:g} ms")
                continue
            metrics, metric, score = await self.pool.run(evaluate, ensemble, training)
            searched = replace(item.searched, fit=CandidateFit(fit.family, ensemble, metrics, metric, score,
                                                               fit.fit_seconds))
            return Packaged(searched, onnx, latency_ms=latency, max_abs_diff=parity.max_abs_diff)
        raise FailedPrecondition(f"Thompson sampling needs a bootstrap ensemble of {members} members and none "
                                 "passed the ONNX parity check and the latency budget: " + "; ".join(errors))

    async def _serving_model(self, job: TrainingJob, ref: tpb.ModelRef,
                             prepared: PreparedData) -> ServingModel | None:
        """The production model, ready to score this job's holdout (None if unreadable)."""
        try:
            model, chunks = await self.registry.download(job.use_case, ref.version)
            onnx = b"".join([piece async for _, piece in chunks])
            own = await self.use_cases.version(job.use_case, model.blueprint_version)
        except LoopwiseError:
            return None
        training = prepared.training
        holdout = training.holdout_features if training.kind == ACTION_VALUE else training.x_holdout
        assert holdout is not None
        return ServingModel(f"model v{model.version}", onnx, comparable_output(model.score_output),
                            align_to(holdout, job.blueprint, own), tuple(m.name for m in own.metrics))

    async def _bless(self, job: TrainingJob, winner: Packaged, prepared: PreparedData,
                     serving_ref: tpb.ModelRef | None) -> tpb.Blessing:
        training = prepared.training
        serving = None if serving_ref is None else await self._serving_model(job, serving_ref, prepared)
        holdout = training.holdout_features if training.kind == ACTION_VALUE else training.x_holdout
        assert holdout is not None
        slices = slice_masks(job.blueprint, holdout)
        return await self.pool.run(bless, winner.onnx, training, serving, slices,
                                   tolerance_of(job.blueprint.training), guardrail_rules(job.blueprint))

    async def _register(self, job: TrainingJob, winner: Packaged, prepared: PreparedData, rows: Rows,
                        blessing: tpb.Blessing, serving_ref: tpb.ModelRef | None, operation_id: str) -> tpb.Model:
        training = prepared.training
        fit = winner.searched.fit
        baseline = await asyncio.to_thread(baseline_metrics, training)
        width = len(job.blueprint.features)
        profiles = await asyncio.to_thread(profile_features, training.x_train[:, :width], job.blueprint)
        predictions = await self.pool.run(prediction_profile, winner.onnx, training, job.blueprint, self.seed)
        model = tpb.Model(
            use_case=job.use_case, family=fit.family, blueprint_version=job.blueprint_version,
            metrics={k: v for k, v in fit.metrics.items() if math.isfinite(v)},
            baseline_metrics={k: v for k, v in baseline.items() if math.isfinite(v)},
            training_rows=prepared.training_rows, holdout_rows=prepared.holdout_rows, source="trainer",
            input_width=training.input_width,
            score_output=MEMBER_OUTPUT if isinstance(fit.estimator, BootstrapEnsemble) else score_output(training.kind),
            operation_id=operation_id, feature_profiles=profiles, code_version=code_version(),
            parent_version=serving_ref.version if serving_ref is not None else 0,
            labelled_rows=rows.read, blessing=blessing, latency_p99_ms=winner.latency_ms,
            prediction_profile=predictions,
            description=f"{fit.family} ({params_text(winner.searched.params)}{_members_text(fit.estimator)}) trained on "
                        f"{prepared.training_rows} rows; max |ONNX - sklearn| on the holdout "
                        f"{winner.max_abs_diff:.2g}",
        )
        model.data_start_time.FromMilliseconds(prepared.start_ms)
        model.data_end_time.FromMilliseconds(prepared.end_ms)
        return await self.registry.add_model(model, winner.onnx, f"training:{operation_id}")

    async def _deploy(self, job: TrainingJob, model: tpb.Model, kind: str, metrics: dict[str, float],
                      baseline: dict[str, float], serving_ref: tpb.ModelRef | None,
                      operation_id: str) -> tuple[bool, str, tpb.Rollout | None]:
        """The first model goes to production when it beats the default policy; later
        ones start a gated rollout (or, with a manual rollout, wait for SetDeployment)."""
        beats, comparison = beats_baseline(kind, metrics, baseline)
        if serving_ref is None:
            if not beats:
                return False, f"not deployed: does not beat the default policy: {comparison}", None
            if job.blueprint.rollout.hold_first_model:
                return False, f"not deployed: rollout.hold_first_model is set ({comparison})", None
            reason = f"first model beats the default policy: {comparison}"
            await self.registry.set_deployment(tpb.SetDeploymentRequest(
                request_id=f"training-deploy:{operation_id}", use_case=job.use_case,
                production_version=model.version, reason=reason,
            ), action="training")
            return True, reason, None
        if job.blueprint.rollout.manual or self.rollouts is None:
            if job.deploy:
                reason = f"deploy requested and the rollout is manual: {model.blessing.reason}"
                await self.registry.set_deployment(tpb.SetDeploymentRequest(
                    request_id=f"training-deploy:{operation_id}", use_case=job.use_case,
                    production_version=model.version, reason=reason,
                ), action="training")
                return True, reason, None
            return False, (f"registered only: rollout.manual is set and version {serving_ref.version} serves "
                           f"production"), None
        rollout = await self.rollouts.start(model, serving_ref, job.blueprint, model.blessing.reason,
                                            f"rollout:{operation_id}")
        return False, f"rollout started: {rollout.message}", rollout


def _members_text(estimator: object) -> str:
    """"; Thompson bootstrap ensemble of K members" for an ensemble, else nothing."""
    if isinstance(estimator, BootstrapEnsemble):
        return f"; Thompson bootstrap ensemble of {len(estimator.members)} members"
    return ""


def _latency_text(p: Packaged, blueprint: bp.Blueprint) -> str:
    return (f"single-row p99 {p.latency_ms:.3f} ms over the latency budget {blueprint.latency_budget_ms:g} ms"
            if not p.within_budget else f"holdout score {p.searched.fit.score}")


def _candidate_report(p: Packaged) -> tpb.Candidate:
    fit = p.searched.fit
    error = p.error
    if not error and not p.within_budget:
        error = f"single-row p99 {p.latency_ms:.3f} ms is over the latency budget"
    return tpb.Candidate(family=fit.family, score=fit.score if math.isfinite(fit.score) else 0.0,
                         metric=fit.metric, fit_seconds=fit.fit_seconds, latency_p99_ms=p.latency_ms,
                         within_budget=p.within_budget, params=params_text(p.searched.params),
                         configurations=p.searched.configurations, error=error)


def _winner(usable: list[Packaged]) -> Packaged:
    """The best holdout score; ties go to the simpler, earlier candidate."""
    best = usable[0]
    for item in usable[1:]:
        if item.searched.fit.score > best.searched.fit.score:
            best = item
    return best

