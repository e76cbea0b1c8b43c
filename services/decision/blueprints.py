"""Blueprint validation: every rule names the proto field path it is about."""

from __future__ import annotations

import math
import re

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.errors import InvalidArgument, cut, quote

# The use case name rule is shared with the trainer; re-exported for the decision service.
from loopwise.names import USE_CASE_RE as USE_CASE_RE
from loopwise.names import check_use_case_name as check_use_case_name
from loopwise.names import use_case_name_problem
from loopwise.policy import DEFAULT_THOMPSON_MEMBERS, MAX_THOMPSON_MEMBERS, MIN_THOMPSON_MEMBERS

FEATURE_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
# Shares of experiment arms must sum to 1 within this tolerance.
SHARE_TOLERANCE = 1e-6
# Action name used by regression use cases that declare no action.
REGRESSION_ACTION = "predict"
# The trainer's candidate families (services/trainer/models.py FAMILIES; the decision
# service cannot import the trainer's scikit-learn code, a test keeps them equal).
CANDIDATE_FAMILIES = ("linear", "hist_gradient_boosting", "random_forest")
# The longest candidate search budget of a training job (a day).
MAX_CANDIDATE_BUDGET_S = 86_400.0
# Feature values, DecideBatch scores and training rewards travel as float32.
FLOAT32_MAX = 3.4028234663852886e38
# The trainer's data validation defaults for label rates (services/trainer/validation.py).
DEFAULT_MIN_LABEL_RATE, DEFAULT_MAX_LABEL_RATE = 0.001, 0.999


def action_names(blueprint: bp.Blueprint) -> list[str]:
    """The actions a decision can take (regression without actions: ["predict"])."""
    if blueprint.kind == bp.DECISION_KIND_REGRESSION and not blueprint.actions:
        return [REGRESSION_ACTION]
    return list(blueprint.actions)


def default_action_index(blueprint: bp.Blueprint) -> int:
    """Index of the default decision's action (0 for regression)."""
    if blueprint.kind in (bp.DECISION_KIND_REGRESSION, bp.DECISION_KIND_RANKING):
        return 0
    return list(blueprint.actions).index(blueprint.default_decision.action)


def validate_blueprint(blueprint: bp.Blueprint) -> None:
    """Raise INVALID_ARGUMENT listing every rule the blueprint breaks (field paths
    such as ``blueprint.features[2].vocabulary``). The rules are listed in
    docs/internals.md ("Blueprint rules")."""
    errors: list[tuple[str, str]] = []

    def bad(path: str, description: str) -> None:
        errors.append((f"blueprint.{path}" if path else "blueprint", description))

    problem = use_case_name_problem(blueprint.use_case)
    if problem:
        bad("use_case", problem)
    _check_features(blueprint, bad)
    _check_actions_and_policy(blueprint, bad)
    _check_arms(blueprint, bad)
    _check_reward(blueprint, bad)
    _check_metrics(blueprint, bad)
    _check_training(blueprint.training, bad)
    _check_rollout(blueprint.rollout, bad)
    _check_drift(blueprint.drift, bad)
    _check_privacy(blueprint, bad)
    if errors:
        raise InvalidArgument(errors[0][0], errors[0][1], errors[1:])


def _known(enum, value: int) -> bool:
    """True when ``value`` is a value of the proto enum (open enums accept any int)."""
    return value in enum.values()


def _enum_names(enum, skip_unspecified: bool = False) -> str:
    names = [n for n in enum.keys() if not (skip_unspecified and n.endswith("_UNSPECIFIED"))]
    return ", ".join(names)


def _seconds(duration) -> float:
    return duration.seconds + duration.nanos / 1e9


def _check_enum(bad, path: str, enum, value: int, skip_unspecified: bool = False) -> bool:
    """Refuse an unknown enum value (and UNSPECIFIED when ``skip_unspecified``)."""
    if not _known(enum, value) or (skip_unspecified and value == 0):
        bad(path, f"{value} is not one of {_enum_names(enum, skip_unspecified)}")
        return False
    return True


def _finite(bad, path: str, value: float) -> bool:
    if not math.isfinite(value):
        bad(path, f"must be a finite number, not {value}")
        return False
    return True


def _finite32(bad, path: str, value: float) -> bool:
    """For values that travel as float32 (features, batch scores, rewards)."""
    if not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
        bad(path, f"must be a finite number within the float32 range (±{FLOAT32_MAX:.7g}), not {value:g}")
        return False
    return True


def _check_features(blueprint: bp.Blueprint, bad) -> None:
    if not blueprint.features:
        bad("features", "at least one feature is required")
    seen: set[str] = set()
    for i, feature in enumerate(blueprint.features):
        path = f"features[{i}]"
        if not FEATURE_RE.fullmatch(feature.name):
            bad(f"{path}.name", f"{quote(feature.name)} is not a feature name ([a-z][a-z0-9_]{{0,62}})")
        elif feature.name in seen:
            bad(f"{path}.name", f"duplicate feature name {quote(feature.name)}")
        seen.add(feature.name)
        _check_enum(bad, f"{path}.type", bp.FeatureType, feature.type, skip_unspecified=True)
        _check_enum(bad, f"{path}.on_missing", bp.MissingRule, feature.on_missing)
        _check_enum(bad, f"{path}.on_unknown", bp.UnknownRule, feature.on_unknown)
        _check_enum(bad, f"{path}.pii", bp.PiiRule, feature.pii)
        finite_impute = _finite32(bad, f"{path}.impute_value", feature.impute_value)
        if feature.type == bp.FEATURE_TYPE_CATEGORICAL:
            if not feature.vocabulary:
                bad(f"{path}.vocabulary", "a categorical feature needs a non-empty vocabulary")
            elif len(set(feature.vocabulary)) != len(feature.vocabulary):
                bad(f"{path}.vocabulary", "vocabulary values must be unique")
            elif finite_impute and feature.on_missing == bp.MISSING_RULE_IMPUTE and not (
                float(feature.impute_value).is_integer()
                and 0 <= feature.impute_value < len(feature.vocabulary)
            ):
                bad(f"{path}.impute_value", "for a categorical feature, the code of a vocabulary value")
        elif feature.vocabulary:
            bad(f"{path}.vocabulary", "only categorical features have a vocabulary")
    slices: set[str] = set()
    for i, name in enumerate(blueprint.slices):
        if name not in seen:
            bad(f"slices[{i}]", f"{quote(name)} is not a feature")
        elif name in slices:
            bad(f"slices[{i}]", f"duplicate slice {quote(name)}")
        slices.add(name)


def _check_actions_and_policy(blueprint: bp.Blueprint, bad) -> None:
    kind, actions = blueprint.kind, list(blueprint.actions)
    _check_enum(bad, "kind", bp.DecisionKind, kind, skip_unspecified=True)
    if any(not a for a in actions):
        bad("actions", "action names must not be empty")
    elif len(set(actions)) != len(actions):
        bad("actions", "action names must be unique")
    elif kind == bp.DECISION_KIND_BINARY and len(actions) != 2:
        bad("actions", "a binary use case has exactly two actions [negative, positive]")
    elif kind in (bp.DECISION_KIND_MULTICLASS, bp.DECISION_KIND_ACTION_VALUE) and len(actions) < 2:
        bad("actions", "at least two actions are required")
    elif kind == bp.DECISION_KIND_REGRESSION and len(actions) > 1:
        bad("actions", "a regression use case has at most one action")
    elif kind == bp.DECISION_KIND_RANKING and actions:
        bad("actions", "a ranking use case has no actions: it ranks the request's candidates")

    default = blueprint.default_decision
    if kind == bp.DECISION_KIND_RANKING:
        if default.action:
            bad("default_decision.action", "must be empty for ranking (the default keeps the request order)")
    elif kind == bp.DECISION_KIND_REGRESSION:
        if default.action not in ("", *actions[:1]):
            bad("default_decision.action", "must be empty or actions[0] for regression")
    elif default.action not in actions:
        bad("default_decision.action", f"{quote(default.action)} is not one of the actions")
    _finite32(bad, "default_decision.score", default.score)

    policy = blueprint.policy
    _check_enum(bad, "policy.type", bp.PolicyType, policy.type)
    if not 0.0 <= policy.epsilon <= 1.0:
        bad("policy.epsilon", "must be in [0, 1]")
    if policy.ranking_top_k > 0 and kind != bp.DECISION_KIND_RANKING:
        bad("policy.ranking_top_k", "only ranking use cases show a top k")
    if policy.type in (bp.POLICY_TYPE_SOFTMAX, bp.POLICY_TYPE_THOMPSON) and kind in (
        bp.DECISION_KIND_BINARY, bp.DECISION_KIND_REGRESSION
    ):
        bad("policy.type", "softmax and Thompson choose among several scored actions: "
                           "use them with MULTICLASS, ACTION_VALUE or RANKING")
    if policy.type == bp.POLICY_TYPE_SOFTMAX and not (math.isfinite(policy.temperature) and policy.temperature > 0):
        bad("policy.temperature", "softmax needs a finite temperature > 0")
    elif not (math.isfinite(policy.temperature) and policy.temperature >= 0):
        bad("policy.temperature", "must be a finite number >= 0")
    if not 0.0 <= policy.threshold <= 1.0:
        bad("policy.threshold", "must be in [0, 1]")
    for action, cost in sorted(policy.action_costs.items()):
        path = f"policy.action_costs[{cut(action, 64)}]"
        if action not in actions:
            bad(path, f"{quote(action)} is not an action of the use case")
        else:
            _finite(bad, path, cost)
    if policy.thompson_members != 0 and not MIN_THOMPSON_MEMBERS <= policy.thompson_members <= MAX_THOMPSON_MEMBERS:
        bad("policy.thompson_members", f"must be 0 (the default, {DEFAULT_THOMPSON_MEMBERS}) or in "
                                       f"[{MIN_THOMPSON_MEMBERS}, {MAX_THOMPSON_MEMBERS}]")
    if policy.ranking_top_k < 0:
        bad("policy.ranking_top_k", "must be >= 0 (0: every candidate)")
    n_actions = max(len(actions), 1)
    if not 0.0 <= policy.exploration_floor <= 1.0 / n_actions:
        bad("policy.exploration_floor", f"must be in [0, 1/{n_actions}]")
    if not (math.isfinite(blueprint.latency_budget_ms) and blueprint.latency_budget_ms >= 0):
        bad("latency_budget_ms", "must be a finite number >= 0 (0: no budget)")


def _check_arms(blueprint: bp.Blueprint, bad) -> None:
    names: set[str] = set()
    total = 0.0
    for i, arm in enumerate(blueprint.arms):
        if not arm.name:
            bad(f"arms[{i}].name", "an arm needs a name")
        elif arm.name in names:
            bad(f"arms[{i}].name", f"duplicate arm name {quote(arm.name)}")
        names.add(arm.name)
        if not 0.0 < arm.traffic_share <= 1.0:
            bad(f"arms[{i}].traffic_share", "must be in (0, 1]")
        else:
            total += arm.traffic_share
        if arm.HasField("epsilon") and not 0.0 <= arm.epsilon <= 1.0:
            bad(f"arms[{i}].epsilon", "must be in [0, 1]")
    if blueprint.arms and all(0.0 < a.traffic_share <= 1.0 for a in blueprint.arms) \
            and abs(total - 1.0) > SHARE_TOLERANCE:
        bad("arms", f"traffic shares sum to {total:g}, not 1")


def _check_reward(blueprint: bp.Blueprint, bad) -> None:
    reward = blueprint.reward
    metrics_have_windows = bool(blueprint.metrics) and all(_seconds(m.window) > 0 for m in blueprint.metrics)
    if _seconds(reward.window) <= 0 and not metrics_have_windows:
        bad("reward.window", "the reward window must be > 0 (with metrics: unless every metric has its own window)")
    _finite32(bad, "reward.default_reward", reward.default_reward)
    _check_enum(bad, "reward.aggregation", bp.RewardAggregation, reward.aggregation)
    for i, name in enumerate(reward.outcome_names):
        if not name:
            bad(f"reward.outcome_names[{i}]", "an outcome name must not be empty")


def longest_window_s(blueprint: bp.Blueprint) -> float:
    """The longest window in which outcomes join a decision, in seconds: the reward
    window, or with metrics the longest metric window (a metric without one has the
    reward window)."""
    reward = _seconds(blueprint.reward.window)
    if not blueprint.metrics:
        return reward
    return max(_seconds(m.window) or reward for m in blueprint.metrics)


def _check_metrics(blueprint: bp.Blueprint, bad) -> None:
    """Metrics, value model and guardrails (docs/blueprints.md, "Product metrics")."""
    metrics = blueprint.metrics
    if not metrics:
        if blueprint.value_model.weights:
            bad("value_model.weights", "a value model needs metrics: declare them in blueprint.metrics")
        if blueprint.guardrails:
            bad("guardrails", "guardrails need metrics: declare them in blueprint.metrics")
        return
    if _known(bp.DecisionKind, blueprint.kind) and blueprint.kind not in (
            bp.DECISION_KIND_UNSPECIFIED, bp.DECISION_KIND_ACTION_VALUE):
        bad("metrics", "metrics need kind DECISION_KIND_ACTION_VALUE (one value model per metric, "
                       "combined by the value model's weights)")
    if blueprint.policy.type == bp.POLICY_TYPE_THOMPSON:
        bad("policy.type", "Thompson sampling is not available with metrics")
    names: set[str] = set()
    for i, metric in enumerate(metrics):
        path = f"metrics[{i}]"
        if not FEATURE_RE.fullmatch(metric.name):
            bad(f"{path}.name", f"{quote(metric.name)} is not a metric name ([a-z][a-z0-9_]{{0,62}})")
        elif metric.name in names:
            bad(f"{path}.name", f"duplicate metric name {quote(metric.name)}")
        names.add(metric.name)
        for j, name in enumerate(metric.outcome_names):
            if not name:
                bad(f"{path}.outcome_names[{j}]", "an outcome name must not be empty")
        _check_enum(bad, f"{path}.aggregation", bp.RewardAggregation, metric.aggregation)
        if _seconds(metric.window) < 0:
            bad(f"{path}.window", "must be > 0 (unset or 0: reward.window)")
        _finite32(bad, f"{path}.default_value", metric.default_value)
    weights = blueprint.value_model.weights
    for name, weight in sorted(weights.items()):
        path = f"value_model.weights[{cut(name, 64)}]"
        if name not in names:
            bad(path, f"{quote(name)} is not one of the metrics")
        else:
            _finite32(bad, path, weight)
    if not any(w != 0 for name, w in weights.items() if name in names):
        bad("value_model.weights", "at least one metric needs a non-zero weight: the reward is "
                                   "the weighted sum of the metrics")
    guarded: set[str] = set()
    for i, guardrail in enumerate(blueprint.guardrails):
        path = f"guardrails[{i}]"
        if guardrail.metric not in names:
            bad(f"{path}.metric", f"{quote(guardrail.metric)} is not one of the metrics")
        elif guardrail.metric in guarded:
            bad(f"{path}.metric", f"duplicate guardrail on {quote(guardrail.metric)}")
        guarded.add(guardrail.metric)
        if not (math.isfinite(guardrail.tolerance) and guardrail.tolerance >= 0):
            bad(f"{path}.tolerance", "must be a finite number >= 0 (in the metric's units per decision)")


def _check_training(training: bp.TrainingSpec, bad) -> None:
    if training.min_rows < 0:
        bad("training.min_rows", "must be >= 0 (0 means 200)")
    if not 0.0 <= training.holdout_fraction <= 0.5:
        bad("training.holdout_fraction", "must be in (0, 0.5] (0 means 0.2)")
    if not 0.0 <= training.max_missing_rate <= 1.0:
        bad("training.max_missing_rate", "must be in (0, 1] (0 means 0.5)")
    low_ok = 0.0 <= training.min_label_rate < 1.0
    if not low_ok:
        bad("training.min_label_rate", "must be in [0, 1) (0 means 0.001)")
    high_ok = 0.0 <= training.max_label_rate <= 1.0
    if not high_ok:
        bad("training.max_label_rate", "must be in (0, 1] (0 means 0.999)")
    if low_ok and high_ok and (training.min_label_rate or DEFAULT_MIN_LABEL_RATE) >= (
            training.max_label_rate or DEFAULT_MAX_LABEL_RATE):
        bad("training.max_label_rate", "must be above min_label_rate (defaults: 0.001 and 0.999)")
    if not (math.isfinite(training.max_psi) and training.max_psi >= 0):
        bad("training.max_psi", "must be a finite number >= 0 (0 means 0.25)")
    if not 0.0 <= training.candidate_budget_seconds <= MAX_CANDIDATE_BUDGET_S:
        bad("training.candidate_budget_seconds",
            f"must be in (0, {MAX_CANDIDATE_BUDGET_S:g}] seconds (0 means 120)")
    _finite(bad, "training.blessing_tolerance", training.blessing_tolerance)
    if _seconds(training.retrain_every) < 0:
        bad("training.retrain_every", "must be > 0 (unset or 0: no time schedule)")
    if training.retrain_after_labelled < 0:
        bad("training.retrain_after_labelled", "must be >= 0 (0: no count schedule)")
    families: set[str] = set()
    for i, family in enumerate(training.candidate_families):
        if family not in CANDIDATE_FAMILIES:
            bad(f"training.candidate_families[{i}]",
                f"{quote(family)} is not a candidate family ({', '.join(CANDIDATE_FAMILIES)})")
        elif family in families:
            bad(f"training.candidate_families[{i}]", f"duplicate family {quote(family)}")
        families.add(family)
    if training.min_distinct_values < 0:
        bad("training.min_distinct_values", "must be >= 0 (0: no check)")


def _check_rollout(rollout: bp.RolloutSpec, bad) -> None:
    for name in ("shadow_min_decisions", "canary_min_outcomes"):
        if getattr(rollout, name) < 0:
            bad(f"rollout.{name}", "must be >= 0 (0 means the default)")
    # Thresholds on shares and distances in [0, 1]; a negative value turns the check off.
    for name in ("shadow_min_agreement", "shadow_max_score_shift", "canary_max_fallback_rate"):
        value = getattr(rollout, name)
        if _finite(bad, f"rollout.{name}", value) and value > 1.0:
            bad(f"rollout.{name}", "must be <= 1 (0 means the default, a negative value turns the check off)")
    _finite(bad, "rollout.canary_max_latency_ratio", rollout.canary_max_latency_ratio)
    if not 0.0 <= rollout.canary_share < 1.0:
        bad("rollout.canary_share", "must be in (0, 1) (0 means 0.1)")
    if not 0.0 <= rollout.canary_alpha < 0.5:
        bad("rollout.canary_alpha", "must be in (0, 0.5) (0 means 0.05)")


def _check_drift(drift: bp.DriftSpec, bad) -> None:
    for name in ("feature_psi_threshold", "prediction_psi_threshold"):
        _finite(bad, f"drift.{name}", getattr(drift, name))
    if drift.min_decisions < 0:
        bad("drift.min_decisions", "must be >= 0 (0 means 500)")


def _check_privacy(blueprint: bp.Blueprint, bad) -> None:
    _check_enum(bad, "unit_id_pii", bp.PiiRule, blueprint.unit_id_pii)
    retention = _seconds(blueprint.retention)
    if retention < 0:
        bad("retention", "must be > 0 (unset or 0: the store's default retention)")
    elif 0 < retention < longest_window_s(blueprint):
        bad("retention", "must be at least the reward window (with metrics: the longest metric window): "
                         "outcomes join decisions until it closes")


def changed_fields(old: bp.Blueprint, new: bp.Blueprint) -> list[str]:
    """Top-level blueprint fields whose values differ, in field order."""
    out = []
    for fd in bp.Blueprint.DESCRIPTOR.fields:
        if getattr(old, fd.name) != getattr(new, fd.name):
            out.append(fd.name)
    return out


def _text(fd: FieldDescriptor, value) -> str:
    """A field value in protobuf text form."""
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return "{" + text_format.MessageToString(value, as_one_line=True) + "}"
    if fd.type == FieldDescriptor.TYPE_ENUM:
        enum = fd.enum_type.values_by_number.get(value)
        return enum.name if enum is not None else str(value)
    if fd.type == FieldDescriptor.TYPE_STRING:
        return f"{value!r}"
    return repr(value)


def diff(old: Message, new: Message, prefix: str = "") -> list[tuple[str, str, str]]:
    """Every differing field of two messages as ``(path, old, new)`` in text form:
    scalars and lists of scalars by path, nested messages field by field, repeated
    messages element by element (``features[2].vocabulary``), maps key by key
    (``value_model.weights[margin]``); an absent side is ""."""
    out: list[tuple[str, str, str]] = []
    for fd in new.DESCRIPTOR.fields:
        path = f"{prefix}{fd.name}"
        a, b = getattr(old, fd.name), getattr(new, fd.name)
        if a == b:
            continue
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            for key in sorted(set(a) | set(b), key=str):
                if key not in b:
                    out.append((f"{path}[{key}]", _text(value_fd, a[key]), ""))
                elif key not in a:
                    out.append((f"{path}[{key}]", "", _text(value_fd, b[key])))
                elif a[key] != b[key]:
                    out.append((f"{path}[{key}]", _text(value_fd, a[key]), _text(value_fd, b[key])))
        elif fd.is_repeated:
            if fd.type == FieldDescriptor.TYPE_MESSAGE:
                for i in range(max(len(a), len(b))):
                    if i >= len(a):
                        out.append((f"{path}[{i}]", "", _text(fd, b[i])))
                    elif i >= len(b):
                        out.append((f"{path}[{i}]", _text(fd, a[i]), ""))
                    else:
                        out.extend(diff(a[i], b[i], f"{path}[{i}]."))
            else:
                out.append((path, "[" + ", ".join(_text(fd, v) for v in a) + "]",
                            "[" + ", ".join(_text(fd, v) for v in b) + "]"))
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            has_a, has_b = old.HasField(fd.name), new.HasField(fd.name)
            if has_a and has_b:
                out.extend(diff(a, b, f"{path}."))
            else:
                out.append((path, _text(fd, a) if has_a else "", _text(fd, b) if has_b else ""))
        else:
            has = fd.has_presence
            out.append((path, _text(fd, a) if not has or old.HasField(fd.name) else "",
                        _text(fd, b) if not has or new.HasField(fd.name) else ""))
    return out
