"""The simulated checkout product: exact expected rewards and a heterogeneous effect."""

from __future__ import annotations

import numpy as np
import pytest

from loopwise.simulator import CheckoutUpsell
from loopwise.simulator.checkout import FEATURES, REGIONS


def test_expected_reward_is_baseline_plus_effect_when_offered() -> None:
    world = CheckoutUpsell(seed=3)
    units = world.sample_units(500)
    r0 = world.expected_reward(units, np.zeros(500))
    r1 = world.expected_reward(units, np.ones(500))
    np.testing.assert_allclose(r0, world.baseline(units))
    np.testing.assert_allclose(r1 - r0, world.effect(units))
    assert (r0 > 0).all() and (r1 > 0).all()


def test_effect_is_heterogeneous_in_sign() -> None:
    world = CheckoutUpsell(seed=4)
    units = world.sample_units(5000)
    tau = world.effect(units)
    assert 0.3 < np.mean(tau > 0) < 0.7
    # bargain hunters with small baskets gain, big baskets without affinity lose
    helped = (units.column("discount_affinity") > 0.8) & (units.column("basket_value") < 30)
    hurt = (units.column("discount_affinity") < 0.2) & (units.column("basket_value") > 60)
    assert (tau[helped] > 0).all() and (tau[hurt] < 0).all()


def test_oracle_beats_random_and_policy_values() -> None:
    world = CheckoutUpsell(seed=5)
    units = world.sample_units(4000)
    oracle_actions = (world.effect(units) > 0).astype(int)
    values = world.policy_values(units, oracle_actions)
    assert values["oracle"] > values["random"] + 0.5
    assert values["model"] == pytest.approx(values["oracle"])
    assert values["gap_closed"] == pytest.approx(1.0)
    assert world.policy_values(units, 1 - oracle_actions)["gap_closed"] < -0.9


def test_sampled_outcomes_average_to_the_expected_reward_within_the_window() -> None:
    world = CheckoutUpsell(seed=6, window_s=600)
    units = world.sample_units(40000)
    actions = np.random.default_rng(0).integers(0, 2, len(units))
    times = np.full(len(units), 1_700_000_000_000, dtype=np.int64)
    rows, values, event_ms = world.sample_outcomes(units, actions, times)
    realised = np.zeros(len(units))
    realised[rows] = values
    expected = world.expected_reward(units, actions)
    assert abs(realised.mean() - expected.mean()) < 0.01 * expected.mean()
    assert (event_ms > times[rows]).all() and (event_ms < times[rows] + 600_000).all()


def test_units_and_blueprint_agree() -> None:
    world = CheckoutUpsell(seed=1)
    blueprint = world.blueprint()
    assert [f.name for f in blueprint.features] == list(FEATURES)
    assert list(blueprint.features[-1].vocabulary) == list(REGIONS)
    assert blueprint.default_decision.action == "no_offer"
    features = world.sample_units(2).features(1)
    assert set(features) == set(FEATURES) and features["region"] in REGIONS
    again = CheckoutUpsell(seed=1).sample_units(2)
    assert again.features(1) == features
