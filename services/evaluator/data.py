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
from loopwise.tensors import F32, I32, unpack_matrix, unpack_vector

# The actions of a blueprint version, by version number.
ActionsOf = Callable[[int], Awaitable[list[str]]]


@dataclass
class EffectData:
    """Rows of one treated action against one control action.

    ``x`` is [n, F] float64 (NaN = missing), ``t`` is 1 for treated rows, ``y`` the
    reward and ``propensity`` the logged probability of treatment p_t / (p_t + p_c)."""

    feature_names: list[str]
    x: np.ndarray
    t: np.ndarray
    y: np.ndarray
    propensity: np.ndarray
    rows_read: int


async def collect_effect_data(
    batches: AsyncIterable[fpb.ReadTrainingDataResponse],
    feature_names: list[str],
    treatment: str,
    control: str,
    actions_of: ActionsOf,
) -> EffectData:
    """Keep the rows whose action is ``treatment`` or ``control`` and build the arrays."""
    xs, ts, ys, es = [], [], [], []
    rows_read = 0
    actions_cache: dict[int, list[str]] = {}
    async for batch in batches:
        n = batch.rows
        if n == 0:
            continue
        rows_read += n
        if batch.blueprint_version not in actions_cache:
            actions_cache[batch.blueprint_version] = await actions_of(batch.blueprint_version)
        actions = actions_cache[batch.blueprint_version]
        names = list(batch.feature_names)
        feats = unpack_matrix(batch.features, n, len(names), "features", F32)
        x = np.full((n, len(feature_names)), np.nan)
        for j, name in enumerate(feature_names):
            if name in names:
                x[:, j] = feats[:, names.index(name)]
        chosen = unpack_vector(batch.action_indices, I32)
        probs = unpack_matrix(batch.action_probabilities, n, batch.n_actions, "action_probabilities", F32)
        rewards = unpack_vector(batch.rewards, F32).astype(np.float64)
        t_idx = actions.index(treatment) if treatment in actions else -1
        c_idx = actions.index(control) if control in actions else -1
        keep = np.zeros(n, dtype=bool)
        if t_idx >= 0:
            keep |= chosen == t_idx
        if c_idx >= 0:
            keep |= chosen == c_idx
        if not keep.any():
            continue
        p_t = probs[:, t_idx].astype(np.float64) if t_idx >= 0 else np.zeros(n)
        p_c = probs[:, c_idx].astype(np.float64) if c_idx >= 0 else np.zeros(n)
        total = p_t + p_c
        keep &= total > 0
        xs.append(x[keep])
        ts.append((chosen[keep] == t_idx).astype(np.int64))
        ys.append(rewards[keep])
        es.append(p_t[keep] / total[keep])
    if xs:
        return EffectData(feature_names, np.vstack(xs), np.concatenate(ts), np.concatenate(ys),
                          np.concatenate(es), rows_read)
    width = len(feature_names)
    return EffectData(feature_names, np.empty((0, width)), np.empty(0, np.int64), np.empty(0),
                      np.empty(0), rows_read)
