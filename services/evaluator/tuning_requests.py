"""StartTuning: online tuning as an operation (docs/tuning.md).

Validates the request at once, then runs rounds as an operation of kind ``tuning``:
each round applies a blueprint version whose experiment arms carry the proposed
settings (``ExperimentArm.epsilon`` for ``policy.epsilon``, ``ExperimentArm.parameters``
for every other path) through the decision service's ``ApplyUseCase``, waits until every
arm has ``min_rows_per_arm`` decisions with a closed reward window, reads the arms'
scorecard (``GetScorecard``'s own code) and hands the means and CIs to the Gaussian
processes (:mod:`.online_tuning`). The rounds so far are the operation's ``details``
(a TuningResult) after every round, and every applied version names the operation and
the round's evidence in its ``author`` and ``reason`` (the decision service's audit:
``ListUseCaseChanges``). At the end the best setting is applied (``apply``) or the
blueprint the tuning started from is applied again; a failed or cancelled tuning also
puts the starting blueprint back.
"""

from __future__ import annotations

import asyncio
import logging
import math

import grpc
import numpy as np

from loopwise import parameters as P
from loopwise.channels import ServiceChannels
from loopwise.clock import Clock
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, quote
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.operations import OperationRunner, Progress
from loopwise.services.evaluator import offpolicy
from loopwise.services.evaluator.online_tuning import (
    EI,
    UCB,
    Choice,
    MetricValue,
    RoundEvidence,
    Trial,
    TuningPlan,
    run_tuning,
)
from loopwise.services.evaluator.scorecard_requests import METRICS
from loopwise.services.evaluator.tuning import Bound
from loopwise.upstream import translate_rpc_error

log = logging.getLogger("loopwise.evaluator.tuning")

TUNING_KIND = "tuning"
DEFAULT_ROUNDS, MAX_ROUNDS = 5, 20
DEFAULT_BATCH, MIN_BATCH, MAX_BATCH = 4, 2, 10
DEFAULT_MIN_ROWS, MAX_MIN_ROWS = 1000, 10_000_000
MAX_PARAMETERS = 8
DEFAULT_ROUND_TIMEOUT_S = 7 * 86_400.0
POLL_S = 1.0  # real seconds between counts of a round's rows
APPLY_TIMEOUT_S = 30.0
MAX_REASON_CHARS = 4000
ACQUISITIONS = {epb.ACQUISITION_UNSPECIFIED: EI, epb.ACQUISITION_EXPECTED_IMPROVEMENT: EI,
                epb.ACQUISITION_UPPER_CONFIDENCE_BOUND: UCB}
EPSILON = "policy.epsilon"


class DecisionBlueprints:
    """Applies blueprint versions through the decision service's ``ApplyUseCase``, with
    the rights of the caller of StartTuning when its ``authorization`` is given (the
    evaluator's own token has no ``admin`` scope)."""

    def __init__(self, channels: ServiceChannels, authorization: tuple[tuple[str, str], ...] = ()) -> None:
        self.channels = channels
        self.authorization = authorization

    def acting_for(self, authorization: tuple[tuple[str, str], ...]) -> DecisionBlueprints:
        """The same, applying with the caller's ``authorization`` metadata."""
        return DecisionBlueprints(self.channels, authorization)

    async def apply(self, blueprint: bp.Blueprint, request_id: str, author: str, reason: str) -> dpb.UseCase:
        """Apply ``blueprint``; the resulting use case version."""
        request = dpb.ApplyUseCaseRequest(request_id=request_id, blueprint=blueprint, author=author,
                                          reason=reason[:MAX_REASON_CHARS])
        try:
            return (await self.channels.decision().ApplyUseCase(request, timeout=APPLY_TIMEOUT_S,
                                                                metadata=self.authorization or None)).use_case
        except grpc.aio.AioRpcError as exc:
            raise translate_rpc_error("decision", exc) from exc


def _fmt(names: list[str], point: np.ndarray) -> str:
    return "{" + ", ".join(f"{n}={v:.4g}" for n, v in zip(names, point, strict=True)) + "}"


def _metric_text(name: str, m: MetricValue) -> str:
    return f"{name} {m.mean:.4g} [{m.ci_lower:.4g}, {m.ci_upper:.4g}] n={m.rows}"


class Tuning:
    """StartTuning: validation, and the rounds as an operation."""

    def __init__(self, evaluator, operations: OperationRunner, blueprints: DecisionBlueprints, clock: Clock) -> None:
        self.evaluator = evaluator  # use_cases, get_scorecard, _scorecard_rows, suggest_parameters, seed
        self.operations = operations
        self.blueprints = blueprints
        self.clock = clock

    # -- validation -----------------------------------------------------------------
    async def validate(self, request: epb.StartTuningRequest) -> tuple[TuningPlan, bp.Blueprint, int]:
        """Check the request now (INVALID_ARGUMENT naming the field); the plan, the
        starting blueprint and its version."""
        if not request.use_case:
            raise InvalidArgument("use_case", "required")
        if not request.parameters:
            raise InvalidArgument("parameters", "name at least one parameter to tune")
        if len(request.parameters) > MAX_PARAMETERS:
            raise InvalidArgument("parameters", f"at most {MAX_PARAMETERS} parameters")
        if not 0 <= request.rounds <= MAX_ROUNDS:
            raise InvalidArgument("rounds", f"must be in [0, {MAX_ROUNDS}] (0: {DEFAULT_ROUNDS})")
        if request.batch_size != 0 and not MIN_BATCH <= request.batch_size <= MAX_BATCH:
            raise InvalidArgument("batch_size", f"must be in [{MIN_BATCH}, {MAX_BATCH}] (0: {DEFAULT_BATCH})")
        if not 0 <= request.min_rows_per_arm <= MAX_MIN_ROWS:
            raise InvalidArgument("min_rows_per_arm", f"must be in [0, {MAX_MIN_ROWS}] (0: {DEFAULT_MIN_ROWS})")
        if request.HasField("round_timeout") and request.round_timeout.ToNanoseconds() < 0:
            raise InvalidArgument("round_timeout", "must be >= 0")
        if request.acquisition not in ACQUISITIONS:
            raise InvalidArgument("acquisition", f"unknown acquisition {request.acquisition}")
        if not 0 <= request.seed < 2**32:
            raise InvalidArgument("seed", "must be in [0, 2^32)")
        blueprint, version = await self.evaluator.use_cases.latest(request.use_case)
        actions = list(blueprint.actions)
        metrics = set(METRICS) | {m.name for m in getattr(blueprint, "metrics", [])}
        names: list[str] = []
        low, high = [], []
        for i, parameter in enumerate(request.parameters):
            path = P.parse(parameter.path, bp.Blueprint.DESCRIPTOR, f"parameters[{i}].path")
            text = str(path)
            if path.fields[0] == "arms":
                raise InvalidArgument(f"parameters[{i}].path", "the arms are what the tuning sets")
            if text in names:
                raise InvalidArgument(f"parameters[{i}].path", f"{quote(text)} is named twice")
            if path.fields == ("policy", "action_costs") and path.key not in actions:
                raise InvalidArgument(f"parameters[{i}].path", f"{quote(path.key or '')} is not an action of "
                                      f"{quote(request.use_case)}: {actions}")
            if path.fields == ("value_model", "weights") and path.key not in metrics - set(METRICS):
                raise InvalidArgument(f"parameters[{i}].path", f"{quote(path.key or '')} is not a metric of "
                                      f"{quote(request.use_case)}")
            if not (math.isfinite(parameter.low) and math.isfinite(parameter.high) and parameter.low < parameter.high):
                raise InvalidArgument(f"parameters[{i}].high", "needs finite low < high")
            if text == EPSILON and not (0.0 <= parameter.low and parameter.high <= 1.0):
                raise InvalidArgument(f"parameters[{i}].low", "policy.epsilon is searched within [0, 1]")
            names.append(text)
            low.append(parameter.low)
            high.append(parameter.high)
        objective = request.objective or "reward"
        if objective not in metrics:
            raise InvalidArgument("objective", f"{quote(objective)} is not a scorecard metric: {sorted(metrics)}")
        bounds = []
        for i, c in enumerate(request.constraints):
            if c.metric not in metrics:
                raise InvalidArgument(f"constraints[{i}].metric", f"{quote(c.metric)} is not a scorecard metric: "
                                      f"{sorted(metrics)}")
            if not (c.HasField("min") or c.HasField("max")):
                raise InvalidArgument(f"constraints[{i}]", f"the constraint on {quote(c.metric)} needs min or max")
            for side in ("min", "max"):
                if c.HasField(side) and not math.isfinite(getattr(c, side)):
                    raise InvalidArgument(f"constraints[{i}].{side}", "must be finite")
            bounds.append(Bound(c.metric, c.min if c.HasField("min") else None, c.max if c.HasField("max") else None))
        if request.seed_from_offline:
            if bool(request.suggest_model_version) == bool(request.suggest_report_id):
                raise InvalidArgument("suggest_model_version", "seed_from_offline needs exactly one of "
                                      "suggest_model_version and suggest_report_id")
            for i, name in enumerate(names):
                offpolicy.check_parameter(_offline_name(name), actions, f"parameters[{i}].path")
        elif request.suggest_model_version or request.suggest_report_id:
            raise InvalidArgument("seed_from_offline", "set it to seed the first round with the suggestion")
        plan = TuningPlan(
            names=names, low=np.array(low), high=np.array(high), objective=objective, bounds=bounds,
            rounds=request.rounds or DEFAULT_ROUNDS, batch_size=request.batch_size or DEFAULT_BATCH,
            seed=request.seed or self.evaluator.seed, acquisition=ACQUISITIONS[request.acquisition],
        )
        return plan, blueprint, version

    async def start(self, request: epb.StartTuningRequest,
                    authorization: tuple[tuple[str, str], ...] = ()) -> op_pb.Operation:
        """Validate, then start the tuning as an operation (one per use case at a time);
        its blueprint versions are applied with the caller's ``authorization``."""
        plan, blueprint, version = await self.validate(request)
        blueprints = self.blueprints.acting_for(authorization)
        return await self.operations.start(
            request.use_case, request.request_id,
            lambda progress: self._run(request, plan, blueprint, version, progress, blueprints), exclusive=True)

    # -- the job --------------------------------------------------------------------
    async def _run(self, request: epb.StartTuningRequest, plan: TuningPlan, base: bp.Blueprint, base_version: int,
                   progress: Progress, blueprints: DecisionBlueprints) -> epb.TuningResult:
        result = epb.TuningResult(use_case=request.use_case)
        author = f"{request.author or 'loopwise'} (tuning {progress.operation_id})"
        finished = False
        try:
            if request.seed_from_offline:
                await progress.stage("seeding", 0.01, "asking SuggestParameters for the first round's first setting")
                plan = await self._seeded(request, plan)
            experiment = LiveExperiment(self, request, plan, base, progress, author, result, blueprints)

            async def on_round(number: int, trials: list[Trial], evidence: RoundEvidence) -> None:
                result.rounds.append(_round_message(number, trials, evidence, plan))
                await progress.details(result)
                await progress.stage(f"round_{number}_measured", number / (plan.rounds + 1),
                                     "; ".join(f"{t.arm} {_fmt(plan.names, t.proposal.point)}: "
                                               + ", ".join(_metric_text(k, v) for k, v in t.metrics.items())
                                               for t in trials))

            trials, choice = await run_tuning(plan, experiment, on_round)
            await self._finish(request, plan, base, choice, trials, result, progress, author, blueprints)
            finished = True
            return result
        finally:
            if not finished:
                try:
                    await asyncio.shield(self._restore(blueprints, base, progress.operation_id, author))
                except Exception:  # the job's own error is what the operation reports
                    log.warning("tuning %s: the starting blueprint of %s could not be applied again",
                                progress.operation_id, request.use_case, exc_info=True)

    async def _seeded(self, request: epb.StartTuningRequest, plan: TuningPlan) -> TuningPlan:
        names = [_offline_name(n) for n in plan.names]
        suggestion = await self.evaluator.suggest_parameters(epb.SuggestParametersRequest(
            use_case=request.use_case, parameters=names,
            ranges=[epb.ParameterRange(low=lo, high=hi) for lo, hi in zip(plan.low, plan.high, strict=True)],
            model_version=request.suggest_model_version, report_id=request.suggest_report_id,
            objective="reward", seed=plan.seed))
        point = np.array([suggestion.suggestion[n] for n in names])
        return TuningPlan(**{**plan.__dict__, "initial": (point,)})

    async def _finish(self, request: epb.StartTuningRequest, plan: TuningPlan, base: bp.Blueprint, choice: Choice,
                      trials: list[Trial], result: epb.TuningResult, progress: Progress, author: str,
                      blueprints: DecisionBlueprints) -> None:
        await progress.stage("choosing", 0.97, "choosing the best setting that meets every constraint")
        result.warnings.extend(choice.warnings)
        best = choice.trial
        if best is not None:
            result.best.update(dict(zip(plan.names, map(float, best.proposal.point), strict=True)))
            result.best_round, result.best_arm = best.round, best.arm
            result.best_predicted_mean = choice.predicted_mean
            result.best_metrics.extend(_metrics(best.metrics))
        if request.apply and best is not None:
            chosen = _with_setting(base, plan.names, best.proposal.point)
            evidence = ", ".join(_metric_text(k, v) for k, v in best.metrics.items())
            reason = (f"tuning {progress.operation_id}: best setting {_fmt(plan.names, best.proposal.point)} "
                      f"from round {best.round} arm {best.arm} ({evidence}; predicted {plan.objective} "
                      f"{choice.predicted_mean:.4g}) applied" + _evidence(result))
            await progress.stage("applying", 0.99, reason)
            applied = await blueprints.apply(chosen, f"{progress.operation_id}-apply", author, reason)
            result.applied = True
            result.final_blueprint_version = applied.version
        else:
            if request.apply:
                result.warnings.append("nothing applied: no setting met every constraint")
            result.final_blueprint_version = await self._restore(blueprints, base, progress.operation_id, author,
                                                                 _evidence(result))
        await progress.details(result)

    @staticmethod
    async def _restore(blueprints: DecisionBlueprints, base: bp.Blueprint, operation_id: str,
                       author: str, evidence: str = "") -> int:
        """Apply the starting blueprint again (the tuning's arms end); its version."""
        restored = await blueprints.apply(base, f"{operation_id}-restore", author,
                                               f"tuning {operation_id} ended: the blueprint it started from "
                                               f"is applied again{evidence}")
        return restored.version


class LiveExperiment:
    """Runs a round as arms of the use case and measures them with the scorecard."""

    def __init__(self, tuning: Tuning, request: epb.StartTuningRequest, plan: TuningPlan, base: bp.Blueprint,
                 progress: Progress, author: str, result: epb.TuningResult, blueprints: DecisionBlueprints) -> None:
        self.tuning = tuning
        self.blueprints = blueprints
        self.request = request
        self.plan = plan
        self.base = base
        self.progress = progress
        self.author = author
        self.result = result
        self.min_rows = request.min_rows_per_arm or DEFAULT_MIN_ROWS
        timeout = request.round_timeout.ToNanoseconds() / 1e9 if request.HasField("round_timeout") else 0.0
        self.timeout_s = timeout or DEFAULT_ROUND_TIMEOUT_S

    async def run_round(self, round_number: int, settings: list[np.ndarray]) -> RoundEvidence:
        """Apply the arms, wait for their rows, and read their scorecard."""
        op = self.progress.operation_id
        arms = [f"tune{round_number}_{i}" for i in range(len(settings))]
        blueprint = bp.Blueprint()
        blueprint.CopyFrom(self.base)
        del blueprint.arms[:]
        share = 1.0 / len(arms)
        for arm_name, point in zip(arms, settings, strict=True):
            arm = blueprint.arms.add(name=arm_name, traffic_share=share)
            for name, value in zip(self.plan.names, point, strict=True):
                if name == EPSILON:
                    arm.epsilon = float(value)
                else:
                    arm.parameters[name] = float(value)
        reason = (f"tuning {op} round {round_number}/{self.plan.rounds}: "
                  + "; ".join(f"{a} {_fmt(self.plan.names, p)}" for a, p in zip(arms, settings, strict=True))
                  + _evidence(self.result))
        fraction = (round_number - 0.5) / (self.plan.rounds + 1)
        await self.progress.stage(f"round_{round_number}_applying", fraction, reason)
        start_ms = self.tuning.clock.now_ms()
        applied = await self.blueprints.apply(blueprint, f"{op}-round-{round_number}", self.author, reason)
        latest, _ = await self.tuning.evaluator.use_cases.latest(self.request.use_case)
        start_ms = min(start_ms, applied.create_time.ToMilliseconds() or start_ms)
        deadline_ms = start_ms + self.timeout_s * 1000.0
        while True:
            counts = await self._count(latest, arms, start_ms)
            if min(counts) >= self.min_rows:
                break
            if self.tuning.clock.now_ms() > deadline_ms:
                raise DeadlineExceeded(f"round {round_number}: the arms have {counts} decisions with a closed "
                                       f"reward window after {self.timeout_s:g} s, need {self.min_rows} each")
            await self.progress.stage(f"round_{round_number}_waiting", fraction,
                                      f"decisions with a closed reward window per arm: {dict(zip(arms, counts, strict=True))}; "
                                      f"need {self.min_rows} each")
            await asyncio.sleep(POLL_S)
        request = epb.GetScorecardRequest(use_case=self.request.use_case, control_arm=arms[0])
        request.start_time.FromMilliseconds(start_ms)
        card = (await self.tuning.evaluator.get_scorecard(request)).scorecard
        metrics: list[dict[str, MetricValue]] = [{} for _ in arms]
        for m in card.group_metrics:
            if m.group in arms:
                metrics[arms.index(m.group)][m.metric] = MetricValue(m.mean, m.ci_lower, m.ci_upper, m.rows)
        wanted = [self.plan.objective] + [b.metric for b in self.plan.bounds]
        for arm_name, values in zip(arms, metrics, strict=True):
            missing = [w for w in wanted if w not in values]
            if missing:
                raise FailedPrecondition(f"round {round_number}: arm {arm_name} has no {missing} on its scorecard")
        return RoundEvidence(arms, metrics, {"version": applied.version, "start_ms": start_ms,
                                             "end_ms": self.tuning.clock.now_ms()}, list(card.warnings))

    async def _count(self, blueprint: bp.Blueprint, arms: list[str], start_ms: int) -> list[int]:
        rows = await self.tuning.evaluator._scorecard_rows(self.request.use_case, blueprint, arms, [], [], False,
                                                           None, 0.0, start_ms, None)
        group = rows.build()[0]
        return np.bincount(group, minlength=len(arms))[:len(arms)].astype(int).tolist()


def _evidence(result: epb.TuningResult) -> str:
    """The last measured round's per-arm means and CIs, for an audit reason."""
    if not result.rounds:
        return ""
    last = result.rounds[-1]
    return f" (round {last.round} measured: " + "; ".join(
        f"{a.arm} " + ", ".join(_metric_text(m.metric, MetricValue(m.mean, m.ci_lower, m.ci_upper, m.rows))
                                for m in a.metrics) for a in last.arms) + ")"


def _offline_name(path: str) -> str:
    """SuggestParameters' name of a path ("action_costs.<a>" for policy.action_costs[<a>])."""
    if path.startswith("policy.action_costs[") and path.endswith("]"):
        return offpolicy.COST_PREFIX + path[len("policy.action_costs["):-1]
    return path


def _with_setting(base: bp.Blueprint, names: list[str], point: np.ndarray) -> bp.Blueprint:
    values = {P.parse(n, bp.Blueprint.DESCRIPTOR, "parameters"): float(v) for n, v in zip(names, point, strict=True)}
    return P.with_values(base, values)  # type: ignore[return-value]


def _metrics(values: dict[str, MetricValue]) -> list[epb.TuningMetric]:
    return [epb.TuningMetric(metric=k, mean=v.mean, ci_lower=v.ci_lower, ci_upper=v.ci_upper, rows=v.rows)
            for k, v in values.items()]


def _round_message(number: int, trials: list[Trial], evidence: RoundEvidence, plan: TuningPlan) -> epb.TuningRound:
    out = epb.TuningRound(round=number, blueprint_version=int(evidence.info.get("version", 0)),
                          warnings=evidence.warnings)
    if "start_ms" in evidence.info:
        out.start_time.FromMilliseconds(int(evidence.info["start_ms"]))
        out.end_time.FromMilliseconds(int(evidence.info["end_ms"]))
    for t in trials:
        p = t.proposal
        out.arms.add(arm=t.arm, parameters=dict(zip(plan.names, map(float, p.point), strict=True)), source=p.source,
                     predicted_mean=p.predicted_mean, predicted_stddev=p.predicted_stddev,
                     acquisition=p.acquisition, feasibility_probability=p.feasibility,
                     metrics=_metrics(t.metrics), feasible=t.feasible)
    return out
