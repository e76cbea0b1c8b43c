"""Online tuning, free of gRPC: rounds of settings proposed by Gaussian processes, run as
experiment arms, measured, and the best feasible setting chosen (docs/tuning.md).

Each round proposes ``batch_size`` settings in the box of the tuned parameters. The
first round is a seeded Latin hypercube (its first settings may be given, e.g. the
offline suggestion); later rounds fit one Gaussian process to the measured objective
means of every arm so far and one per constraint, and pick the settings one at a time
by the acquisition (expected improvement over the best feasible mean, or the upper
confidence bound, each times the probability that every constraint holds), adding each
pick to the processes with its predicted values before the next ("kriging believer"),
so a round's settings spread out. The last round opens with the setting of the highest
posterior mean among those the constraint processes give a probability of at least
CONFIDENT_FEASIBILITY (exploitation), then continues by the acquisition. An
:class:`Experiment` runs a round and returns each arm's metric means with their 95% CIs.

The chosen setting is the measured one with the highest posterior mean of the objective
among those whose measured means meet every bound and which the constraint processes
(fitted on every measured arm, so less noisy than one arm's CI) give a probability of
at least CONFIDENT_FEASIBILITY of meeting them all.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from loopwise.services.evaluator.tuning import Bound, _gp, _latin

CANDIDATES = 1000
LOCAL_CANDIDATES = 300
# A setting is trusted to meet the constraints when their processes give it this
# probability (and its measured means meet them).
CONFIDENT_FEASIBILITY = 0.95
UCB_BETA = 2.0
EI, UCB = "expected_improvement", "upper_confidence_bound"


@dataclass(frozen=True)
class MetricValue:
    """A metric of one arm: mean per decision, its 95% CI and rows."""

    mean: float
    ci_lower: float
    ci_upper: float
    rows: int


@dataclass
class Proposal:
    """A setting to run, and why (the processes' view when it was chosen)."""

    point: np.ndarray  # in the parameters' own units
    source: str
    predicted_mean: float = float("nan")
    predicted_stddev: float = float("nan")
    acquisition: float = float("nan")
    feasibility: float = float("nan")


@dataclass
class Trial:
    """A proposal with its measured metrics."""

    round: int
    arm: str
    proposal: Proposal
    metrics: dict[str, MetricValue]
    feasible: bool = False


@dataclass
class RoundEvidence:
    """What an experiment returns for a round: the arm names, in the order of the
    settings, their metrics, and anything else to keep with the round."""

    arms: list[str]
    metrics: list[dict[str, MetricValue]]
    info: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class Experiment(Protocol):
    """Runs the settings of a round as arms and measures them."""

    async def run_round(self, round_number: int, settings: list[np.ndarray]) -> RoundEvidence: ...


@dataclass(frozen=True)
class TuningPlan:
    """What to tune and how."""

    names: list[str]
    low: np.ndarray
    high: np.ndarray
    objective: str
    bounds: list[Bound]
    rounds: int
    batch_size: int
    seed: int
    acquisition: str = EI
    initial: tuple[np.ndarray, ...] = ()  # settings that open the first round (e.g. offline)


@dataclass
class Choice:
    """The chosen setting (None when no measured setting meets every constraint)."""

    trial: Trial | None
    predicted_mean: float
    warnings: list[str]


def meets(bound: Bound, value: MetricValue) -> bool:
    """Whether the whole 95% CI of ``value`` is within ``bound``."""
    return (bound.low is None or value.ci_lower >= bound.low) and (bound.high is None or value.ci_upper <= bound.high)


class Tuner:
    """Proposes settings and chooses the best from measured trials."""

    def __init__(self, plan: TuningPlan) -> None:
        self.plan = plan
        self.rng = np.random.default_rng(plan.seed)
        self.span = np.where(plan.high > plan.low, plan.high - plan.low, 1.0)

    def unit(self, point: np.ndarray) -> np.ndarray:
        """A setting in the unit cube."""
        return (np.asarray(point, dtype=np.float64) - self.plan.low) / self.span

    def point(self, unit: np.ndarray) -> np.ndarray:
        """A unit-cube position in the parameters' units."""
        return self.plan.low + np.clip(unit, 0.0, 1.0) * self.span

    def _fit(self, xs: np.ndarray, ys: np.ndarray):
        gp = _gp(self.plan.seed)
        gp.fit(xs, ys)
        return gp

    def _metric(self, trials: list[Trial], name: str) -> np.ndarray:
        return np.array([t.metrics[name].mean for t in trials])

    def propose(self, trials: list[Trial], count: int, last: bool = False) -> list[Proposal]:
        """``count`` settings for the next round (``last``: the final round, which opens
        by exploiting)."""
        dims = self.plan.low.size
        if not trials:
            given = [Proposal(np.asarray(p, dtype=np.float64), "offline suggestion") for p in self.plan.initial][:count]
            design = _latin(count, dims, self.rng)
            return given + [Proposal(self.point(u), "initial design") for u in design[len(given):]]
        from scipy.stats import norm

        xs = np.array([self.unit(t.proposal.point) for t in trials])
        ys = self._metric(trials, self.plan.objective)
        objective = self._fit(xs, ys)
        constraints = [(b, self._fit(xs, self._metric(trials, b.metric)), self._metric(trials, b.metric))
                       for b in self.plan.bounds]
        proposals: list[Proposal] = []
        fantasy_x, fantasy_y = list(xs), list(ys)
        fantasy_c = [list(values) for _, _, values in constraints]
        for pick in range(count):
            incumbent = self._incumbent(objective, xs, trials)
            candidates = self._candidates(xs, ys)
            mu, sigma = objective.predict(candidates, return_std=True)
            sigma = np.maximum(sigma, 1e-9)
            exploit = last and pick == 0
            if exploit:
                score = mu - mu.min() + 1e-12
            elif self.plan.acquisition == UCB:
                score = mu + UCB_BETA * sigma
                score = score - score.min() + 1e-12
            else:
                z = (mu - incumbent) / sigma
                score = (mu - incumbent) * norm.cdf(z) + sigma * norm.pdf(z)
            feasible = np.ones(candidates.shape[0])
            predicted_c = []
            for bound, gp, _ in constraints:
                m, s = gp.predict(candidates, return_std=True)
                s = np.maximum(s, 1e-9)
                if bound.low is not None:
                    feasible *= norm.sf((bound.low - m) / s)
                if bound.high is not None:
                    feasible *= norm.cdf((bound.high - m) / s)
                predicted_c.append(m)
            acquisition = np.where(feasible >= CONFIDENT_FEASIBILITY, score, 0.0) if exploit else score * feasible
            best = int(np.argmax(acquisition))
            source = "exploitation (highest predicted mean)" if exploit else self.plan.acquisition
            proposals.append(Proposal(self.point(candidates[best]), source, float(mu[best]),
                                      float(sigma[best]), float(acquisition[best]), float(feasible[best])))
            # Kriging believer: the pick joins the data at its predicted values.
            fantasy_x.append(candidates[best])
            fantasy_y.append(float(mu[best]))
            objective = _refit(objective, np.array(fantasy_x), np.array(fantasy_y))
            for i, (bound, gp, values) in enumerate(constraints):
                fantasy_c[i].append(float(predicted_c[i][best]))
                constraints[i] = (bound, _refit(gp, np.array(fantasy_x), np.array(fantasy_c[i])), values)
        return proposals

    def _incumbent(self, objective, xs: np.ndarray, trials: list[Trial]) -> float:
        """The best posterior mean among measured settings that met every bound (the
        lowest when none did)."""
        mean = objective.predict(xs)
        ok = [i for i, t in enumerate(trials) if t.feasible]
        return float(mean[ok].max()) if ok else float(mean.min())

    def _candidates(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Random positions in the cube, and as many near the best measured settings."""
        dims = xs.shape[1]
        uniform = self.rng.random((CANDIDATES, dims))
        top = xs[np.argsort(-ys)[:5]]
        local = top[self.rng.integers(0, top.shape[0], LOCAL_CANDIDATES)] \
            + self.rng.normal(scale=0.05, size=(LOCAL_CANDIDATES, dims))
        return np.clip(np.vstack([uniform, local]), 0.0, 1.0)

    def feasibility(self, trials: list[Trial], units: np.ndarray) -> np.ndarray:
        """The constraint processes' probability that every bound holds at ``units``."""
        from scipy.stats import norm

        xs = np.array([self.unit(t.proposal.point) for t in trials])
        p = np.ones(units.shape[0])
        for bound in self.plan.bounds:
            m, s = self._fit(xs, self._metric(trials, bound.metric)).predict(units, return_std=True)
            s = np.maximum(s, 1e-9)
            if bound.low is not None:
                p *= norm.sf((bound.low - m) / s)
            if bound.high is not None:
                p *= norm.cdf((bound.high - m) / s)
        return p

    def choose(self, trials: list[Trial]) -> Choice:
        """The measured setting with the highest posterior mean of the objective among
        those that meet every bound confidently (see the module docstring)."""
        if not trials:
            return Choice(None, float("nan"), ["no round was measured"])
        xs = np.array([self.unit(t.proposal.point) for t in trials])
        ys = self._metric(trials, self.plan.objective)
        mean = self._fit(xs, ys).predict(xs) if len(trials) > 1 else ys
        if len(trials) > 1 and self.plan.bounds:
            confident = self.feasibility(trials, xs) >= CONFIDENT_FEASIBILITY
        else:
            confident = np.array([all(meets(b, t.metrics[b.metric]) for b in self.plan.bounds) for t in trials])
        ok = [i for i, t in enumerate(trials) if t.feasible and confident[i]]
        if not ok:
            return Choice(None, float("nan"), ["no measured setting met every constraint confidently"])
        best = max(ok, key=lambda i: mean[i])
        return Choice(trials[best], float(mean[best]), [])


def _refit(gp, xs: np.ndarray, ys: np.ndarray):
    """The process refitted on new data with its fitted kernel kept."""
    from sklearn.gaussian_process import GaussianProcessRegressor

    refitted = GaussianProcessRegressor(kernel=gp.kernel_, normalize_y=True, optimizer=None,
                                        random_state=gp.random_state)
    refitted.fit(xs, ys)
    return refitted


RoundReport = Callable[[int, list[Trial], RoundEvidence], Awaitable[None]]


async def run_tuning(plan: TuningPlan, experiment: Experiment, on_round: RoundReport | None = None
                     ) -> tuple[list[Trial], Choice]:
    """Propose, run and measure ``plan.rounds`` rounds; the trials and the choice.
    ``on_round`` is called after each round with its trials (for the history)."""
    tuner = Tuner(plan)
    trials: list[Trial] = []
    for number in range(1, plan.rounds + 1):
        proposals = await asyncio.to_thread(tuner.propose, trials, plan.batch_size, number == plan.rounds)
        evidence = await experiment.run_round(number, [p.point for p in proposals])
        done = []
        for proposal, arm, metrics in zip(proposals, evidence.arms, evidence.metrics, strict=True):
            feasible = all(b.holds(metrics[b.metric].mean) for b in plan.bounds) and all(
                math.isfinite(m.mean) for m in metrics.values())
            done.append(Trial(number, arm, proposal, metrics, feasible))
        trials.extend(done)
        if on_round is not None:
            await on_round(number, done, evidence)
    choice = await asyncio.to_thread(tuner.choose, trials)
    return trials, choice
