"""Columnar training batches: joined decisions of one blueprint version, packed as
``ReadTrainingDataResponse`` (little-endian columns, docs/internals.md).

Decisions arrive as :class:`DecisionColumns` pages (no record per row); a batch is
built with array operations, the reward join included."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.services.feedback.rewards import JoinedRewards, RewardRule, join_rewards
from loopwise.store.feedback import DecisionColumns, OutcomeRow
from loopwise.tensors import F32, I32, I64, pack

_F64 = np.dtype("<f8")


def join_decisions(rule: RewardRule, decision_times_ms: np.ndarray,
                   outcomes: Sequence[Sequence[OutcomeRow]]) -> tuple[JoinedRewards, list[OutcomeRow]]:
    """Run :func:`join_rewards` over decisions (their times) and the outcomes stored
    for each (by event time); returns the join result and the flat list of outcomes
    its indices refer to."""
    flat: list[OutcomeRow] = []
    owners: list[int] = []
    for i, own in enumerate(outcomes):
        if own:
            flat.extend(own)
            owners.extend([i] * len(own))
    joined = join_rewards(
        rule,
        np.asarray(decision_times_ms, dtype=np.int64),
        np.array(owners, dtype=np.int64),
        np.array([o.event_time_ms for o in flat], dtype=np.int64),
        np.array([o.value for o in flat], dtype=np.float64),
        [o.name for o in flat],
    )
    return joined, flat


def blob_matrix(blobs: Sequence[bytes], width: int, dtype: np.dtype) -> np.ndarray:
    """[rows, width] of ``dtype`` from packed blobs; a blob of another width is cut or
    padded with NaN (missing). Blobs of the expected width are decoded in one go."""
    size = width * dtype.itemsize
    if all(len(blob) == size for blob in blobs):
        return np.frombuffer(b"".join(blobs), dtype=dtype).reshape(len(blobs), width).copy()
    out = np.full((len(blobs), width), np.nan, dtype=dtype)
    for i, blob in enumerate(blobs):
        values = np.frombuffer(blob[: len(blob) - len(blob) % dtype.itemsize], dtype=dtype)
        k = min(width, len(values))
        out[i, :k] = values[:k]
    return out


def feature_matrix(blobs: Sequence[bytes], width: int) -> np.ndarray:
    """[rows, width] float32 from packed feature blobs (see :func:`blob_matrix`)."""
    return blob_matrix(blobs, width, np.dtype(F32))


def build_batch(version: int, blueprint: bp.Blueprint, rule: RewardRule, decisions: DecisionColumns,
                outcomes: dict[str, list[OutcomeRow]]) -> fpb.ReadTrainingDataResponse:
    """One columnar batch for decisions of blueprint ``version`` (all of that version);
    ``outcomes`` maps a decision id to its outcomes by event time (ids absent: none)."""
    n = len(decisions)
    feature_names = [f.name for f in blueprint.features]
    n_actions = max(len(blueprint.actions), 1)
    joined, flat = join_decisions(rule, decisions.times_ms,
                                  [outcomes.get(i, ()) for i in decisions.decision_ids])

    probabilities = blob_matrix(decisions.action_probabilities, n_actions, _F64)
    actions = decisions.action_indices
    inside = (actions >= 0) & (actions < n_actions)
    propensities = np.where(inside, probabilities[np.arange(n), np.clip(actions, 0, n_actions - 1)], np.nan)
    labels = [flat[j].label if j >= 0 else "" for j in joined.last_outcome.tolist()]

    return fpb.ReadTrainingDataResponse(
        blueprint_version=version,
        feature_names=feature_names,
        rows=n,
        features=pack(feature_matrix(decisions.features, len(feature_names)), F32),
        decision_ids=decisions.decision_ids,
        decision_times_ms=pack(decisions.times_ms, I64),
        action_indices=pack(actions, I32),
        propensities=pack(propensities, F32),
        action_probabilities=pack(probabilities, F32),
        n_actions=n_actions,
        rewards=pack(joined.rewards, F32),
        outcome_counts=pack(joined.counts, I32),
        labels=labels,
        model_versions=pack(decisions.model_versions, I64),
        arms=decisions.arms,
        explored=decisions.explored.astype(np.uint8).tobytes(),
        serving_latencies_ms=pack(decisions.latencies_ms, F32),
        metric_names=list(rule.metric_names),
        metric_values=pack(joined.metric_values, F32) if joined.metric_values is not None else b"",
    )
