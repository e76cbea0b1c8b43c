"""Blessing: the candidate against what serves today, on the same holdout.

Both are judged by a per-row utility (higher is better): minus the log loss of the
observed class (classifiers), minus the squared error (regression), or the
inverse-propensity-weighted reward of the action the policy would take (action
value). The metric reported is log loss, mean squared error or IPS policy value.
The candidate is blessed when, overall, its mean utility is not below the serving
one's by more than ``tolerance × |serving mean utility|``; in a declared slice it
fails only when it is below by more than that *and* significantly so (paired
one-sided z-test at 5% over all slices, Bonferroni-corrected), so that small or many
slices do not reject by noise alone.

With metrics (docs/blueprints.md, "Product metrics") the value is the value model's
weighted sum under the weights in force (a serving model trained under other weights
is judged with today's), and every guardrail metric is judged too: the IPS estimate of
the metric per decision under the candidate's greedy actions against the same estimate
under what it is compared with; a candidate that makes a guardrail worse by more than
its tolerance is not blessed, whatever its value.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.services.trainer.models import (
    ACTION_VALUE,
    BINARY,
    CLASSIFIER_KINDS,
    EPS,
    REGRESSION,
    TrainingSet,
    action_value_inputs,
    greedy_actions,
    run_onnx,
    score_output,
)
from loopwise.trainer.v1 import trainer_service_pb2 as tpb

DEFAULT_TOLERANCE = 0.01
SLICE_MIN_ROWS = 30
MAX_SLICES = 24
SLICE_ALPHA = 0.05  # one-sided, shared by all slices of one blessing (Bonferroni)
METRICS = {BINARY: "log_loss", "multiclass": "log_loss", REGRESSION: "mse", ACTION_VALUE: "policy_value_ips"}


@dataclass
class ServingModel:
    """The model serving production, ready to score the holdout."""

    label: str
    onnx: bytes
    output: str
    features: np.ndarray  # holdout features in the serving model's blueprint order
    # The metrics of the serving model's blueprint version (its metric_values columns).
    metric_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class GuardrailRule:
    """A blueprint guardrail, as plain values for the process pool."""

    metric: str
    tolerance: float
    lower_is_better: bool


def guardrail_rules(blueprint: bp.Blueprint) -> tuple[GuardrailRule, ...]:
    """The blueprint's guardrails."""
    return tuple(GuardrailRule(g.metric, max(0.0, g.tolerance), g.lower_is_better) for g in blueprint.guardrails)


def _ips_metric(data: TrainingSet, chosen: np.ndarray, column: int) -> float:
    """IPS estimate of one metric per decision when the policy takes ``chosen``."""
    assert data.holdout_actions is not None and data.holdout_propensities is not None
    assert data.metrics_holdout is not None
    p = data.holdout_propensities
    match = (chosen == data.holdout_actions) & (p > 0)
    values = np.where(match, data.metrics_holdout[:, column] / np.where(p > 0, p, 1.0), 0.0)
    return float(np.mean(values)) if values.size else math.nan


def check_guardrails(data: TrainingSet, candidate_scores: np.ndarray, reference_scores: np.ndarray,
                     rules: tuple[GuardrailRule, ...], compared_with: str) -> list[tpb.Guardrail]:
    """One check per guardrail: the candidate's worsening of the metric against the
    reference (both by their greedy actions on the holdout) within the tolerance."""
    checks = []
    chosen = greedy_actions(candidate_scores, data.n_actions)
    reference = greedy_actions(reference_scores, data.n_actions)
    for rule in rules:
        if rule.metric not in data.metric_names:
            continue
        j = data.metric_names.index(rule.metric)
        c, r = _ips_metric(data, chosen, j), _ips_metric(data, reference, j)
        worse_by = (c - r) if rule.lower_is_better else (r - c)
        passed = bool(worse_by <= rule.tolerance) if math.isfinite(worse_by) else True
        direction = "lower" if rule.lower_is_better else "higher"
        checks.append(tpb.Guardrail(
            name=f"guardrail:{rule.metric}", passed=passed, value=worse_by if math.isfinite(worse_by) else 0.0,
            threshold=rule.tolerance,
            detail=(f"guardrail {rule.metric} ({direction} is better): candidate {c:.4f} vs {compared_with} "
                    f"{r:.4f} per decision, worse by {worse_by:+.4f} (tolerance {rule.tolerance:g})")))
    return checks


def weighted_scores(data: TrainingSet, onnx: bytes, output: str, x: np.ndarray,
                    metric_names: tuple[str, ...]) -> np.ndarray:
    """A model's action values on ``x``: with metrics, its metric outputs weighted by
    the weights in force (the model's own ``output`` when it has no metric outputs)."""
    if data.metric_names and data.metric_weights is not None and metric_names:
        from loopwise.services.trainer.value_model import METRIC_OUTPUT

        weights = {name: float(w) for name, w in zip(data.metric_names, data.metric_weights, strict=True)}
        try:
            values = run_onnx(onnx, METRIC_OUTPUT, x)
        except ValueError:
            return run_onnx(onnx, output, x)
        return values @ np.array([weights.get(name, 0.0) for name in metric_names]).reshape(-1, 1)
    return run_onnx(onnx, output, x)


def tolerance_of(spec: bp.TrainingSpec) -> float:
    """The blueprint's blessing tolerance (default when 0, never negative)."""
    if spec.blessing_tolerance == 0:
        return DEFAULT_TOLERANCE
    return max(0.0, spec.blessing_tolerance)


def row_utilities(data: TrainingSet, scores: np.ndarray) -> np.ndarray:
    """Per-row utility of scores in the ONNX output format (higher is better)."""
    if data.kind in CLASSIFIER_KINDS:
        y = data.y_holdout.astype(np.int64)
        if scores.shape[1] <= int(y.max(initial=0)):
            raise ValueError(f"scores have {scores.shape[1]} classes, the labels need {int(y.max()) + 1}")
        return np.log(np.clip(scores[np.arange(y.size), y], EPS, 1.0))
    if data.kind == REGRESSION:
        return -((scores[:, 0] - data.y_holdout) ** 2)
    assert data.holdout_actions is not None and data.holdout_propensities is not None
    chosen = greedy_actions(scores, data.n_actions)
    p = data.holdout_propensities
    match = (chosen == data.holdout_actions) & (p > 0)
    return np.where(match, data.y_holdout / np.where(p > 0, p, 1.0), 0.0)


def metric_value(kind: str, utilities: np.ndarray) -> float:
    """The reported metric from utilities (log loss and MSE: minus the mean)."""
    mean = float(np.mean(utilities)) if utilities.size else math.nan
    return mean if kind == ACTION_VALUE else -mean


def baseline_scores(data: TrainingSet) -> np.ndarray:
    """The default policy in the ONNX output format: class frequencies of the
    training rows, the training mean, or the default action."""
    n = data.y_holdout.size
    if data.kind in CLASSIFIER_KINDS:
        width = 2 if data.kind == BINARY else data.n_actions
        counts = np.bincount(data.y_train.astype(np.int64), minlength=width).astype(np.float64) + 1e-3
        return np.tile(counts / counts.sum(), (n, 1))
    if data.kind == REGRESSION:
        return np.full((n, 1), float(np.mean(data.y_train)))
    values = np.zeros((n, data.n_actions))
    values[:, data.default_action] = 1.0
    return values.reshape(-1, 1)


def _inputs(data: TrainingSet, features: np.ndarray) -> np.ndarray:
    if data.kind == ACTION_VALUE:
        return action_value_inputs(features.astype(np.float32), data.n_actions)
    return features.astype(np.float32)


def slice_masks(blueprint: bp.Blueprint, features: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The declared slices of the holdout (``features`` in blueprint order): one per
    categorical value, numeric features split at the median; small slices dropped."""
    names = [f.name for f in blueprint.features]
    slices: list[tuple[str, np.ndarray]] = []
    for name in blueprint.slices:
        if name not in names:
            continue
        j = names.index(name)
        feature = blueprint.features[j]
        column = features[:, j].astype(np.float64)
        if feature.type == bp.FEATURE_TYPE_CATEGORICAL:
            for code, value in enumerate(feature.vocabulary):
                slices.append((f"{name}={value}", column == code))
        else:
            present = column[~np.isnan(column)]
            if not present.size:
                continue
            median = float(np.median(present))
            slices.append((f"{name}<={median:.4g}", column <= median))
            slices.append((f"{name}>{median:.4g}", column > median))
    return [(n, m) for n, m in slices if int(m.sum()) >= SLICE_MIN_ROWS][:MAX_SLICES]


def _compare(kind: str, name: str, mask: np.ndarray, candidate: np.ndarray, serving: np.ndarray,
             tolerance: float, overall: bool, z: float = 0.0) -> tpb.SliceComparison:
    c, s = candidate[mask], serving[mask]
    allowed = tolerance * abs(float(np.mean(s)))
    diff = c - s
    shortfall = float(np.mean(diff)) + allowed  # < 0: worse than allowed
    if overall:
        passed = shortfall >= 0
    else:
        se = float(np.std(diff, ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else 0.0
        passed = shortfall >= 0 or (se > 0 and shortfall / se >= -z)
    return tpb.SliceComparison(slice=name, rows=int(mask.sum()), candidate=metric_value(kind, c),
                               serving=metric_value(kind, s), passed=bool(passed))


def bless(candidate_onnx: bytes, data: TrainingSet, serving: ServingModel | None,
          slices: list[tuple[str, np.ndarray]], tolerance: float,
          guardrails: tuple[GuardrailRule, ...] = ()) -> tpb.Blessing:
    """Compare the candidate's ONNX model with the serving model (or the default
    policy) on the holdout, overall, per slice and per guardrail metric (pool function)."""
    holdout = data.holdout_features if data.kind == ACTION_VALUE else data.x_holdout
    assert holdout is not None
    candidate_scores = weighted_scores(data, candidate_onnx, score_output(data.kind), _inputs(data, holdout),
                                       data.metric_names)
    candidate = row_utilities(data, candidate_scores)
    compared_with, note = "default policy", ""
    reference_scores = baseline_scores(data)
    reference = row_utilities(data, reference_scores)
    if serving is not None:
        try:
            scores = weighted_scores(data, serving.onnx, serving.output, _inputs(data, serving.features),
                                     serving.metric_names)
            if data.kind == ACTION_VALUE and scores.shape[0] != holdout.shape[0] * data.n_actions:
                raise ValueError(f"{scores.shape[0]} action values for {holdout.shape[0]} units")
            reference = row_utilities(data, scores)
            reference_scores = scores
            compared_with = serving.label
        except Exception as exc:  # an incomparable serving model: judge against the default
            note = f" ({serving.label} cannot score this holdout: {str(exc)[:200]})"
    kind = data.kind
    everything = np.ones(candidate.size, dtype=bool)
    comparisons = [_compare(kind, "all", everything, candidate, reference, tolerance, True)]
    z = statistics.NormalDist().inv_cdf(1.0 - SLICE_ALPHA / max(1, len(slices)))
    comparisons += [_compare(kind, n, m, candidate, reference, tolerance, False, z) for n, m in slices]
    failed = [c for c in comparisons if not c.passed]
    checks = check_guardrails(data, candidate_scores, reference_scores, guardrails, compared_with) \
        if kind == ACTION_VALUE and data.metric_names else []
    breached = [g for g in checks if not g.passed]
    metric = METRICS[kind]
    head = comparisons[0]
    reasons = []
    if failed:
        reasons.append("worse than " + compared_with + " beyond the tolerance " + f"{tolerance:g} in " + ", ".join(
            f"{c.slice} ({metric} {c.candidate:.4f} vs {c.serving:.4f}, {c.rows} rows)" for c in failed))
    if breached:
        reasons.append("guardrail breached: " + "; ".join(g.detail for g in breached))
    if reasons:
        reason = "not blessed: " + "; ".join(reasons)
    else:
        reason = (f"blessed: holdout {metric} {head.candidate:.4f} vs {compared_with} {head.serving:.4f} "
                  f"(tolerance {tolerance:g}, {len(comparisons) - 1} slices checked"
                  + (f", {len(checks)} guardrails held" if checks else "") + ")")
    return tpb.Blessing(blessed=not reasons, compared_with=compared_with, metric=metric,
                        higher_is_better=kind == ACTION_VALUE, tolerance=tolerance,
                        slices=comparisons, reason=reason + note, guardrails=checks)
