"""Bootstrap ensembles for Thompson sampling (docs/policies.md, "Thompson sampling").

A blueprint whose policy is ``POLICY_TYPE_THOMPSON`` serves P(a) = the share of K
model members whose best action is ``a``. With an action-value use case the trainer
refits the winning candidate (its family and searched hyper-parameters) K times, each
member on a bootstrap resample of the training rows (drawn with replacement, same
size, seeded), so the members disagree where the data leaves the best action
uncertain and agree where it does not.

The K members are exported as ONE ONNX graph with outputs ``member_values``
``[N, K]`` (the registered score output, which the decision service reads in one
session run per request) and their mean ``variable`` ``[N, 1]`` (what the trainer's
own checks read: holdout metrics, blessing, prediction profile, shadow comparison,
latency). Linear members (``ridge_interactions``) are fused into a dozen nodes that
score all K members at once; other families are converted member by member and the
graphs merged (every name prefixed ``member<k>_``, the input ``features`` shared).
The parity check of a single model is applied to every member's column and to the mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.policy import thompson_members
from loopwise.services.trainer.models import (
    ACTION_VALUE,
    LINEAR,
    PARITY_ATOL,
    PARITY_MIN_AGREEMENT,
    PARITY_RTOL,
    ParityReport,
    TrainingSet,
    action_value_inputs,
    export_onnx,
    fit_weighted,
    greedy_actions,
    make_estimator,
    run_onnx,
)
from loopwise.services.trainer.value_model import INPUT, stacked_graph

MEMBER_OUTPUT = "member_values"
VALUE_OUTPUT = "variable"


@dataclass
class BootstrapEnsemble:
    """K fitted members of one family; ``predict`` is their mean (what the trainer's
    metrics and checks use), ``predict_members`` every member's value."""

    members: list[Any]

    def predict_members(self, x: np.ndarray) -> np.ndarray:
        """Every member's prediction, ``[N, K]``."""
        return np.column_stack([np.asarray(m.predict(x), dtype=np.float64).reshape(-1) for m in self.members])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The mean of the members' predictions, ``[N]``."""
        return self.predict_members(x).mean(axis=1)


def wants_ensemble(blueprint: bp.Blueprint, kind: str) -> int:
    """K when the trainer should build a bootstrap ensemble for ``blueprint`` (Thompson
    policy on an action-value use case), else 0."""
    if blueprint.policy.type != bp.POLICY_TYPE_THOMPSON or kind != ACTION_VALUE:
        return 0
    return thompson_members(blueprint.policy)


def search_family(kind: str, registered: str) -> str:
    """The candidate family of a registered family name (``ridge_interactions`` →
    ``linear``)."""
    return "linear" if registered == LINEAR.get(kind) else registered


def fit_ensemble(data: TrainingSet, family: str, params: dict[str, Any], members: int,
                 seed: int) -> BootstrapEnsemble:
    """``members`` estimators of ``family`` with ``params``, member k fitted on its own
    bootstrap resample of the training rows (with the rows' importance weights)."""
    if data.kind != ACTION_VALUE:
        raise ValueError(f"bootstrap ensembles are built for action-value models, not {data.kind}")
    x = data.x_train.astype(np.float64)
    n = x.shape[0]
    rng = np.random.default_rng([seed, members])
    fitted = []
    for k in range(members):
        rows = rng.integers(0, n, size=n)
        weights = None if data.w_train is None else data.w_train[rows]
        fitted.append(fit_weighted(make_estimator(data.kind, family, seed + k, params), x[rows],
                                   data.y_train[rows], weights))
    return BootstrapEnsemble(fitted)


def merge_members(models: list[bytes], input_width: int) -> bytes:
    """One ONNX graph from K single-output member graphs (input ``features``, output
    ``[N, 1]``): outputs ``member_values`` ``[N, K]`` and their mean ``variable`` ``[N, 1]``."""
    from onnx import helper

    head = [helper.make_node("ReduceMean", [MEMBER_OUTPUT], [VALUE_OUTPUT], axes=[1], keepdims=1,
                             name="members_mean")]
    return stacked_graph(models, "member", MEMBER_OUTPUT, head, [], "bootstrap_ensemble", input_width)


def _linear_terms(member: Any, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
    """(imputer medians [F], linear weights [F], interaction weights [F, F] upper
    triangular, intercept) of a ``ridge_interactions`` pipeline (impute, degree-2
    interaction products, ridge), or None for any other estimator."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import PolynomialFeatures

    if not isinstance(member, Pipeline) or [type(step) for _, step in member.steps] != [
            SimpleImputer, PolynomialFeatures, Ridge]:
        return None
    imputer, poly, ridge = (step for _, step in member.steps)
    statistics = np.asarray(imputer.statistics_, dtype=np.float64)
    if statistics.shape != (width,) or poly.include_bias or not poly.interaction_only:
        return None
    coef = np.asarray(ridge.coef_, dtype=np.float64).reshape(-1)
    linear = np.zeros(width)
    pairs = np.zeros((width, width))
    for power, c in zip(poly.powers_, coef, strict=True):
        used = np.flatnonzero(power)
        if used.size == 1:
            linear[used[0]] += c
        elif used.size == 2:
            pairs[used[0], used[1]] += c
        else:
            return None
    return statistics, linear, pairs, float(np.asarray(ridge.intercept_).reshape(-1)[0])


def fused_linear_onnx(ensemble: BootstrapEnsemble, input_width: int) -> bytes | None:
    """The members of a linear (``ridge_interactions``) ensemble as one graph of a
    dozen nodes, whatever K: every member's value is ``b_k + w_k·x̃_k + x̃_kᵀ P_k x̃_k``
    with ``x̃_k`` the input with NaNs replaced by member k's medians, computed for all
    members at once. None when a member is not such a pipeline."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    terms = [_linear_terms(m, input_width) for m in ensemble.members]
    if any(t is None for t in terms):
        return None
    medians = np.stack([t[0] for t in terms]).astype(np.float32)  # [K, F]
    linear = np.stack([t[1] for t in terms]).astype(np.float32)  # [K, F]
    pairs = np.stack([t[2] for t in terms]).astype(np.float32)  # [K, F, F]
    intercepts = np.array([t[3] for t in terms], dtype=np.float32)  # [K]
    k = len(terms)
    init = [numpy_helper.from_array(medians, "member_medians"),
            numpy_helper.from_array(linear, "member_linear"),
            numpy_helper.from_array(pairs, "member_pairs"),
            numpy_helper.from_array(intercepts, "member_intercepts"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_1"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis_2")]
    nodes = [
        helper.make_node("Unsqueeze", [INPUT, "axis_1"], ["x_1f"]),  # [N, 1, F]
        helper.make_node("IsNaN", ["x_1f"], ["x_missing"]),
        helper.make_node("Where", ["x_missing", "member_medians", "x_1f"], ["x_imputed"]),  # [N, K, F]
        helper.make_node("Mul", ["x_imputed", "member_linear"], ["linear_parts"]),
        helper.make_node("ReduceSum", ["linear_parts", "axis_2"], ["linear_values"], keepdims=0),  # [N, K]
        helper.make_node("Unsqueeze", ["x_imputed", "axis_2"], ["x_row"]),  # [N, K, 1, F]
        helper.make_node("MatMul", ["x_row", "member_pairs"], ["x_pairs_row"]),  # [N, K, 1, F]
        helper.make_node("Squeeze", ["x_pairs_row", "axis_2"], ["x_pairs"]),  # [N, K, F]
        helper.make_node("Mul", ["x_pairs", "x_imputed"], ["pair_parts"]),
        helper.make_node("ReduceSum", ["pair_parts", "axis_2"], ["pair_values"], keepdims=0),  # [N, K]
        helper.make_node("Add", ["linear_values", "pair_values"], ["member_sums"]),
        helper.make_node("Add", ["member_sums", "member_intercepts"], [MEMBER_OUTPUT]),
        helper.make_node("ReduceMean", [MEMBER_OUTPUT], [VALUE_OUTPUT], axes=[1], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes, "bootstrap_linear_ensemble",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [None, input_width])],
        [helper.make_tensor_value_info(MEMBER_OUTPUT, TensorProto.FLOAT, [None, k]),
         helper.make_tensor_value_info(VALUE_OUTPUT, TensorProto.FLOAT, [None, 1])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def export_ensemble(ensemble: BootstrapEnsemble, kind: str, input_width: int) -> bytes:
    """The ensemble as one ONNX graph with outputs ``member_values`` and ``variable``:
    fused for linear members, otherwise every member's own export merged."""
    fused = fused_linear_onnx(ensemble, input_width)
    if fused is not None:
        return fused
    return merge_members([export_onnx(m, kind, input_width) for m in ensemble.members], input_width)


def check_ensemble_parity(onnx: bytes, ensemble: BootstrapEnsemble, data: TrainingSet) -> ParityReport:
    """The single-model parity check (``models.check_parity``: elementwise tolerance
    and the share of equal greedy decisions) applied to every member's column of
    ``member_values`` and to the mean ``variable``, against scikit-learn on the holdout."""
    assert data.holdout_features is not None
    x = action_value_inputs(data.holdout_features, data.n_actions)
    expected = ensemble.predict_members(x.astype(np.float64))
    try:
        got = run_onnx(onnx, MEMBER_OUTPUT, x)
        mean = run_onnx(onnx, VALUE_OUTPUT, x)
    except Exception as exc:  # any runtime failure is a parity failure
        return ParityReport(False, math.inf, x.shape[0], 0.0, f"ONNX Runtime failed: {exc}")
    if got.shape != expected.shape:
        return ParityReport(False, math.inf, x.shape[0], 0.0,
                            f"ONNX output shape {got.shape} differs from scikit-learn {expected.shape}")
    reasons = []
    violations = 0
    agreement = 1.0
    columns = [(f"member {k}", got[:, k:k + 1], expected[:, k:k + 1]) for k in range(expected.shape[1])]
    columns.append(("the mean", mean, expected.mean(axis=1, keepdims=True)))
    max_diff = 0.0
    for label, g, e in columns:
        diff = np.abs(g - e)
        bad = int(np.sum(diff > PARITY_ATOL + PARITY_RTOL * np.abs(e)))
        max_diff = max(max_diff, float(diff.max()) if diff.size else 0.0)
        same = greedy_actions(g, data.n_actions) == greedy_actions(e, data.n_actions)
        share = float(np.mean(same)) if same.size else 1.0
        agreement = min(agreement, share)
        violations += bad
        if bad:
            reasons.append(f"{label}: {bad} of {diff.size} values differ by more than "
                           f"{PARITY_ATOL:g} + {PARITY_RTOL:g}·|sklearn| (max {float(diff.max()):.3g})")
        if share < PARITY_MIN_AGREEMENT:
            reasons.append(f"{label}: same decision on only {share:.2%} of rows (need {PARITY_MIN_AGREEMENT:.1%})")
    return ParityReport(not reasons, max_diff, violations, agreement, "; ".join(reasons))


def package_ensemble(data: TrainingSet, family: str, params: dict[str, Any], members: int,
                     seed: int) -> tuple[BootstrapEnsemble, bytes, ParityReport]:
    """Fit, export and parity-check a bootstrap ensemble (pool function); an export
    failure is a failed parity report with empty bytes."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        ensemble = fit_ensemble(data, family, params, members, seed)
        try:
            onnx = export_ensemble(ensemble, data.kind, data.input_width)
        except Exception as exc:  # any converter failure disqualifies the ensemble
            return ensemble, b"", ParityReport(False, math.inf, 0, 0.0,
                                               f"ONNX export failed: {type(exc).__name__}: {exc}")
        return ensemble, onnx, check_ensemble_parity(onnx, ensemble, data)


def comparable_output(score_output: str) -> str:
    """The output the trainer compares models on: an ensemble's mean ``variable``
    for its registered ``member_values``, otherwise the registered output itself."""
    return VALUE_OUTPUT if score_output == MEMBER_OUTPUT else score_output
