"""The reward join as plain functions: window, names, aggregations, default, late."""

from __future__ import annotations

import numpy as np
import pytest

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.services.feedback.rewards import FIRST, LAST, MAX, SUM, RewardRule, join_rewards
from tests.feedback.helpers import blueprint

# Two decisions at t=1000 and t=5000, window 100 ms. Outcomes (decision, time, value, name):
OUTCOMES = [
    (0, 1000, 1.0, "click"),     # at the decision time: counts
    (0, 1050, 5.0, "purchase"),  # inside
    (0, 1020, 2.0, "purchase"),  # inside, earlier than the previous one
    (0, 1100, -1.0, "click"),    # at the window's end: counts
    (0, 1101, 9.0, "purchase"),  # one ms late
    (0, 999, 7.0, "click"),      # before the decision: never counts, not late
    (1, 9000, 3.0, "click"),     # late for decision 1
]


def _join(rule: RewardRule):
    rows, times, values, names = zip(*OUTCOMES, strict=True)
    return join_rewards(rule, np.array([1000, 5000]), np.array(rows), np.array(times), np.array(values), names)


@pytest.mark.parametrize(("aggregation", "expected"), [
    (SUM, 1.0 + 5.0 + 2.0 - 1.0),
    (MAX, 5.0),
    (FIRST, 1.0),
    (LAST, -1.0),
])
def test_aggregations_over_the_window(aggregation: int, expected: float) -> None:
    joined = _join(RewardRule(window_ms=100, aggregation=aggregation, default_reward=-7.5))
    assert joined.rewards[0] == pytest.approx(expected)
    assert joined.rewards[1] == -7.5  # nothing counted: the default reward
    assert joined.counts.tolist() == [4, 0]
    assert joined.late.tolist() == [1, 1]
    assert joined.last_outcome.tolist() == [3, -1]


def test_outcome_names_select_what_counts() -> None:
    joined = _join(RewardRule(window_ms=100, outcome_names=frozenset({"purchase"}), aggregation=LAST))
    assert joined.counts.tolist() == [2, 0]
    assert joined.rewards[0] == 5.0  # the purchase at 1050 is the last counted one
    assert joined.late.tolist() == [1, 0]  # the late click of decision 1 is not selected
    assert joined.last_outcome[0] == 1


def test_ties_in_event_time_keep_the_given_order() -> None:
    rule = RewardRule(window_ms=10, aggregation=FIRST)
    joined = join_rewards(rule, np.array([0]), np.array([0, 0]), np.array([5, 5]), np.array([2.0, 3.0]), ["a", "a"])
    assert joined.rewards[0] == 2.0
    assert joined.last_outcome[0] == 1


def test_no_outcomes_gives_the_default_everywhere() -> None:
    rule = RewardRule(window_ms=10, default_reward=0.25)
    empty = np.zeros(0)
    joined = join_rewards(rule, np.array([1, 2, 3]), empty, empty, empty, [])
    assert joined.rewards.tolist() == [0.25] * 3
    assert joined.counts.tolist() == [0, 0, 0]


def test_rule_from_blueprint() -> None:
    rule = RewardRule.from_blueprint(blueprint(window_s=2.5, outcome_names=["x"],
                                               aggregation=bp.REWARD_AGGREGATION_MAX, default_reward=1.5))
    assert rule == RewardRule(window_ms=2500, outcome_names=frozenset({"x"}), aggregation=MAX, default_reward=1.5)
    assert RewardRule.from_blueprint(blueprint(aggregation=bp.REWARD_AGGREGATION_UNSPECIFIED)).aggregation == SUM
    assert rule.window_closed(1000, 3500) and not rule.window_closed(1000, 3499)


def test_metrics_join_on_their_own_and_the_reward_is_their_weighted_sum() -> None:
    from google.protobuf.duration_pb2 import Duration

    b = bp.Blueprint(
        kind=bp.DECISION_KIND_ACTION_VALUE, reward=bp.RewardSpec(window=Duration(nanos=100_000_000)),
        metrics=[
            bp.Metric(name="purchase", aggregation=bp.REWARD_AGGREGATION_SUM),  # outcomes named "purchase"
            bp.Metric(name="clicks", outcome_names=["click"], aggregation=bp.REWARD_AGGREGATION_COUNT,
                      window=Duration(seconds=5), default_value=-1.0),  # a longer window of its own
        ],
        value_model=bp.ValueModel(weights={"purchase": 2.0, "clicks": 0.5}),
    )
    rule = RewardRule.from_blueprint(b)
    assert rule.metric_names == ("purchase", "clicks") and rule.weights == (2.0, 0.5)
    assert rule.window_ms == 5000 and rule.outcome_names == {"purchase", "click"}
    joined = _join(rule)
    assert joined.metric_values is not None
    # Decision 0: purchases 5 + 2 in 100 ms (the one at 1101 ms is late for the metric);
    # clicks at 1000 and 1100 count in 5 s (the one at 999 ms is before the decision).
    # Decision 1: no purchase (default 0); its click at 9000 ms is within 5 s of 5000 ms.
    assert joined.metric_values.tolist() == [[7.0, 2.0], [0.0, 1.0]]
    assert joined.rewards.tolist() == [2.0 * 7.0 + 0.5 * 2.0, 0.5 * 1.0]
    # A decision with no outcome gets every metric's default.
    empty = join_rewards(rule, np.array([0]), np.zeros(0), np.zeros(0), np.zeros(0), [])
    assert empty.metric_values.tolist() == [[0.0, -1.0]] and empty.rewards.tolist() == [-0.5]
