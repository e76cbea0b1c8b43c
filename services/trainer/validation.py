"""Data validation before training, and the per-feature profile kept with each model.

Checks (thresholds from the blueprint's TrainingSpec, defaults below): the schema
(categorical codes within the vocabulary, no infinite numbers, known actions and
labels), each feature's missing-value rate, constant features (when asked), the
label rate, and drift of each feature against the previous model's training set as
a population stability index (PSI) over that profile's bins. Plain numpy, no gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.services.trainer.models import ACTION_VALUE, BINARY, MULTICLASS, REGRESSION
from loopwise.trainer.v1 import trainer_service_pb2 as tpb

DEFAULT_MAX_MISSING_RATE = 0.5
DEFAULT_MIN_LABEL_RATE = 0.001
DEFAULT_MAX_LABEL_RATE = 0.999
DEFAULT_MAX_PSI = 0.25
QUANTILE_LEVELS = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
BIN_LEVELS = tuple(i / 10 for i in range(1, 10))  # deciles: at most 10 bins
PSI_EPS = 1e-4


@dataclass(frozen=True)
class Thresholds:
    """The validation thresholds in force for a blueprint."""

    max_missing_rate: float
    min_label_rate: float
    max_label_rate: float
    max_psi: float
    min_distinct_values: int

    @classmethod
    def of(cls, spec: bp.TrainingSpec) -> Thresholds:
        """The blueprint's thresholds with defaults for unset (zero) values."""
        return cls(spec.max_missing_rate or DEFAULT_MAX_MISSING_RATE,
                   spec.min_label_rate or DEFAULT_MIN_LABEL_RATE,
                   spec.max_label_rate or DEFAULT_MAX_LABEL_RATE,
                   spec.max_psi or DEFAULT_MAX_PSI,
                   max(0, spec.min_distinct_values))


def _check(check: str, feature: str, passed: bool, value: float, threshold: float,
           detail: str) -> tpb.ValidationCheck:
    return tpb.ValidationCheck(check=check, feature=feature, passed=bool(passed), value=float(value),
                               threshold=float(threshold), detail=detail)


def profile_feature(values: np.ndarray, feature: bp.Feature) -> tpb.FeatureProfile:
    """The profile of one feature's column (NaN = missing)."""
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    profile = tpb.FeatureProfile(name=feature.name, count=int(values.size),
                                 missing_count=int(values.size - present.size))
    if feature.type == bp.FEATURE_TYPE_CATEGORICAL:
        profile.categorical = True
        profile.vocabulary.extend(feature.vocabulary)
        size = len(feature.vocabulary)
        codes = present.astype(np.int64)
        codes = np.where((codes >= 0) & (codes < size), codes, size)  # last bin: unknown
        profile.bin_counts.extend(np.bincount(codes, minlength=size + 1).tolist())
        return profile
    finite = present[np.isfinite(present)]
    if finite.size:
        profile.mean = float(finite.mean())
        profile.std = float(finite.std())
        profile.quantile_levels.extend(QUANTILE_LEVELS)
        profile.quantiles.extend(np.quantile(finite, QUANTILE_LEVELS).tolist())
        edges = np.unique(np.quantile(finite, BIN_LEVELS))
        profile.bin_edges.extend(edges.tolist())
    profile.bin_counts.extend(bin_counts(profile, present).tolist())
    return profile


def profile_features(x: np.ndarray, blueprint: bp.Blueprint) -> list[tpb.FeatureProfile]:
    """Profiles of every blueprint feature; ``x`` is ``[rows, len(features)]``."""
    return [profile_feature(x[:, j], f) for j, f in enumerate(blueprint.features)]


def bin_counts(profile: tpb.FeatureProfile, present: np.ndarray, vocabulary: list[str] | None = None) -> np.ndarray:
    """Counts of present values in ``profile``'s bins. Categorical codes follow
    ``vocabulary`` (default: the profile's own) and are matched by value."""
    if profile.categorical:
        size = len(profile.vocabulary)
        codes = present.astype(np.int64)
        if vocabulary is not None and list(vocabulary) != list(profile.vocabulary):
            position = {v: i for i, v in enumerate(profile.vocabulary)}
            lookup = np.array([position.get(v, size) for v in vocabulary] + [size], dtype=np.int64)
            codes = lookup[np.where((codes >= 0) & (codes < len(vocabulary)), codes, len(vocabulary))]
        codes = np.where((codes >= 0) & (codes < size), codes, size)
        return np.bincount(codes, minlength=size + 1)
    edges = np.asarray(profile.bin_edges, dtype=np.float64)
    return np.bincount(np.searchsorted(edges, present, side="left"), minlength=edges.size + 1)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two count vectors over the same bins."""
    e = expected / max(expected.sum(), 1)
    a = actual / max(actual.sum(), 1)
    e, a = np.maximum(e, PSI_EPS), np.maximum(a, PSI_EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def feature_psi(previous: tpb.FeatureProfile, values: np.ndarray, feature: bp.Feature) -> float:
    """PSI of a feature column against a previous profile; missing values are a bin."""
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    vocabulary = list(feature.vocabulary) if feature.type == bp.FEATURE_TYPE_CATEGORICAL else None
    current = np.append(bin_counts(previous, present, vocabulary), values.size - present.size)
    expected = np.append(np.asarray(previous.bin_counts, dtype=np.float64), previous.missing_count)
    return psi(expected, current.astype(np.float64))


def _label_check(kind: str, rewards: np.ndarray, labels: list[str], actions: np.ndarray,
                 blueprint: bp.Blueprint, t: Thresholds) -> list[tpb.ValidationCheck]:
    n = rewards.size
    if kind == BINARY:
        finite = np.isfinite(rewards)
        rate = float(np.mean(rewards[finite] > 0)) if finite.any() else 0.0
        ok = t.min_label_rate <= rate <= t.max_label_rate
        return [_check("label_rate", "", ok, rate, t.min_label_rate if rate < t.min_label_rate else t.max_label_rate,
                       f"positive-label rate {rate:.4f}, allowed [{t.min_label_rate:g}, {t.max_label_rate:g}]")]
    if kind == MULTICLASS:
        known = set(blueprint.actions)
        rate = float(np.mean([label in known for label in labels])) if n else 0.0
        ok = rate >= t.min_label_rate
        return [_check("label_rate", "", ok, rate, t.min_label_rate,
                       f"share of rows with a known class label {rate:.4f}, at least {t.min_label_rate:g}")]
    rate = float(np.mean(np.isfinite(rewards))) if n else 0.0
    checks = [_check("label_rate", "", rate >= 1.0 - t.max_missing_rate, rate, 1.0 - t.max_missing_rate,
                     f"share of rows with a finite reward {rate:.4f}")]
    if kind == ACTION_VALUE:
        known = float(np.mean(actions >= 0)) if n else 0.0
        checks.append(_check("schema", "action", known >= 1.0 - t.max_missing_rate, known,
                             1.0 - t.max_missing_rate, f"share of rows whose logged action is a current action {known:.4f}"))
    elif kind == REGRESSION and rate > 0 and np.nanstd(rewards[np.isfinite(rewards)]) == 0.0:
        checks.append(_check("label_rate", "", False, 0.0, 0.0, "the regression target is constant"))
    return checks


def validate(x: np.ndarray, rewards: np.ndarray, labels: list[str], actions: np.ndarray, kind: str,
             blueprint: bp.Blueprint, previous: list[tpb.FeatureProfile]) -> list[tpb.ValidationCheck]:
    """Every check on the joined rows (``x`` aligned onto ``blueprint``); ``previous`` is
    the previous model's training profile (empty: no drift check)."""
    t = Thresholds.of(blueprint.training)
    checks: list[tpb.ValidationCheck] = []
    n = x.shape[0]
    if x.shape[1] != len(blueprint.features):
        checks.append(_check("schema", "", False, x.shape[1], len(blueprint.features),
                             f"{x.shape[1]} feature columns for {len(blueprint.features)} blueprint features"))
        return checks
    before = {p.name: p for p in previous}
    for j, feature in enumerate(blueprint.features):
        column = x[:, j].astype(np.float64)
        missing = np.isnan(column)
        rate = float(missing.mean()) if n else 1.0
        checks.append(_check("missing_rate", feature.name, rate <= t.max_missing_rate, rate, t.max_missing_rate,
                             f"{feature.name}: {rate:.1%} missing, at most {t.max_missing_rate:.1%}"))
        present = column[~missing]
        if feature.type == bp.FEATURE_TYPE_CATEGORICAL:
            size = len(feature.vocabulary)
            bad = int(np.sum((present != np.floor(present)) | (present < -1) | (present >= size)))
            what = f"codes outside [-1, {size})"
        else:
            bad = int(np.sum(~np.isfinite(present)))
            what = "infinite values"
        checks.append(_check("schema", feature.name, bad == 0, bad, 0, f"{feature.name}: {bad} {what}"))
        if t.min_distinct_values > 1:
            distinct = int(np.unique(present).size)
            checks.append(_check("distinct_values", feature.name, distinct >= t.min_distinct_values, distinct,
                                 t.min_distinct_values, f"{feature.name}: {distinct} distinct values"))
        if feature.name in before and before[feature.name].count > 0 and n:
            value = feature_psi(before[feature.name], column, feature)
            checks.append(_check("drift_psi", feature.name, value <= t.max_psi, value, t.max_psi,
                                 f"{feature.name}: PSI {value:.3f} against the previous training set, "
                                 f"at most {t.max_psi:g}"))
    checks += _label_check(kind, rewards, labels, actions, blueprint, t)
    return checks


def failures(checks: list[tpb.ValidationCheck]) -> str:
    """The failed checks as one sentence (empty when all passed)."""
    return "; ".join(c.detail for c in checks if not c.passed)


def summary(checks: list[tpb.ValidationCheck]) -> str:
    """"n of m checks passed" plus the worst PSI, for progress messages."""
    passed = sum(c.passed for c in checks)
    drift = [c.value for c in checks if c.check == "drift_psi"]
    text = f"{passed} of {len(checks)} checks passed"
    if drift:
        text += f"; max PSI {max(drift):.3f}"
    return text
