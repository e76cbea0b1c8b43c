"""Blueprint validation: every rule names the proto field path it is about."""

from __future__ import annotations

import math
import re

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.errors import InvalidArgument

USE_CASE_RE = re.compile(r"[a-z][a-z0-9_]{1,62}")
FEATURE_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
# Shares of experiment arms must sum to 1 within this tolerance.
SHARE_TOLERANCE = 1e-6
# Action name used by regression use cases that declare no action.
REGRESSION_ACTION = "predict"


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


def check_use_case_name(name: str, field: str) -> None:
    """INVALID_ARGUMENT naming ``field`` unless ``name`` is a valid use case name."""
    if not USE_CASE_RE.fullmatch(name):
        raise InvalidArgument(field, f"{name!r} is not a use case name ([a-z][a-z0-9_]{{1,62}})")


def validate_blueprint(blueprint: bp.Blueprint) -> None:
    """Raise INVALID_ARGUMENT listing every rule the blueprint breaks (field paths
    such as ``blueprint.features[2].vocabulary``)."""
    errors: list[tuple[str, str]] = []

    def bad(path: str, description: str) -> None:
        errors.append((f"blueprint.{path}" if path else "blueprint", description))

    if not USE_CASE_RE.fullmatch(blueprint.use_case):
        bad("use_case", f"{blueprint.use_case!r} is not a use case name ([a-z][a-z0-9_]{{1,62}})")
    _check_features(blueprint, bad)
    _check_actions_and_policy(blueprint, bad)
    _check_arms(blueprint, bad)
    _check_reward_training(blueprint, bad)
    _check_drift(blueprint.drift, bad)
    if errors:
        raise InvalidArgument(errors[0][0], errors[0][1], errors[1:])


def _check_features(blueprint: bp.Blueprint, bad) -> None:
    if not blueprint.features:
        bad("features", "at least one feature is required")
    seen: set[str] = set()
    for i, feature in enumerate(blueprint.features):
        path = f"features[{i}]"
        if not FEATURE_RE.fullmatch(feature.name):
            bad(f"{path}.name", f"{feature.name!r} is not a feature name ([a-z][a-z0-9_]{{0,62}})")
        elif feature.name in seen:
            bad(f"{path}.name", f"duplicate feature name {feature.name!r}")
        seen.add(feature.name)
        if feature.type == bp.FEATURE_TYPE_UNSPECIFIED:
            bad(f"{path}.type", "type must be NUMERIC or CATEGORICAL")
        elif feature.type == bp.FEATURE_TYPE_CATEGORICAL:
            if not feature.vocabulary:
                bad(f"{path}.vocabulary", "a categorical feature needs a non-empty vocabulary")
            elif len(set(feature.vocabulary)) != len(feature.vocabulary):
                bad(f"{path}.vocabulary", "vocabulary values must be unique")
            elif feature.on_missing == bp.MISSING_RULE_IMPUTE and not (
                float(feature.impute_value).is_integer()
                and 0 <= feature.impute_value < len(feature.vocabulary)
            ):
                bad(f"{path}.impute_value", "for a categorical feature, the code of a vocabulary value")
        elif feature.vocabulary:
            bad(f"{path}.vocabulary", "only categorical features have a vocabulary")
        if not math.isfinite(feature.impute_value):
            bad(f"{path}.impute_value", "must be finite")
    for i, name in enumerate(blueprint.slices):
        if name not in seen:
            bad(f"slices[{i}]", f"{name!r} is not a feature")


def _check_actions_and_policy(blueprint: bp.Blueprint, bad) -> None:
    kind, actions = blueprint.kind, list(blueprint.actions)
    if kind == bp.DECISION_KIND_UNSPECIFIED or kind not in bp.DecisionKind.values():
        bad("kind", "kind must be BINARY, MULTICLASS, REGRESSION, ACTION_VALUE or RANKING")
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
        bad("default_decision.action", f"{default.action!r} is not one of the actions")
    if not math.isfinite(default.score):
        bad("default_decision.score", "must be finite")

    policy = blueprint.policy
    if policy.type not in bp.PolicyType.values():
        bad("policy.type", "unknown policy type")
    if not 0.0 <= policy.epsilon <= 1.0:
        bad("policy.epsilon", "must be in [0, 1]")
    if policy.type in (bp.POLICY_TYPE_SOFTMAX, bp.POLICY_TYPE_THOMPSON) and kind in (
        bp.DECISION_KIND_BINARY, bp.DECISION_KIND_REGRESSION
    ):
        bad("policy.type", "softmax and Thompson choose among several scored actions: "
                           "use them with MULTICLASS, ACTION_VALUE or RANKING")
    if policy.type == bp.POLICY_TYPE_SOFTMAX and not (math.isfinite(policy.temperature) and policy.temperature > 0):
        bad("policy.temperature", "softmax needs a temperature > 0")
    elif policy.temperature < 0 or not math.isfinite(policy.temperature):
        bad("policy.temperature", "must be >= 0")
    if not 0.0 <= policy.threshold <= 1.0:
        bad("policy.threshold", "must be in [0, 1]")
    for action, cost in policy.action_costs.items():
        if action not in actions or not math.isfinite(cost):
            bad("policy.action_costs", f"{action!r}: costs need an action of the use case and a finite value")
    n_actions = max(len(actions), 1)
    if not 0.0 <= policy.exploration_floor <= 1.0 / n_actions:
        bad("policy.exploration_floor", f"must be in [0, 1/{n_actions}]")
    if not (math.isfinite(blueprint.latency_budget_ms) and blueprint.latency_budget_ms >= 0):
        bad("latency_budget_ms", "must be >= 0")


def _check_arms(blueprint: bp.Blueprint, bad) -> None:
    names: set[str] = set()
    total = 0.0
    for i, arm in enumerate(blueprint.arms):
        if not arm.name:
            bad(f"arms[{i}].name", "an arm needs a name")
        elif arm.name in names:
            bad(f"arms[{i}].name", f"duplicate arm name {arm.name!r}")
        names.add(arm.name)
        if not 0.0 < arm.traffic_share <= 1.0:
            bad(f"arms[{i}].traffic_share", "must be in (0, 1]")
        total += arm.traffic_share
        if arm.HasField("epsilon") and not 0.0 <= arm.epsilon <= 1.0:
            bad(f"arms[{i}].epsilon", "must be in [0, 1]")
    if blueprint.arms and abs(total - 1.0) > SHARE_TOLERANCE:
        bad("arms", f"traffic shares sum to {total:g}, not 1")


def _check_reward_training(blueprint: bp.Blueprint, bad) -> None:
    window = blueprint.reward.window
    if window.seconds < 0 or window.nanos < 0 or (window.seconds == 0 and window.nanos == 0):
        bad("reward.window", "the reward window must be > 0")
    if not math.isfinite(blueprint.reward.default_reward):
        bad("reward.default_reward", "must be finite")
    if blueprint.reward.aggregation not in bp.RewardAggregation.values():
        bad("reward.aggregation", "unknown aggregation")
    if blueprint.training.min_rows < 0:
        bad("training.min_rows", "must be >= 0")
    if not 0.0 <= blueprint.training.holdout_fraction <= 0.5:
        bad("training.holdout_fraction", "must be in (0, 0.5] (0 means 0.2)")


def _check_drift(drift: bp.DriftSpec, bad) -> None:
    for name in ("feature_psi_threshold", "prediction_psi_threshold"):
        if not math.isfinite(getattr(drift, name)):
            bad(f"drift.{name}", "must be finite")
    if drift.min_decisions < 0:
        bad("drift.min_decisions", "must be >= 0 (0 means 500)")


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
    messages element by element (``features[2].vocabulary``); an absent side is ""."""
    out: list[tuple[str, str, str]] = []
    for fd in new.DESCRIPTOR.fields:
        path = f"{prefix}{fd.name}"
        a, b = getattr(old, fd.name), getattr(new, fd.name)
        if a == b:
            continue
        if fd.is_repeated:
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
