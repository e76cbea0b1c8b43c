"""From model scores to actions and propensities, vectorised over rows.

One :class:`Policy` object computes the probability of every action for every row and
then samples the action from exactly those probabilities, so what is logged is what
chose (docs/internals.md, "Policies and propensities"; the arithmetic is
:mod:`loopwise.policy`, shared with the evaluator's off-policy evaluation):

- greedy: probability 1 on the best action (by the ensemble mean when the model is an
  ensemble);
- epsilon-greedy: ``1 − ε + ε/A`` on the best action, ``ε/A`` on every other;
- softmax: ``exp(s_a / T) / Σ exp(s_b / T)``;
- Thompson: the share of the K bootstrap members whose best action is ``a``
  (sampling from these shares is picking one member uniformly and taking its best).

An arm's ``epsilon`` mixes uniform exploration into any policy,
``p = (1 − ε)·p_policy + ε/A``; the exploration floor raises ε to ``A × floor``
(always for softmax and Thompson, when ε > 0 otherwise). ``disable_exploration``
gives the greedy policy. ``policy.action_costs`` are subtracted from action values
first (with an effect model: treat when the predicted effect exceeds the cost). ``explored`` marks rows whose action differs from the greedy
one. Without a model (or when scoring fails) the default decision is returned with
probability 1 (``fallback``), unless ``policy.explore_without_model`` asks for uniform
exploration.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.errors import InvalidArgument, quote
from loopwise.policy import Policy, action_costs, base_epsilon
from loopwise.services.decision.encoding import UseCaseVersion

log = logging.getLogger("loopwise.decision.policy")

DEFAULT_ARM = "default"
# Salt of the arm assignment hash, so arms are independent of other hashed splits.
ARM_SALT = b"loopwise-arm-v1"
# Salt of the canary assignment hash (within an arm), independent of the arms'.
CANARY_SALT = b"loopwise-canary-v1"

ROLE_PRODUCTION = "production"
ROLE_CANARY = "canary"
ROLE_SHADOW = "shadow"
ROLE_DEFAULT = "default"

class Scorer(Protocol):
    """A model ready to score rows of a use case (see models.OnnxScorer)."""

    version: int

    def score(self, uc: UseCaseVersion, rows: np.ndarray) -> np.ndarray:
        """Scores by kind: binary [n] P(positive); multiclass [n, A] probabilities;
        regression [n] predictions; action value [n, A, K] values of K members
        (K = 1 unless the model is an ensemble); ranking [n, K] per candidate row."""
        ...


@dataclass
class Choices:
    """Decisions for n rows of one use case version (ranking: one row, the
    candidates as its actions, ``order`` the ranking)."""

    action_index: np.ndarray  # int32 [n]
    score: np.ndarray  # float64 [n]
    action_scores: np.ndarray | None  # float64 [n, A] (multiclass, action value, ranking)
    probabilities: np.ndarray  # float64 [n, A]
    explored: np.ndarray  # bool [n]
    fallback: np.ndarray  # bool [n]
    model_version: np.ndarray  # int64 [n], 0 where no model scored
    arms: list[str]
    roles: list[str]
    order: np.ndarray | None = None  # ranking: candidate indices best first
    # Serving latency per row, ms: request arrival to the row's decision (set by the service).
    latency_ms: np.ndarray | None = None

    @property
    def rows(self) -> int:
        """Number of rows."""
        return int(self.action_index.shape[0])


def _position(salt: bytes, use_case: str, unit_id: str) -> float:
    digest = hashlib.blake2b(unit_id.encode(), key=salt, digest_size=8,
                             person=use_case.encode()[:16]).digest()
    return int.from_bytes(digest, "big") / 2**64


def arm_position(use_case: str, unit_id: str) -> float:
    """A stable position in [0, 1) of a unit within a use case (salted hash)."""
    return _position(ARM_SALT, use_case, unit_id)


def canary_position(use_case: str, unit_id: str) -> float:
    """A stable position in [0, 1) for the canary split (its own salt)."""
    return _position(CANARY_SALT, use_case, unit_id)


def _positions(fn, use_case: str, unit_ids: Sequence[str], n: int, rng: np.random.Generator) -> np.ndarray:
    positions = np.array(
        [fn(use_case, unit_ids[i]) if i < len(unit_ids) and unit_ids[i] else np.nan for i in range(n)]
    )
    unknown = np.isnan(positions)
    if unknown.any():
        positions[unknown] = rng.random(int(unknown.sum()))
    return positions


def assign_arms(uc: UseCaseVersion, unit_ids: Sequence[str], n: int, rng: np.random.Generator,
                forced: str = "") -> tuple[list[str], np.ndarray]:
    """The arm of every row and its epsilon (before the exploration floor).

    A unit's arm is fixed by a salted hash of (use case, unit id) and the arms'
    traffic shares; rows without a unit id get a random arm. ``forced`` names an arm
    for every row (INVALID_ARGUMENT ``arm`` when unknown). An arm's epsilon overrides
    ``policy.epsilon``; a greedy policy explores only in arms with an epsilon.
    """
    base = base_epsilon(uc.blueprint.policy)
    arms = uc.blueprint.arms
    if forced:
        names = [a.name for a in arms] or [DEFAULT_ARM]
        if forced not in names:
            raise InvalidArgument("arm", f"{quote(forced)} is not an arm of the use case: {names}")
    if not arms:
        return [DEFAULT_ARM] * n, np.full(n, base)
    arm_eps = np.array([a.epsilon if a.HasField("epsilon") else base for a in arms])
    if forced:
        i = [a.name for a in arms].index(forced)
        return [forced] * n, np.full(n, arm_eps[i])
    bounds = np.cumsum([a.traffic_share for a in arms])
    bounds[-1] = 1.0
    positions = _positions(arm_position, uc.use_case, unit_ids, n, rng)
    index = np.minimum(np.searchsorted(bounds, positions, side="right"), len(arms) - 1)
    return [arms[i].name for i in index], arm_eps[index]


def canary_mask(use_case: str, unit_ids: Sequence[str], n: int, share: float,
                rng: np.random.Generator) -> np.ndarray:
    """Rows served by the canary: a unit is in the canary when its canary position
    (own salt) is below ``share``; applied within whatever arm the unit is in."""
    if share <= 0:
        return np.zeros(n, dtype=bool)
    if share >= 1:
        return np.ones(n, dtype=bool)
    return _positions(canary_position, use_case, unit_ids, n, rng) < share


def _as_members(scores: np.ndarray, n: int, n_actions: int) -> np.ndarray:
    """Per-action scores as [n, A, K]."""
    if scores.ndim == 2:
        return scores.reshape(n, n_actions, 1)
    return scores.reshape(n, n_actions, -1)


def decide_rows(
    uc: UseCaseVersion,
    rows: np.ndarray,
    arms: list[str],
    eps: np.ndarray,
    scorer: Scorer | None,
    rng: np.random.Generator,
    disable_exploration: bool = False,
    force_default: bool = False,
    role: str = ROLE_PRODUCTION,
) -> Choices:
    """Decisions for ``rows`` ([n, F] float32, this version's encoding) whose arms and
    arm epsilons are known; ``role`` names the deployment slot of ``scorer``."""
    n, n_actions = rows.shape[0], len(uc.actions)
    scores = _score(uc, scorer, rows, force_default)
    if scores is None:
        if uc.blueprint.policy.explore_without_model and not disable_exploration and not force_default:
            return _uniform(uc, n, arms, rng)
        return _fallback(uc, n, arms)

    policy = Policy.of_blueprint(uc.blueprint.policy)
    kind = uc.blueprint.kind
    if n == 1 and kind in (bp.DECISION_KIND_BINARY, bp.DECISION_KIND_REGRESSION):
        return _decide_one(uc, scores, arms, float(eps[0]), scorer, rng, policy, disable_exploration, role)
    action_scores = None
    if kind in (bp.DECISION_KIND_BINARY, bp.DECISION_KIND_REGRESSION):
        scores = scores.reshape(n, -1).mean(axis=1) if scores.ndim > 1 else scores
        ok = np.isfinite(scores)
        greedy = (scores >= (uc.blueprint.policy.threshold or 0.5)).astype(np.int32) \
            if kind == bp.DECISION_KIND_BINARY else np.zeros(n, dtype=np.int32)
        probabilities = policy.threshold_probabilities(greedy, eps, n_actions, disable_exploration)
        score = np.where(ok, scores, 0.0)
    else:
        values = _as_members(scores, n, n_actions) - action_costs(uc.blueprint.policy, uc.actions)[None, :, None]
        ok = np.isfinite(values).all(axis=(1, 2))
        safe = np.where(ok[:, None, None], values, 0.0)
        probabilities, greedy = policy.probabilities(safe, eps, disable_exploration)
        action_scores = values.mean(axis=2)
        score = None
    chosen = Policy.sample(probabilities, rng)
    if score is None:
        score = action_scores[np.arange(n), chosen]
    choices = Choices(
        action_index=chosen, score=score.astype(np.float64), action_scores=action_scores,
        probabilities=probabilities, explored=(chosen != greedy) & (n_actions > 1),
        fallback=np.zeros(n, dtype=bool), model_version=np.full(n, scorer.version, dtype=np.int64),
        arms=arms, roles=[role] * n,
    )
    if not ok.all():
        _apply_fallback(uc, choices, ~ok)
    return choices


def _decide_one(uc: UseCaseVersion, scores: np.ndarray, arms: list[str], eps: float, scorer: Scorer,
                rng: np.random.Generator, policy: Policy, disable_exploration: bool, role: str) -> Choices:
    """:func:`decide_rows` for one row of a binary or regression use case, in Python
    floats (:func:`choose_one`): the same arithmetic and the same single uniform draw
    from ``rng`` as the vectorised path, so the same choice and probabilities."""
    score = float(scores.reshape(-1).mean()) if scores.ndim > 1 else float(scores[0])
    binary = uc.blueprint.kind == bp.DECISION_KIND_BINARY
    chosen, probabilities, explored, ok = choose_one(binary, uc.blueprint.policy.threshold or 0.5, len(uc.actions),
                                                     score, eps, policy, disable_exploration, rng)
    choices = Choices(
        action_index=np.array([chosen], dtype=np.int32), score=np.array([score if ok else 0.0]),
        action_scores=None, probabilities=np.array([probabilities]),
        explored=np.array([explored]), fallback=np.zeros(1, dtype=bool),
        model_version=np.array([scorer.version], dtype=np.int64), arms=arms, roles=[role],
    )
    if not ok:
        _apply_fallback(uc, choices, np.ones(1, dtype=bool))
    return choices


def choose_one(binary: bool, threshold: float, n_actions: int, score: float, eps: float, policy: Policy,
               disable_exploration: bool, rng: np.random.Generator) -> tuple[int, list[float], bool, bool]:
    """The policy on one row's score (binary: P(positive) against ``threshold``;
    regression: one action value), with one uniform draw from ``rng`` whatever the
    score: (chosen action, probabilities, explored, score finite). A non-finite score
    must then become the default decision (the caller's part)."""
    ok = math.isfinite(score)
    greedy = int(score >= threshold) if binary else 0
    e = policy.effective_epsilon_of(eps, n_actions, disable_exploration)
    probabilities = [e / n_actions] * n_actions
    probabilities[greedy] += 1.0 - e
    # Policy.sample for one row: how many cumulative probabilities are <= u × their total.
    if n_actions == 2:  # the same sums, spelled out (p0 <= p0 + p1: the second never counts alone)
        chosen = int(probabilities[0] <= rng.random() * (probabilities[0] + probabilities[1]))
    else:
        cumulative = list(itertools.accumulate(probabilities))
        threshold_u = rng.random() * cumulative[-1]
        chosen = min(sum(c <= threshold_u for c in cumulative), n_actions - 1)
    return chosen, probabilities, chosen != greedy and n_actions > 1, ok


def rank(
    uc: UseCaseVersion,
    rows: np.ndarray,
    arm: str,
    eps: float,
    scorer: Scorer | None,
    rng: np.random.Generator,
    disable_exploration: bool = False,
    force_default: bool = False,
    role: str = ROLE_PRODUCTION,
) -> Choices:
    """A ranking of the C candidate ``rows`` ([C, F]): the policy picks the top item
    among the candidates (probabilities per candidate, in request order); the others
    follow by score. Without a usable model: the request order (fallback)."""
    c = rows.shape[0]
    scores = _score(uc, scorer, rows, force_default)
    values = None if scores is None else scores.reshape(1, c, -1)
    if values is None or not np.isfinite(values).all():
        probabilities = np.zeros((1, c))
        probabilities[0, 0] = 1.0
        return Choices(
            action_index=np.zeros(1, dtype=np.int32),
            score=np.full(1, uc.blueprint.default_decision.score), action_scores=None,
            probabilities=probabilities, explored=np.zeros(1, dtype=bool),
            fallback=np.ones(1, dtype=bool), model_version=np.zeros(1, dtype=np.int64),
            arms=[arm], roles=[ROLE_DEFAULT], order=np.arange(c),
        )
    policy = Policy.of_blueprint(uc.blueprint.policy)
    probabilities, greedy = policy.probabilities(values, np.array([eps]), disable_exploration)
    chosen = Policy.sample(probabilities, rng)
    mean = values.mean(axis=2)[0]
    rest = [i for i in np.argsort(-mean, kind="stable") if i != chosen[0]]
    return Choices(
        action_index=chosen, score=mean[chosen].astype(np.float64), action_scores=mean[None, :],
        probabilities=probabilities, explored=(chosen != greedy) & (c > 1),
        fallback=np.zeros(1, dtype=bool), model_version=np.full(1, scorer.version, dtype=np.int64),
        arms=[arm], roles=[role], order=np.array([chosen[0], *rest]),
    )


def _score(uc: UseCaseVersion, scorer: Scorer | None, rows: np.ndarray, force_default: bool) -> np.ndarray | None:
    if scorer is None or force_default:
        return None
    try:
        return np.asarray(scorer.score(uc, rows), dtype=np.float64)
    except Exception:  # a broken model must not fail a request: default decision
        log.exception("%s: scoring with model v%s failed; default decision", uc.use_case, scorer.version)
        return None


def merge(parts: list[tuple[np.ndarray, Choices]], n: int, n_actions: int, arms: list[str]) -> Choices:
    """Put the choices of row groups (index arrays) back into one row order."""
    if len(parts) == 1 and parts[0][0].shape[0] == n:
        return parts[0][1]
    out = Choices(
        action_index=np.zeros(n, dtype=np.int32), score=np.zeros(n), action_scores=None,
        probabilities=np.zeros((n, n_actions)), explored=np.zeros(n, dtype=bool),
        fallback=np.zeros(n, dtype=bool), model_version=np.zeros(n, dtype=np.int64),
        arms=arms, roles=[ROLE_DEFAULT] * n,
    )
    if any(c.action_scores is not None for _, c in parts):
        out.action_scores = np.full((n, n_actions), np.nan)
    for index, c in parts:
        out.action_index[index] = c.action_index
        out.score[index] = c.score
        out.probabilities[index] = c.probabilities
        out.explored[index] = c.explored
        out.fallback[index] = c.fallback
        out.model_version[index] = c.model_version
        if c.action_scores is not None:
            out.action_scores[index] = c.action_scores
        for j, i in enumerate(index):
            out.roles[i] = c.roles[j]
    return out


def _fallback(uc: UseCaseVersion, n: int, arms: list[str]) -> Choices:
    probabilities = np.zeros((n, len(uc.actions)))
    probabilities[:, uc.default_index] = 1.0
    return Choices(
        action_index=np.full(n, uc.default_index, dtype=np.int32),
        score=np.full(n, uc.blueprint.default_decision.score), action_scores=None,
        probabilities=probabilities, explored=np.zeros(n, dtype=bool),
        fallback=np.ones(n, dtype=bool), model_version=np.zeros(n, dtype=np.int64), arms=arms,
        roles=[ROLE_DEFAULT] * n,
    )


def _apply_fallback(uc: UseCaseVersion, choices: Choices, mask: np.ndarray) -> None:
    """Turn the rows in ``mask`` (non-finite scores) into default decisions."""
    choices.action_index[mask] = uc.default_index
    choices.score[mask] = uc.blueprint.default_decision.score
    choices.probabilities[mask] = 0.0
    choices.probabilities[mask, uc.default_index] = 1.0
    choices.explored[mask] = False
    choices.fallback[mask] = True
    choices.model_version[mask] = 0
    for i in np.flatnonzero(mask):
        choices.roles[i] = ROLE_DEFAULT
    if choices.action_scores is not None:
        choices.action_scores[mask] = np.nan


def _uniform(uc: UseCaseVersion, n: int, arms: list[str], rng: np.random.Generator) -> Choices:
    n_actions = len(uc.actions)
    probabilities = np.full((n, n_actions), 1.0 / n_actions)
    return Choices(
        action_index=Policy.sample(probabilities, rng),
        score=np.full(n, uc.blueprint.default_decision.score), action_scores=None,
        probabilities=probabilities,
        explored=np.ones(n, dtype=bool), fallback=np.zeros(n, dtype=bool),
        model_version=np.zeros(n, dtype=np.int64), arms=arms, roles=[ROLE_DEFAULT] * n,
    )
