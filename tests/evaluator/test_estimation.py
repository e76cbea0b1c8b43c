"""The logged-propensity treatment model, the three estimators, auto selection, the
effect model kept with a report and its ONNX export, without gRPC."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from loopwise.services.evaluator import estimators as E
from loopwise.services.evaluator.analysis import overlap_of
from loopwise.services.evaluator.cate_onnx import export_cate, predict_onnx
from loopwise.services.evaluator.estimation import EffectModel, LoggedPropensityClassifier
from tests.evaluator.simulation import propensity, simulate, tau


@pytest.fixture(autouse=True)
def one_thread():
    """Native thread pools limited as in the service's workers (the machine is shared)."""
    with threadpool_limits(1):
        yield


def test_wrapper_returns_exactly_the_propensity_column() -> None:
    e = np.array([0.01, 0.3, 0.5, 0.97])
    xw = np.column_stack([np.arange(4.0), -np.arange(4.0), e])
    model = LoggedPropensityClassifier().fit(xw, np.array([0, 1, 1, 0]))
    proba = model.predict_proba(xw)
    assert list(model.classes_) == [0, 1]
    assert np.array_equal(proba[:, 1], e)
    assert np.array_equal(proba[:, 0], 1.0 - e)
    assert list(model.predict(xw)) == [0, 0, 1, 1]


def _pair_data(n: int = 1500, seed: int = 5):
    sim = simulate(n, seed)
    keep = sim.pair()
    x = sim.x[keep]
    t = (sim.actions[keep] == "treat").astype(int)
    return x, t, sim.y[keep], propensity(x)


@pytest.mark.parametrize("name", [E.LINEAR_DML, E.DR_LEARNER])
def test_nuisance_treatment_predictions_are_the_logged_propensities(name: str) -> None:
    x, t, y, e = _pair_data()
    est = E.fit_estimator(name, x, t, y, e, seed=7)
    models = est.models_t if name == E.LINEAR_DML else est.models_propensity
    for fold_models in models:
        for model in fold_models:
            assert isinstance(model, LoggedPropensityClassifier)
            assert np.allclose(model.predict_proba(np.column_stack([x, e]))[:, 1], e, rtol=0, atol=1e-12)
    if name == E.LINEAR_DML:
        _, t_residual, _, _ = est.residuals_
        # DML residualises T on its nuisance prediction: T − ê(x); ê must be the logged e(x).
        assert np.allclose(t - np.asarray(t_residual).reshape(-1), e, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", E.ESTIMATORS)
def test_every_estimator_recovers_the_effect(name: str) -> None:
    x, t, y, e = _pair_data(3000)
    est = E.fit_estimator(name, x, t, y, e, seed=7, forest_trees=40)
    ate, lower, upper = E.ate_with_interval(est)
    assert lower <= tau(x).mean() <= upper
    assert np.corrcoef(E.effects(est, x), tau(x))[0, 1] > 0.9
    linear = E.linear_coefficients(est)
    assert (linear is None) == (name == E.CAUSAL_FOREST_DML)
    assert name in E.settings_of(est) or type(est).__name__ in E.settings_of(est)


def test_auto_picks_the_best_rscorer_score() -> None:
    x, t, y, e = _pair_data(3000)
    choice = E.choose_estimator(x, t, y, e, seed=7, forest_trees=24)
    assert set(choice.scores) == set(E.ESTIMATORS)
    assert choice.name == max(choice.scores, key=lambda k: choice.scores[k])
    assert all(np.isfinite(v) for v in choice.scores.values())


def test_effect_model_imputes_and_pickles() -> None:
    x, t, y, e = _pair_data()
    est = E.fit_estimator(E.LINEAR_DML, x, t, y, e, seed=7)
    model = pickle.loads(pickle.dumps(EffectModel(est, ["x0", "x1", "x2"], np.median(x, axis=0))))
    effects, lower, upper = model.predict(np.array([[0.0, 0.0, np.nan], [1.0, 0.0, 0.0]]))
    assert np.allclose(effects, [1.0, 3.0], atol=0.3)
    assert np.all(lower <= effects) and np.all(effects <= upper)


def test_poor_overlap_is_warned() -> None:
    _, t, _, _ = _pair_data()
    e = np.where(t == 1, 0.99, 0.01)  # deterministic-looking logging policy
    overlap, warnings = overlap_of(e, t)
    assert overlap.poor and overlap.extreme_share == 1.0
    assert any(w.startswith("poor overlap") for w in warnings)


@pytest.mark.parametrize("linear", [True, False])
def test_onnx_effect_model_matches_the_estimator(linear: bool) -> None:
    x, t, y, e = _pair_data(3000)
    name = E.LINEAR_DML if linear else E.CAUSAL_FOREST_DML
    est = E.fit_estimator(name, x, t, y, e, seed=7, forest_trees=24)
    cate = E.effects(est, x)
    x_missing = x.copy()
    x_missing[::40, 2] = np.nan
    medians = np.median(x, axis=0)
    exported = export_cate(x_missing, E.effects(est, np.where(np.isnan(x_missing), medians, x_missing)), medians,
                           E.linear_coefficients(est), n_actions=3, treatment_index=1, seed=7)
    assert exported.family == ("linear" if linear else "distilled_trees")
    assert exported.input_width == 6
    assert exported.fidelity_r2 > (0.999999 if linear else 0.9)
    onnx_cate = predict_onnx(exported.onnx, x, 3, 1)
    assert np.corrcoef(onnx_cate, cate)[0, 1] > (0.99999 if linear else 0.95)
    # Other actions' one-hot gives 0: the value of not treating.
    assert np.all(predict_onnx(exported.onnx, x[:50], 3, 0) == 0.0)
