"""The "product_feed" ranking product: requests, candidates, position bias and clicks.

Each request comes from a user with two taste coordinates and offers ``n_candidates``
items, each with two topic coordinates and an observed quality. An item's relevance
(the probability of a click once it is looked at) depends on the match of taste and
topic and on the item's hidden quality, of which the logged quality is a noisy copy.
Users look at position j with probability ``EXAMINATION[j]`` (position bias), so a
ranking's expected clicks are exactly Σ_j examination_j × relevance(item at j) and
the oracle shows the items by true relevance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from google.protobuf import duration_pb2

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.ranking import expected_clicks

USE_CASE = "product_feed"
CONTEXT_FEATURES = ("taste_a", "taste_b", "mobile")
ITEM_FEATURES = ("topic_a", "topic_b", "quality", "price")
FEATURES = (*CONTEXT_FEATURES, *ITEM_FEATURES)
# Probability that a user looks at positions 1..5.
EXAMINATION = np.array([1.0, 0.62, 0.42, 0.3, 0.22])
SHOWN = len(EXAMINATION)


@dataclass(frozen=True)
class Request:
    """One ranking request: the context features and its candidates' features and
    hidden relevance."""

    context: np.ndarray  # [len(CONTEXT_FEATURES)]
    items: np.ndarray  # [C, len(ITEM_FEATURES)]
    relevance: np.ndarray  # [C] hidden click probability when examined
    item_ids: list[str]

    def rows(self) -> np.ndarray:
        """The candidates' model rows [C, len(FEATURES)] (context overlaid with the item)."""
        return np.hstack([np.repeat(self.context[None, :], self.items.shape[0], axis=0), self.items])

    def named(self) -> tuple[dict[str, float], list[tuple[str, dict[str, float]]]]:
        """Context features and (id, item features) by name, as ``Client.rank`` takes them."""
        context = {n: float(v) for n, v in zip(CONTEXT_FEATURES, self.context, strict=True)}
        items = [(self.item_ids[i], {n: float(v) for n, v in zip(ITEM_FEATURES, self.items[i], strict=True)})
                 for i in range(self.items.shape[0])]
        return context, items


class ProductFeed:
    """The hidden world of the product feed (seeded, reproducible)."""

    use_case = USE_CASE
    feature_names = FEATURES
    examination = EXAMINATION

    def __init__(self, seed: int = 0, n_candidates: int = 10) -> None:
        self.rng = np.random.default_rng(seed)
        self.n_candidates = n_candidates
        self._next_item = 0

    def blueprint(self, temperature: float = 0.5, top_k: int = SHOWN, window_s: float = 1800.0) -> bp.Blueprint:
        """The use case as the product registers it (Plackett–Luce at ``temperature``)."""
        features = [bp.Feature(name=n, type=bp.FEATURE_TYPE_NUMERIC, on_missing=bp.MISSING_RULE_NAN)
                    for n in FEATURES]
        return bp.Blueprint(
            use_case=USE_CASE,
            description="Order the feed's candidate items for a user.",
            features=features,
            kind=bp.DECISION_KIND_RANKING,
            policy=bp.Policy(type=bp.POLICY_TYPE_SOFTMAX, temperature=temperature,
                             explore_without_model=True, ranking_top_k=top_k),
            reward=bp.RewardSpec(outcome_names=["click"], aggregation=bp.REWARD_AGGREGATION_SUM,
                                 window=duration_pb2.Duration(seconds=int(window_s)), default_reward=0.0),
            training=bp.TrainingSpec(min_rows=200, holdout_fraction=0.2),
        )

    def sample_request(self) -> Request:
        """A new request with fresh candidates."""
        rng, c = self.rng, self.n_candidates
        taste = rng.normal(0.0, 1.0, 2)
        mobile = float(rng.random() < 0.5)
        topics = rng.normal(0.0, 1.0, (c, 2))
        hidden_quality = rng.normal(0.0, 1.0, c)
        quality = hidden_quality + rng.normal(0.0, 0.3, c)
        price = np.exp(rng.normal(3.0, 0.5, c))
        logit = 1.4 * (topics @ taste) + 1.0 * hidden_quality - 0.4 * mobile - 1.2
        relevance = 1.0 / (1.0 + np.exp(-logit))
        ids = [f"item-{self._next_item + i}" for i in range(c)]
        self._next_item += c
        return Request(np.array([taste[0], taste[1], mobile]),
                       np.column_stack([topics, quality, price]), relevance, ids)

    def sample_clicks(self, request: Request, shown: np.ndarray) -> np.ndarray:
        """Clicks [len(shown)] (0/1) on the items shown in order (candidate indices)."""
        k = min(len(shown), SHOWN)
        p = EXAMINATION[:k] * request.relevance[np.asarray(shown[:k], dtype=np.int64)]
        return (self.rng.random(k) < p).astype(np.float64)

    @staticmethod
    def expected_clicks(request: Request, shown: np.ndarray) -> float:
        """Exact expected clicks of showing ``shown`` (candidate indices, top first)."""
        return expected_clicks(EXAMINATION, request.relevance, np.asarray(shown, dtype=np.int64))

    @staticmethod
    def oracle_clicks(request: Request) -> float:
        """Expected clicks of the best ranking (by true relevance)."""
        return expected_clicks(EXAMINATION, request.relevance, np.argsort(-request.relevance, kind="stable"))

    @staticmethod
    def random_clicks(request: Request) -> float:
        """Expected clicks of a uniformly random ranking."""
        return float(EXAMINATION.sum() * request.relevance.mean())
