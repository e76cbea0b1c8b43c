"""Training rows of ranking use cases: one row per shown item (docs/ranking.md).

A ranking decision is stored with its ranked items (DecisionRecord.ranked_items); an
outcome names the item it belongs to (Outcome.item_id). ReadTrainingData on a ranking
use case returns, for every shown item of every decision whose window has closed, the
item's model row (the request's features overlaid with the item's), its candidate
index (``action_indices``), its position, its propensity (the probability of the item
at its position given the items above), the prefix propensity down to its position,
its id, and its reward: the reward spec applied to the outcomes naming the item.
Outcomes without an item id (about the whole ranking) are not part of item rows.
Decisions stored without ranked items (e.g. logged before rankings recorded them)
give no rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.services.feedback.rewards import RewardRule
from loopwise.services.feedback.training import feature_matrix, join_decisions
from loopwise.store.feedback import FeedbackStore, OutcomeRow, StoredDecision
from loopwise.tensors import F32, I32, I64, pack

# Decisions read per store page.
PAGE_DECISIONS = 2000


def is_ranking(rules: dict[int, tuple[bp.Blueprint, RewardRule]]) -> bool:
    """The use case ranks candidates (its latest known version is a ranking)."""
    return bool(rules) and rules[max(rules)][0].kind == bp.DECISION_KIND_RANKING


def item_rows(decision: StoredDecision, unshown: bool = False) -> list[tuple[int, fpb.RankedItem, float]]:
    """The shown items of a decision by position: (candidate index, item, prefix
    propensity); with ``unshown``, then the other candidates in request order (prefix 0)."""
    items = decision.record.ranked_items
    shown = sorted(((i, item) for i, item in enumerate(items) if item.position > 0),
                   key=lambda pair: pair[1].position)
    out, prefix = [], 1.0
    for index, item in shown:
        prefix *= item.propensity
        out.append((index, item, prefix))
    if unshown:
        out += [(i, item, 0.0) for i, item in enumerate(items) if item.position <= 0]
    return out


class _ItemBatch:
    """Item rows of one blueprint version, collected until a batch is full."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.rows: list[tuple[StoredDecision, int, fpb.RankedItem, float, list[OutcomeRow]]] = []

    def build(self, blueprint: bp.Blueprint, rule: RewardRule) -> fpb.ReadTrainingDataResponse:
        """The columnar batch (see ReadTrainingDataResponse, ranking fields)."""
        names = [f.name for f in blueprint.features]
        times = np.array([d.decision_time_ms for d, *_ in self.rows], dtype=np.int64)
        joined, _ = join_decisions(rule, times, [own for *_, own in self.rows])
        records = [d.record for d, *_ in self.rows]
        return fpb.ReadTrainingDataResponse(
            blueprint_version=self.version, feature_names=names, rows=len(self.rows),
            features=pack(feature_matrix([item.features for _, _, item, _, _ in self.rows], len(names)), F32),
            decision_ids=[r.decision_id for r in records],
            decision_times_ms=pack(times, I64),
            action_indices=pack(np.array([index for _, index, *_ in self.rows], dtype=np.int32), I32),
            propensities=pack(np.array([item.propensity for _, _, item, _, _ in self.rows]), F32),
            n_actions=1,
            rewards=pack(joined.rewards, F32),
            outcome_counts=pack(joined.counts, I32),
            model_versions=pack(np.array([r.model_version for r in records], dtype=np.int64), I64),
            arms=[r.arm for r in records],
            explored=np.array([r.explored for r in records], dtype=np.uint8).tobytes(),
            serving_latencies_ms=pack(np.array([r.serving_latency_ms for r in records]), F32),
            positions=pack(np.array([item.position for _, _, item, _, _ in self.rows], dtype=np.int32), I32),
            item_ids=[item.item_id for _, _, item, _, _ in self.rows],
            prefix_propensities=pack(np.array([prefix for *_, prefix, _ in self.rows]), F32),
        )


async def ranking_batches(store: FeedbackStore, use_case: str, start_ms: int, end_ms: int,
                          include_fallback: bool, include_open_windows: bool, now_ms: int, batch_rows: int,
                          rules: dict[int, tuple[bp.Blueprint, RewardRule]], include_unshown: bool = False,
                          ) -> AsyncIterator[fpb.ReadTrainingDataResponse]:
    """Per-item batches of a ranking use case in decision-time order, each of one
    blueprint version (versions in ``rules`` only; others are skipped); a decision's
    rows are never split across batches (a decision with more rows than
    ``batch_rows`` makes a batch of its own). ``include_unshown``: also the candidates not
    shown (position 0)."""
    after: tuple[int, str] | None = None
    pending: _ItemBatch | None = None
    while True:
        page = await store.decision_page(use_case, start_ms, end_ms, include_fallback, after, PAGE_DECISIONS)
        if not page:
            break
        after = (page[-1].decision_time_ms, page[-1].record.decision_id)
        by_item: dict[tuple[str, str], list[OutcomeRow]] = defaultdict(list)
        for o in await store.outcomes_between(use_case, page[0].decision_time_ms, page[-1].decision_time_ms):
            if o.item_id:
                by_item[(o.decision_id, o.item_id)].append(o)
        for decision in page:
            version = decision.record.blueprint_version
            if version not in rules or rules[version][0].kind != bp.DECISION_KIND_RANKING:
                continue
            if not include_open_windows and decision.decision_time_ms + rules[version][1].window_ms > now_ms:
                continue
            rows = item_rows(decision, include_unshown)
            if pending is not None and pending.rows and (
                    pending.version != version or len(pending.rows) + len(rows) > batch_rows):
                yield pending.build(*rules[pending.version])
                pending = None
            for index, item, prefix in rows:
                if pending is None:
                    pending = _ItemBatch(version)
                pending.rows.append((decision, index, item, prefix,
                                     by_item.get((decision.record.decision_id, item.item_id), [])))
        if len(page) < PAGE_DECISIONS:
            break
    if pending is not None and pending.rows:
        yield pending.build(*rules[pending.version])
