"""Candidate policies on logged rows, their off-policy value, and parameter tuning.

A candidate is a source of action values (a constant action, a report's effect model,
or a registered ONNX model) and the blueprint policy that turns them into action
probabilities — the same :class:`~loopwise.policy.Policy` the decision service uses,
so what is evaluated is what would be served. The functions here run in a worker
process (:mod:`.isolation`).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.errors import InvalidArgument, quote
from loopwise.policy import Policy, action_costs, base_epsilon
from loopwise.services.evaluator import policy_eval, tuning

# The member output of an ensemble model (services/trainer/ensemble.py writes it).
MEMBER_OUTPUT = "member_values"
TUNABLE = ("policy.epsilon", "policy.threshold", "policy.temperature")
COST_PREFIX = "action_costs."
SHARE_PREFIX = "share:"


@dataclass
class LoggedRows:
    """Logged decisions of a use case in the latest blueprint's layout."""

    x: np.ndarray  # [n, F] float64, NaN = missing
    actions: np.ndarray  # [n] index into action_names
    probability: np.ndarray  # [n] logged probability of the chosen action
    rewards: np.ndarray  # [n]
    action_names: list[str]
    feature_names: list[str]


@dataclass
class Candidate:
    """Where a candidate's action values come from (one of the three) and its policy."""

    kind: int  # blueprint DecisionKind
    policy: bytes  # serialized bp.Policy (the blueprint's, with the variant applied)
    constant_action: int = -1
    effect_model: bytes = b""  # pickled EffectModel of a report
    treatment_index: int = -1  # the report's treatment action
    onnx: bytes = b""  # a registered model
    onnx_columns: list[int] = field(default_factory=list)  # the model's features in our columns


def merged_policy(base: bp.Policy, variant: bp.Policy) -> bp.Policy:
    """The blueprint policy with a variant's non-zero fields and costs applied."""
    policy = bp.Policy()
    policy.CopyFrom(base)
    for name in ("type", "epsilon", "threshold", "exploration_floor", "temperature"):
        value = getattr(variant, name)
        if value:
            setattr(policy, name, value)
    for action, cost in variant.action_costs.items():
        policy.action_costs[action] = cost
    return policy


def action_values(candidate: Candidate, rows: LoggedRows) -> np.ndarray | None:
    """Values [n, A] of every action (None for a constant action); binary kinds give
    [n, 1] scores P(positive). An action-value ensemble gives its members, [n, A, K]
    (read from ``member_values`` when the model has that output, as the decision
    service serves it), so a Thompson policy is evaluated with its member shares."""
    n, n_actions = rows.x.shape[0], len(rows.action_names)
    if candidate.constant_action >= 0:
        return None
    if candidate.effect_model:
        model = pickle.loads(candidate.effect_model)
        effects, _, _ = model.predict(rows.x)
        values = np.zeros((n, n_actions))
        values[:, candidate.treatment_index] = effects
        return values
    from loopwise.services.evaluator.cate_onnx import session

    sess = session(candidate.onnx)
    x = np.full((n, len(candidate.onnx_columns)), np.nan, dtype=np.float32)
    for j, column in enumerate(candidate.onnx_columns):
        if column >= 0:
            x[:, j] = rows.x[:, column]
    inputs = sess.get_inputs()[0].name
    if candidate.kind == bp.DECISION_KIND_ACTION_VALUE:
        onehot = np.tile(np.eye(n_actions, dtype=np.float32), (n, 1))
        x = np.hstack([np.repeat(x, n_actions, axis=0), onehot])
        names = [o.name for o in sess.get_outputs()]
        output = MEMBER_OUTPUT if MEMBER_OUTPUT in names else names[-1]
        out = np.asarray(sess.run([output], {inputs: x})[0], dtype=np.float64).reshape(n, n_actions, -1)
        return out if out.shape[2] > 1 else out[:, :, 0]
    out = np.asarray(sess.run(None, {inputs: x})[-1], dtype=np.float64)
    return (out[:, 1] if out.ndim == 2 and out.shape[1] == 2 else out.reshape(n)).reshape(n, 1)


def target_probabilities(candidate: Candidate, values: np.ndarray | None, policy: bp.Policy,
                         action_names: list[str], n: int) -> np.ndarray:
    """Probabilities [n, A] of every action under the candidate with ``policy``."""
    n_actions = len(action_names)
    if values is None:
        return policy_eval.constant_policy(n, n_actions, candidate.constant_action)
    eps = np.full(n, base_epsilon(policy))
    rule = Policy.of_blueprint(policy)
    if candidate.kind == bp.DECISION_KIND_BINARY:
        greedy = (values[:, 0] >= (policy.threshold or 0.5)).astype(int)
        return rule.threshold_probabilities(greedy, eps, n_actions, False)
    costs = action_costs(policy, action_names)
    members = values if values.ndim == 3 else values[:, :, None]
    target, _ = rule.probabilities(members - costs[None, :, None], eps, False)
    return target


def evaluate_candidate(candidate: Candidate, rows: LoggedRows, seed: int, max_weight: float,
                       report=None) -> policy_eval.OffPolicyValue:
    """IPS, SNIPS and DR estimates of one candidate (worker entry point)."""
    policy = bp.Policy.FromString(candidate.policy)
    values = action_values(candidate, rows)
    target = target_probabilities(candidate, values, policy, rows.action_names, rows.x.shape[0])
    q = policy_eval.fit_reward_model(rows.x, rows.actions, rows.rewards, len(rows.action_names), seed)
    return policy_eval.evaluate(target, rows.actions, rows.probability, rows.rewards, q, max_weight)



def apply_parameters(policy: bp.Policy, names: list[str], point: np.ndarray) -> bp.Policy:
    """A copy of ``policy`` with the named parameters set (see :data:`TUNABLE`)."""
    out = bp.Policy()
    out.CopyFrom(policy)
    for name, value in zip(names, point, strict=True):
        if name.startswith(COST_PREFIX):
            out.action_costs[name[len(COST_PREFIX):]] = float(value)
        else:
            setattr(out, name.split(".", 1)[1], float(value))
    return out


def check_parameter(name: str, action_names: list[str], field_name: str) -> None:
    """INVALID_ARGUMENT unless ``name`` is tunable."""
    if name in TUNABLE:
        return
    if name.startswith(COST_PREFIX) and name[len(COST_PREFIX):] in action_names:
        return
    raise InvalidArgument(field_name, f"{quote(name)} is not tunable; use one of {list(TUNABLE)} or "
                          f"{COST_PREFIX}<action> with an action of {action_names}")


def check_metric(name: str, action_names: list[str], field_name: str) -> None:
    """INVALID_ARGUMENT unless ``name`` is "reward" or "share:<action>"."""
    if name == "reward" or (name.startswith(SHARE_PREFIX) and name[len(SHARE_PREFIX):] in action_names):
        return
    raise InvalidArgument(field_name, f"{quote(name)} is not a metric; use 'reward' or {SHARE_PREFIX}<action> "
                          f"with an action of {action_names}")


@dataclass
class Suggestion:
    """What SuggestParameters returns."""

    outcome: tuning.Outcome
    estimate: policy_eval.Estimate
    metrics: dict[str, float]


def suggest(candidate: Candidate, rows: LoggedRows, names: list[str], low: np.ndarray, high: np.ndarray,
            objective: str, bounds: list[tuning.Bound], iterations: int, seed: int, net_of_costs: bool,
            report=None) -> Suggestion:
    """Bayesian optimisation of blueprint parameters against an off-policy objective
    (worker entry point). The reward model is fitted once; each evaluation recomputes
    the candidate's probabilities and the doubly robust estimate."""
    base = bp.Policy.FromString(candidate.policy)
    values = action_values(candidate, rows)
    n, n_actions = rows.x.shape[0], len(rows.action_names)
    q = policy_eval.fit_reward_model(rows.x, rows.actions, rows.rewards, n_actions, seed)
    real_costs = np.array([base.action_costs.get(a, 0.0) for a in rows.action_names]) if net_of_costs \
        else np.zeros(n_actions)
    cache: dict[bytes, tuple[policy_eval.Estimate, dict[str, float]]] = {}

    def measure(point: np.ndarray) -> tuple[policy_eval.Estimate, dict[str, float]]:
        key = point.tobytes()
        if key not in cache:
            policy = apply_parameters(base, names, point)
            target = target_probabilities(candidate, values, policy, rows.action_names, n)
            value = policy_eval.evaluate(target, rows.actions, rows.probability, rows.rewards, q)
            terms = value.dr_terms - target @ real_costs
            estimate = policy_eval.Estimate.of_terms(terms)
            metrics = {"reward": estimate.value}
            metrics.update({f"{SHARE_PREFIX}{a}": float(target[:, i].mean()) for i, a in enumerate(rows.action_names)})
            cache[key] = (estimate, metrics)
        return cache[key]

    def evaluate(point: np.ndarray) -> tuple[float, dict[str, float]]:
        _, metrics = measure(point)
        return metrics[objective], metrics

    outcome = tuning.maximise(evaluate, low, high, iterations, seed, bounds)
    estimate, metrics = measure(outcome.best.point)
    if objective != "reward":
        estimate = policy_eval.Estimate(metrics[objective], metrics[objective], metrics[objective])
    return Suggestion(outcome, estimate, metrics)
