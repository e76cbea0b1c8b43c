"""The score distribution of a model on its training rows: the reference of live
prediction drift (feedback compares the scores of live decisions with it).

A decision's score is what the decision service records (services/decision/policy.py):
the probability of the positive action (binary), the prediction (regression), and the
best action's value net of its cost (multiclass and action value: the greedy
action; exploration does not change it). The same is computed here from the
exported ONNX model, so the two sides bin the same quantity.
"""

from __future__ import annotations

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.services.trainer.models import (
    ACTION_VALUE,
    BINARY,
    MULTICLASS,
    TrainingSet,
    action_value_inputs,
    run_onnx,
    score_output,
)
from loopwise.trainer.v1 import trainer_service_pb2 as tpb

SCORE_BINS = 10
MAX_PROFILED_ROWS = 20_000
QUANTILE_LEVELS = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def decision_scores(onnx: bytes, training: TrainingSet, blueprint: bp.Blueprint, seed: int = 0) -> np.ndarray:
    """Decision scores of (at most ``MAX_PROFILED_ROWS``, sampled with ``seed``) training
    rows, as the decision service would record them for the greedy action."""
    width = len(blueprint.features)
    features = training.x_train[:, :width]
    if features.shape[0] > MAX_PROFILED_ROWS:
        rows = np.random.default_rng(seed).choice(features.shape[0], MAX_PROFILED_ROWS, replace=False)
        features = features[np.sort(rows)]
    output = score_output(training.kind)
    if training.kind == BINARY:
        return run_onnx(onnx, output, features)[:, -1]
    if training.kind in (MULTICLASS, ACTION_VALUE):
        inputs = action_value_inputs(features, training.n_actions) if training.kind == ACTION_VALUE else features
        values = run_onnx(onnx, output, inputs).reshape(features.shape[0], training.n_actions)
        costs = blueprint.policy.action_costs
        values = values - np.array([costs.get(a, 0.0) for a in blueprint.actions])[None, :]
        return values.max(axis=1)
    return run_onnx(onnx, output, features)[:, 0]


def score_profile(scores: np.ndarray) -> tpb.FeatureProfile:
    """Scores binned by their quantiles (about ``SCORE_BINS`` bins; the drift monitor
    bins live scores with the same edges, numpy.searchsorted side="left")."""
    finite = scores[np.isfinite(scores)]
    profile = tpb.FeatureProfile(name="score", count=int(scores.size), missing_count=int(scores.size - finite.size))
    if finite.size == 0:
        return profile
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, SCORE_BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, finite, side="left"), minlength=edges.size + 1)
    profile.bin_edges.extend(edges.tolist())
    profile.bin_counts.extend(int(c) for c in counts)
    profile.mean, profile.std = float(finite.mean()), float(finite.std())
    profile.quantile_levels.extend(QUANTILE_LEVELS)
    profile.quantiles.extend(np.quantile(finite, QUANTILE_LEVELS).tolist())
    return profile


def prediction_profile(onnx: bytes, training: TrainingSet, blueprint: bp.Blueprint,
                       seed: int = 0) -> tpb.FeatureProfile:
    """The prediction profile of a model (pool function)."""
    return score_profile(decision_scores(onnx, training, blueprint, seed))
