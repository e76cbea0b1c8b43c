"""From feedback's columnar batches to a model-ready :class:`TrainingSet`.

Batches may follow several blueprint versions. Feature columns are aligned by name
onto the current version's feature order (a feature a version lacked is missing,
NaN), categorical codes are translated through the vocabularies, and logged actions
are translated by name onto the current actions. Targets follow docs/internals.md
("Training targets"); the newest ``holdout_fraction`` of rows (by decision time)
is the holdout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.errors import FailedPrecondition, Unavailable
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.services.trainer.models import (
    ACTION_VALUE,
    BINARY,
    MULTICLASS,
    REGRESSION,
    TrainingSet,
)
from loopwise.services.trainer.value_model import blueprint_weights
from loopwise.tensors import F32, I32, I64, pack, unpack_matrix, unpack_vector
from loopwise.trainer.v1.trainer_service_pb2 import Deployment as TrainerDeployment

KINDS = {
    bp.DECISION_KIND_BINARY: BINARY,
    bp.DECISION_KIND_MULTICLASS: MULTICLASS,
    bp.DECISION_KIND_REGRESSION: REGRESSION,
    bp.DECISION_KIND_ACTION_VALUE: ACTION_VALUE,
}
DEFAULT_MIN_ROWS = 200
DEFAULT_HOLDOUT_FRACTION = 0.2
MAX_IMPORTANCE_WEIGHT = 20.0

BlueprintOf = Callable[[int], Awaitable[bp.Blueprint]]


@dataclass
class Rows:
    """Joined rows aligned onto the current blueprint (features ``[N, F]`` float32)."""

    features: np.ndarray
    times_ms: np.ndarray
    actions: np.ndarray
    propensities: np.ndarray
    rewards: np.ndarray
    labels: list[str]
    read: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    model_versions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # Serving latency per row in ms (0 where not measured; empty when not read).
    latencies_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # Blueprints with metrics: every metric of the current blueprint per row, [N, M]
    # (a row of a version without that metric has the metric's default value).
    metrics: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def without(self, drop: np.ndarray) -> Rows:
        """The rows not flagged in ``drop`` (a bool mask over the rows)."""
        keep = ~drop
        return Rows(self.features[keep], self.times_ms[keep], self.actions[keep], self.propensities[keep],
                    self.rewards[keep], [label for label, k in zip(self.labels, keep, strict=True) if k],
                    int(keep.sum()), {**self.dropped, "shadow": int(drop.sum())}, self.model_versions[keep],
                    self.latencies_ms[keep] if self.latencies_ms.size else self.latencies_ms,
                    self.metrics[keep] if self.metrics.shape[0] else self.metrics)


def shadow_rows(rows: Rows, revisions: list[TrainerDeployment]) -> np.ndarray:
    """Rows logged by a model that was only a shadow when they were decided: never
    returned to anyone, so their action and (default) reward teach nothing."""
    drop = np.zeros(rows.times_ms.size, dtype=bool)
    ordered = sorted(revisions, key=lambda d: d.update_time.ToMilliseconds())
    if not ordered or not drop.size:
        return drop
    starts = np.array([d.update_time.ToMilliseconds() for d in ordered], dtype=np.int64)
    revision = np.searchsorted(starts, rows.times_ms, side="right") - 1
    for i, deployment in enumerate(ordered):
        serving = {deployment.production.version, deployment.canary.version}
        shadow = [s.version for s in deployment.shadows if s.version not in serving]
        if shadow:
            drop |= (revision == i) & np.isin(rows.model_versions, shadow)
    return drop


@dataclass
class PreparedData:
    """A training set plus what the registry records about its data."""

    training: TrainingSet
    rows_read: int
    training_rows: int
    holdout_rows: int
    start_ms: int
    end_ms: int


def kind_of(blueprint: bp.Blueprint) -> str:
    """The trainer's name for the blueprint's decision kind."""
    if blueprint.kind not in KINDS:
        raise FailedPrecondition(f"use case {blueprint.use_case!r} has no decision kind")
    return KINDS[blueprint.kind]


def _code_map(old: bp.Feature, new: bp.Feature) -> np.ndarray | None:
    """Old categorical code → current code lookup (index = old code), or None if equal."""
    if list(old.vocabulary) == list(new.vocabulary):
        return None
    position = {value: i for i, value in enumerate(new.vocabulary)}
    return np.array([position.get(v, -1) for v in old.vocabulary], dtype=np.float32)


def align_features(batch: fpb.ReadTrainingDataResponse, version_bp: bp.Blueprint,
                   current: bp.Blueprint) -> np.ndarray:
    """A batch's feature columns (logged under ``version_bp``) in ``current``'s feature
    order, by name: a feature the batch lacks is missing (NaN); categorical codes are
    translated through the vocabularies (an unknown value is -1)."""
    names = list(batch.feature_names)
    x = unpack_matrix(batch.features, batch.rows, len(names), "features", F32)
    old = {f.name: f for f in version_bp.features}
    out = np.full((batch.rows, len(current.features)), np.nan, dtype=np.float32)
    for j, feature in enumerate(current.features):
        if feature.name not in names:
            continue
        column = x[:, names.index(feature.name)].astype(np.float32)
        previous = old.get(feature.name)
        if feature.type == bp.FEATURE_TYPE_CATEGORICAL and previous is not None:
            lookup = _code_map(previous, feature)
            if lookup is not None:
                codes = np.nan_to_num(column, nan=-1).astype(np.int64)
                known = (codes >= 0) & (codes < lookup.size)
                column = np.where(np.isnan(column), np.nan,
                                  np.where(known, lookup[np.clip(codes, 0, max(lookup.size - 1, 0))], -1))
        out[:, j] = column
    return out


def _align_metrics(batch: fpb.ReadTrainingDataResponse, current: bp.Blueprint) -> np.ndarray:
    """The batch's metric columns in the current blueprint's metric order (by name; a
    metric the batch lacks has its default value)."""
    names = list(batch.metric_names)
    values = unpack_matrix(batch.metric_values, batch.rows, len(names), "metric_values", F32) \
        if names else np.zeros((batch.rows, 0), np.float32)
    out = np.empty((batch.rows, len(current.metrics)), dtype=np.float64)
    for j, metric in enumerate(current.metrics):
        out[:, j] = values[:, names.index(metric.name)] if metric.name in names else metric.default_value
    return out


async def collect_rows(batches: AsyncIterator[fpb.ReadTrainingDataResponse],
                       current: bp.Blueprint, current_version: int, blueprint_of: BlueprintOf) -> Rows:
    """Read every batch and align it onto the current blueprint."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("x", "t", "a", "p", "r", "m", "l", "v")}
    labels: list[str] = []
    current_actions = list(current.actions)
    read = 0
    async for batch in batches:
        if batch.rows == 0:
            continue
        read += batch.rows
        version = batch.blueprint_version or current_version
        version_bp = current if version == current_version else await blueprint_of(version)
        parts["x"].append(align_features(batch, version_bp, current))
        parts["t"].append(unpack_vector(batch.decision_times_ms, I64).astype(np.int64))
        logged = unpack_vector(batch.action_indices, I32).astype(np.int64)
        version_actions = list(version_bp.actions)
        translate = np.array([current_actions.index(a) if a in current_actions else -1
                              for a in version_actions] or [-1], dtype=np.int64)
        inside = (logged >= 0) & (logged < len(version_actions))
        parts["a"].append(np.where(inside, translate[np.clip(logged, 0, translate.size - 1)], -1))
        parts["p"].append(unpack_vector(batch.propensities, F32).astype(np.float64))
        parts["r"].append(unpack_vector(batch.rewards, F32).astype(np.float64))
        parts["m"].append(unpack_vector(batch.model_versions, I64).astype(np.int64) if batch.model_versions
                          else np.zeros(batch.rows, np.int64))
        parts["l"].append(unpack_vector(batch.serving_latencies_ms, F32).astype(np.float64)
                          if batch.serving_latencies_ms else np.zeros(batch.rows))
        parts["v"].append(_align_metrics(batch, current))
        labels += list(batch.labels) if len(batch.labels) == batch.rows else [""] * batch.rows
        sizes = {k: v[-1].shape[0] for k, v in parts.items()}
        if set(sizes.values()) != {batch.rows}:
            raise Unavailable(f"feedback sent a malformed batch: column lengths {sizes} for {batch.rows} rows")
    width = len(current.features)
    if not read:
        empty = np.zeros(0)
        return Rows(np.zeros((0, width), np.float32), empty.astype(np.int64), empty.astype(np.int64),
                    empty, empty, [], 0, metrics=np.zeros((0, len(current.metrics))))
    return Rows(np.vstack(parts["x"]), np.concatenate(parts["t"]), np.concatenate(parts["a"]),
                np.concatenate(parts["p"]), np.concatenate(parts["r"]), labels, read,
                model_versions=np.concatenate(parts["m"]), latencies_ms=np.concatenate(parts["l"]),
                metrics=np.vstack(parts["v"]))


def align_to(x: np.ndarray, current: bp.Blueprint, target: bp.Blueprint) -> np.ndarray:
    """Rows in ``current``'s feature order re-aligned onto ``target``'s (by name; a
    feature ``current`` lacks is missing, categorical codes translated by value)."""
    if [(f.name, list(f.vocabulary)) for f in current.features] == \
            [(f.name, list(f.vocabulary)) for f in target.features]:
        return x
    batch = fpb.ReadTrainingDataResponse(
        feature_names=[f.name for f in current.features], rows=x.shape[0], features=pack(x, F32))
    return align_features(batch, current, target)


def _targets(rows: Rows, kind: str, actions: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Targets and the mask of usable rows."""
    n = rows.rewards.size
    if kind == BINARY:
        return (rows.rewards > 0).astype(np.int64), np.ones(n, bool)
    if kind == MULTICLASS:
        index = {a: i for i, a in enumerate(actions)}
        y = np.array([index.get(label, -1) for label in rows.labels], dtype=np.int64)
        return y, y >= 0
    if kind == REGRESSION:
        return rows.rewards, np.isfinite(rows.rewards)
    return rows.rewards, (rows.actions >= 0) & np.isfinite(rows.rewards)


def importance_weights(propensities: np.ndarray) -> np.ndarray:
    """1 / propensity, clipped to [1, MAX_IMPORTANCE_WEIGHT] (unknown propensities: 1),
    scaled to mean 1."""
    p = np.where(np.isfinite(propensities) & (propensities > 0), propensities, 1.0)
    w = np.clip(1.0 / p, 1.0, MAX_IMPORTANCE_WEIGHT)
    return w / w.mean() if w.size else w


def prepare(rows: Rows, blueprint: bp.Blueprint) -> PreparedData:
    """Targets, the time split and model inputs; FAILED_PRECONDITION when data is unfit."""
    kind = kind_of(blueprint)
    actions = list(blueprint.actions)
    metric_names = tuple(m.name for m in blueprint.metrics)
    weights = blueprint_weights(blueprint, metric_names)
    if metric_names:  # the reward under the weights in force, whatever version logged the row
        rows = replace(rows, rewards=rows.metrics @ weights)
    min_rows = blueprint.training.min_rows or DEFAULT_MIN_ROWS
    fraction = blueprint.training.holdout_fraction or DEFAULT_HOLDOUT_FRACTION
    y, usable = _targets(rows, kind, actions)
    n = int(usable.sum())
    if n < min_rows:
        detail = f"{rows.read} rows read, {n} usable"
        if kind == MULTICLASS:
            detail += f" ({rows.read - n} without a known label)"
        raise FailedPrecondition(f"too few rows to train: {detail}; training.min_rows is {min_rows}")
    order = np.argsort(rows.times_ms[usable], kind="stable")
    idx = np.flatnonzero(usable)[order]
    n_holdout = max(1, int(round(n * fraction)))
    train, hold = idx[: n - n_holdout], idx[n - n_holdout:]
    x = rows.features
    n_actions = max(len(actions), 1)
    common = dict(kind=kind, n_actions=n_actions,
                  threshold=blueprint.policy.threshold or 0.5)
    if kind in (BINARY, MULTICLASS):
        present = set(np.unique(y[train]).tolist())
        needed = set(range(2 if kind == BINARY else len(actions)))
        if present != needed:
            missing = sorted(needed - present)
            names = [actions[i] if i < len(actions) else str(i) for i in missing]
            raise FailedPrecondition(f"the training rows lack class(es) {names}: every class must occur")
        training = TrainingSet(x_train=x[train], y_train=y[train], x_holdout=x[hold], y_holdout=y[hold],
                               **common)
    elif kind == REGRESSION:
        training = TrainingSet(x_train=x[train], y_train=y[train], x_holdout=x[hold], y_holdout=y[hold],
                               **common)
    else:
        onehot = np.eye(n_actions, dtype=np.float32)[rows.actions[usable].clip(0)]
        xa = np.full((x.shape[0], x.shape[1] + n_actions), np.nan, dtype=np.float32)
        xa[usable] = np.hstack([x[usable], onehot])
        default = blueprint.default_decision.action
        training = TrainingSet(
            w_train=importance_weights(rows.propensities[train]),
            x_train=xa[train], y_train=y[train], x_holdout=xa[hold], y_holdout=y[hold],
            default_action=actions.index(default) if default in actions else 0,
            holdout_features=x[hold], holdout_actions=rows.actions[hold],
            holdout_propensities=rows.propensities[hold], **common,
        )
        if metric_names:
            training.metric_names, training.metric_weights = metric_names, weights
            training.metrics_train, training.metrics_holdout = rows.metrics[train], rows.metrics[hold]
    times = rows.times_ms[idx]
    return PreparedData(training, rows.read, int(train.size), int(hold.size),
                        int(times.min()), int(times.max()))
