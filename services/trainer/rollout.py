"""Outcome-gated rollouts: shadow → canary → production, with automatic rollback.

A blessed model that is not the first of its use case starts as a shadow next to
production (the decision service scores and logs it, never returns it). A background
loop (:meth:`RolloutController.run`) looks at every rollout under way, reading the
decisions logged since its step began through the feedback service:

- **shadow**: once the shadow logged ``shadow_min_decisions``, the production rows
  of that period are scored by both models: the share of equal decisions
  (agreement) and the Kolmogorov-Smirnov distance of the scores must hold;
- **canary**: the canary serves ``canary_share`` of units; once
  ``canary_min_outcomes`` of its decisions are joined (window closed), its mean
  reward is compared with production's in the same period, once: a one-sided Welch
  z-test at ``canary_alpha`` ("the canary is worse") rolls back, else it is promoted.
  The share of fallback decisions and the canary's p99 serving latency against
  production's (``canary_max_latency_ratio``, from the latency each decision
  record carries) are checked on every look.

Ranking use cases start at the canary step (the decision service does not score
rankings with shadows); their canary compares clicks per ranking (the rewards of a
ranking's shown items summed) of the canary's rankings with production's; guardrail
metrics are not checked for them.

Every change is a deployment revision with an audit entry and its reason; a manual
SetDeployment or Rollback in between supersedes the rollout. The rollout state is in
the store, so a restarted trainer carries on. All times come from the settings clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from loopwise.clock import Clock
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.errors import InvalidArgument, LoopwiseError, NotFound, quote
from loopwise.jobs import ProcessPool
from loopwise.periodic import every
from loopwise.services.trainer.data import Rows, align_to, collect_rows, kind_of
from loopwise.services.trainer.ensemble import comparable_output
from loopwise.services.trainer.models import (
    ACTION_VALUE,
    BINARY,
    action_value_inputs,
    decisions,
    run_onnx,
)
from loopwise.services.trainer.registry import Registry
from loopwise.store.trainer import RegistryStore
from loopwise.tensors import F32, I64, unpack_vector
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.upstream import DecisionUseCases, FeedbackTrainingData

log = logging.getLogger(__name__)

DEFAULT_SHADOW_MIN_DECISIONS = 200
DEFAULT_SHADOW_MIN_AGREEMENT = 0.5
DEFAULT_SHADOW_MAX_SCORE_SHIFT = 0.5
DEFAULT_CANARY_SHARE = 0.1
DEFAULT_CANARY_MIN_OUTCOMES = 400
DEFAULT_CANARY_ALPHA = 0.05
DEFAULT_CANARY_MAX_FALLBACK_RATE = 0.05
FALLBACK_MIN_DECISIONS = 100  # the fallback rate is judged from this many decisions on
DEFAULT_CANARY_MAX_LATENCY_RATIO = 1.5
LATENCY_MIN_DECISIONS = 100  # measured decisions of each slot before latency is judged
LATENCY_SLACK_MS = 2.0  # a canary's p99 within this of production's passes whatever the ratio
LATENCY_PERCENTILE = 99.0
ACTIVE = (tpb.ROLLOUT_STEP_SHADOW, tpb.ROLLOUT_STEP_CANARY)


@dataclass(frozen=True)
class RolloutLimits:
    """The guardrail settings of a blueprint, defaults filled in."""

    shadow_min_decisions: int
    shadow_min_agreement: float
    shadow_max_score_shift: float
    canary_share: float
    canary_min_outcomes: int
    canary_alpha: float
    canary_max_fallback_rate: float
    canary_max_latency_ratio: float = DEFAULT_CANARY_MAX_LATENCY_RATIO

    @classmethod
    def of(cls, spec: bp.RolloutSpec) -> RolloutLimits:
        """The blueprint's rollout settings with defaults for unset (zero) values."""
        share = spec.canary_share or DEFAULT_CANARY_SHARE
        alpha = spec.canary_alpha or DEFAULT_CANARY_ALPHA
        if not 0.0 < share < 1.0:
            raise InvalidArgument("rollout.canary_share", "must be in (0, 1)")
        if not 0.0 < alpha < 0.5:
            raise InvalidArgument("rollout.canary_alpha", "must be in (0, 0.5)")
        return cls(int(spec.shadow_min_decisions or DEFAULT_SHADOW_MIN_DECISIONS),
                   spec.shadow_min_agreement or DEFAULT_SHADOW_MIN_AGREEMENT,
                   spec.shadow_max_score_shift or DEFAULT_SHADOW_MAX_SCORE_SHIFT,
                   share, int(spec.canary_min_outcomes or DEFAULT_CANARY_MIN_OUTCOMES), alpha,
                   spec.canary_max_fallback_rate or DEFAULT_CANARY_MAX_FALLBACK_RATE,
                   spec.canary_max_latency_ratio or DEFAULT_CANARY_MAX_LATENCY_RATIO)


@dataclass(frozen=True)
class RewardTest:
    """Canary minus production mean reward with its (1 - 2α) interval; ``worse`` when
    the one-sided test at α says the canary's reward is lower."""

    diff: float
    lower: float
    upper: float
    worse: bool


def reward_test(canary: np.ndarray, production: np.ndarray, alpha: float) -> RewardTest:
    """Welch z-test of mean rewards (normal approximation, one look)."""
    diff = float(np.mean(canary) - np.mean(production))
    se = math.sqrt(float(np.var(canary, ddof=1)) / canary.size + float(np.var(production, ddof=1)) / production.size)
    z = NormalDist().inv_cdf(1.0 - alpha)
    lower, upper = diff - z * se, diff + z * se
    return RewardTest(diff, lower, upper, upper < 0.0)


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic (0 when either is empty)."""
    if not a.size or not b.size:
        return 0.0
    grid = np.concatenate([a, b])
    fa = np.searchsorted(np.sort(a), grid, side="right") / a.size
    fb = np.searchsorted(np.sort(b), grid, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def _score_column(kind: str, scores: np.ndarray, n_actions: int) -> np.ndarray:
    """One score per decision for the distribution check."""
    if kind == BINARY:
        return scores[:, 1]
    if kind == ACTION_VALUE:
        return scores.reshape(-1, n_actions).max(axis=1)
    return scores.max(axis=1)


def compare_models(kind: str, threshold: float, n_actions: int, production: tuple[bytes, str, np.ndarray],
                   shadow: tuple[bytes, str, np.ndarray]) -> tuple[float, float]:
    """Agreement of decisions and KS distance of scores of two ONNX models on the same
    live rows, each given as (onnx, score output, rows in its own feature order) (pool function)."""
    outputs = []
    for onnx, output, x in (production, shadow):
        inputs = action_value_inputs(x, n_actions) if kind == ACTION_VALUE else x.astype(np.float32)
        outputs.append(run_onnx(onnx, output, inputs))
    chosen = [decisions(kind, s, threshold, n_actions) for s in outputs]
    agreement = float(np.mean(chosen[0] == chosen[1])) if chosen[0].size else 1.0
    shift = ks_distance(*(_score_column(kind, s, n_actions) for s in outputs))
    return agreement, shift


def latency_guardrail(latencies_ms: np.ndarray, model_versions: np.ndarray, canary: int, production: int,
                      max_ratio: float) -> tpb.Guardrail:
    """The canary's p99 serving latency against production's over the same period:
    it holds when the canary's p99 is at most ``max_ratio`` × production's (or within
    LATENCY_SLACK_MS of it). Unmeasured rows (0) are left out; with fewer than
    LATENCY_MIN_DECISIONS measured decisions of either slot, or a negative ratio, it
    holds without a judgement."""
    measured = latencies_ms > 0 if latencies_ms.size == model_versions.size else np.zeros(model_versions.size, bool)
    c = latencies_ms[measured & (model_versions == canary)]
    p = latencies_ms[measured & (model_versions == production)]
    if max_ratio < 0:
        return _guardrail("canary_latency_p99", True, 0.0, max_ratio, "latency check turned off")
    if min(c.size, p.size) < LATENCY_MIN_DECISIONS:
        return _guardrail("canary_latency_p99", True, 0.0, max_ratio,
                          f"not judged yet: {c.size} canary and {p.size} production decisions with a measured "
                          f"latency (need {LATENCY_MIN_DECISIONS} each)")
    c99, p99 = (float(np.percentile(v, LATENCY_PERCENTILE)) for v in (c, p))
    allowed = max(max_ratio * p99, p99 + LATENCY_SLACK_MS)
    return _guardrail("canary_latency_p99", c99 <= allowed, c99, allowed,
                      f"canary p99 serving latency {c99:.3f} ms ({c.size} decisions) vs production {p99:.3f} ms "
                      f"({p.size}); at most {allowed:.3f} ms (x{max_ratio:g}, or +{LATENCY_SLACK_MS:g} ms)")


def metric_guardrails(blueprint: bp.Blueprint, metrics: np.ndarray, canary_rows: np.ndarray,
                      production_rows: np.ndarray, alpha: float) -> list[tpb.Guardrail]:
    """The canary against production on every guardrail metric (Blueprint.guardrails):
    it fails when the one-sided test at ``alpha`` says the canary is worse than
    production by more than the guardrail's tolerance (``metrics`` [N, M] in blueprint
    metric order; the masks select canary and production rows)."""
    names = [m.name for m in blueprint.metrics]
    checks = []
    for rule in blueprint.guardrails:
        if rule.metric not in names or metrics.shape[1] != len(names):
            continue
        column = metrics[:, names.index(rule.metric)]
        c, p = column[canary_rows], column[production_rows]
        sign = -1.0 if rule.lower_is_better else 1.0
        tolerance = max(0.0, rule.tolerance)
        # "Better" is higher after the sign; the canary may be worse by the tolerance.
        test = reward_test(sign * c + tolerance, sign * p, alpha)
        worse_by = -sign * float(np.mean(c) - np.mean(p))
        direction = "lower" if rule.lower_is_better else "higher"
        checks.append(_guardrail(
            f"guardrail:{rule.metric}", not test.worse, worse_by, tolerance,
            f"guardrail {rule.metric} ({direction} is better): canary {float(np.mean(c)):.4f} vs production "
            f"{float(np.mean(p)):.4f} per decision, worse by {worse_by:+.4f} (tolerance {tolerance:g}, "
            f"{1 - 2 * alpha:.0%} CI of the margin [{test.lower:+.4f}, {test.upper:+.4f}])"))
    return checks


def _guardrail(name: str, passed: bool, value: float, threshold: float, detail: str) -> tpb.Guardrail:
    return tpb.Guardrail(name=name, passed=bool(passed), value=float(value), threshold=float(threshold),
                         detail=detail)


class RolloutController:
    """Starts rollouts and moves them along their steps."""

    def __init__(self, registry: Registry, store: RegistryStore, use_cases: DecisionUseCases,
                 training_data: FeedbackTrainingData, pool: ProcessPool, clock: Clock,
                 interval_s: float) -> None:
        self.registry = registry
        self.store = store
        self.use_cases = use_cases
        self.training_data = training_data
        self.pool = pool
        self.clock = clock
        self.interval_s = interval_s
        self._artifacts: dict[tuple[str, int], bytes] = {}
        self._lock = asyncio.Lock()

    # -- starting and reading ---------------------------------------------------------

    async def start(self, model: tpb.Model, production: tpb.ModelRef, blueprint: bp.Blueprint,
                    why: str, request_id: str) -> tpb.Rollout:
        """Put ``model`` in shadow next to ``production`` and record the rollout."""
        RolloutLimits.of(blueprint.rollout)  # bad settings fail before anything changes
        async with self._lock:
            previous = await self.store.get_rollout(model.use_case)
            if previous is not None and previous.step in ACTIVE:
                previous.step = tpb.ROLLOUT_STEP_SUPERSEDED
                previous.message = f"superseded by the rollout of model v{model.version}"
                await self._save(previous)
            if blueprint.kind == bp.DECISION_KIND_RANKING:  # rankings are not scored by shadows
                share = RolloutLimits.of(blueprint.rollout).canary_share
                reason = (f"rollout of model v{model.version}: canary at {share:.0%} next to production "
                          f"v{production.version} (rankings have no shadow step); {why}")
                await self.registry.set_deployment(tpb.SetDeploymentRequest(
                    request_id=f"{request_id}:canary", use_case=model.use_case,
                    production_version=production.version, canary_version=model.version, canary_share=share,
                    reason=reason,
                ), action="rollout_canary")
                step = tpb.ROLLOUT_STEP_CANARY
            else:
                reason = f"rollout of model v{model.version}: shadow next to production v{production.version}; {why}"
                await self.registry.set_deployment(tpb.SetDeploymentRequest(
                    request_id=f"{request_id}:shadow", use_case=model.use_case,
                    production_version=production.version, shadow_versions=[model.version], reason=reason,
                ), action="rollout_shadow")
                step = tpb.ROLLOUT_STEP_SHADOW
            rollout = tpb.Rollout(use_case=model.use_case, model_version=model.version,
                                  production_version=production.version, step=step, message=reason)
            rollout.step_start_time.FromMilliseconds(self.clock.now_ms())
            await self._save(rollout)
        return rollout

    async def get(self, use_case: str) -> tpb.Rollout:
        """The latest rollout of a use case; NOT_FOUND when it never had one."""
        if not use_case:
            raise InvalidArgument("use_case", "required")
        found = await self.store.get_rollout(use_case)
        if found is None:
            raise NotFound(f"use case {quote(use_case)} has no rollout")
        return found

    async def _save(self, rollout: tpb.Rollout) -> None:
        rollout.update_time.FromMilliseconds(self.clock.now_ms())
        await self.store.save_rollout(rollout)

    # -- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        """Look at every active rollout every ``interval_s`` seconds, until cancelled."""
        await every(self.interval_s, self.tick, "rollout check", log)

    async def tick(self) -> None:
        """One look at every active rollout."""
        for rollout in await self.store.list_rollouts():
            if rollout.step not in ACTIVE:
                continue
            try:
                await self.advance(rollout.use_case)
            except LoopwiseError as exc:  # e.g. feedback unreachable: try again next time
                log.warning("rollout of %s v%d: %s", rollout.use_case, rollout.model_version, exc.message)

    async def advance(self, use_case: str) -> tpb.Rollout:
        """Evaluate one rollout's current step and act on it."""
        async with self._lock:
            rollout = await self.store.get_rollout(use_case)
            if rollout is None or rollout.step not in ACTIVE:
                return rollout
            deployment = await self.registry.current_deployment(use_case)
            if not self._still_in_force(rollout, deployment):
                rollout.step = tpb.ROLLOUT_STEP_SUPERSEDED
                rollout.message = ("a manual deployment change replaced the rollout "
                                   f"(revision {deployment.revision if deployment else 0})")
                await self._save(rollout)
                return rollout
            blueprint, _ = await self.use_cases.latest(use_case)
            limits = RolloutLimits.of(blueprint.rollout)
            if rollout.step == tpb.ROLLOUT_STEP_SHADOW:
                await self._shadow(rollout, blueprint, limits)
            else:
                await self._canary(rollout, blueprint, limits)
            await self._save(rollout)
            return rollout

    @staticmethod
    def _still_in_force(rollout: tpb.Rollout, deployment: tpb.Deployment | None) -> bool:
        if deployment is None or deployment.production.version != rollout.production_version:
            return False
        if rollout.step == tpb.ROLLOUT_STEP_SHADOW:
            return rollout.model_version in [s.version for s in deployment.shadows]
        return deployment.canary.version == rollout.model_version and deployment.canary_share > 0

    async def _rows(self, rollout: tpb.Rollout, blueprint: bp.Blueprint, open_windows: bool):
        if blueprint.kind == bp.DECISION_KIND_RANKING:
            return await self._ranking_rows(rollout, open_windows)
        version = await self.use_cases.latest_version(rollout.use_case)
        return await collect_rows(
            self.training_data.read(rollout.use_case, rollout.step_start_time.ToMilliseconds(), None,
                                    include_open_windows=open_windows, include_fallback=not open_windows),
            blueprint, version, lambda v: self.use_cases.version(rollout.use_case, v))

    async def _ranking_rows(self, rollout: tpb.Rollout, open_windows: bool) -> Rows:
        """One row per ranking decided since the step began: its reward is the sum of
        its shown items' rewards (clicks per ranking), with its model version and
        serving latency (no features, no metrics: guardrail metrics are not checked)."""
        rewards: dict[str, float] = {}
        versions: dict[str, int] = {}
        latencies: dict[str, float] = {}
        times: dict[str, int] = {}
        async for batch in self.training_data.read(rollout.use_case, rollout.step_start_time.ToMilliseconds(), None,
                                                   include_open_windows=open_windows,
                                                   include_fallback=not open_windows):
            if batch.rows == 0:
                continue
            item_rewards = unpack_vector(batch.rewards, F32)
            model_versions = unpack_vector(batch.model_versions, I64) if batch.model_versions \
                else np.zeros(batch.rows, np.int64)
            latency = unpack_vector(batch.serving_latencies_ms, F32) if batch.serving_latencies_ms \
                else np.zeros(batch.rows)
            decided = unpack_vector(batch.decision_times_ms, I64)
            for i, decision_id in enumerate(batch.decision_ids):
                reward = float(item_rewards[i])
                rewards[decision_id] = rewards.get(decision_id, 0.0) + (reward if math.isfinite(reward) else 0.0)
                versions[decision_id] = int(model_versions[i])
                latencies[decision_id] = float(latency[i])
                times[decision_id] = int(decided[i])
        ids = list(rewards)
        n = len(ids)
        return Rows(np.zeros((n, 0), np.float32), np.array([times[i] for i in ids], dtype=np.int64),
                    np.full(n, -1, np.int64), np.ones(n), np.array([rewards[i] for i in ids]), [""] * n, n,
                    model_versions=np.array([versions[i] for i in ids], dtype=np.int64),
                    latencies_ms=np.array([latencies[i] for i in ids]), metrics=np.zeros((n, 0)))

    async def _artifact(self, use_case: str, version: int) -> tuple[tpb.Model, bytes]:
        model, chunks = await self.registry.download(use_case, version)
        key = (use_case, version)
        if key not in self._artifacts:
            self._artifacts[key] = b"".join([piece async for _, piece in chunks])
        return model, self._artifacts[key]

    async def _model_inputs(self, rollout: tpb.Rollout, version: int, blueprint: bp.Blueprint,
                            x: np.ndarray) -> tuple[bytes, str, np.ndarray]:
        model, onnx = await self._artifact(rollout.use_case, version)
        own = await self.use_cases.version(rollout.use_case, model.blueprint_version)
        return onnx, comparable_output(model.score_output), align_to(x, blueprint, own)

    async def _shadow(self, rollout: tpb.Rollout, blueprint: bp.Blueprint, limits: RolloutLimits) -> None:
        rows = await self._rows(rollout, blueprint, open_windows=True)
        shadow_n = int(np.sum(rows.model_versions == rollout.model_version))
        live = rows.features[rows.model_versions == rollout.production_version]
        rollout.decisions = shadow_n
        if shadow_n < limits.shadow_min_decisions or not live.shape[0]:
            rollout.message = (f"shadow: {shadow_n} of {limits.shadow_min_decisions} shadow decisions logged, "
                               f"{live.shape[0]} production decisions")
            return
        kind = kind_of(blueprint)
        agreement, shift = await self.pool.run(
            compare_models, kind, blueprint.policy.threshold or 0.5, max(len(blueprint.actions), 1),
            await self._model_inputs(rollout, rollout.production_version, blueprint, live),
            await self._model_inputs(rollout, rollout.model_version, blueprint, live))
        guardrails = [
            _guardrail("shadow_decisions", True, shadow_n, limits.shadow_min_decisions,
                       f"{shadow_n} shadow decisions logged"),
            _guardrail("shadow_agreement", limits.shadow_min_agreement < 0 or agreement >= limits.shadow_min_agreement,
                       agreement, limits.shadow_min_agreement,
                       f"same decision as production on {agreement:.1%} of {live.shape[0]} live decisions"),
            _guardrail("shadow_score_shift",
                       limits.shadow_max_score_shift < 0 or shift <= limits.shadow_max_score_shift,
                       shift, limits.shadow_max_score_shift, f"KS distance of scores {shift:.3f}"),
        ]
        del rollout.guardrails[:]
        rollout.guardrails.extend(guardrails)
        failed = [g for g in guardrails if not g.passed]
        if failed:
            await self._roll_back(rollout, "shadow guardrail failed: " + "; ".join(g.detail for g in failed))
            return
        reason = (f"rollout of model v{rollout.model_version}: shadow guardrails held "
                  f"({'; '.join(g.detail for g in guardrails)}); canary at {limits.canary_share:.0%}")
        await self.registry.set_deployment(tpb.SetDeploymentRequest(
            request_id=f"rollout:{rollout.use_case}:{rollout.model_version}:canary", use_case=rollout.use_case,
            production_version=rollout.production_version, canary_version=rollout.model_version,
            canary_share=limits.canary_share, reason=reason,
        ), action="rollout_canary")
        rollout.step = tpb.ROLLOUT_STEP_CANARY
        rollout.step_start_time.FromMilliseconds(self.clock.now_ms())
        rollout.decisions = 0
        rollout.message = reason

    async def _canary(self, rollout: tpb.Rollout, blueprint: bp.Blueprint, limits: RolloutLimits) -> None:
        rows = await self._rows(rollout, blueprint, open_windows=False)
        canary = rows.rewards[rows.model_versions == rollout.model_version]
        production = rows.rewards[rows.model_versions == rollout.production_version]
        fallbacks = int(np.sum(rows.model_versions == 0))
        total = rows.rewards.size
        rollout.decisions = int(canary.size)
        rollout.joined_outcomes = int(canary.size)
        if canary.size:
            rollout.canary_reward = float(np.mean(canary))
        if production.size:
            rollout.production_reward = float(np.mean(production))
        fallback_rate = fallbacks / total if total else 0.0
        fallback = _guardrail(
            "canary_fallback_rate",
            limits.canary_max_fallback_rate < 0 or total < FALLBACK_MIN_DECISIONS
            or fallback_rate <= limits.canary_max_fallback_rate,
            fallback_rate, limits.canary_max_fallback_rate,
            f"{fallbacks} of {total} decisions fell back ({fallback_rate:.1%})")
        latency = latency_guardrail(rows.latencies_ms, rows.model_versions, rollout.model_version,
                                    rollout.production_version, limits.canary_max_latency_ratio)
        del rollout.guardrails[:]
        rollout.guardrails.extend([fallback, latency])
        failed = [g for g in (fallback, latency) if not g.passed]
        if failed:
            await self._roll_back(rollout, "canary guardrail failed: " + "; ".join(g.detail for g in failed))
            return
        if canary.size < limits.canary_min_outcomes or production.size < 2:
            rollout.message = (f"canary: {canary.size} of {limits.canary_min_outcomes} joined outcomes; "
                               f"production {production.size}")
            return
        test = reward_test(canary, production, limits.canary_alpha)
        rollout.reward_diff_lower, rollout.reward_diff_upper = test.lower, test.upper
        detail = (f"canary reward {rollout.canary_reward:.4f} ({canary.size} joined) vs production "
                  f"{rollout.production_reward:.4f} ({production.size} joined): difference {test.diff:+.4f}, "
                  f"{1 - 2 * limits.canary_alpha:.0%} CI [{test.lower:+.4f}, {test.upper:+.4f}]")
        rollout.guardrails.append(_guardrail("canary_reward", not test.worse, test.upper, 0.0, detail))
        if test.worse:
            await self._roll_back(rollout, f"canary guardrail failed: {detail} (worse at alpha "
                                           f"{limits.canary_alpha:g})")
            return
        checks = metric_guardrails(blueprint, rows.metrics, rows.model_versions == rollout.model_version,
                                   rows.model_versions == rollout.production_version, limits.canary_alpha)
        rollout.guardrails.extend(checks)
        breached = [g for g in checks if not g.passed]
        if breached:
            await self._roll_back(rollout, "canary guardrail failed: " + "; ".join(g.detail for g in breached)
                                  + f" (worse at alpha {limits.canary_alpha:g})")
            return
        reason = f"rollout of model v{rollout.model_version}: promoted to production; {detail}"
        await self.registry.set_deployment(tpb.SetDeploymentRequest(
            request_id=f"rollout:{rollout.use_case}:{rollout.model_version}:promote", use_case=rollout.use_case,
            production_version=rollout.model_version, reason=reason,
        ), action="rollout_promote")
        rollout.step = tpb.ROLLOUT_STEP_PROMOTED
        rollout.message = reason

    async def _roll_back(self, rollout: tpb.Rollout, why: str) -> None:
        reason = f"rollout of model v{rollout.model_version}: rolled back to production v" \
                 f"{rollout.production_version}; {why}"
        await self.registry.set_deployment(tpb.SetDeploymentRequest(
            request_id=f"rollout:{rollout.use_case}:{rollout.model_version}:rollback", use_case=rollout.use_case,
            production_version=rollout.production_version, reason=reason,
        ), action="rollout_rollback")
        rollout.step = tpb.ROLLOUT_STEP_ROLLED_BACK
        rollout.message = reason
