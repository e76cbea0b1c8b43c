"""StartTuning end to end on the four real services (the session ``stack``): the product
of :mod:`tests.evaluator.tuning_world` (action costs of ``discount`` and ``gift``, reward
and treated share known exactly) decides through the decision service and reports
outcomes to feedback while the evaluator runs rounds of arms, reads their scorecards and
applies the best setting. The tuning is started and followed through the SDK; the CLI
refuses a bad path and starts a second tuning, which is cancelled and puts the blueprint
back."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import grpc
import numpy as np
import pytest
from google.protobuf import duration_pb2
from typer.testing import CliRunner

from loopwise.cli import app
from loopwise.client import Client, operation_result
from loopwise.clock import Clock, uuid7_time_ms
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.evaluator.v1 import evaluator_service_pb2_grpc as egrpc
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.launcher import Launcher
from loopwise.settings import Settings
from loopwise.tensors import F32, I32, pack, unpack_vector
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.decision.helpers import linear_onnx
from tests.evaluator import tuning_world as W

pytestmark = pytest.mark.timeout(900)
USE_CASE = "tune_costs"
FEATURES = ["x0", "x1"]
ROUNDS, BATCH, MIN_ROWS = 5, 5, 3000
BATCH_ROWS = 250


def blueprint() -> bp.Blueprint:
    """Action value over [none, discount, gift], greedy, costs 0.5 each to start."""
    return bp.Blueprint(
        use_case=USE_CASE, description="online tuning test use case",
        features=[bp.Feature(name=n, type=bp.FEATURE_TYPE_NUMERIC) for n in FEATURES],
        kind=bp.DECISION_KIND_ACTION_VALUE, actions=W.ACTIONS,
        policy=bp.Policy(type=bp.POLICY_TYPE_GREEDY, action_costs={"discount": 0.5, "gift": 0.5}),
        default_decision=bp.DefaultDecision(action="none"),
        reward=bp.RewardSpec(outcome_names=["value"], window=duration_pb2.Duration(seconds=60)),
    )


class Product(threading.Thread):
    """Decides for new units in batches and reports each treated unit's outcome, until stopped."""

    def __init__(self, settings: Settings, channels: dict[str, grpc.Channel], seed: int) -> None:
        super().__init__(daemon=True)
        self.clock = Clock.from_settings(settings)
        self.rng = np.random.default_rng(seed)
        self.decision = dgrpc.DecisionServiceStub(channels["decision"])
        self.feedback = fgrpc.FeedbackServiceStub(channels["feedback"])
        self.stop = threading.Event()
        self.decided = 0
        self.error: BaseException | None = None
        self.arms_seen: set[str] = set()

    def batch(self) -> np.ndarray:
        """One batch under the latest blueprint version (its features never change);
        the model versions that decided."""
        x = self.rng.random((BATCH_ROWS, 2)).astype(np.float32)
        latest = self.decision.GetUseCase(dpb.GetUseCaseRequest(use_case=USE_CASE), timeout=30).use_case.version
        reply = self.decision.DecideBatch(dpb.DecideBatchRequest(
            use_case=USE_CASE, blueprint_version=latest, rows=BATCH_ROWS, feature_names=FEATURES, features=pack(x, F32),
            unit_ids=[f"u{self.rng.integers(1 << 50)}" for _ in range(BATCH_ROWS)]), timeout=30)
        actions = unpack_vector(reply.action_indices, I32)
        outcomes = []
        for decision_id, action, row in zip(reply.decision_ids, actions, x, strict=True):
            value = W.outcome_value(int(action), row.astype(np.float64), self.rng)
            if value is None:
                continue
            outcome = fpb.Outcome(use_case=USE_CASE, decision_id=decision_id, outcome_id=f"o-{decision_id}",
                                  name="value", value=value)
            outcome.event_time.FromMilliseconds(uuid7_time_ms(decision_id) + 5_000)
            outcomes.append(outcome)
        if outcomes:
            self.feedback.LogOutcomes(fpb.LogOutcomesRequest(outcomes=outcomes), timeout=30)
        self.decided += BATCH_ROWS
        self.arms_seen.update(reply.arms)
        return np.frombuffer(reply.model_versions, dtype="<i8") if reply.model_versions else np.zeros(0)

    def run(self) -> None:
        try:
            # Paced at most one batch per 0.05 s: rounds need thousands of rows, not
            # the tens of thousands an unpaced loop makes the services store and read.
            while not self.stop.wait(0.05):
                self.batch()
        except BaseException as exc:  # reported by the test
            self.error = exc


@pytest.fixture(scope="module")
def channels(stack: Launcher):
    opened = {s: grpc.insecure_channel(stack.address(s)) for s in ("decision", "feedback", "trainer", "evaluator")}
    yield opened
    for channel in opened.values():
        channel.close()


def test_start_tuning_runs_rounds_of_arms_and_applies_the_best_feasible_setting(
        stack_settings: Settings, channels) -> None:
    decision = dgrpc.DecisionServiceStub(channels["decision"])
    evaluator = egrpc.EvaluatorServiceStub(channels["evaluator"])
    trainer = tgrpc.TrainerServiceStub(channels["trainer"])
    decision.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=blueprint()), timeout=30)
    # The model predicts discount = x0, gift = x1, none = 0.
    weights = np.zeros((2, 3))
    weights[0, 1] = weights[1, 2] = 1.0
    onnx = linear_onnx([weights], [np.zeros(3)], n_features=2, n_actions=3)
    model = tpb.Model(use_case=USE_CASE, family="constant", blueprint_version=1, input_width=5,
                      score_output="variable", description="predicted values")
    version = trainer.RegisterModel(tpb.RegisterModelRequest(
        request_id="tune-model", model=model, onnx=onnx, sha256=hashlib.sha256(onnx).hexdigest()),
        timeout=60).model.version
    trainer.SetDeployment(tpb.SetDeploymentRequest(use_case=USE_CASE, production_version=version, reason="test"),
                          timeout=30)
    product = Product(stack_settings, channels, seed=21)
    deadline = time.monotonic() + 60
    while version not in set(product.batch().tolist()):
        assert time.monotonic() < deadline, "the decision service never served the model"
        time.sleep(0.1)

    # Refused at once, naming the field.
    for bad, field in ((epb.StartTuningRequest(use_case=USE_CASE), "parameters"),
                       (epb.StartTuningRequest(use_case=USE_CASE, parameters=[epb.TunedParameter(
                           path="policy.action_costs[nope]", low=0, high=1)]), "parameters[0].path"),
                       (epb.StartTuningRequest(use_case=USE_CASE, parameters=[epb.TunedParameter(
                           path=W.PATHS[0], low=1, high=0)]), "parameters[0].high"),
                       (epb.StartTuningRequest(use_case=USE_CASE, parameters=[epb.TunedParameter(
                           path=W.PATHS[0], low=0, high=1)], batch_size=1), "batch_size"),
                       (epb.StartTuningRequest(use_case=USE_CASE, parameters=[epb.TunedParameter(
                           path=W.PATHS[0], low=0, high=1)], constraints=[epb.Constraint(metric="nope", max=1)]),
                        "constraints[0].metric")):
        with pytest.raises(grpc.RpcError) as refused:
            evaluator.StartTuning(bad, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in refused.value.details()

    product.start()
    seen_rounds: list[int] = []

    def follow(update: op_pb.Operation) -> None:
        if update.HasField("details"):
            running = epb.TuningResult()
            assert update.details.Unpack(running)
            if running.rounds and (not seen_rounds or seen_rounds[-1] != len(running.rounds)):
                seen_rounds.append(len(running.rounds))

    client = Client(settings=stack_settings)
    try:
        arguments = dict(objective="reward", constraints=[{"metric": "outcome_count", "max": W.SHARE_MAX}],
                         rounds=ROUNDS, batch_size=BATCH, min_rows_per_arm=MIN_ROWS, apply=True, seed=3,
                         author="tuning test", round_timeout=86_400, request_id="tune-1")
        started = client.start_tuning(USE_CASE, {p: (0.0, 1.0) for p in W.PATHS}, **arguments)
        assert started.kind == "tuning"
        again = client.start_tuning(USE_CASE, {p: (0.0, 1.0) for p in W.PATHS}, **arguments)
        assert again.id == started.id  # idempotent
        final = client.wait_operation(started, timeout=800, on_progress=follow)
    finally:
        product.stop.set()
        product.join(timeout=60)
    assert product.error is None, product.error
    result = operation_result(final)
    assert isinstance(result, epb.TuningResult)
    # The history grew round by round while the job ran.
    assert seen_rounds == list(range(1, ROUNDS + 1))
    assert len(result.rounds) == ROUNDS
    for number, round_ in enumerate(result.rounds, start=1):
        assert round_.round == number and len(round_.arms) == BATCH
        for arm in round_.arms:
            assert set(arm.parameters) == set(W.PATHS)
            by = {m.metric: m for m in arm.metrics}
            assert by["reward"].rows >= MIN_ROWS and by["reward"].ci_lower <= by["reward"].mean <= by["reward"].ci_upper
            # The arm served what it was given: its treated share is the closed form's.
            share = W.true_share(arm.parameters[W.PATHS[0]], arm.parameters[W.PATHS[1]])
            assert by["outcome_count"].ci_lower - 0.02 <= share <= by["outcome_count"].ci_upper + 0.02
        assert [a.source for a in round_.arms][0] == ("initial design" if number == 1 else
                                                      "exploitation (highest predicted mean)" if number == ROUNDS
                                                      else "expected_improvement")
    c_d, c_g, optimum = W.constrained_optimum()
    chosen = (result.best[W.PATHS[0]], result.best[W.PATHS[1]])
    value, share = W.true_reward(*chosen), W.true_share(*chosen)
    print(f"\nend to end, seed 3: rounds {len(result.rounds)} of {BATCH} arms x >= {MIN_ROWS} decisions "
          f"({product.decided} decided), chosen costs ({chosen[0]:.3f}, {chosen[1]:.3f}) from round "
          f"{result.best_round}, true reward {value:.4f} = {value / optimum:.1%} of the optimum {optimum:.4f} at "
          f"({c_d:.3f}, {c_g:.3f}), true share {share:.3f}")
    assert share <= W.SHARE_MAX
    # The rows each arm gets depend on the traffic's timing, so this run is not repeatable
    # (97.3% and 94.4% in two runs); the 5% target is asserted over five seeds in-process
    # (test_tuning_core.py), and here a wrong pipeline (arms not served with their
    # settings, metrics mixed up) would land far below 90%.
    assert value >= 0.9 * optimum
    # Applied: the latest version has the chosen costs and the starting arms (none).
    latest = decision.GetUseCase(dpb.GetUseCaseRequest(use_case=USE_CASE), timeout=30).use_case
    assert result.applied and latest.version == result.final_blueprint_version
    assert not latest.blueprint.arms
    assert latest.blueprint.policy.action_costs["discount"] == pytest.approx(chosen[0])
    assert latest.blueprint.policy.action_costs["gift"] == pytest.approx(chosen[1])
    # The audit: every round's version and the final one name the operation.
    changes = decision.ListUseCaseChanges(dpb.ListUseCaseChangesRequest(use_case=USE_CASE), timeout=30).changes
    tuned = [c for c in changes if started.id in c.reason]
    assert len(tuned) == ROUNDS + 1
    assert all("tuning test" in c.author for c in tuned)
    assert any("best setting" in c.reason for c in tuned)

    # The CLI: a bad path is refused naming the field; a second tuning started without
    # waiting is cancelled (no traffic: it waits for rows) and the blueprint comes back.
    env = {f"LOOPWISE_{s.upper()}_ADDRESS": stack_settings_address(stack_settings, s)
           for s in ("decision", "feedback", "trainer", "evaluator")}
    env |= {"LOOPWISE_ALLOW_PLAINTEXT": "true"}
    refused = CliRunner().invoke(app, ["tune", "-u", USE_CASE, "--parameter", "policy.nope=0:1"], env=env)
    assert refused.exit_code != 0 and "parameters[0].path" in refused.output
    started_cli = CliRunner().invoke(app, ["tune", "-u", USE_CASE, "--parameter", f"{W.PATHS[0]}=0:1",
                                           "--min-rows", "100000", "--no-wait", "--output", "json"], env=env)
    assert started_cli.exit_code == 0, started_cli.output
    operation_id = json.loads(started_cli.output)["id"]
    deadline = time.monotonic() + 120
    while client.get_operation(operation_id, service="evaluator").stage != "round_1_waiting":
        assert time.monotonic() < deadline, "the second tuning never applied its first round"
        time.sleep(0.2)
    assert len(decision.GetUseCase(dpb.GetUseCaseRequest(use_case=USE_CASE), timeout=30).use_case.blueprint.arms) == 4
    cancelled = client.cancel_operation(operation_id, service="evaluator")
    assert cancelled.state == op_pb.OPERATION_STATE_CANCELLED
    back = decision.GetUseCase(dpb.GetUseCaseRequest(use_case=USE_CASE), timeout=30).use_case
    assert not back.blueprint.arms and back.version > latest.version
    assert back.blueprint.policy.action_costs["discount"] == pytest.approx(chosen[0])
    client.close()


def stack_settings_address(settings: Settings, service: str) -> str:
    """The address of a service of the stack."""
    return getattr(settings, f"{service}_address")
