"""The logged-propensity treatment model and the LinearDML fit, without gRPC."""

from __future__ import annotations

import pickle

import numpy as np

from loopwise.services.evaluator.estimation import (
    LoggedPropensityClassifier,
    fit_effects,
    fit_linear_dml,
)
from tests.evaluator.simulation import propensity, simulate, tau


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


def test_linear_dml_nuisance_treatment_predictions_are_the_logged_propensities() -> None:
    x, t, y, e = _pair_data()
    est = fit_linear_dml(x, t, y, e, seed=7, cache_values=True)
    _, t_residual, _, _ = est.residuals_
    # DML residualises T on its nuisance prediction: T − ê(x); ê must be the logged e(x).
    predicted = t - np.asarray(t_residual).reshape(-1)
    assert np.allclose(predicted, e, rtol=0, atol=1e-12)
    for fold_models in est.models_t:
        for model in fold_models:
            assert isinstance(model, LoggedPropensityClassifier)


def test_fit_effects_recovers_the_effect_and_pickles_a_usable_model() -> None:
    x, t, y, e = _pair_data()
    x = x.copy()
    x[::50, 2] = np.nan  # missing values are imputed with medians
    fit = fit_effects(x, t, y, e, ["x0", "x1", "x2"], seed=7)
    truth = tau(np.nan_to_num(x))
    assert fit.ate_lower <= truth.mean() <= fit.ate_upper
    assert np.corrcoef(fit.cate, truth)[0, 1] > 0.9
    assert fit.nuisance_max_error == 0.0
    assert fit.feature_names[fit.top_feature] == "x0"
    assert any("imputed" in w for w in fit.warnings)
    names = [c.name for c in fit.coefficients]
    assert names == ["(intercept)", "x0", "x1", "x2"]
    x0 = fit.coefficients[1]
    assert x0.lower <= 2.0 <= x0.upper
    model = pickle.loads(fit.model)
    effects, lower, upper = model.predict(np.array([[0.0, 0.0, np.nan], [1.0, 0.0, 0.0]]))
    assert np.allclose(effects, [1.0, 3.0], atol=0.3)
    assert np.all(lower <= effects) and np.all(effects <= upper)


def test_poor_overlap_is_warned() -> None:
    x, t, y, _ = _pair_data()
    e = np.where(t == 1, 0.99, 0.01)  # deterministic-looking logging policy
    fit = fit_effects(x, t, y, e, ["x0", "x1", "x2"], seed=7)
    assert any(w.startswith("poor overlap") for w in fit.warnings)
