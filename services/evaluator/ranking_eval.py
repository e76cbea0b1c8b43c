"""EvaluatePolicy for ranking use cases: the prefix-IPS value of a model's rankings.

The candidate is a registered model version; its policy is the blueprint's (with the
request's ``policy_variant``): Plackett–Luce at the temperature for softmax, else
greedy, with the policy's epsilon. Every logged ranking is read with all its
candidates (``include_unshown_items``), the model scores every candidate, and the
target's probability of each logged prefix is compared with the logged one
(:func:`loopwise.ranking.ranking_policy_value`, shared with the trainer's blessing):
the value is the expected clicks (rewards of the shown items) per ranking, with a 95%
interval (docs/ranking.md). ``max_weight`` >
0 clips the prefix weights. SNIPS and doubly robust values are not computed for
rankings (left unset).
"""

from __future__ import annotations

import asyncio

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.errors import FailedPrecondition, InvalidArgument
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.policy import base_epsilon
from loopwise.ranking import LoggedRanking, group_rankings, ranking_policy_value, ranking_rule
from loopwise.services.evaluator.estimation import MIN_ROWS
from loopwise.tensors import F32, I32, unpack_matrix, unpack_vector


def _score(onnx: bytes, output: str, x: np.ndarray) -> np.ndarray:
    """One score per row from the model (column 1 of class probabilities)."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    out = np.asarray(session.run([output], {"features": x.astype(np.float32)})[0], dtype=np.float64)
    return out[:, 1] if out.ndim == 2 and out.shape[1] == 2 else out.reshape(x.shape[0], -1).mean(axis=1)


async def evaluate_ranking(evaluator, request: epb.EvaluatePolicyRequest, blueprint: bp.Blueprint,
                           start_ms: int | None, end_ms: int | None) -> epb.EvaluatePolicyResponse:
    """The prefix-IPS value of ``request.model_version``'s rankings (see the module docstring)."""
    if request.report_id or request.constant_action:
        raise InvalidArgument("model_version", "a ranking is evaluated for a model version "
                                               "(report_id and constant_action do not apply)")
    if request.model_version <= 0:
        raise InvalidArgument("model_version", "required: the model whose rankings are evaluated")
    use_case = request.use_case
    model, onnx = await evaluator.registry.download(use_case, request.model_version)
    model_names = [f.name for f in (await evaluator.use_cases.version(use_case, model.blueprint_version)).features]
    policy = bp.Policy()
    policy.CopyFrom(blueprint.policy)
    policy.MergeFrom(request.policy_variant)

    rankings: list[LoggedRanking] = []
    async for batch in evaluator.training_data.read(use_case, start_ms, end_ms, include_unshown_items=True):
        if batch.rows == 0:
            continue
        x = unpack_matrix(batch.features, batch.rows, len(batch.feature_names), "features")
        batch_names = list(batch.feature_names)
        aligned = np.full((batch.rows, len(model_names)), np.nan, dtype=np.float32)
        for j, name in enumerate(model_names):
            if name in batch_names:
                aligned[:, j] = x[:, batch_names.index(name)]
        rankings += group_rankings(list(batch.decision_ids), unpack_vector(batch.action_indices, I32),
                                   unpack_vector(batch.positions, I32), unpack_vector(batch.propensities, F32),
                                   unpack_vector(batch.rewards, F32), aligned)
    if len(rankings) < MIN_ROWS:
        raise FailedPrecondition(f"too few rows: {len(rankings)} logged rankings, need at least {MIN_ROWS}")

    def estimate() -> tuple:
        flat = _score(onnx, model.score_output or "probabilities", np.vstack([r.features for r in rankings]))
        scores, at = [], 0
        for r in rankings:
            scores.append(flat[at:at + r.features.shape[0]])
            at += r.features.shape[0]
        rules = [ranking_rule(policy, base_epsilon(policy), r.features.shape[0], False) for r in rankings]
        value, weights = ranking_policy_value(rankings, scores, rules, request.max_weight)
        final = weights[:, -1]
        ess = float(final.sum() ** 2 / (final ** 2).sum()) if (final ** 2).sum() > 0 else 0.0
        return value, float(np.mean([r.logged_clicks for r in rankings])), ess, float(weights.max())

    value, logged_value, ess, max_weight = await asyncio.to_thread(estimate)
    warnings = []
    if ess < 0.01 * value.n:
        warnings.append(f"effective sample size {ess:.1f} of {value.n} rankings: the logged rankings rarely "
                        "follow the model's; the interval is wide")
    return epb.EvaluatePolicyResponse(
        ips_value=value.value, ips_ci_lower=value.low, ips_ci_upper=value.high, rows=value.n,
        effective_sample_size=ess, max_importance_weight=max_weight, warnings=warnings,
        logged_value=logged_value,
    )
