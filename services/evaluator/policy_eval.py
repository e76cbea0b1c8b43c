"""Off-policy evaluation from logged action probabilities: IPS, self-normalised IPS and
doubly robust estimates, each with a 95% CI, the effective sample size and warnings.

Plain numpy and scikit-learn; no gRPC. Every estimate is a mean of per-row terms, so
its CI is the normal one, ``mean ± 1.96·sd/√n`` (for SNIPS by the delta method).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Z95 = 1.959963984540054
DEFAULT_MAX_WEIGHT = 20.0
# Below this share of the rows, the effective sample size is too small to trust.
MIN_ESS_SHARE = 0.1
REWARD_MODEL_TREES = 60


@dataclass
class Estimate:
    """A value per decision with its 95% CI."""

    value: float
    lower: float
    upper: float

    @classmethod
    def of_terms(cls, terms: np.ndarray) -> Estimate:
        """The mean of per-row terms and its normal 95% CI."""
        mean = float(np.mean(terms))
        half = Z95 * float(np.std(terms, ddof=1)) / np.sqrt(terms.size) if terms.size > 1 else 0.0
        return cls(mean, mean - half, mean + half)


@dataclass
class OffPolicyValue:
    """The off-policy estimates of one candidate policy."""

    ips: Estimate
    snips: Estimate
    dr: Estimate
    effective_sample_size: float
    max_weight: float
    rows: int
    logged_value: float
    disagreement: float
    dr_terms: np.ndarray
    warnings: list[str] = field(default_factory=list)


def fit_reward_model(x: np.ndarray, actions: np.ndarray, rewards: np.ndarray, n_actions: int,
                     seed: int, folds: int = 2) -> np.ndarray:
    """Cross-fitted predictions q̂(x, a) [n, A] of the reward of every action: for each
    fold, one HistGradientBoosting model per action fitted on the other folds' rows that
    took that action (the mean reward when too few did)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    n = x.shape[0]
    q = np.zeros((n, n_actions))
    fold = np.random.default_rng(seed).integers(0, folds, n)
    for k in range(folds):
        train, test = fold != k, fold == k
        for a in range(n_actions):
            rows = train & (actions == a)
            if rows.sum() < 20:
                q[test, a] = rewards[rows].mean() if rows.any() else rewards[train].mean()
                continue
            model = HistGradientBoostingRegressor(max_iter=REWARD_MODEL_TREES, learning_rate=0.15,
                                                  random_state=seed)
            model.fit(x[rows], rewards[rows])
            q[test, a] = model.predict(x[test])
    return q


def evaluate(target: np.ndarray, actions: np.ndarray, logged_probability: np.ndarray, rewards: np.ndarray,
             q: np.ndarray, max_weight: float = DEFAULT_MAX_WEIGHT) -> OffPolicyValue:
    """Estimate the value of the policy whose action probabilities are ``target`` [n, A]
    from rows that took ``actions`` [n] with ``logged_probability`` [n] (> 0) and got
    ``rewards`` [n]; ``q`` [n, A] are the reward model's predictions."""
    n = actions.size
    rows = np.arange(n)
    weights = target[rows, actions] / logged_probability
    ips = Estimate.of_terms(weights * rewards)
    mean_w = float(weights.mean())
    if mean_w > 0:
        snips_value = float((weights * rewards).sum() / weights.sum())
        snips_terms = weights * (rewards - snips_value) / mean_w
        half = Z95 * float(np.std(snips_terms, ddof=1)) / np.sqrt(n)
        snips = Estimate(snips_value, snips_value - half, snips_value + half)
    else:
        snips = Estimate(float("nan"), float("nan"), float("nan"))
    dr_terms = (target * q).sum(axis=1) + weights * (rewards - q[rows, actions])
    dr = Estimate.of_terms(dr_terms)
    ess = float(weights.sum() ** 2 / np.square(weights).sum()) if np.square(weights).sum() > 0 else 0.0
    warnings = []
    top = float(weights.max()) if n else 0.0
    if top > max_weight:
        warnings.append(
            f"importance weights blow up: the largest is {top:.1f} (> {max_weight:g}); "
            "IPS and its CI are unreliable, prefer the doubly robust estimate"
        )
    if ess < MIN_ESS_SHARE * n:
        warnings.append(
            f"small effective sample size: {ess:.0f} of {n} rows ({ess / max(n, 1):.1%}); "
            "the candidate rarely agrees with the logged decisions"
        )
    disagreement = float(np.mean(np.argmax(target, axis=1) != actions)) if n else 0.0
    return OffPolicyValue(ips, snips, dr, ess, top, n, float(rewards.mean()) if n else 0.0,
                          disagreement, dr_terms, warnings)


def constant_policy(n: int, n_actions: int, action: int) -> np.ndarray:
    """Probabilities [n, A] of always taking ``action``."""
    target = np.zeros((n, n_actions))
    target[:, action] = 1.0
    return target
