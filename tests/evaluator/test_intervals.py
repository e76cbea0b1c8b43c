"""Intervals that mean what they say, against ground truth, at the analysis level: the
doubly robust ATE interval of every estimator narrows as 1/√n and covers the true ATE
(a forest on a NONLINEAR effect, 20 seeds), and the held-out check of the per-row CATE
intervals bounds their true coverage from above and flags a misspecified effect model
(LinearDML on a nonlinear effect) without flagging a well-specified one.

The worlds are tests.evaluator.test_ground_truth's: τ(x) = 2·[x0 > 0] + sin(2·x2) (true
ATE exactly 1: E[sin(2·x2)] = 0) or 1 + 2·x0 − x3; fits are small (a few thousand
rows, a dozen trees) to keep the suite short.
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from loopwise.services.evaluator import estimators as E
from loopwise.services.evaluator.analysis import Plots, held_out, split_rows, validate
from loopwise.services.evaluator.intervals import (
    coverage_for_ratio,
    interval_check,
    misspecification_findings,
)
from tests.evaluator.test_ground_truth import world

TRUE_ATE = 1.0  # of the nonlinear world: 2·P(x0 > 0) + E[sin(2·x2)]
SMALL_FOREST = 12


@pytest.fixture(autouse=True)
def one_thread():
    """Native thread pools limited as in the service's workers (the machine is shared)."""
    with threadpool_limits(1):
        yield


@pytest.mark.timeout(900)
def test_forest_ate_interval_covers_the_true_ate_in_at_least_17_of_20_seeds_on_a_nonlinear_effect() -> None:
    covered = 0
    for seed in range(1000, 1020):
        x, t, y, e, _ = world(2000, seed=seed, nonlinear=True)
        est = E.fit_estimator(E.CAUSAL_FOREST_DML, x, t, y, e, seed=seed, forest_trees=SMALL_FOREST)
        _, lower, upper = E.ate_with_interval(est)
        covered += int(lower <= TRUE_ATE <= upper)
    assert covered >= 17, covered


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", E.ESTIMATORS)
def test_ate_interval_narrows_as_one_over_root_n(name: str) -> None:
    """Width at 4n ≤ 0.65 × width at n (1/√4 = 0.5); EconML's ate_interval for the forest
    hardly narrowed (0.474 at 50,000 rows, 0.477 at 100,000)."""
    widths = {}
    for n in (2000, 8000):
        x, t, y, e, _ = world(n, seed=31, nonlinear=True)
        est = E.fit_estimator(name, x, t, y, e, seed=7, forest_trees=SMALL_FOREST)
        ate, lower, upper = E.ate_with_interval(est)
        scores = E.dr_scores(est)
        assert scores.effect.size == n and ate == pytest.approx(scores.effect.mean())
        widths[n] = upper - lower
    assert widths[8000] <= 0.65 * widths[2000], widths


def test_dr_scores_control_mean_is_unbiased() -> None:
    x, t, y, e, _ = world(4000, seed=5, nonlinear=True)
    mu0 = x[:, 1] + 0.5 * x[:, 2] ** 2  # the world's outcome without treatment (noise mean 0)
    for name in E.ESTIMATORS:
        est = E.fit_estimator(name, x, t, y, e, seed=7, forest_trees=SMALL_FOREST)
        mean, se, _, _ = E.mean_interval(E.dr_scores(est).control)
        assert abs(mean - mu0.mean()) < 4 * se, (name, mean, mu0.mean(), se)


def interval_check_against_truth(name: str, nonlinear: bool, n: int = 8000, seed: int = 41):
    """(the held-out interval check, the validation, the share of held-out rows whose
    95% interval covers their true effect)."""
    x, t, y, e, tau = world(n, seed=seed, nonlinear=nonlinear)
    train, val = split_rows(n, seed)
    est = E.fit_estimator(name, x[train], t[train], y[train], e[train], seed=7, forest_trees=24)
    held = held_out(est, x, t, y, e, train, val, seed)
    cate = E.effects(est, x[val])
    lower, upper = (np.asarray(b).reshape(-1) for b in est.effect_interval(x[val], alpha=0.05))
    check = interval_check(cate, lower, upper, held.effect, held.reference)
    validation = validate(held, Plots(cate, e[val], t[val], x[val], 0))
    true_coverage = float(np.mean((lower <= tau[val]) & (tau[val] <= upper)))
    return check, validation, true_coverage


@pytest.mark.timeout(600)
def test_a_misspecified_linear_effect_model_is_caught_and_its_coverage_bounded() -> None:
    check, validation, truth = interval_check_against_truth(E.LINEAR_DML, nonlinear=True)
    assert truth < 0.3  # LinearDML's intervals on a step and a sine cover few true effects
    assert truth <= check.coverage_upper_bound <= 0.5, (truth, check.coverage_upper_bound)
    assert check.nominal_coverage == 0.95 and check.rows == 1600
    assert check.excess_mse_ci_lower > 0  # the reference model predicts the effects better
    assert check.error_ratio_lower_bound > 4
    findings = misspecification_findings(check, validation, E.LINEAR_DML)
    assert any("too narrow" in f for f in findings)
    assert any("predicts the held-out effects better" in f for f in findings)
    assert "cannot confirm" in check.definition and "held-out" in check.definition


@pytest.mark.timeout(600)
def test_a_well_specified_model_is_not_flagged_and_the_bound_holds() -> None:
    check, validation, truth = interval_check_against_truth(E.LINEAR_DML, nonlinear=False)
    assert truth > 0.8
    assert check.coverage_upper_bound >= truth
    assert misspecification_findings(check, validation, E.LINEAR_DML) == []
    forest, _, forest_truth = interval_check_against_truth(E.CAUSAL_FOREST_DML, nonlinear=True)
    assert forest.coverage_upper_bound >= forest_truth


def test_coverage_for_ratio() -> None:
    assert coverage_for_ratio(0.0) == 1.0
    assert coverage_for_ratio(1.0) == pytest.approx(0.95, abs=1e-9)
    assert coverage_for_ratio(4.0) == pytest.approx(0.6722, abs=1e-3)  # errors twice the assumed size
    assert coverage_for_ratio(100.0) < 0.16
