"""Rankings with known propensities: sampling, probabilities and off-policy values.

A ranking policy fills the positions 1..k one after the other; at each position it
draws one of the candidates not placed yet (docs/ranking.md):

- softmax (Plackett–Luce): ``P(i | above) = exp(s_i / T) / Σ_{j remaining} exp(s_j / T)``;
- greedy: the best remaining candidate by score, probability 1;
- an ``epsilon`` (epsilon-greedy, arms, the exploration floor) mixes a uniform draw
  over the remaining candidates into every position:
  ``(1 − ε)·P_policy(i | above) + ε / |remaining|``.

Every position's conditional probability is known exactly, so the probability of a
prefix (the top j items in that order) is their product. A click at position j
under a position-based (or cascade) model depends only on the items down to j, so

    V̂(π) = 1/n Σ_slates Σ_j  π(prefix_j) / π_0(prefix_j) · click_j

is an unbiased estimate of the expected clicks of a target policy ``π`` from logs of
``π_0`` (the prefix-IPS estimator, "reward interaction IPS" for PBM and cascade
models). :func:`prefix_ips` computes it with a normal confidence interval over slates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp

_NEG = -np.inf


@dataclass(frozen=True)
class RankingPolicy:
    """How scores become a ranking: Plackett–Luce at ``temperature`` (``softmax``
    True) or greedy, with ``epsilon`` uniform mixing at every position."""

    softmax: bool
    temperature: float = 1.0
    epsilon: float = 0.0

    def position_probabilities(self, scores: np.ndarray, remaining: np.ndarray) -> np.ndarray:
        """P(candidate | items above) for one position: ``scores`` [C] finite,
        ``remaining`` [C] bool (at least one True); 0 for placed candidates."""
        n_left = int(remaining.sum())
        if self.softmax:
            z = np.where(remaining, scores / self.temperature, _NEG)
            z = np.exp(z - z[remaining].max())
            p = z / z.sum()
        else:
            p = np.zeros(scores.shape[0])
            masked = np.where(remaining, scores, _NEG)
            p[int(np.argmax(masked))] = 1.0
        if self.epsilon > 0:
            p = (1.0 - self.epsilon) * p + np.where(remaining, self.epsilon / n_left, 0.0)
        return p


def ranking_rule(policy: bp.Policy, eps: float, n_candidates: int, disable: bool) -> RankingPolicy:
    """The ranking rule of a blueprint ``policy`` for one ranking of ``n_candidates``:
    Plackett-Luce at the temperature for softmax, else greedy; ``eps`` (the policy's or
    the arm's) raised by the exploration floor as for actions; ``disable``: greedy."""
    from loopwise.policy import Policy

    rule = Policy(policy.type, policy.temperature or 1.0, policy.exploration_floor)
    epsilon = rule.effective_epsilon_of(eps, n_candidates, disable)
    softmax = policy.type == bp.POLICY_TYPE_SOFTMAX and not disable
    return RankingPolicy(softmax=softmax, temperature=policy.temperature or 1.0, epsilon=epsilon)


@dataclass
class RankingDraw:
    """One sampled ranking: ``order`` every candidate index best first (the first
    ``k`` drawn by the policy, the rest by score), ``propensities`` [k] the probability
    of the item at each drawn position given the items above, ``greedy`` [C] the
    ranking by score, ``top_probabilities`` [C] every candidate's probability of the
    first position (a distribution over the candidates)."""

    order: np.ndarray
    propensities: np.ndarray
    greedy: np.ndarray
    top_probabilities: np.ndarray

    @property
    def shown(self) -> int:
        """Positions drawn by the policy (k)."""
        return int(self.propensities.shape[0])

    @property
    def prefix_probability(self) -> float:
        """The probability of the whole shown prefix (the product of the propensities)."""
        return float(np.prod(self.propensities))

    @property
    def explored(self) -> bool:
        """The shown prefix differs from the greedy one."""
        return bool((self.order[: self.shown] != self.greedy[: self.shown]).any())


def greedy_order(scores: np.ndarray) -> np.ndarray:
    """Candidate indices by score, best first (ties: request order)."""
    return np.argsort(-scores, kind="stable")


def sample_ranking(policy: RankingPolicy, scores: np.ndarray, k: int, rng: np.random.Generator) -> RankingDraw:
    """Draw the top ``k`` positions of a ranking of ``scores`` [C] (finite) from the
    policy, one uniform per position; the remaining candidates follow by score."""
    c = scores.shape[0]
    k = c if k <= 0 else min(k, c)
    greedy = greedy_order(scores)
    remaining = np.ones(c, dtype=bool)
    order = np.empty(c, dtype=np.int64)
    propensities = np.empty(k)
    top = np.zeros(c)
    for j in range(k):
        p = policy.position_probabilities(scores, remaining)
        if j == 0:
            top = p
        cdf = np.cumsum(p)
        i = int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), c - 1))
        while not remaining[i]:  # rounding at the top of the cdf: the last remaining
            i -= 1
        order[j] = i
        propensities[j] = p[i]
        remaining[i] = False
    order[k:] = [i for i in greedy if remaining[i]]
    return RankingDraw(order, propensities, greedy, top)


def ranking_propensities(policy: RankingPolicy, scores: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """The policy's probability of each item of ``shown`` (candidate indices, top
    first) at its position given the items above it, for candidates scored ``scores``."""
    remaining = np.ones(scores.shape[0], dtype=bool)
    out = np.empty(shown.shape[0])
    for j, i in enumerate(shown):
        out[j] = policy.position_probabilities(scores, remaining)[int(i)]
        remaining[int(i)] = False
    return out


@dataclass(frozen=True)
class Estimate:
    """An off-policy estimate with its standard error and 95% normal interval."""

    value: float
    stderr: float
    low: float
    high: float
    n: int

    def covers(self, truth: float) -> bool:
        """The interval contains ``truth``."""
        return self.low <= truth <= self.high


def prefix_ips(clicks: np.ndarray, logged: np.ndarray, target: np.ndarray, max_weight: float = 0.0) -> Estimate:
    """Expected clicks per ranking of a target policy from logged rankings.

    ``clicks`` [n, k] (0/1 or any per-position reward; NaN: not shown), ``logged`` and
    ``target`` [n, k] the per-position conditional probabilities of the logged items
    under the logging and target policies. The weight of position j is the ratio of
    the prefix probabilities (cumulative products); ``max_weight`` > 0 clips it
    (biased, lower variance). Positions not shown count as no click."""
    clicks = np.nan_to_num(np.asarray(clicks, dtype=np.float64), nan=0.0)
    n = clicks.shape[0]
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    logged_prefix = np.cumprod(np.asarray(logged, dtype=np.float64), axis=1)
    target_prefix = np.cumprod(np.asarray(target, dtype=np.float64), axis=1)
    weights = np.where(logged_prefix > 0, target_prefix / np.where(logged_prefix > 0, logged_prefix, 1.0), 0.0)
    if max_weight > 0:
        weights = np.minimum(weights, max_weight)
    per_slate = (weights * clicks).sum(axis=1)
    value = float(per_slate.mean())
    stderr = float(per_slate.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    return Estimate(value, stderr, value - 1.96 * stderr, value + 1.96 * stderr, n)


def expected_clicks(examination: np.ndarray, relevance: np.ndarray, order: np.ndarray) -> float:
    """Expected clicks of showing ``order`` (candidate indices, top first) under a
    position-based model: Σ_j examination[j] × relevance[order[j]] over the shown positions."""
    k = min(examination.shape[0], order.shape[0])
    return float((examination[:k] * relevance[order[:k]]).sum())


def dcg_at_k(gains: np.ndarray, k: int) -> float:
    """Discounted cumulative gain of gains in shown order, cut at ``k``."""
    g = np.asarray(gains, dtype=np.float64)[:k]
    return float((g / np.log2(np.arange(2, g.shape[0] + 2))).sum())


@dataclass
class LoggedRanking:
    """One logged ranking with all its candidates: ``features`` [C, F] in candidate
    order, ``shown`` [k] the candidate indices shown (top first), ``logged`` [k] the
    logging policy's probability of each shown item given the items above, ``rewards``
    [k] each shown item's reward (clicks), ``time_ms`` when it was decided."""

    decision_id: str
    features: np.ndarray
    shown: np.ndarray
    logged: np.ndarray
    rewards: np.ndarray
    time_ms: int = 0

    @property
    def logged_clicks(self) -> float:
        """The rewards of the shown items summed (what the logging policy got)."""
        return float(np.nansum(self.rewards))


def group_rankings(decision_ids: list[str], candidate_indices: np.ndarray, positions: np.ndarray,
                   propensities: np.ndarray, rewards: np.ndarray, features: np.ndarray,
                   times_ms: np.ndarray | None = None) -> list[LoggedRanking]:
    """Per-item rows (ReadTrainingData of a ranking use case with its unshown items:
    position 0) grouped into rankings in first-seen order; rankings with no shown item
    are left out."""
    grouped: dict[str, list[int]] = {}
    for row, decision_id in enumerate(decision_ids):
        grouped.setdefault(decision_id, []).append(row)
    out = []
    for decision_id, rows in grouped.items():
        by_candidate = sorted(rows, key=lambda r: int(candidate_indices[r]))
        shown_rows = sorted((r for r in by_candidate if positions[r] > 0), key=lambda r: int(positions[r]))
        if not shown_rows:
            continue
        slot = {r: j for j, r in enumerate(by_candidate)}
        out.append(LoggedRanking(
            decision_id, np.asarray(features[by_candidate]), np.array([slot[r] for r in shown_rows], dtype=np.int64),
            np.array([float(propensities[r]) for r in shown_rows]), np.array([float(rewards[r]) for r in shown_rows]),
            int(times_ms[rows[0]]) if times_ms is not None else 0))
    return out


def ranking_policy_value(rankings: list[LoggedRanking], scores: list[np.ndarray],
                         policy: RankingPolicy | list[RankingPolicy], max_weight: float = 0.0,
                         ) -> tuple[Estimate, np.ndarray]:
    """The prefix-IPS expected clicks per ranking of ``policy`` (one for all, or one per
    ranking) ranking each logged ranking's candidates by ``scores`` (one array [C] per
    ranking), from the logged rankings; also the prefix weights [n, k] (unclipped;
    positions past a ranking's shown ones repeat its last weight)."""
    rules = policy if isinstance(policy, list) else [policy] * len(rankings)
    k = max((r.shown.shape[0] for r in rankings), default=0)
    logged = np.ones((len(rankings), k))
    target = np.ones((len(rankings), k))
    clicks = np.full((len(rankings), k), np.nan)
    for n, (ranking, own, rule) in enumerate(zip(rankings, scores, rules, strict=True)):
        j = ranking.shown.shape[0]
        target[n, :j] = ranking_propensities(rule, np.asarray(own, dtype=np.float64), ranking.shown)
        logged[n, :j] = ranking.logged
        clicks[n, :j] = ranking.rewards
    logged_prefix = np.cumprod(logged, axis=1)
    weights = np.cumprod(target, axis=1) / np.where(logged_prefix > 0, logged_prefix, 1.0)
    return prefix_ips(clicks, logged, target, max_weight), weights
