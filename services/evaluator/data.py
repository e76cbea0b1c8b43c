"""From feedback's columnar training batches to the arrays of an effect estimation.

Rows follow the blueprint version that logged them; columns are aligned by name onto
the current blueprint's features (a feature a version did not have is NaN), and
action indices are read against that version's actions (docs/internals.md,
"Treatments").
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.tensors import F32, I32, I64, unpack_matrix, unpack_vector

# The actions of a blueprint version, by version number.
ActionsOf = Callable[[int], Awaitable[list[str]]]
# The experiment arms of a blueprint version with their traffic shares.
ArmsOf = Callable[[int], Awaitable[dict[str, float]]]


@dataclass
class EffectData:
    """Rows of one treated action against one control action.

    ``x`` is [n, F] float64 (NaN = missing), ``t`` is 1 for treated rows, ``y`` the
    reward and ``propensity`` the logged probability of treatment p_t / (p_t + p_c);
    per row, ``outcome_counts`` the outcomes that counted, ``blueprint_versions`` and
    ``model_versions`` what logged and decided it (for the report's data quality)."""

    feature_names: list[str]
    x: np.ndarray
    t: np.ndarray
    y: np.ndarray
    propensity: np.ndarray
    rows_read: int
    times_ms: np.ndarray | None = None
    outcomes: int = 0
    outcome_counts: np.ndarray | None = None
    blueprint_versions: np.ndarray | None = None
    model_versions: np.ndarray | None = None


def model_versions_of(batch: fpb.ReadTrainingDataResponse) -> np.ndarray:
    """The model version of each row of a batch (0 where none, or not sent)."""
    return unpack_vector(batch.model_versions, I64) if batch.model_versions else np.zeros(batch.rows, np.int64)


def rows_of(batch: fpb.ReadTrainingDataResponse, feature_names: list[str]):
    """(features aligned by name [n, F], action indices, probabilities, rewards, times,
    outcome counts) of one batch."""
    n = batch.rows
    names = list(batch.feature_names)
    feats = unpack_matrix(batch.features, n, len(names), "features", F32)
    x = np.full((n, len(feature_names)), np.nan)
    for j, name in enumerate(feature_names):
        if name in names:
            x[:, j] = feats[:, names.index(name)]
    chosen = unpack_vector(batch.action_indices, I32)
    probs = (unpack_matrix(batch.action_probabilities, n, batch.n_actions, "action_probabilities", F32)
             if batch.n_actions else np.full((n, 0), np.nan, dtype=np.float32))
    rewards = unpack_vector(batch.rewards, F32).astype(np.float64)
    times = unpack_vector(batch.decision_times_ms, I64) if batch.decision_times_ms else np.zeros(n, np.int64)
    counts = unpack_vector(batch.outcome_counts, I32) if batch.outcome_counts else np.zeros(n, np.int32)
    return x, chosen, probs, rewards, times, counts


class _Collected:
    """Kept rows of several batches, concatenated at the end."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.outcomes = 0
        self.rows_read = 0

    def add(self, keep: np.ndarray, x: np.ndarray, t: np.ndarray, y: np.ndarray, e: np.ndarray,
            when: np.ndarray, counts: np.ndarray, batch: fpb.ReadTrainingDataResponse) -> None:
        """Keep the rows of ``keep``; ``t`` and ``e`` are already the kept rows'."""
        kept = int(keep.sum())
        self.parts.append((x[keep], t, y[keep], e, when[keep], counts[keep].astype(np.int64),
                           np.full(kept, batch.blueprint_version, np.int64), model_versions_of(batch)[keep]))
        self.outcomes += int(counts[keep].sum())

    def build(self, feature_names: list[str]) -> EffectData:
        """The arrays of all kept rows."""
        if not self.parts:
            empty = np.empty(0, np.int64)
            return EffectData(feature_names, np.empty((0, len(feature_names))), empty, np.empty(0), np.empty(0),
                              self.rows_read, empty, self.outcomes, empty, empty, empty)
        x, t, y, e, when, counts, blueprints, models = (np.concatenate(column) for column in zip(*self.parts, strict=True))
        return EffectData(feature_names, x, t, y, e, self.rows_read, when, self.outcomes, counts, blueprints, models)


async def collect_effect_data(
    batches: AsyncIterable[fpb.ReadTrainingDataResponse],
    feature_names: list[str],
    treatment: str,
    control: str,
    actions_of: ActionsOf,
) -> EffectData:
    """Keep the rows whose action is ``treatment`` or ``control`` and build the arrays."""
    collected = _Collected()
    actions_cache: dict[int, list[str]] = {}
    async for batch in batches:
        n = batch.rows
        if n == 0:
            continue
        collected.rows_read += n
        if batch.blueprint_version not in actions_cache:
            actions_cache[batch.blueprint_version] = await actions_of(batch.blueprint_version)
        actions = actions_cache[batch.blueprint_version]
        x, chosen, probs, rewards, when, counts = rows_of(batch, feature_names)
        t_idx = actions.index(treatment) if treatment in actions else -1
        c_idx = actions.index(control) if control in actions else -1
        keep = np.zeros(n, dtype=bool)
        if t_idx >= 0:
            keep |= chosen == t_idx
        if c_idx >= 0:
            keep |= chosen == c_idx
        if not keep.any():
            continue
        p_t = probs[:, t_idx].astype(np.float64) if t_idx >= 0 and probs.shape[1] else np.zeros(n)
        p_c = probs[:, c_idx].astype(np.float64) if c_idx >= 0 and probs.shape[1] else np.zeros(n)
        total = p_t + p_c
        keep &= total > 0
        collected.add(keep, x, (chosen[keep] == t_idx).astype(np.int64), rewards,
                      p_t[keep] / total[keep], when, counts, batch)
    return collected.build(feature_names)


async def collect_arm_data(
    batches: AsyncIterable[fpb.ReadTrainingDataResponse],
    feature_names: list[str],
    treatment: str,
    control: str,
    arms_of: ArmsOf,
) -> EffectData:
    """Keep the rows assigned to arm ``treatment`` or ``control``; the propensity is the
    arms' traffic share within the pair (assignment is by a salted hash, so random)."""
    collected = _Collected()
    shares_cache: dict[int, dict[str, float]] = {}
    async for batch in batches:
        n = batch.rows
        if n == 0:
            continue
        collected.rows_read += n
        if batch.blueprint_version not in shares_cache:
            shares_cache[batch.blueprint_version] = await arms_of(batch.blueprint_version)
        shares = shares_cache[batch.blueprint_version]
        if treatment not in shares or control not in shares:
            continue
        x, _, _, rewards, when, counts = rows_of(batch, feature_names)
        arms = np.array(list(batch.arms) or [""] * n)
        keep = np.isin(arms, [treatment, control])
        if not keep.any():
            continue
        share = shares[treatment] / (shares[treatment] + shares[control])
        collected.add(keep, x, (arms[keep] == treatment).astype(np.int64), rewards,
                      np.full(int(keep.sum()), share), when, counts, batch)
    return collected.build(feature_names)
