"""Outcome-gated rollouts through the real decision, feedback and trainer services.

World ``promo_*`` (action value, actions control/treat): treating pays +1 when
x0 > 0 and -1 otherwise (plus N(0, 0.5) noise), control pays 0; the policy is
epsilon-greedy with epsilon 0.5, so every model keeps exploring. A phase whose
rewards are *flipped* teaches a model the opposite policy. The first model goes
straight to production; the second is trained on a later phase only (start_time),
is blessed on that phase's holdout and starts its rollout in shadow. Live traffic
then follows the true rewards:

- a second model trained on flipped rewards is worse by a known margin: with
  epsilon 0.5 the true policy earns +0.25 per decision and the flipped one -0.25,
  so the canary's reward is lower by 0.5 (noise sd about 0.8). Stated bound: it is
  rolled back at the first look after ``CANARY_MIN_OUTCOMES`` = 300 joined canary
  outcomes, i.e. with fewer than 300 + ``LOOK_SLACK`` joined (the outcomes that
  arrive between two looks of the 0.5 s loop);
- a second model trained on true rewards after a flipped first one is better by
  the same margin and is promoted.

Decide keeps answering through every step (no errors, no fallbacks).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration

from loopwise.client import Client, Outcome
from loopwise.clock import Clock
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.launcher import Launcher
from loopwise.settings import Settings
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.support import launcher_settings, new_launcher

CANARY_MIN_OUTCOMES = 300
LOOK_SLACK = 600
FINAL = (tpb.ROLLOUT_STEP_PROMOTED, tpb.ROLLOUT_STEP_ROLLED_BACK, tpb.ROLLOUT_STEP_SUPERSEDED)
TIMEOUT_S = 240.0


def blueprint(use_case: str) -> bp.Blueprint:
    """The promo use case with small guardrail sizes (shadow agreement off: the second
    model deliberately disagrees with the first)."""
    return bp.Blueprint(
        use_case=use_case, kind=bp.DECISION_KIND_ACTION_VALUE, actions=["control", "treat"],
        features=[bp.Feature(name=n, type=bp.FEATURE_TYPE_NUMERIC) for n in ("x0", "x1")],
        policy=bp.Policy(type=bp.POLICY_TYPE_EPSILON_GREEDY, epsilon=0.5, explore_without_model=True),
        default_decision=bp.DefaultDecision(action="control"),
        reward=bp.RewardSpec(outcome_names=["gain"], window=Duration(seconds=30), default_reward=0.0),
        training=bp.TrainingSpec(min_rows=200, candidate_families=["linear"]),
        rollout=bp.RolloutSpec(shadow_min_decisions=100, shadow_min_agreement=-1, shadow_max_score_shift=-1,
                               canary_share=0.5, canary_min_outcomes=CANARY_MIN_OUTCOMES),
    )


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Launcher, Settings]]:
    """Decision, feedback and trainer as real processes with a fast rollout loop."""
    launcher = new_launcher(tmp_path_factory.mktemp("rollout") / "var", seed=11,
                            LOOPWISE_TRAINER_ROLLOUT_INTERVAL_S="0.5",
                            LOOPWISE_TRAINER_SCHEDULE_INTERVAL_S="0")
    names = ("decision", "feedback", "trainer")
    try:
        launcher.start_all(names)
        yield launcher, launcher_settings(launcher)
    finally:
        launcher.stop_all(names)


class Promo:
    """Drives one promo use case: decisions, outcomes, training, rollout looks."""

    def __init__(self, settings: Settings, use_case: str, seed: int) -> None:
        self.settings = settings
        self.use_case = use_case
        self.rng = np.random.default_rng(seed)
        self.client = Client(settings=settings, deadline_s=10.0)
        self.channel = grpc.insecure_channel(settings.trainer_address)
        self.trainer = tgrpc.TrainerServiceStub(self.channel)
        self.clock = Clock.from_settings(settings)
        self.version = self.client.apply_use_case(blueprint(use_case)).use_case.version
        self.units = 0
        self.served = 0
        self.decided_by: dict[int, int] = {}

    def close(self) -> None:
        self.client.close()
        self.channel.close()

    def serve(self, n: int, flipped: bool) -> None:
        """Decide for ``n`` new units and log their gains at once (true or flipped)."""
        x = self.rng.normal(size=(n, 2)).astype(np.float32)
        ids = [f"{self.use_case}-u{self.units + i}" for i in range(n)]
        self.units += n
        batch = self.client.decide_batch(self.use_case, self.version, ["x0", "x1"], x, ids)
        assert len(batch) == n and not batch.fallback.any()
        self.served += n
        self.decided_by[batch.model_version] = self.decided_by.get(batch.model_version, 0) + n
        sign = -1.0 if flipped else 1.0
        noise = self.rng.normal(scale=0.5, size=n)
        outcomes = [Outcome(self.use_case, d, f"gain-{d}", "gain", sign * (1.0 if x[i, 0] > 0 else -1.0) + noise[i])
                    for i, d in enumerate(batch.decision_ids) if batch.action_indices[i] == 1]
        self.client.log_outcomes(outcomes)

    def wait_closed(self) -> None:
        """Until every served decision is stored with a closed window."""
        deadline = time.monotonic() + TIMEOUT_S
        while self.client.get_stats(self.use_case).closed_windows < self.served:
            assert time.monotonic() < deadline, "reward windows did not close"
            time.sleep(0.2)

    def train(self, start_ms: int | None = None) -> tpb.TrainingResult:
        request = tpb.StartTrainingRequest(request_id=self.clock.new_id(), use_case=self.use_case)
        if start_ms is not None:
            request.start_time.FromMilliseconds(start_ms)
        operation = self.trainer.StartTraining(request, timeout=30).operation
        deadline = time.monotonic() + TIMEOUT_S
        while operation.state not in (op_pb.OPERATION_STATE_SUCCEEDED, op_pb.OPERATION_STATE_FAILED,
                                      op_pb.OPERATION_STATE_CANCELLED):
            assert time.monotonic() < deadline
            time.sleep(0.2)
            operation = self.trainer.GetOperation(op_pb.GetOperationRequest(id=operation.id), timeout=10).operation
        assert operation.state == op_pb.OPERATION_STATE_SUCCEEDED, operation.error_message
        result = tpb.TrainingResult()
        operation.result.Unpack(result)
        return result

    def wait_serving(self, version: int) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while self.client.decide(self.use_case, {"x0": 0.1, "x1": 0.0}, unit_id="probe").model_version != version:
            assert time.monotonic() < deadline, f"model v{version} never served"
            time.sleep(0.2)

    def rollout(self) -> tpb.Rollout:
        return self.trainer.GetRollout(tpb.GetRolloutRequest(use_case=self.use_case), timeout=10).rollout

    def lineage(self, decision_id: str) -> dict[str, str]:
        """GetDecision's model lineage, once the decision is stored."""
        with grpc.insecure_channel(self.settings.feedback_address) as channel:
            stub = fgrpc.FeedbackServiceStub(channel)
            deadline = time.monotonic() + TIMEOUT_S
            while True:
                try:
                    return dict(stub.GetDecision(fpb.GetDecisionRequest(use_case=self.use_case,
                                                                        decision_id=decision_id),
                                                 timeout=10).model_lineage)
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.NOT_FOUND and time.monotonic() < deadline
                    time.sleep(0.2)

    def audit(self) -> list[tpb.DeploymentAuditEntry]:
        return list(self.trainer.ListDeploymentAudit(
            tpb.ListDeploymentAuditRequest(use_case=self.use_case), timeout=10).entries)

    def run_rollout(self, first_flipped: bool, second_flipped: bool) -> tpb.Rollout:
        """Phase A → model v1 in production; phase B → model v2 in shadow; live true
        traffic until the rollout ends; returns the final rollout."""
        self.serve(1200, first_flipped)
        self.wait_closed()
        first = self.train()
        assert first.deployed and first.model.version == 1, first.deployment_reason
        self.wait_serving(1)
        phase_b = self.clock.now_ms()
        for _ in range(5):
            self.serve(300, second_flipped)
        self.wait_closed()
        second = self.train(start_ms=phase_b)
        assert second.blessing.blessed and second.model.version == 2, second.blessing.reason
        assert second.model.parent_version == 1 and not second.deployed
        assert second.rollout.step == tpb.ROLLOUT_STEP_SHADOW
        deadline = time.monotonic() + TIMEOUT_S
        while (rollout := self.rollout()).step not in FINAL:
            assert time.monotonic() < deadline, f"rollout stuck: {rollout}"
            self.serve(100, flipped=False)  # Decide keeps answering (asserted inside)
            time.sleep(0.1)
        return rollout


@pytest.fixture
def promo(services, request) -> Iterator[Promo]:
    _, settings = services
    driver = Promo(settings, request.param, seed=len(request.param))
    try:
        yield driver
    finally:
        driver.close()


@pytest.mark.parametrize("promo", ["promo_worse"], indirect=True)
def test_worse_canary_is_rolled_back_within_the_stated_outcomes(promo: Promo) -> None:
    rollout = promo.run_rollout(first_flipped=False, second_flipped=True)
    print("\n".join(f"{e.revision} {e.action}: {e.reason}" for e in promo.audit()))
    print("\n".join(f"guardrail {g.name}: {g.detail}" for g in rollout.guardrails))
    assert rollout.step == tpb.ROLLOUT_STEP_ROLLED_BACK, rollout.message
    assert CANARY_MIN_OUTCOMES <= rollout.joined_outcomes < CANARY_MIN_OUTCOMES + LOOK_SLACK
    assert rollout.reward_diff_upper < 0 and rollout.canary_reward < rollout.production_reward
    reward = next(g for g in rollout.guardrails if g.name == "canary_reward")
    assert not reward.passed
    actions = [e.action for e in promo.audit()]
    assert actions == ["training", "rollout_shadow", "rollout_canary", "rollout_rollback"]
    assert "canary guardrail failed" in promo.audit()[-1].reason
    promo.wait_serving(1)  # production v1 serves again; Decide never stopped
    assert promo.decided_by.get(0, 0) >= 1200 and promo.decided_by.get(1, 0) > 0


@pytest.mark.parametrize("promo", ["promo_better"], indirect=True)
def test_better_model_is_promoted_with_its_audit_trail(promo: Promo) -> None:
    rollout = promo.run_rollout(first_flipped=True, second_flipped=False)
    audit = promo.audit()
    print("\n".join(f"{e.revision} {e.action}: {e.reason}" for e in audit))
    print("\n".join(f"guardrail {g.name}: {g.detail}" for g in rollout.guardrails))
    assert rollout.step == tpb.ROLLOUT_STEP_PROMOTED, rollout.message
    assert rollout.joined_outcomes >= CANARY_MIN_OUTCOMES and rollout.canary_reward > rollout.production_reward
    assert [e.action for e in audit] == ["training", "rollout_shadow", "rollout_canary", "rollout_promote"]
    assert "first model beats the default policy" in audit[0].reason
    assert "shadow next to production v1" in audit[1].reason and "blessed" in audit[1].reason
    assert "shadow guardrails held" in audit[2].reason and "canary at 50%" in audit[2].reason
    assert "promoted to production" in audit[3].reason and "CI [" in audit[3].reason
    assert [e.revision for e in audit] == [1, 2, 3, 4]
    promo.wait_serving(2)
    # GetDecision leads from a decision of the promoted model to its whole lineage.
    model = promo.trainer.GetModel(tpb.GetModelRequest(use_case=promo.use_case, version=2), timeout=10).model
    lineage = promo.lineage(promo.client.decide(promo.use_case, {"x0": 0.3, "x1": 0.0}, unit_id="lineage").decision_id)
    assert lineage["model_version"] == "2" and lineage["parent_version"] == "1"
    assert lineage["code_version"] == model.code_version and model.code_version.startswith("loopwise ")
    assert lineage["artifact_sha256"] == model.artifact_sha256 and len(model.artifact_sha256) == 64
    assert lineage["data_start_time"] == model.data_start_time.ToJsonString()
    assert lineage["training_rows"] == str(model.training_rows) and lineage["source"] == "trainer"
    # A manual rollback is always possible and audited too.
    back = promo.trainer.Rollback(tpb.RollbackRequest(request_id=promo.clock.new_id(), use_case=promo.use_case,
                                                      reason="operator check"), timeout=10).deployment
    assert back.production.version == 1
    assert promo.audit()[-1].action == "rollback" and "operator check" in promo.audit()[-1].reason

