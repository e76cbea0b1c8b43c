"""Ranking decisions: a whole ordering drawn with known per-position probabilities.

The blueprint's policy becomes a :class:`~loopwise.ranking.RankingPolicy`: softmax
is Plackett–Luce at the policy's temperature; greedy, epsilon-greedy and Thompson
take the best remaining candidate (by the ensemble mean); the arm's epsilon (after
the exploration floor, ``C × floor`` for C candidates) mixes a uniform draw over the
remaining candidates into every position; ``disable_exploration`` is greedy. The top
``k`` positions are drawn (the shown items, logged with their propensities) and the
other candidates follow by score. Without a usable model the request order is kept
(fallback), or, with ``policy.explore_without_model``, the shown positions are drawn
uniformly (docs/ranking.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.errors import InvalidArgument
from loopwise.ranking import RankingDraw, RankingPolicy, ranking_rule, sample_ranking
from loopwise.services.decision.encoding import UseCaseVersion
from loopwise.services.decision.policy import ROLE_DEFAULT, Scorer, _score


@dataclass
class Ranking:
    """One ranking decision: ``order`` every candidate index best first, the first
    ``shown`` drawn by the policy with ``propensities``; ``top_probabilities`` every
    candidate's probability of the first position; ``scores`` per candidate in
    request order (None without a model)."""

    order: np.ndarray
    propensities: np.ndarray
    top_probabilities: np.ndarray
    scores: np.ndarray | None
    explored: bool
    fallback: bool
    model_version: int
    arm: str
    role: str

    @property
    def shown(self) -> int:
        """How many top positions were drawn (k)."""
        return int(self.propensities.shape[0])

    @property
    def probability(self) -> float:
        """Probability of the shown prefix."""
        return float(np.prod(self.propensities))

    def positions(self) -> np.ndarray:
        """Per candidate in request order: its shown position from 1, 0 when not shown."""
        out = np.zeros(self.order.shape[0], dtype=np.int32)
        out[self.order[: self.shown]] = np.arange(1, self.shown + 1, dtype=np.int32)
        return out

    def candidate_propensities(self) -> np.ndarray:
        """Per candidate in request order: its position's propensity, 0 when not shown."""
        out = np.zeros(self.order.shape[0])
        out[self.order[: self.shown]] = self.propensities
        return out


def shown_count(uc: UseCaseVersion, top_k: int, n_candidates: int) -> int:
    """k: the request's ``top_k``, else the blueprint's ``policy.ranking_top_k``, else
    every candidate; never more than the candidates. INVALID_ARGUMENT ``top_k`` < 0."""
    if top_k < 0:
        raise InvalidArgument("top_k", "must be >= 0")
    k = top_k or max(uc.blueprint.policy.ranking_top_k, 0) or n_candidates
    return min(k, n_candidates)


def ranking_policy(policy: bp.Policy, eps: float, n_candidates: int, disable: bool) -> RankingPolicy:
    """The ranking rule of a blueprint policy for one request (see the module docstring)."""
    return ranking_rule(policy, eps, n_candidates, disable)


def rank_candidates(uc: UseCaseVersion, rows: np.ndarray, k: int, arm: str, eps: float,
                    scorer: Scorer | None, rng: np.random.Generator, disable_exploration: bool = False,
                    force_default: bool = False, role: str = "production") -> Ranking:
    """A ranking of the C candidate ``rows`` ([C, F] float32) whose top ``k`` positions
    are drawn by the blueprint's policy (see the module docstring)."""
    c = rows.shape[0]
    scores = _score(uc, scorer, rows, force_default)
    values = None if scores is None else scores.reshape(c, -1).mean(axis=1)
    if values is None or not np.isfinite(values).all():
        if (scores is None and scorer is None and not force_default and not disable_exploration
                and uc.blueprint.policy.explore_without_model):
            draw = sample_ranking(RankingPolicy(softmax=False, epsilon=1.0), np.zeros(c), k, rng)
            return Ranking(draw.order, draw.propensities, draw.top_probabilities, None, True, False, 0, arm,
                           ROLE_DEFAULT)
        top = np.zeros(c)
        top[0] = 1.0
        return Ranking(np.arange(c), np.ones(k), top, None, False, True, 0, arm, ROLE_DEFAULT)
    rule = ranking_policy(uc.blueprint.policy, eps, c, disable_exploration)
    draw: RankingDraw = sample_ranking(rule, values, k, rng)
    return Ranking(draw.order, draw.propensities, draw.top_probabilities, values, draw.explored, False,
                   int(scorer.version), arm, role)  # type: ignore[union-attr]
