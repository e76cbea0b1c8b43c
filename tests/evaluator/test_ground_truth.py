"""Correctness against ground truth on simulated worlds whose effects are known, with the
seeds written here: CATE recovery at 100k rows (CausalForestDML on a nonlinear effect,
LinearDML on a linear one), ATE coverage over 20 seeds, and doubly robust coverage over
10 policies."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from loopwise.services.evaluator import estimators as E
from loopwise.services.evaluator import policy_eval

ROWS_100K = 100_000


def world(n: int, seed: int, nonlinear: bool, features: int = 5):
    """Rows x ~ N(0, 1)^F, logged propensity e(x) = sigmoid(0.8·x1 − 0.3), treatment
    T ~ Bernoulli(e), reward Y = x1 + 0.5·x2² + T·τ(x) + N(0, 1). τ is linear
    (1 + 2·x0 − x3) or nonlinear (2·[x0 > 0] + sin(2·x2))."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features))
    e = 1.0 / (1.0 + np.exp(-(0.8 * x[:, 1] - 0.3)))
    t = (rng.random(n) < e).astype(int)
    tau = 2.0 * (x[:, 0] > 0) + np.sin(2.0 * x[:, 2]) if nonlinear else 1.0 + 2.0 * x[:, 0] - x[:, 3]
    y = x[:, 1] + 0.5 * x[:, 2] ** 2 + t * tau + rng.normal(size=n)
    return x, t, y, e, tau


@pytest.mark.timeout(1200)
def test_causal_forest_recovers_a_nonlinear_effect_at_100k_rows() -> None:
    x, t, y, e, tau = world(ROWS_100K, seed=2024, nonlinear=True)
    with threadpool_limits(1):
        est = E.fit_estimator(E.CAUSAL_FOREST_DML, x, t, y, e, seed=7, forest_trees=48)
        cate = E.effects(est, x)
    assert np.corrcoef(cate, tau)[0, 1] >= 0.9


@pytest.mark.timeout(600)
def test_linear_dml_recovers_a_linear_effect_at_100k_rows() -> None:
    x, t, y, e, tau = world(ROWS_100K, seed=2025, nonlinear=False)
    with threadpool_limits(1):
        est = E.fit_estimator(E.LINEAR_DML, x, t, y, e, seed=7)
        cate = E.effects(est, x)
    assert np.corrcoef(cate, tau)[0, 1] >= 0.9
    coef, intercept = E.linear_coefficients(est)
    assert np.allclose(coef, [2.0, 0.0, 0.0, -1.0, 0.0], atol=0.05)
    assert intercept == pytest.approx(1.0, abs=0.05)


@pytest.mark.timeout(600)
def test_ate_confidence_interval_covers_the_truth_in_at_least_17_of_20_seeds() -> None:
    covered = 0
    with threadpool_limits(1):
        for seed in range(100, 120):
            x, t, y, e, tau = world(2000, seed=seed, nonlinear=False)
            est = E.fit_estimator(E.LINEAR_DML, x, t, y, e, seed=seed)
            _, lower, upper = E.ate_with_interval(est)
            covered += int(lower <= tau.mean() <= upper)
    assert covered >= 17, covered


def test_dr_confidence_interval_covers_the_true_policy_value_for_at_least_8_of_10_policies() -> None:
    # Three actions; the logging policy: p = (0.2, 0.8·e(x), 0.8·(1 − e(x))) for (other, treat, control).
    rng = np.random.default_rng(77)
    n = 5000
    x = rng.normal(size=(n, 3))
    e = 1.0 / (1.0 + np.exp(-(0.8 * x[:, 1] - 0.3)))
    logging = np.column_stack([np.full(n, 0.2), 0.8 * e, 0.8 * (1 - e)])
    actions = (rng.random(n)[:, None] > np.cumsum(logging, axis=1)).sum(axis=1)
    means = np.column_stack([x[:, 1] + 0.3, x[:, 1] + 1.0 + 2.0 * x[:, 0], x[:, 1] + 0.5 * x[:, 2] ** 2])
    rewards = means[np.arange(n), actions] + rng.normal(size=n)
    probability = logging[np.arange(n), actions]
    with threadpool_limits(1):
        q = policy_eval.fit_reward_model(x, actions, rewards, 3, seed=7)

    def one_hot(index: np.ndarray) -> np.ndarray:
        return np.eye(3)[index]

    policies = [
        one_hot(np.zeros(n, int)), one_hot(np.ones(n, int)), one_hot(np.full(n, 2)),
        one_hot((x[:, 0] > 0).astype(int)),  # treat when x0 > 0, else other
        one_hot(np.where(x[:, 0] > -0.5, 1, 2)),  # the effect-aware policy
        one_hot(np.argmax(means, axis=1)),  # the oracle
        one_hot(np.where(x[:, 2] > 0, 2, 0)),
        np.full((n, 3), 1.0 / 3.0),  # uniform
        0.5 * one_hot(np.ones(n, int)) + 0.5 * logging,  # half the logging policy
        np.column_stack([np.full(n, 0.1), 0.45 + 0.3 * np.tanh(x[:, 0]), 0.45 - 0.3 * np.tanh(x[:, 0])]),
    ]
    covered = 0
    for target in policies:
        truth = float(np.mean((target * means).sum(axis=1)))
        value = policy_eval.evaluate(target, actions, probability, rewards, q)
        covered += int(value.dr.lower <= truth <= value.dr.upper)
    assert covered >= 8, covered
