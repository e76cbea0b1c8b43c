"""The online tuning loop in-process against the product of :mod:`tests.evaluator.tuning_world`,
whose objective and constraint are known exactly: arms are measured with the
scorecard's own statistics (``scorecard.compute_scorecard``) on simulated decisions."""

from __future__ import annotations

import asyncio

import numpy as np

from loopwise.services.evaluator import scorecard as S
from loopwise.services.evaluator.online_tuning import (
    MetricValue,
    RoundEvidence,
    Trial,
    Tuner,
    TuningPlan,
    run_tuning,
)
from loopwise.services.evaluator.tuning import Bound
from tests.evaluator import tuning_world as W

ROWS_PER_ARM = 3000
ROUNDS, BATCH = 5, 5
SEEDS = (1, 2, 3, 4, 5)


class SimulatedExperiment:
    """Runs each setting as an arm of ROWS_PER_ARM simulated decisions and measures
    the arms' means and CIs with the scorecard's statistics."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed + 100)

    async def run_round(self, round_number: int, settings: list[np.ndarray]) -> RoundEvidence:
        arms = [f"r{round_number}a{i}" for i in range(len(settings))]
        parts = [W.simulate(costs, ROWS_PER_ARM, self.rng) for costs in settings]
        group = np.repeat(np.arange(len(settings)), ROWS_PER_ARM)
        card = S.compute_scorecard(S.ScorecardInput(
            groups=arms, expected_shares=np.full(len(arms), 1.0 / len(arms)), group=group,
            times_ms=np.zeros(group.size, dtype=np.int64),
            metrics={"reward": np.concatenate([p[0] for p in parts]),
                     "outcome_count": np.concatenate([p[1] for p in parts])},
            covariates=np.zeros((group.size, 0))))
        metrics: list[dict[str, MetricValue]] = [{} for _ in arms]
        for m in card.group_metrics:
            metrics[arms.index(m.group)][m.metric] = MetricValue(m.mean, m.ci_lower, m.ci_upper, m.rows)
        return RoundEvidence(arms, metrics)


def plan(seed: int) -> TuningPlan:
    return TuningPlan(names=W.PATHS, low=W.LOW, high=W.HIGH, objective="reward",
                      bounds=[Bound("outcome_count", None, W.SHARE_MAX)], rounds=ROUNDS, batch_size=BATCH, seed=seed)


def test_tuning_reaches_the_constrained_optimum_within_five_rounds_over_five_seeds() -> None:
    c_d, c_g, optimum = W.constrained_optimum()
    print(f"\nconstrained optimum: costs ({c_d:.3f}, {c_g:.3f}), reward {optimum:.4f}, share <= {W.SHARE_MAX}")
    results = []
    for seed in SEEDS:
        rounds_seen: list[int] = []

        async def on_round(number, trials, evidence, seen=rounds_seen) -> None:
            seen.append(number)

        trials, choice = asyncio.run(run_tuning(plan(seed), SimulatedExperiment(seed), on_round))
        assert choice.trial is not None, choice.warnings
        point = choice.trial.proposal.point
        value, share = W.true_reward(*point), W.true_share(*point)
        # The first round in which a setting this good (and feasible) was measured.
        first = min(t.round for t in trials if W.true_share(*t.proposal.point) <= W.SHARE_MAX
                    and W.true_reward(*t.proposal.point) >= 0.95 * optimum) if any(
            W.true_share(*t.proposal.point) <= W.SHARE_MAX and W.true_reward(*t.proposal.point) >= 0.95 * optimum
            for t in trials) else None
        print(f"seed {seed}: rounds {len(rounds_seen)}, chosen costs ({point[0]:.3f}, {point[1]:.3f}) from round "
              f"{choice.trial.round}, true reward {value:.4f} = {value / optimum:.1%} of the optimum "
              f"{optimum:.4f}, true share {share:.3f}; first round with a setting within 5%: {first}")
        results.append((value, share))
        assert len(rounds_seen) == ROUNDS and len(trials) == ROUNDS * BATCH
    for value, share in results:
        assert share <= W.SHARE_MAX
        assert value >= 0.95 * optimum


def test_first_round_opens_with_the_given_settings_and_later_rounds_spread() -> None:
    seeded = TuningPlan(**{**plan(7).__dict__, "initial": (np.array([0.6, 0.8]),)})
    tuner = Tuner(seeded)
    first = tuner.propose([], BATCH)
    assert first[0].source == "offline suggestion" and np.allclose(first[0].point, [0.6, 0.8])
    assert [p.source for p in first[1:]] == ["initial design"] * (BATCH - 1)
    assert all(((p.point >= 0) & (p.point <= 1)).all() for p in first)
    evidence = asyncio.run(SimulatedExperiment(7).run_round(1, [p.point for p in first]))
    trials = [Trial(1, arm, p, m, m["outcome_count"].mean <= W.SHARE_MAX)
              for p, arm, m in zip(first, evidence.arms, evidence.metrics, strict=True)]
    second = tuner.propose(trials, BATCH)
    points = np.array([p.point for p in second])
    assert {p.source for p in second} == {"expected_improvement"}
    assert all(0 <= p.feasibility <= 1 and p.predicted_stddev > 0 for p in second)
    # Kriging believer: no two settings of a round coincide.
    gaps = [np.abs(points[i] - points[j]).max() for i in range(BATCH) for j in range(i)]
    assert min(gaps) > 1e-3
