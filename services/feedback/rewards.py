"""The reward join (docs/internals.md, "Training targets"): plain functions on arrays.

An outcome *counts* for its decision when its name is selected by the reward spec
(``outcome_names``, empty = all) and ``decision_time ≤ event_time ≤ decision_time +
window``. Counted outcomes combine by the aggregation (sum, max, first, last by event
time); a decision with none gets ``default_reward``. A selected outcome after the
window is *late*: stored and counted, never part of the reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.store.feedback import CountingRule

SUM = bp.REWARD_AGGREGATION_SUM
MAX = bp.REWARD_AGGREGATION_MAX
FIRST = bp.REWARD_AGGREGATION_FIRST
LAST = bp.REWARD_AGGREGATION_LAST
COUNT = bp.REWARD_AGGREGATION_COUNT


def _window_ms(duration) -> int:
    return int(duration.seconds * 1000 + duration.nanos // 1_000_000)


@dataclass(frozen=True)
class RewardRule:
    """One blueprint version's reward spec, in milliseconds of event time."""

    window_ms: int
    outcome_names: frozenset[str] = frozenset()
    aggregation: int = SUM
    default_reward: float = 0.0
    # Blueprints with metrics: one rule per metric (in blueprint order), their names
    # and value-model weights; empty otherwise.
    metrics: tuple[RewardRule, ...] = ()
    metric_names: tuple[str, ...] = ()
    weights: tuple[float, ...] = ()

    @classmethod
    def from_blueprint(cls, blueprint: bp.Blueprint) -> RewardRule:
        """The rule of a blueprint's ``reward`` (unspecified aggregation means sum), or
        of its metrics and value model when it declares metrics."""
        spec = blueprint.reward
        window_ms = _window_ms(spec.window)
        if not blueprint.metrics:
            return cls(
                window_ms=window_ms,
                outcome_names=frozenset(spec.outcome_names),
                aggregation=spec.aggregation or SUM,
                default_reward=float(spec.default_reward),
            )
        metrics = tuple(metric_rule(metric, window_ms) for metric in blueprint.metrics)
        weights = blueprint.value_model.weights
        return cls(
            window_ms=max(m.window_ms for m in metrics),
            outcome_names=frozenset().union(*(m.outcome_names for m in metrics)),
            metrics=metrics,
            metric_names=tuple(m.name for m in blueprint.metrics),
            weights=tuple(float(weights.get(m.name, 0.0)) for m in blueprint.metrics),
        )

    def counting(self) -> CountingRule:
        """What the store needs to count joins and late outcomes."""
        return CountingRule(self.window_ms, self.outcome_names)

    def selects(self, name: str) -> bool:
        """The reward spec selects outcomes of this name."""
        return not self.outcome_names or name in self.outcome_names

    def window_closed(self, decision_time_ms: int, now_ms: int) -> bool:
        """The decision's reward window has closed at ``now_ms``."""
        return decision_time_ms + self.window_ms <= now_ms


def metric_rule(metric: bp.Metric, reward_window_ms: int) -> RewardRule:
    """The join rule of one metric (its window defaults to the reward window, its
    outcome names to the metric's own name)."""
    return RewardRule(
        window_ms=_window_ms(metric.window) or reward_window_ms,
        outcome_names=frozenset(metric.outcome_names or [metric.name]),
        aggregation=metric.aggregation or SUM,
        default_reward=float(metric.default_value),
    )


@dataclass(frozen=True)
class JoinedRewards:
    """Per-decision results of a join; every array has one entry per decision."""

    rewards: np.ndarray  # float64: the reward after the spec
    counts: np.ndarray  # int32: outcomes that counted
    late: np.ndarray  # int32: selected outcomes after the window
    last_outcome: np.ndarray  # int64: index (into the outcome arrays) of the last counted outcome, -1 if none
    # float64 [decisions, metrics]: every metric's value (rules with metrics only).
    metric_values: np.ndarray | None = None


def join_rewards(
    rule: RewardRule,
    decision_times_ms: np.ndarray,
    outcome_decisions: np.ndarray,
    outcome_times_ms: np.ndarray,
    outcome_values: np.ndarray,
    outcome_names: Sequence[str],
) -> JoinedRewards:
    """Join outcomes to decisions by ``rule``.

    ``decision_times_ms``: [n] int64. The outcome arrays have one entry per outcome
    (m of them): ``outcome_decisions`` is the index of its decision in
    ``decision_times_ms``; ``outcome_times_ms`` its event time; ``outcome_values`` its
    value; ``outcome_names`` its name. Ties in event time keep the outcomes' order.
    With metrics, every metric is joined by its own rule and the reward is the
    weighted sum; counts, late outcomes and the last outcome follow the union rule.
    """
    args = (decision_times_ms, outcome_decisions, outcome_times_ms, outcome_values, outcome_names)
    joined = _join(rule, *args)
    if not rule.metrics:
        return joined
    values = np.stack([_join(metric, *args).rewards for metric in rule.metrics], axis=1)
    rewards = values @ np.asarray(rule.weights, dtype=np.float64)
    return replace(joined, rewards=rewards, metric_values=values)


def _join(
    rule: RewardRule,
    decision_times_ms: np.ndarray,
    outcome_decisions: np.ndarray,
    outcome_times_ms: np.ndarray,
    outcome_values: np.ndarray,
    outcome_names: Sequence[str],
) -> JoinedRewards:
    """:func:`join_rewards` of one rule without metrics."""
    decision_times = np.asarray(decision_times_ms, dtype=np.int64)
    n = len(decision_times)
    rows = np.asarray(outcome_decisions, dtype=np.int64)
    times = np.asarray(outcome_times_ms, dtype=np.int64)
    values = np.asarray(outcome_values, dtype=np.float64)
    selected = np.fromiter((rule.selects(name) for name in outcome_names), dtype=bool, count=len(rows))

    start = decision_times[rows] if len(rows) else np.zeros(0, np.int64)
    in_window = selected & (times >= start) & (times <= start + rule.window_ms)
    late_mask = selected & (times > start + rule.window_ms)

    counts = np.bincount(rows[in_window], minlength=n).astype(np.int32)
    late = np.bincount(rows[late_mask], minlength=n).astype(np.int32)
    rewards = np.full(n, rule.default_reward, dtype=np.float64)
    last_outcome = np.full(n, -1, dtype=np.int64)

    counted = np.flatnonzero(in_window)
    if len(counted):
        # Counted outcomes sorted by (decision, event time); lexsort is stable.
        order = counted[np.lexsort((times[counted], rows[counted]))]
        sorted_rows = rows[order]
        groups, first_pos = np.unique(sorted_rows, return_index=True)
        last_pos = np.searchsorted(sorted_rows, groups, side="right") - 1
        last_outcome[groups] = order[last_pos]
        if rule.aggregation == MAX:
            best = np.full(n, -np.inf)
            np.maximum.at(best, sorted_rows, values[order])
            rewards[groups] = best[groups]
        elif rule.aggregation == FIRST:
            rewards[groups] = values[order[first_pos]]
        elif rule.aggregation == LAST:
            rewards[groups] = values[order[last_pos]]
        elif rule.aggregation == COUNT:
            rewards[groups] = counts[groups]
        else:
            rewards[groups] = np.bincount(sorted_rows, weights=values[order], minlength=n)[groups]
    return JoinedRewards(rewards=rewards, counts=counts, late=late, last_outcome=last_outcome)
