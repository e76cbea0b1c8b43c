"""Thompson sampling's bootstrap ensembles: one ONNX graph with K member outputs whose
values match scikit-learn member by member, member shares as the served propensities,
a Thompson use case trained through the trainer service, and off-policy evaluation
of a Thompson ensemble with its member shares."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.policy import Policy
from loopwise.services.evaluator.offpolicy import (
    Candidate,
    LoggedRows,
    action_values,
    target_probabilities,
)
from loopwise.services.trainer.ensemble import (
    MEMBER_OUTPUT,
    VALUE_OUTPUT,
    BootstrapEnsemble,
    check_ensemble_parity,
    export_ensemble,
    package_ensemble,
    wants_ensemble,
)
from loopwise.services.trainer.models import ACTION_VALUE, TrainingSet, action_value_inputs
from tests.trainer.conftest import RunningTrainer
from tests.trainer.test_training import download, result_of, train
from tests.trainer.worlds import UPLIFT, World, uplift_batches

N_ACTIONS = 3
WIDTH = 3


def action_value_set(n: int = 1500, seed: int = 0, missing: float = 0.05) -> TrainingSet:
    """Uniformly logged rows of a 3-action world with linear action values and some
    missing feature values."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, WIDTH)).astype(np.float32)
    theta = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [0.5, 0.0, 0.5]])
    a = rng.integers(0, N_ACTIONS, n)
    y = (x @ theta)[np.arange(n), a] + rng.normal(scale=0.5, size=n)
    x[rng.random(x.shape) < missing] = np.nan
    xa = np.hstack([x, np.eye(N_ACTIONS, dtype=np.float32)[a]])
    cut = int(n * 0.8)
    return TrainingSet(kind=ACTION_VALUE, n_actions=N_ACTIONS, x_train=xa[:cut], y_train=y[:cut],
                       x_holdout=xa[cut:], y_holdout=y[cut:], holdout_features=x[cut:],
                       holdout_actions=a[cut:], holdout_propensities=np.full(n - cut, 1 / N_ACTIONS),
                       w_train=np.ones(cut))


@pytest.mark.parametrize("family", ["linear", "random_forest"])
def test_ensemble_graph_has_k_member_outputs_matching_scikit_learn(family: str) -> None:
    data = action_value_set()
    ensemble, onnx, parity = package_ensemble(data, family, {}, 6, seed=1)
    assert parity.ok, parity.reason
    assert parity.violations == 0 and parity.agreement == 1.0 and parity.max_abs_diff < 1e-4
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    shapes = {o.name: o.shape for o in session.get_outputs()}
    assert shapes[MEMBER_OUTPUT][1] == 6 and shapes[VALUE_OUTPUT][1] == 1
    x = action_value_inputs(data.holdout_features, N_ACTIONS)
    members, mean = session.run([MEMBER_OUTPUT, VALUE_OUTPUT], {"features": x})
    expected = ensemble.predict_members(x.astype(np.float64))
    np.testing.assert_allclose(members, expected, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(mean[:, 0], expected.mean(axis=1), atol=1e-4, rtol=1e-4)
    # Bootstrap resamples make the members differ: the ensemble carries uncertainty.
    assert np.std(expected, axis=1).mean() > 1e-3


def test_parity_check_finds_a_member_that_differs() -> None:
    data = action_value_set()
    ensemble, onnx, parity = package_ensemble(data, "linear", {}, 4, seed=2)
    assert parity.ok
    # Another fit for member 2 than the one exported: its column and the mean differ.
    other = package_ensemble(action_value_set(seed=9), "linear", {}, 4, seed=3)[0]
    swapped = BootstrapEnsemble([*ensemble.members[:2], other.members[2], ensemble.members[3]])
    report = check_ensemble_parity(onnx, swapped, data)
    assert not report.ok and "member 2" in report.reason and "the mean" in report.reason
    assert "member 0" not in report.reason and report.violations > 0


def test_merged_member_graphs_for_non_linear_families() -> None:
    data = action_value_set(n=800)
    ensemble, _, _ = package_ensemble(data, "hist_gradient_boosting", {"max_iter": 10}, 3, seed=4)
    onnx = export_ensemble(ensemble, ACTION_VALUE, data.input_width)
    names = [o.name for o in ort.InferenceSession(onnx, providers=["CPUExecutionProvider"]).get_outputs()]
    assert names == [MEMBER_OUTPUT, VALUE_OUTPUT]
    report = check_ensemble_parity(onnx, ensemble, data)
    assert report.agreement > 0.99


def test_member_shares_are_the_thompson_propensities() -> None:
    data = action_value_set()
    _, onnx, _ = package_ensemble(data, "linear", {}, 8, seed=5)
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    features = data.holdout_features[:200]
    (members,) = session.run([MEMBER_OUTPUT], {"features": action_value_inputs(features, N_ACTIONS)})
    values = members.reshape(features.shape[0], N_ACTIONS, 8).astype(np.float64)
    rule = Policy(bp.POLICY_TYPE_THOMPSON, 1.0, 0.0)
    probabilities, _ = rule.probabilities(values, np.zeros(features.shape[0]), False)
    best = values.argmax(axis=1)  # [n, K]
    for i in range(features.shape[0]):
        np.testing.assert_allclose(probabilities[i], np.bincount(best[i], minlength=N_ACTIONS) / 8)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    # Some rows are uncertain (several actions with a positive share), others are not.
    uncertain = (probabilities > 0).sum(axis=1) > 1
    assert 0 < uncertain.sum() < features.shape[0]


def test_only_thompson_action_value_use_cases_get_an_ensemble() -> None:
    thompson = bp.Blueprint(policy=bp.Policy(type=bp.POLICY_TYPE_THOMPSON))
    assert wants_ensemble(thompson, ACTION_VALUE) == 8
    thompson.policy.thompson_members = 3
    assert wants_ensemble(thompson, ACTION_VALUE) == 3
    assert wants_ensemble(thompson, "multiclass") == 0
    assert wants_ensemble(bp.Blueprint(policy=bp.Policy(type=bp.POLICY_TYPE_SOFTMAX)), ACTION_VALUE) == 0


async def test_a_thompson_use_case_is_trained_as_an_ensemble(world: World, trainer: RunningTrainer) -> None:
    blueprint = bp.Blueprint()
    blueprint.CopyFrom(UPLIFT)
    blueprint.use_case = "uplift_thompson"
    blueprint.policy.type = bp.POLICY_TYPE_THOMPSON
    blueprint.policy.thompson_members = 5
    assert world.decision is not None
    world.decision.blueprints["uplift_thompson"] = {1: blueprint}
    world.feedback.data["uplift_thompson"] = uplift_batches()
    result = result_of(await train(trainer, "uplift_thompson"))
    model = result.model
    assert model.score_output == MEMBER_OUTPUT and "bootstrap ensemble of 5 members" in model.description
    assert "ensemble" in result.stage_seconds
    _, data = await download(trainer, "uplift_thompson", model.version)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert {o.name: o.shape[1] for o in session.get_outputs()} == {MEMBER_OUTPUT: 5, VALUE_OUTPUT: 1}
    x = np.random.default_rng(5).normal(size=(400, 2)).astype(np.float32)
    members, mean = session.run([MEMBER_OUTPUT, VALUE_OUTPUT], {"features": action_value_inputs(x, 2)})
    np.testing.assert_allclose(mean[:, 0], members.mean(axis=1), atol=1e-5)
    assert result.deployed

    # The next job compares its ensemble's mean with the served ensemble's mean.
    second = result_of(await train(trainer, "uplift_thompson"))
    assert second.blessing.compared_with == f"model v{model.version}"
    overall = second.blessing.slices[0]
    assert np.isfinite(overall.candidate) and np.isfinite(overall.serving)
    assert abs(overall.candidate - overall.serving) < 0.2 * abs(overall.serving)


def test_off_policy_evaluation_uses_the_member_shares_of_a_thompson_ensemble() -> None:
    data = action_value_set()
    _, onnx, _ = package_ensemble(data, "linear", {}, 8, seed=6)
    features = data.holdout_features.astype(np.float64)
    n = features.shape[0]
    rows = LoggedRows(features, np.zeros(n, dtype=np.int64), np.full(n, 1 / N_ACTIONS), np.zeros(n),
                      ["a0", "a1", "a2"], ["f0", "f1", "f2"])
    thompson = bp.Policy(type=bp.POLICY_TYPE_THOMPSON)
    candidate = Candidate(bp.DECISION_KIND_ACTION_VALUE, thompson.SerializeToString(), onnx=onnx,
                          onnx_columns=[0, 1, 2])
    values = action_values(candidate, rows)
    assert values is not None and values.shape == (n, N_ACTIONS, 8)
    target = target_probabilities(candidate, values, thompson, rows.action_names, n)
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    (members,) = session.run([MEMBER_OUTPUT], {"features": action_value_inputs(data.holdout_features, N_ACTIONS)})
    best = members.reshape(n, N_ACTIONS, 8).argmax(axis=1)
    shares = np.stack([np.bincount(b, minlength=N_ACTIONS) / 8 for b in best])
    np.testing.assert_allclose(target, shares)
    # Greedy on the same ensemble is the argmax of the members' mean.
    greedy = bp.Policy(type=bp.POLICY_TYPE_GREEDY)
    greedy_target = target_probabilities(candidate, values, greedy, rows.action_names, n)
    np.testing.assert_array_equal(greedy_target.argmax(axis=1), values.mean(axis=2).argmax(axis=1))
    assert (greedy_target.max(axis=1) == 1.0).all()
