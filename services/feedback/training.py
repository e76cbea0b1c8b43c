"""Columnar training batches: joined decisions of one blueprint version, packed as
``ReadTrainingDataResponse`` (little-endian columns, docs/internals.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.services.feedback.rewards import RewardRule, join_rewards
from loopwise.store.feedback import OutcomeRow, StoredDecision
from loopwise.tensors import F32, I32, I64, pack


@dataclass
class JoinInput:
    """A decision with the outcomes stored for it (by event time)."""

    decision: StoredDecision
    outcomes: list[OutcomeRow]


def join_decisions(rule: RewardRule, items: Sequence[JoinInput]):
    """Run :func:`join_rewards` over decisions and their outcomes; returns the join
    result and the flat list of outcomes its indices refer to."""
    flat: list[OutcomeRow] = []
    owners: list[int] = []
    for i, item in enumerate(items):
        flat.extend(item.outcomes)
        owners.extend([i] * len(item.outcomes))
    joined = join_rewards(
        rule,
        np.array([item.decision.decision_time_ms for item in items], dtype=np.int64),
        np.array(owners, dtype=np.int64),
        np.array([o.event_time_ms for o in flat], dtype=np.int64),
        np.array([o.value for o in flat], dtype=np.float64),
        [o.name for o in flat],
    )
    return joined, flat


def feature_matrix(blobs: Sequence[bytes], width: int) -> np.ndarray:
    """[rows, width] float32 from packed feature blobs; a blob of another width is
    cut or padded with NaN (missing)."""
    out = np.full((len(blobs), width), np.nan, dtype=F32)
    for i, blob in enumerate(blobs):
        values = np.frombuffer(blob, dtype=F32)
        k = min(width, len(values))
        out[i, :k] = values[:k]
    return out


def build_batch(version: int, blueprint: bp.Blueprint, rule: RewardRule,
                items: Sequence[JoinInput]) -> fpb.ReadTrainingDataResponse:
    """One columnar batch for decisions of blueprint ``version`` (all of that version)."""
    records = [item.decision.record for item in items]
    n = len(items)
    feature_names = [f.name for f in blueprint.features]
    n_actions = max(len(blueprint.actions), 1)
    joined, flat = join_decisions(rule, items)

    probabilities = np.full((n, n_actions), np.nan, dtype=np.float64)
    propensities = np.full(n, np.nan, dtype=np.float64)
    for i, r in enumerate(records):
        p = np.asarray(r.action_probabilities[:n_actions], dtype=np.float64)
        probabilities[i, : len(p)] = p
        if 0 <= r.action_index < n_actions:
            propensities[i] = probabilities[i, r.action_index]
    labels = [flat[j].label if j >= 0 else "" for j in joined.last_outcome.tolist()]

    return fpb.ReadTrainingDataResponse(
        blueprint_version=version,
        feature_names=feature_names,
        rows=n,
        features=pack(feature_matrix([r.features for r in records], len(feature_names)), F32),
        decision_ids=[r.decision_id for r in records],
        decision_times_ms=pack(np.array([item.decision.decision_time_ms for item in items]), I64),
        action_indices=pack(np.array([r.action_index for r in records]), I32),
        propensities=pack(propensities, F32),
        action_probabilities=pack(probabilities, F32),
        n_actions=n_actions,
        rewards=pack(joined.rewards, F32),
        outcome_counts=pack(joined.counts, I32),
        labels=labels,
        model_versions=pack(np.array([r.model_version for r in records]), I64),
        arms=[r.arm for r in records],
        explored=bytes(int(r.explored) for r in records),
    )
