"""Joined decisions ⋈ outcomes (feedback's ReadTrainingData batches) as one table, for
analysts: Parquet (pyarrow) or CSV.

Columns: decision_id, decision_time (UTC), blueprint_version, model_version, arm,
action, propensity, ``p_<action>`` per action of the blueprint, reward,
outcome_count, explored, then the features by name (categoricals as their values).
Rows of older blueprint versions are aligned by feature and action name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.services.evaluator.data import rows_of
from loopwise.tensors import I64, unpack_vector

FORMATS = ("parquet", "csv")


def joined_frame(batches: Iterable[fpb.ReadTrainingDataResponse], latest: bp.Blueprint,
                 version_of: Callable[[int], bp.Blueprint]):
    """A pandas DataFrame of the joined rows (see the module doc)."""
    import pandas as pd

    names = [f.name for f in latest.features]
    vocabularies = {f.name: list(f.vocabulary) for f in latest.features
                    if f.type == bp.FEATURE_TYPE_CATEGORICAL}
    actions = list(latest.actions)
    frames = []
    for batch in batches:
        n = batch.rows
        if n == 0:
            continue
        version_actions = list(version_of(batch.blueprint_version).actions)
        x, chosen, probs, rewards, times, counts = rows_of(batch, names)
        columns: dict[str, object] = {
            "decision_id": list(batch.decision_ids),
            "decision_time": pd.to_datetime(times, unit="ms", utc=True),
            "blueprint_version": np.full(n, batch.blueprint_version, dtype=np.int64),
            "model_version": unpack_vector(batch.model_versions, I64) if batch.model_versions else np.zeros(n, np.int64),
            "arm": list(batch.arms) or [""] * n,
            "action": [version_actions[i] if 0 <= i < len(version_actions) else "" for i in chosen],
            "propensity": (probs[np.arange(n), chosen].astype(np.float64) if probs.shape[1]
                           else np.full(n, np.nan)),
        }
        for action in actions:
            j = version_actions.index(action) if action in version_actions else -1
            columns[f"p_{action}"] = (probs[:, j].astype(np.float64) if j >= 0 and probs.shape[1]
                                      else np.full(n, np.nan))
        columns["reward"] = rewards
        columns["outcome_count"] = counts.astype(np.int64)
        columns["explored"] = np.frombuffer(batch.explored, dtype=np.uint8).astype(bool) \
            if len(batch.explored) == n else np.zeros(n, bool)
        for j, name in enumerate(names):
            if name in vocabularies:
                vocab = vocabularies[name]
                columns[name] = [vocab[int(v)] if np.isfinite(v) and 0 <= v < len(vocab) else None for v in x[:, j]]
            else:
                columns[name] = x[:, j]
        frames.append(pd.DataFrame(columns))
    if not frames:
        return pd.DataFrame(columns=["decision_id", "decision_time", "blueprint_version", "model_version", "arm",
                                     "action", "propensity", *[f"p_{a}" for a in actions], "reward",
                                     "outcome_count", "explored", *names])
    return pd.concat(frames, ignore_index=True)


def write_frame(frame, path: Path, fmt: str) -> None:
    """Write the table as ``parquet`` or ``csv``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    elif fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        raise ValueError(f"unknown format {fmt!r}; use one of {FORMATS}")
