"""The prediction profile a model is registered with: the trainer computes, from the
exported ONNX model, the very score the decision service records for a decision,
for every kind, so live prediction drift compares like with like."""

from __future__ import annotations

import hashlib

import grpc
import numpy as np
import pytest

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.errors import field_violations
from loopwise.services.decision.encoding import UseCaseVersion
from loopwise.services.decision.models import build_scorer
from loopwise.services.decision.policy import decide_rows
from loopwise.services.trainer.models import (
    ACTION_VALUE,
    BINARY,
    MULTICLASS,
    REGRESSION,
    TrainingSet,
    action_value_inputs,
    export_onnx,
    make_estimator,
)
from loopwise.services.trainer.scores import decision_scores, score_profile
from loopwise.store.decision import BlueprintVersion
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from tests.trainer.conftest import RunningTrainer
from tests.trainer.worlds import numeric

KINDS = {BINARY: bp.DECISION_KIND_BINARY, MULTICLASS: bp.DECISION_KIND_MULTICLASS,
         REGRESSION: bp.DECISION_KIND_REGRESSION, ACTION_VALUE: bp.DECISION_KIND_ACTION_VALUE}
ACTIONS = {BINARY: ["no", "yes"], MULTICLASS: ["a", "b", "c"], REGRESSION: ["predict"],
           ACTION_VALUE: ["a", "b", "c"]}


def fitted(kind: str, n: int = 600, width: int = 3, seed: int = 4) -> tuple[TrainingSet, bytes, bp.Blueprint]:
    """A linear model of ``kind`` fitted on random rows, its ONNX, and its blueprint
    (multi-action kinds with action costs, so costs must be taken into account)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, width)).astype(np.float32)
    n_actions = len(ACTIONS[kind])
    if kind == BINARY:
        y = (x[:, 0] + rng.normal(size=n) > 0).astype(np.int64)
    elif kind == MULTICLASS:
        y = np.argmax(x[:, :n_actions] + rng.normal(size=(n, n_actions)), axis=1)
    else:
        y = x[:, 0] - 0.5 * x[:, 1] + rng.normal(scale=0.1, size=n)
    inputs = x
    if kind == ACTION_VALUE:
        actions = rng.integers(0, n_actions, n)
        inputs = np.hstack([x, np.eye(n_actions, dtype=np.float32)[actions]])
        y = y + (actions == 1) * x[:, 2]
    estimator = make_estimator(kind, "linear", seed).fit(inputs, y)
    training = TrainingSet(kind=kind, n_actions=n_actions, x_train=inputs, y_train=y, x_holdout=inputs[:10],
                           y_holdout=y[:10])
    blueprint = bp.Blueprint(use_case="profiled", kind=KINDS[kind], actions=ACTIONS[kind] if kind != REGRESSION
                             else [], features=[numeric(f"x{i}") for i in range(width)])
    if kind != REGRESSION:
        blueprint.default_decision.action = ACTIONS[kind][0]
    if kind in (MULTICLASS, ACTION_VALUE):
        blueprint.policy.action_costs["b"] = 0.3
    return training, export_onnx(estimator, kind, inputs.shape[1]), blueprint


@pytest.mark.parametrize("kind", [BINARY, MULTICLASS, REGRESSION, ACTION_VALUE])
def test_training_scores_are_the_scores_the_decision_service_records(kind: str, tmp_path) -> None:
    training, onnx, blueprint = fitted(kind)
    ours = decision_scores(onnx, training, blueprint)
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx)
    uc = UseCaseVersion(BlueprintVersion("profiled", 1, blueprint, 0))
    ref = tpb.ModelRef(version=1, input_width=training.input_width, blueprint_version=1,
                       score_output="probabilities" if kind in (BINARY, MULTICLASS) else "variable")
    scorer = build_scorer("profiled", ref, path, uc)
    features = training.x_train[:, :3]
    n = features.shape[0]
    served = decide_rows(uc, features, ["default"] * n, np.zeros(n), scorer, np.random.default_rng(0),
                         disable_exploration=True)
    assert not served.fallback.any()
    np.testing.assert_allclose(ours, served.score, rtol=1e-5, atol=1e-6)
    if kind in (MULTICLASS, ACTION_VALUE):  # the recorded score is the best action's, net of costs
        np.testing.assert_allclose(served.score, served.action_scores.max(axis=1), atol=1e-9)
        assert (served.action_index == 1).any() and (served.action_index != 1).any()


def test_rows_beyond_the_cap_are_sampled_and_action_values_widen_per_action() -> None:
    training, onnx, blueprint = fitted(ACTION_VALUE, n=50)
    assert action_value_inputs(training.x_train[:, :3], 3).shape == (150, 6)
    assert decision_scores(onnx, training, blueprint).shape == (50,)


def test_score_profile_bins_by_quantiles_with_missing_counted() -> None:
    scores = np.concatenate([np.random.default_rng(1).uniform(size=1000), [np.nan, np.nan]])
    profile = score_profile(scores)
    assert profile.count == 1002 and profile.missing_count == 2
    assert len(profile.bin_edges) == 9 and len(profile.bin_counts) == 10
    assert sum(profile.bin_counts) == 1000
    assert all(90 <= c <= 110 for c in profile.bin_counts)  # deciles of the scores themselves
    assert abs(profile.mean - 0.5) < 0.05
    constant = score_profile(np.full(100, 0.7))
    assert list(constant.bin_edges) == [0.7] and list(constant.bin_counts) == [100, 0]


async def test_register_model_keeps_a_valid_prediction_profile_and_names_a_bad_one(trainer: RunningTrainer) -> None:
    training, onnx, blueprint = fitted(REGRESSION)
    profile = score_profile(decision_scores(onnx, training, blueprint))

    def request(model: tpb.Model) -> tpb.RegisterModelRequest:
        return tpb.RegisterModelRequest(model=model, onnx=onnx, sha256=hashlib.sha256(onnx).hexdigest())

    bad = tpb.Model(use_case="profiled", input_width=3, prediction_profile=profile)
    del bad.prediction_profile.bin_counts[-1]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await trainer.stub.RegisterModel(request(bad), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in field_violations(error.value)] == ["model.prediction_profile.bin_counts"]
    unsorted = tpb.Model(use_case="profiled", input_width=3)
    unsorted.feature_profiles.add(name="x0", bin_edges=[1.0, 0.0], bin_counts=[1, 1, 1])
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await trainer.stub.RegisterModel(request(unsorted), timeout=30)
    assert [f for f, _ in field_violations(error.value)] == ["model.feature_profiles[0].bin_edges"]

    good = tpb.Model(use_case="profiled", input_width=3, prediction_profile=profile)
    registered = (await trainer.stub.RegisterModel(request(good), timeout=30)).model
    fetched = (await trainer.stub.GetModel(tpb.GetModelRequest(use_case="profiled", version=registered.version),
                                           timeout=5)).model
    assert fetched.prediction_profile == profile and sum(profile.bin_counts) == 600
