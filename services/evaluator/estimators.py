"""The three EconML effect estimators, with explicit fast nuisances, and "auto".

Every estimator gets the logged propensity as the one control column ``W`` and a
:class:`~loopwise.services.evaluator.estimation.LoggedPropensityClassifier` as its
treatment model; the outcome model is HistGradientBoosting (never ``'auto'``, which
is 100–250× slower). ``auto`` fits the three on a training part and keeps the one with
the best :class:`econml.score.RScorer` score on the held-out part.

The average effect of every estimator is the same doubly robust (AIPW) estimate, from
per-row scores built with the estimator's own cross-fitted nuisances
(:func:`dr_scores`), never EconML's ``ate_interval`` (for a forest, a conservative bound
that does not shrink with the rows) — see docs/evaluator.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loopwise.services.evaluator.estimation import LoggedPropensityClassifier

LINEAR_DML = "LinearDML"
CAUSAL_FOREST_DML = "CausalForestDML"
DR_LEARNER = "DRLearner"
AUTO = "auto"
ESTIMATORS = (LINEAR_DML, CAUSAL_FOREST_DML, DR_LEARNER)
DEFAULT_FOREST_TREES = 100
OUTCOME_TREES = 100


def outcome_model(seed: int):
    """The outcome nuisance: HistGradientBoosting with fixed, fast settings."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=OUTCOME_TREES, learning_rate=0.1, random_state=seed)


def make_estimator(name: str, seed: int, forest_trees: int = DEFAULT_FOREST_TREES):
    """An unfitted EconML estimator by name (one of :data:`ESTIMATORS`)."""
    if name == LINEAR_DML:
        from econml.dml import LinearDML

        return LinearDML(model_y=outcome_model(seed), model_t=LoggedPropensityClassifier(),
                         discrete_treatment=True, cv=3, random_state=seed)
    if name == CAUSAL_FOREST_DML:
        from econml.dml import CausalForestDML

        trees = max(4, -(-forest_trees // 4) * 4)  # the forest grows trees in groups of 4
        return CausalForestDML(model_y=outcome_model(seed), model_t=LoggedPropensityClassifier(),
                               discrete_treatment=True, cv=2, n_estimators=trees,
                               min_samples_leaf=20, max_samples=0.45, random_state=seed, n_jobs=-1,
                               drate=False)  # dr_scores computes the doubly robust ATE
    if name == DR_LEARNER:
        from econml.dr import LinearDRLearner

        return LinearDRLearner(model_regression=outcome_model(seed),
                               model_propensity=LoggedPropensityClassifier(), cv=3, random_state=seed)
    raise ValueError(f"unknown estimator {name!r}")


def settings_of(est) -> str:
    """A readable description of an estimator and its nuisances, for reproducibility."""
    parts = [type(est).__name__]
    for attr in ("model_y", "model_regression", "model_t", "model_propensity"):
        model = getattr(est, attr, None)
        if model is not None:
            parts.append(f"{attr}={model!r}")
    for attr in ("cv", "n_estimators", "min_samples_leaf", "max_samples", "random_state"):
        if hasattr(est, attr):
            parts.append(f"{attr}={getattr(est, attr)!r}")
    return ", ".join(parts)


def fit_estimator(name: str, x: np.ndarray, t: np.ndarray, y: np.ndarray, propensity: np.ndarray,
                  seed: int, forest_trees: int = DEFAULT_FOREST_TREES, extra_controls: np.ndarray | None = None):
    """Fit the named estimator on imputed ``x`` [n, F], 0/1 ``t``, reward ``y`` and the
    logged ``propensity`` [n]; ``extra_controls`` [n, k] go into ``W`` before the
    propensity (which stays the last column)."""
    est = make_estimator(name, seed, forest_trees)
    w = propensity.reshape(-1, 1)
    if extra_controls is not None:
        w = np.column_stack([extra_controls, w])
    est.fit(y, t, X=x, W=w, cache_values=True)
    return est


@dataclass
class Choice:
    """The estimator kept by :func:`choose_estimator` and the score of each candidate."""

    name: str
    scores: dict[str, float]


def choose_estimator(x: np.ndarray, t: np.ndarray, y: np.ndarray, propensity: np.ndarray, seed: int,
                     forest_trees: int = DEFAULT_FOREST_TREES, max_rows: int = 20_000) -> Choice:
    """Pick an estimator by RScorer: fit each on 70% of (at most ``max_rows``) rows and
    score it on the rest (higher is better)."""
    from econml.score import RScorer

    rng = np.random.default_rng(seed)
    index = rng.permutation(t.size)[:max_rows]
    cut = int(0.7 * index.size)
    train, test = index[:cut], index[cut:]
    scorer = RScorer(model_y=outcome_model(seed), model_t=LoggedPropensityClassifier(),
                     discrete_treatment=True, cv=2, random_state=seed)
    scorer.fit(y[test], t[test], X=x[test], W=propensity[test].reshape(-1, 1))
    scores = {}
    for name in ESTIMATORS:
        est = fit_estimator(name, x[train], t[train], y[train], propensity[train], seed, forest_trees)
        scores[name] = float(scorer.score(est))
    best = max(scores, key=lambda k: scores[k])
    return Choice(best, scores)


Z95 = 1.959963984540054
# Propensities are clipped to [PROPENSITY_CLIP, 1 − PROPENSITY_CLIP] in the scores, as
# EconML's forest and DRTester do: a row logged at 0.0005 would weigh 2,000.
PROPENSITY_CLIP = 0.01


@dataclass
class DrScores:
    """Per-row doubly robust (AIPW) scores of an estimator's training rows.

    ``effect`` [n] has mean τ (the average effect) and ``control`` [n] mean E[Y(0)];
    each row's nuisances were fitted without that row (cross-fitting), and the
    propensity is the logged one, so the means are unbiased whatever the effect model."""

    effect: np.ndarray
    control: np.ndarray


def _cached(est):
    values = getattr(est, "_cached_values", None)
    if values is None:
        raise ValueError("the estimator was fitted without cache_values=True")
    return values


def _oob_effects(est, x: np.ndarray) -> np.ndarray:
    """A forest's out-of-bag CATE of its training rows ``x`` (the in-sample CATE of a row
    that was in every tree's sample); any other estimator's CATE of ``x``."""
    forest = getattr(est, "model_final_", None)
    if not hasattr(forest, "oob_predict"):
        return effects(est, x)
    theta = np.asarray(forest.oob_predict(x), dtype=np.float64).reshape(x.shape[0], -1)[:, 0].copy()
    missing = np.isnan(theta)
    if missing.any():
        theta[missing] = effects(est, x[missing])
    return theta


def dr_scores(est) -> DrScores:
    """AIPW scores of the rows ``est`` was fitted on (fitted by :func:`fit_estimator`).

    DML estimators (LinearDML, CausalForestDML) keep cross-fitted residuals
    Ỹ = Y − m̂(x) and T̃ = T − e(x); with the CATE θ̂ (out-of-bag for a forest) the
    implied outcome models are μ̂₁ = m̂ + (1 − e)·θ̂ and μ̂₀ = m̂ − e·θ̂, so
    ψ_τ = θ̂ + (Ỹ − θ̂·T̃)·T̃ / (e·(1 − e)) — EconML's own doubly robust ATE of the
    forest — and ψ₀ = μ̂₀ + (1 − T)·(Y − μ̂₀) / (1 − e). The DRLearner's cached
    nuisances are these doubly robust outcomes already (one column per treatment)."""
    values = _cached(est)
    nuisances = values.nuisances
    if len(nuisances) == 3:  # DRLearner: (doubly robust outcomes [n, 2], propensities, raw)
        outcomes = np.asarray(nuisances[0], dtype=np.float64).reshape(len(values.Y), -1)
        return DrScores(outcomes[:, 1] - outcomes[:, 0], outcomes[:, 0].copy())
    y_res = np.asarray(nuisances[0], dtype=np.float64).reshape(-1)
    y = np.asarray(values.Y, dtype=np.float64).reshape(-1)
    t = np.asarray(values.T, dtype=np.float64).reshape(-1)
    e = np.clip(np.asarray(values.W, dtype=np.float64)[:, -1], PROPENSITY_CLIP, 1 - PROPENSITY_CLIP)
    x = np.asarray(values.X, dtype=np.float64)
    t_res = t - e
    theta = _oob_effects(est, x)
    effect = theta + (y_res - theta * t_res) * t_res / (e * (1 - e))
    mu0 = (y - y_res) - e * theta
    control = mu0 + (1 - t) * (y - mu0) / (1 - e)
    return DrScores(effect, control)


def mean_interval(terms: np.ndarray, z: float = Z95) -> tuple[float, float, float, float]:
    """(mean, standard error, lower, upper) of the mean of per-row terms (normal CI)."""
    mean = float(np.mean(terms))
    se = float(np.std(terms, ddof=1) / np.sqrt(terms.size)) if terms.size > 1 else 0.0
    return mean, se, mean - z * se, mean + z * se


def ate_with_interval(est) -> tuple[float, float, float]:
    """The doubly robust average effect over the rows ``est`` was fitted on, and its 95% CI."""
    ate, _, lower, upper = mean_interval(dr_scores(est).effect)
    return ate, lower, upper


def effects(est, x: np.ndarray) -> np.ndarray:
    """Per-row CATE [n] as float64."""
    return np.asarray(est.effect(x), dtype=np.float64).reshape(-1)


def linear_coefficients(est) -> tuple[np.ndarray, float] | None:
    """(coefficients [F], intercept) of a linear final stage, or None for a forest."""
    if not hasattr(est, "coef_"):
        return None
    try:
        coef = np.asarray(est.coef_ if not callable(est.coef_) else est.coef_(T=1), dtype=np.float64)
        intercept = est.intercept_ if not callable(est.intercept_) else est.intercept_(T=1)
    except Exception:
        return None
    return coef.reshape(-1), float(np.asarray(intercept).reshape(-1)[0])


def outcome_r2(est, y: np.ndarray) -> float | None:
    """Out-of-fold R² of the outcome nuisance (None when the estimator does not keep it)."""
    for attr in ("nuisance_scores_y", "nuisance_scores_regression"):
        scores = getattr(est, attr, None)
        if scores is not None:
            return float(np.mean(np.asarray(scores, dtype=np.float64)))
    return None
