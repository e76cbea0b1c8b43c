"""Bayesian optimisation: a Gaussian process with expected improvement, under constraints.

Maximises ``objective(point)`` over a box; each constrained metric gets its own Gaussian
process, and the acquisition is expected improvement times the probability that every
constraint holds (constrained EI). Points are scaled to the unit cube; the initial
design is a seeded Latin hypercube.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

CANDIDATES = 2000


@dataclass(frozen=True)
class Bound:
    """A constraint ``low <= metric <= high`` (None: unbounded)."""

    metric: str
    low: float | None = None
    high: float | None = None

    def holds(self, value: float) -> bool:
        """Whether ``value`` satisfies the bound."""
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)


@dataclass
class Evaluation:
    """One evaluated point."""

    point: np.ndarray  # in the parameters' own units
    objective: float
    metrics: dict[str, float]
    feasible: bool


@dataclass
class Outcome:
    """The optimisation's result: the best feasible point (or the least infeasible one)."""

    best: Evaluation
    mean: float  # GP posterior mean of the objective at the best point
    stddev: float  # GP posterior standard deviation there
    history: list[Evaluation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _gp(seed: int):
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    kernel = ConstantKernel(1.0, (1e-3, 1e3)) * Matern(length_scale=0.3, length_scale_bounds=(0.02, 5.0), nu=2.5) \
        + WhiteKernel(1e-3, (1e-8, 1e-1))
    return GaussianProcessRegressor(kernel=kernel, normalize_y=True, random_state=seed, n_restarts_optimizer=2)


def _fit(points: np.ndarray, values: np.ndarray, seed: int):
    gp = _gp(seed)
    gp.fit(points, values)
    return gp


def _latin(n: int, dims: int, rng: np.random.Generator) -> np.ndarray:
    cut = (np.arange(n)[:, None] + rng.random((n, dims))) / n
    for d in range(dims):
        cut[:, d] = cut[rng.permutation(n), d]
    return cut


def _violation(metrics: dict[str, float], bounds: list[Bound]) -> float:
    total = 0.0
    for b in bounds:
        v = metrics[b.metric]
        if b.low is not None:
            total += max(0.0, b.low - v)
        if b.high is not None:
            total += max(0.0, v - b.high)
    return total


def maximise(evaluate: Callable[[np.ndarray], tuple[float, dict[str, float]]], low: np.ndarray, high: np.ndarray,
             iterations: int, seed: int, bounds: list[Bound] | None = None) -> Outcome:
    """Maximise ``evaluate(point) -> (objective, metrics)`` over ``[low, high]`` in
    ``iterations`` evaluations, subject to ``bounds`` on the metrics."""
    from scipy.stats import norm

    bounds = bounds or []
    rng = np.random.default_rng(seed)
    dims = low.size
    span = np.where(high > low, high - low, 1.0)
    initial = min(iterations, max(4, 2 * dims + 1))
    unit: list[np.ndarray] = list(_latin(initial, dims, rng))
    history: list[Evaluation] = []

    def run(u: np.ndarray) -> None:
        point = low + u * span
        objective, metrics = evaluate(point)
        history.append(Evaluation(point, float(objective), metrics, all(b.holds(metrics[b.metric]) for b in bounds)))

    for u in unit:
        run(u)
    while len(history) < iterations:
        xs = np.array(unit)
        ys = np.array([h.objective for h in history])
        gp = _fit(xs, ys, seed)
        candidates = rng.random((CANDIDATES, dims))
        mu, sigma = gp.predict(candidates, return_std=True)
        feasible = [h for h in history if h.feasible]
        best = max(h.objective for h in feasible) if feasible else ys.min()
        sigma = np.maximum(sigma, 1e-12)
        z = (mu - best) / sigma
        acquisition = (mu - best) * norm.cdf(z) + sigma * norm.pdf(z)
        for b in bounds:
            values = np.array([h.metrics[b.metric] for h in history])
            m, s = _fit(xs, values, seed).predict(candidates, return_std=True)
            s = np.maximum(s, 1e-12)
            p = np.ones(CANDIDATES)
            if b.low is not None:
                p *= norm.sf((b.low - m) / s)
            if b.high is not None:
                p *= norm.cdf((b.high - m) / s)
            acquisition = acquisition * p
        choice = candidates[int(np.argmax(acquisition))]
        unit.append(choice)
        run(choice)

    warnings = []
    feasible = [h for h in history if h.feasible]
    if feasible:
        best_eval = max(feasible, key=lambda h: h.objective)
    else:
        best_eval = min(history, key=lambda h: _violation(h.metrics, bounds))
        warnings.append("no evaluated point satisfies every constraint; the least violating one is returned")
    gp = _fit(np.array(unit), np.array([h.objective for h in history]), seed)
    mean, std = gp.predict(((best_eval.point - low) / span).reshape(1, -1), return_std=True)
    return Outcome(best_eval, float(mean[0]), float(std[0]), history, warnings)
