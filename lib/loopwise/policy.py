"""How a blueprint policy turns model scores into action probabilities.

Shared by the decision service (which samples the served action from these
probabilities and logs them) and the evaluator (which computes a candidate policy's
probabilities on logged rows for off-policy evaluation), so both agree exactly:

- greedy: probability 1 on the best action (by the ensemble mean when the model is an
  ensemble);
- epsilon-greedy: ``1 − ε + ε/A`` on the best action, ``ε/A`` on every other;
- softmax: ``exp(s_a / T) / Σ exp(s_b / T)``;
- Thompson: the share of the K bootstrap members whose best action is ``a``
  (sampling from these shares is picking one member uniformly and taking its best).

Uniform exploration ``ε`` mixes into any policy, ``p = (1 − ε)·p_policy + ε/A``; the
exploration floor raises ε to ``A × floor`` (always for softmax and Thompson, when
ε > 0 otherwise). ``policy.action_costs`` are subtracted from action values first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp

EXPLORING_POLICIES = (bp.POLICY_TYPE_SOFTMAX, bp.POLICY_TYPE_THOMPSON)
# Bootstrap members of a Thompson model (policy.thompson_members; 0 means the default).
DEFAULT_THOMPSON_MEMBERS = 8
MIN_THOMPSON_MEMBERS = 2
MAX_THOMPSON_MEMBERS = 64


def thompson_members(policy: bp.Policy) -> int:
    """The number of bootstrap members K the trainer fits for a Thompson policy
    (``policy.thompson_members``, the default when 0)."""
    return policy.thompson_members or DEFAULT_THOMPSON_MEMBERS


def base_epsilon(policy: bp.Policy) -> float:
    """The blueprint's uniform exploration rate before arms and the floor: ``epsilon``
    for an epsilon-greedy policy, 0 for every other type."""
    return policy.epsilon if policy.type == bp.POLICY_TYPE_EPSILON_GREEDY else 0.0


def action_costs(policy: bp.Policy, actions: Sequence[str]) -> np.ndarray:
    """Per-action costs [A] from ``policy.action_costs`` (0 for actions without one),
    subtracted from action values before the policy picks; with an effect (CATE) model
    this is the uplift policy "treat when the predicted effect exceeds the cost"."""
    costs = policy.action_costs
    return np.array([costs.get(a, 0.0) for a in actions], dtype=np.float64)


@dataclass(frozen=True)
class Policy:
    """Probabilities of every action from scores, then a sample from them."""

    type: int
    temperature: float
    floor: float

    @classmethod
    def of_blueprint(cls, policy: bp.Policy) -> Policy:
        """The rule of a blueprint's ``policy`` message."""
        return cls(policy.type, policy.temperature or 1.0, policy.exploration_floor)

    def effective_epsilon(self, eps: np.ndarray, n_actions: int, disable: bool) -> np.ndarray:
        """Per-row uniform mixing rate after the exploration floor."""
        if disable:
            return np.zeros_like(eps)
        if self.floor > 0:
            raise_to = n_actions * self.floor
            if self.type in EXPLORING_POLICIES:
                eps = np.maximum(eps, raise_to)
            else:
                eps = np.where(eps > 0, np.maximum(eps, raise_to), eps)
        return np.minimum(eps, 1.0)

    def effective_epsilon_of(self, eps: float, n_actions: int, disable: bool) -> float:
        """:meth:`effective_epsilon` of one row."""
        if disable:
            return 0.0
        if self.floor > 0 and (self.type in EXPLORING_POLICIES or eps > 0):
            eps = max(eps, n_actions * self.floor)
        return min(eps, 1.0)

    def threshold_probabilities(self, greedy: np.ndarray, eps: np.ndarray, n_actions: int,
                                disable: bool) -> np.ndarray:
        """Probabilities [n, A] of a binary or regression decision whose greedy action
        index per row is ``greedy`` [n]: ``1 − ε + ε/A`` on it, ``ε/A`` elsewhere."""
        e = self.effective_epsilon(eps, n_actions, disable)
        probabilities = np.repeat((e / n_actions)[:, None], n_actions, axis=1)
        probabilities[np.arange(greedy.shape[0]), greedy] += 1.0 - e
        return probabilities

    def probabilities(self, values: np.ndarray, eps: np.ndarray, disable: bool) -> tuple[np.ndarray, np.ndarray]:
        """``values`` [n, A, K] (finite) → (probabilities [n, A], greedy index [n])."""
        n, n_actions, _ = values.shape
        mean = values.mean(axis=2)
        greedy = np.argmax(mean, axis=1).astype(np.int32)
        rows = np.arange(n)
        if disable or self.type not in EXPLORING_POLICIES:
            base = np.zeros((n, n_actions))
            base[rows, greedy] = 1.0
        elif self.type == bp.POLICY_TYPE_SOFTMAX:
            z = mean / self.temperature
            z = np.exp(z - z.max(axis=1, keepdims=True))
            base = z / z.sum(axis=1, keepdims=True)
        else:
            base = member_shares(values)
        eps = self.effective_epsilon(eps, n_actions, disable)
        if eps.any():
            base = (1.0 - eps)[:, None] * base + (eps / n_actions)[:, None]
        return base, greedy

    @staticmethod
    def sample(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One action per row drawn from ``probabilities`` (inverse CDF, one uniform each)."""
        u = rng.random(probabilities.shape[0])
        cdf = np.cumsum(probabilities, axis=1)
        chosen = (cdf <= u[:, None] * cdf[:, -1:]).sum(axis=1)
        return np.minimum(chosen, probabilities.shape[1] - 1).astype(np.int32)


def member_shares(values: np.ndarray) -> np.ndarray:
    """Thompson probabilities [n, A] from member values [n, A, K]: the share of the K
    members whose best action is ``a`` (ties go to the lowest action index)."""
    n, n_actions, _ = values.shape
    best = np.argmax(values, axis=1)  # [n, K]
    shares = np.zeros((n, n_actions))
    np.add.at(shares, (np.repeat(np.arange(n), best.shape[1]), best.ravel()), 1.0)
    return shares / best.shape[1]
