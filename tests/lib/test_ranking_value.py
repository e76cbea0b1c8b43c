"""The shared prefix-IPS value of a model's rankings (loopwise.ranking): per-item rows
grouped into rankings (any row order, unshown candidates kept for scoring), then the
value equals prefix_ips on the per-position probabilities computed by hand."""

from __future__ import annotations

import numpy as np

from loopwise.ranking import (
    RankingPolicy,
    group_rankings,
    prefix_ips,
    ranking_policy_value,
    ranking_propensities,
    sample_ranking,
)

N_RANKINGS = 200
N_CANDIDATES = 6
SHOWN = 3


def test_grouped_rows_give_the_prefix_ips_value() -> None:
    rng = np.random.default_rng(3)
    logging = RankingPolicy(softmax=True, temperature=1.0, epsilon=0.2)
    target = RankingPolicy(softmax=True, temperature=0.5)
    ids, indices, positions, propensities, rewards, features = [], [], [], [], [], []
    expected_logged, expected_target, expected_clicks = [], [], []
    for n in range(N_RANKINGS):
        x = rng.normal(size=(N_CANDIDATES, 2))
        draw = sample_ranking(logging, x[:, 0], SHOWN, rng)
        clicks = (rng.random(SHOWN) < 0.3).astype(float)
        position_of = {int(i): j + 1 for j, i in enumerate(draw.order[:SHOWN])}
        for i in rng.permutation(N_CANDIDATES):  # rows in any order
            ids.append(f"d{n}")
            indices.append(i)
            positions.append(position_of.get(int(i), 0))
            propensities.append(draw.propensities[position_of[int(i)] - 1] if int(i) in position_of else 0.0)
            rewards.append(clicks[position_of[int(i)] - 1] if int(i) in position_of else 0.0)
            features.append(x[i])
        expected_logged.append(draw.propensities)
        expected_target.append(ranking_propensities(target, x[:, 1], draw.order[:SHOWN]))
        expected_clicks.append(clicks)
    ids.append("no-shown-item")  # a decision without a shown item is left out
    indices.append(0)
    positions.append(0)
    propensities.append(0.0)
    rewards.append(0.0)
    features.append(np.zeros(2))

    rankings = group_rankings(ids, np.array(indices), np.array(positions), np.array(propensities),
                              np.array(rewards), np.array(features))
    assert len(rankings) == N_RANKINGS
    assert all(r.features.shape == (N_CANDIDATES, 2) and r.shown.shape == (SHOWN,) for r in rankings)
    value, weights = ranking_policy_value(rankings, [r.features[:, 1] for r in rankings], target)
    truth = prefix_ips(np.array(expected_clicks), np.array(expected_logged), np.array(expected_target))
    assert np.isclose(value.value, truth.value) and np.isclose(value.stderr, truth.stderr)
    assert weights.shape == (N_RANKINGS, SHOWN) and np.all(weights > 0)
    assert np.isclose(np.mean([r.logged_clicks for r in rankings]), np.array(expected_clicks).sum(axis=1).mean())
