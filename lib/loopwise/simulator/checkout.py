"""The "checkout_upsell" product: who the units are and what an offer really does.

At checkout a unit may be shown a discount offer (action ``offer``) or not
(``no_offer``). The reward is the value of the purchases made within the reward
window. The offer raises spending for bargain hunters with small baskets and
lowers it for big baskets (the discount costs more than it brings), so the true
effect τ(x) is positive for some units and negative for others. Expected rewards
are exact, so a policy's value is the mean expected reward of the actions it chose.

A second metric, returns: a unit returns its order (outcome ``return``, value 1)
with probability ``RETURN_BASE_RATE``, raised by the offer by ``return_effect(x)``
(more on mobile). :meth:`CheckoutUpsell.metrics_blueprint` declares both metrics
(``purchase`` summed, ``returns`` counted) with a value model; the best action then
depends on the weights: offer when τ(x) + w_returns / w_purchase · Δreturns(x) > 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from google.protobuf import duration_pb2

from loopwise.common.v1 import blueprint_pb2 as bp

USE_CASE = "checkout_upsell"
ACTIONS = ("no_offer", "offer")
REGIONS = ("north", "south", "east", "west")
NUMERIC = ("basket_value", "visits_30d", "tenure_days", "discount_affinity", "mobile")
FEATURES = (*NUMERIC, "region")
# Share of units who buy at all within the window; the purchase amount carries the rest.
PURCHASE_PROBABILITY = 0.8
_REGION_EFFECT = np.array([1.0, 0.0, -1.0, 0.5])
# Probability of a return without an offer; the offer adds return_effect(x).
RETURN_BASE_RATE = 0.05
METRICS = ("purchase", "returns")


@dataclass(frozen=True)
class Units:
    """A batch of units: the feature matrix in blueprint order (region as its code)."""

    matrix: np.ndarray  # [n, len(FEATURES)] float64; the last column is the region code

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def column(self, name: str) -> np.ndarray:
        """One feature column by name."""
        return self.matrix[:, FEATURES.index(name)]

    def features(self, row: int) -> dict[str, float | str]:
        """Named features of one unit, as ``Client.decide`` takes them."""
        values: dict[str, float | str] = {n: float(self.matrix[row, i]) for i, n in enumerate(NUMERIC)}
        values["region"] = REGIONS[int(self.matrix[row, FEATURES.index("region")])]
        return values


class CheckoutUpsell:
    """The hidden world of the checkout upsell product (seeded, reproducible).

    Args:
        seed: seed of the unit and outcome streams.
        window_s: the reward window in (simulated) seconds; outcomes arrive within it.
    """

    use_case = USE_CASE
    actions = ACTIONS
    feature_names = FEATURES

    def __init__(self, seed: int = 0, window_s: float = 1800.0) -> None:
        self.seed = seed
        self.window_s = window_s
        self.rng = np.random.default_rng(seed)
        # Returns draw from their own stream, so the purchases of a seed stay the same.
        self.returns_rng = np.random.default_rng([seed, 1])

    def blueprint(self, epsilon: float = 0.1) -> bp.Blueprint:
        """The use case as the product registers it."""
        numeric = [bp.Feature(name=n, type=bp.FEATURE_TYPE_NUMERIC, on_missing=bp.MISSING_RULE_NAN)
                   for n in NUMERIC]
        region = bp.Feature(name="region", type=bp.FEATURE_TYPE_CATEGORICAL, vocabulary=REGIONS,
                            on_unknown=bp.UNKNOWN_RULE_CODE, description="sales region")
        return bp.Blueprint(
            use_case=USE_CASE,
            description="Show a discount offer at checkout, or not.",
            features=[*numeric, region],
            kind=bp.DECISION_KIND_ACTION_VALUE,
            actions=list(ACTIONS),
            policy=bp.Policy(type=bp.POLICY_TYPE_EPSILON_GREEDY, epsilon=epsilon,
                             explore_without_model=True),
            default_decision=bp.DefaultDecision(action="no_offer"),
            reward=bp.RewardSpec(outcome_names=["purchase"], aggregation=bp.REWARD_AGGREGATION_SUM,
                                 window=duration_pb2.Duration(seconds=int(self.window_s)),
                                 default_reward=0.0),
            training=bp.TrainingSpec(min_rows=200, holdout_fraction=0.2),
            slices=["region", "mobile"],
        )

    def metrics_blueprint(self, weights: dict[str, float] | None = None, epsilon: float = 0.1,
                          returns_tolerance: float | None = None) -> bp.Blueprint:
        """The use case with two metrics, ``purchase`` (sum of purchase values) and
        ``returns`` (count of returns), combined by ``weights`` (default: purchase 1,
        returns -10); with ``returns_tolerance``, returns are a guardrail (lower is better)."""
        blueprint = self.blueprint(epsilon)
        blueprint.metrics.extend([
            bp.Metric(name="purchase", outcome_names=["purchase"], aggregation=bp.REWARD_AGGREGATION_SUM,
                      description="value of the purchases in the window"),
            bp.Metric(name="returns", outcome_names=["return"], aggregation=bp.REWARD_AGGREGATION_COUNT,
                      description="orders returned in the window"),
        ])
        blueprint.value_model.weights.update(weights if weights is not None else {"purchase": 1.0, "returns": -10.0})
        if returns_tolerance is not None:
            blueprint.guardrails.add(metric="returns", tolerance=returns_tolerance, lower_is_better=True)
        return blueprint

    def sample_units(self, n: int) -> Units:
        """``n`` new units drawn from the product's population."""
        rng = self.rng
        basket = np.clip(np.exp(rng.normal(3.6, 0.4, n)), 5.0, 300.0)
        visits = rng.poisson(4.0, n).astype(float)
        tenure = np.round(rng.exponential(400.0, n))
        affinity = rng.beta(2.0, 2.0, n)
        mobile = (rng.random(n) < 0.6).astype(float)
        region = rng.integers(0, len(REGIONS), n).astype(float)
        return Units(np.column_stack([basket, visits, tenure, affinity, mobile, region]))

    @staticmethod
    def baseline(units: Units) -> np.ndarray:
        """μ0(x): expected purchase value without an offer."""
        region = units.column("region").astype(int)
        return (0.5 * units.column("basket_value") + 1.5 * np.log1p(units.column("visits_30d"))
                + 2.0 * np.minimum(units.column("tenure_days"), 1000.0) / 1000.0
                - 2.0 * units.column("mobile") + _REGION_EFFECT[region])

    @staticmethod
    def effect(units: Units) -> np.ndarray:
        """τ(x): how much an offer changes the expected purchase value (net of its cost)."""
        return (16.0 * (units.column("discount_affinity") - 0.5)
                - 0.12 * (units.column("basket_value") - 40.0)
                + 1.5 * units.column("mobile") - 0.5)

    def expected_reward(self, units: Units, actions: np.ndarray) -> np.ndarray:
        """E[reward | x, action] exactly; ``actions`` are action indices (0 no_offer, 1 offer)."""
        return self.baseline(units) + np.asarray(actions, dtype=float) * self.effect(units)

    @staticmethod
    def return_effect(units: Units) -> np.ndarray:
        """How much an offer raises the probability of a return."""
        return 0.1 + 0.4 * units.column("mobile")

    def expected_returns(self, units: Units, actions: np.ndarray) -> np.ndarray:
        """E[returns | x, action] exactly (a probability: at most one return per unit)."""
        return RETURN_BASE_RATE + np.asarray(actions, dtype=float) * self.return_effect(units)

    def expected_value(self, units: Units, actions: np.ndarray, weights: dict[str, float]) -> np.ndarray:
        """E[Σ weight × metric | x, action] under a value model's ``weights``."""
        return (weights.get("purchase", 0.0) * self.expected_reward(units, actions)
                + weights.get("returns", 0.0) * self.expected_returns(units, actions))

    def best_actions(self, units: Units, weights: dict[str, float]) -> np.ndarray:
        """The action maximizing the weighted value of every unit (ties: no offer)."""
        n = len(units)
        return (self.expected_value(units, np.ones(n), weights)
                > self.expected_value(units, np.zeros(n), weights)).astype(int)

    def sample_returns(self, units: Units, actions: np.ndarray, decision_times_ms: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Sampled returns: (row index, event time in ms) of units that returned their
        order, within the first 80% of the window (value 1 each)."""
        returned = self.returns_rng.random(len(units)) < self.expected_returns(units, actions)
        delay_ms = self.returns_rng.uniform(0.02, 0.8, len(units)) * self.window_s * 1000.0
        rows = np.flatnonzero(returned)
        return rows, np.asarray(decision_times_ms, dtype=np.int64)[rows] + delay_ms[rows].astype(np.int64)

    def policy_values(self, units: Units, actions: np.ndarray) -> dict[str, float]:
        """Per-decision value of random, the given actions, and the oracle on ``units``."""
        r0 = self.expected_reward(units, np.zeros(len(units)))
        r1 = self.expected_reward(units, np.ones(len(units)))
        random = float(np.mean((r0 + r1) / 2))
        chosen = float(np.mean(self.expected_reward(units, actions)))
        oracle = float(np.mean(np.maximum(r0, r1)))
        return {"random": random, "model": chosen, "oracle": oracle,
                "gap_closed": (chosen - random) / (oracle - random) if oracle > random else 0.0}

    def sample_outcomes(self, units: Units, actions: np.ndarray, decision_times_ms: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sampled purchases: (row index, value, event time in ms) for units that bought.

        A unit buys with probability ``PURCHASE_PROBABILITY``; the amount is noisy
        with mean ``expected_reward / PURCHASE_PROBABILITY``, so the mean reward is
        exactly the expected reward. Each purchase happens at a random delay within
        the first 80% of the window.
        """
        expected = self.expected_reward(units, actions)
        bought = self.rng.random(len(units)) < PURCHASE_PROBABILITY
        sigma = 0.2
        noise = self.rng.lognormal(-sigma**2 / 2, sigma, len(units))
        # amounts are spending, never negative; the world keeps expected > 0 everywhere that matters
        amount = np.maximum(expected, 0.0) / PURCHASE_PROBABILITY * noise
        delay_ms = self.rng.uniform(0.02, 0.8, len(units)) * self.window_s * 1000.0
        rows = np.flatnonzero(bought)
        event_ms = np.asarray(decision_times_ms, dtype=np.int64)[rows] + delay_ms[rows].astype(np.int64)
        return rows, amount[rows], event_ms
