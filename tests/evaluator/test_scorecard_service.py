"""GetScorecard through the gRPC API of the four real services (the session ``stack``),
on simulated products whose lifts are known:

* arms: two arms 50/50; a decision's outcome value is 10·(1 + 0.1·[arm b]) + 3·x1 +
  N(0, 2²), so the lift of b is +10% and x1's correlation with the reward is 0.83; a
  production model and a shadow model serve, and the shadow's records stay out;
* canary: production always takes ``control``, a 30% canary always ``treat``, which
  adds 1.5 to the outcome value.

The CLI (`loopwise scorecard`) reads the arms scorecard as JSON and writes the HTML."""

from __future__ import annotations

import hashlib
import json
import time

import grpc
import numpy as np
import pytest
from google.protobuf import duration_pb2
from typer.testing import CliRunner

from loopwise.cli import app
from loopwise.clock import Clock, uuid7_time_ms
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.evaluator.v1 import evaluator_service_pb2_grpc as egrpc
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.launcher import Launcher
from loopwise.settings import Settings
from loopwise.tensors import F32, I32, I64, pack, unpack_vector
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.decision.helpers import linear_onnx

pytestmark = pytest.mark.timeout(600)
FEATURES = ["x0", "x1", "x2"]
ARM_LIFT, CANARY_EFFECT, CANARY_SHARE = 0.10, 1.5, 0.3


def blueprint(use_case: str, arms: bool) -> bp.Blueprint:
    """Action value over [control, treat], greedy; arms a/b at 50/50 when asked."""
    b = bp.Blueprint(
        use_case=use_case, description="scorecard test use case",
        features=[bp.Feature(name=n, type=bp.FEATURE_TYPE_NUMERIC) for n in FEATURES],
        kind=bp.DECISION_KIND_ACTION_VALUE, actions=["control", "treat"],
        policy=bp.Policy(type=bp.POLICY_TYPE_GREEDY, explore_without_model=True),
        default_decision=bp.DefaultDecision(action="control"),
        reward=bp.RewardSpec(outcome_names=["value"], window=duration_pb2.Duration(seconds=60)),
    )
    if arms:
        b.arms.add(name="a", traffic_share=0.5)
        b.arms.add(name="b", traffic_share=0.5)
    return b


class Product:
    """Decides for random units and logs one outcome per decision from the known model
    (``treat_effect`` is what taking ``treat`` adds to the value)."""

    def __init__(self, settings: Settings, channels: dict[str, grpc.Channel], use_case: str, seed: int,
                 treat_effect: float = 0.0) -> None:
        self.use_case = use_case
        self.treat_effect = treat_effect
        self.clock = Clock.from_settings(settings)
        self.rng = np.random.default_rng(seed)
        self.decision = dgrpc.DecisionServiceStub(channels["decision"])
        self.feedback = fgrpc.FeedbackServiceStub(channels["feedback"])
        self.warmup_rng = np.random.default_rng(seed + 1000)
        self.decided = self.stored = 0
        self.models: list[int] = []
        self.warmup_models: list[int] = []
        self.production = self.canary = 0
        self.start_ms = 0

    def run(self, rows: int, warmup: bool = False) -> np.ndarray:
        """DecideBatch for ``rows`` new units, log their outcomes; the model versions.
        Warm-up batches draw from their own stream, so the scored rows are the same
        however many warm-up batches it took, and are left out of ``decided``."""
        rng = self.warmup_rng if warmup else self.rng
        x = rng.normal(size=(rows, len(FEATURES))).astype(np.float32)
        reply = self.decision.DecideBatch(dpb.DecideBatchRequest(
            use_case=self.use_case, blueprint_version=1, rows=rows, feature_names=FEATURES,
            features=pack(x, F32), unit_ids=[f"u{rng.integers(1 << 50)}" for _ in range(rows)]), timeout=30)
        treat = unpack_vector(reply.action_indices, I32) == 1
        in_b = np.array(list(reply.arms)) == "b"
        value = (10.0 * (1 + ARM_LIFT * in_b) + 3.0 * x[:, 1] + self.treat_effect * treat
                 + rng.normal(scale=2.0, size=rows))
        outcomes = []
        for decision_id, v in zip(reply.decision_ids, value, strict=True):
            outcome = fpb.Outcome(use_case=self.use_case, decision_id=decision_id, outcome_id=f"o-{decision_id}",
                                  name="value", value=float(v))
            outcome.event_time.FromMilliseconds(uuid7_time_ms(decision_id) + 5_000)
            outcomes.append(outcome)
        self.feedback.LogOutcomes(fpb.LogOutcomesRequest(outcomes=outcomes), timeout=30)
        models = unpack_vector(reply.model_versions, I64)
        self.stored += rows
        if warmup:
            self.start_ms = max(uuid7_time_ms(d) for d in reply.decision_ids) + 1
            self.warmup_models += models.tolist()
        else:
            self.decided += rows
            self.models += models.tolist()
        return models

    def wait_closed(self, timeout: float = 120.0) -> None:
        """Until every served decision is stored with its outcome and no reward window
        is open (shadow records never get outcomes)."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.feedback.GetStats(fpb.GetStatsRequest(use_case=self.use_case), timeout=10)
            if stats.joined_decisions >= self.stored and stats.open_windows == 0:
                return
            assert time.monotonic() < deadline, f"stats stuck at {stats}"
            time.sleep(0.2)


def register(trainer: tgrpc.TrainerServiceStub, use_case: str, best: int, name: str) -> int:
    """An action-value model whose best action is always ``best``; its version."""
    bias = np.zeros(2)
    bias[best] = 1.0
    onnx = linear_onnx([np.zeros((3, 2))], [bias], n_actions=2)
    model = tpb.Model(use_case=use_case, family="constant", blueprint_version=1, input_width=5,
                      score_output="variable", description=name)
    return trainer.RegisterModel(tpb.RegisterModelRequest(
        request_id=f"{use_case}-{name}", model=model, onnx=onnx, sha256=hashlib.sha256(onnx).hexdigest()),
        timeout=60).model.version


def serve_until(product: Product, wanted: set[int], timeout: float = 60.0) -> None:
    """Warm-up batches until the decision service serves every model version of
    ``wanted``; scorecards start after them (``product.start_ms``)."""
    deadline = time.monotonic() + timeout
    seen: set[int] = set()
    while not wanted <= seen:
        assert time.monotonic() < deadline, f"the decision service serves {seen}, not {wanted}"
        seen |= set(product.run(40, warmup=True).tolist())
        time.sleep(0.1)


@pytest.fixture(scope="module")
def channels(stack: Launcher):
    opened = {s: grpc.insecure_channel(stack.address(s)) for s in ("decision", "feedback", "trainer", "evaluator")}
    yield opened
    for channel in opened.values():
        channel.close()


@pytest.fixture(scope="module")
def arms_product(stack_settings: Settings, channels) -> Product:
    """Use case ``sc_arms``: 3,000 decisions served by production with a shadow model."""
    product = Product(stack_settings, channels, "sc_arms", seed=11)
    product.decision.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=blueprint("sc_arms", arms=True)), timeout=30)
    trainer = tgrpc.TrainerServiceStub(channels["trainer"])
    production, shadow = register(trainer, "sc_arms", 0, "production"), register(trainer, "sc_arms", 1, "shadow")
    trainer.SetDeployment(tpb.SetDeploymentRequest(use_case="sc_arms", production_version=production,
                                                   shadow_versions=[shadow], reason="test"), timeout=30)
    serve_until(product, {production})
    for _ in range(6):
        product.run(500)
    product.wait_closed()
    return product


@pytest.fixture(scope="module")
def canary_product(stack_settings: Settings, channels) -> Product:
    """Use case ``sc_canary`` (no arms): production takes control, a 30% canary treat."""
    product = Product(stack_settings, channels, "sc_canary", seed=12, treat_effect=CANARY_EFFECT)
    product.decision.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=blueprint("sc_canary", arms=False)),
                                  timeout=30)
    trainer = tgrpc.TrainerServiceStub(channels["trainer"])
    product.production = register(trainer, "sc_canary", 0, "production")
    product.canary = register(trainer, "sc_canary", 1, "canary")
    evaluator = egrpc.EvaluatorServiceStub(channels["evaluator"])
    with pytest.raises(grpc.RpcError) as none_yet:
        evaluator.GetScorecard(epb.GetScorecardRequest(
            use_case="sc_canary", comparison=epb.SCORECARD_COMPARISON_CANARY), timeout=60)
    assert none_yet.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    trainer.SetDeployment(tpb.SetDeploymentRequest(
        use_case="sc_canary", production_version=product.production, canary_version=product.canary,
        canary_share=CANARY_SHARE, reason="test"), timeout=30)
    serve_until(product, {product.production, product.canary})
    for _ in range(8):
        product.run(500)
    product.wait_closed()
    return product


def _by(card: epb.Scorecard, metric: str, group: str) -> epb.MetricComparison:
    return next(c for c in card.comparisons if c.metric == metric and c.group == group)


def test_arms_scorecard_recovers_the_lift_with_cuped_and_leaves_shadow_records_out(
        arms_product: Product, channels) -> None:
    evaluator = egrpc.EvaluatorServiceStub(channels["evaluator"])
    request = epb.GetScorecardRequest(use_case="sc_arms", covariates=["x1"], include_html=True,
                                      look_interval=duration_pb2.Duration(seconds=10))
    request.start_time.FromMilliseconds(arms_product.start_ms)
    reply = evaluator.GetScorecard(request, timeout=300)
    card = reply.scorecard
    assert card.comparison == epb.SCORECARD_COMPARISON_ARMS and card.control == "a"
    # Every served decision counts once; the shadow's records are read, not used.
    assert card.rows == arms_product.decided
    assert card.rows_read > card.rows + 2000
    assert [g.name for g in card.groups] == ["a", "b"] and [g.expected_share for g in card.groups] == [0.5, 0.5]
    assert not card.sample_ratio.mismatch and card.sample_ratio.degrees_of_freedom == 1
    reward = _by(card, "reward", "b")
    print(f"arms: lift {reward.relative_lift:+.4f} ({reward.relative_lift_ci_lower:+.4f} .. "
          f"{reward.relative_lift_ci_upper:+.4f}), CUPED variance cut {reward.variance_reduction:.3f}, "
          f"always-valid p {reward.sequential.p_value:.2g}, SRM p {card.sample_ratio.p_value:.3f}")
    assert reward.cuped and reward.relative_lift_ci_lower <= ARM_LIFT <= reward.relative_lift_ci_upper
    assert reward.difference_ci_lower <= 1.0 <= reward.difference_ci_upper
    assert reward.variance_reduction >= 0.3  # x1's correlation with the reward is 0.83
    assert reward.sequential.significant and reward.sequential.cs_lower > 0
    assert len(reward.sequential.looks) >= 1 and reward.sequential.looks[-1].rows == reward.rows
    assert list(card.covariate_columns) == ["x1"]
    assert {c.metric for c in card.comparisons} >= {"reward", "outcome_count"}
    html = reply.html.decode()
    assert '<section id="sequential">' in html and "data:image/png;base64," in html


def test_canary_scorecard_against_production(canary_product: Product, channels) -> None:
    evaluator = egrpc.EvaluatorServiceStub(channels["evaluator"])
    request = epb.GetScorecardRequest(use_case="sc_canary", comparison=epb.SCORECARD_COMPARISON_CANARY)
    request.start_time.FromMilliseconds(canary_product.start_ms)
    card = evaluator.GetScorecard(request, timeout=300).scorecard
    assert card.control == "production" and [g.name for g in card.groups] == ["production", "canary"]
    assert card.canary_model_version == canary_product.canary
    assert card.production_model_version == canary_product.production
    assert set(canary_product.models) == {canary_product.production, canary_product.canary}
    assert card.rows == canary_product.decided
    assert card.groups[1].expected_share == pytest.approx(CANARY_SHARE)
    assert not card.sample_ratio.mismatch
    reward = _by(card, "reward", "canary")
    print(f"canary: difference {reward.difference:+.3f} ({reward.difference_ci_lower:+.3f} .. "
          f"{reward.difference_ci_upper:+.3f}), SRM p {card.sample_ratio.p_value:.3f}, "
          f"canary share {card.groups[1].observed_share:.3f}")
    assert reward.difference_ci_lower <= CANARY_EFFECT <= reward.difference_ci_upper
    assert not reward.cuped and reward.variance_reduction == 0.0
    assert reward.sequential.significant
    # Without a start time, rows start when the deployment in force was made: the
    # warm-up rows the two models served count too, the others (no model yet) do not.
    since = evaluator.GetScorecard(epb.GetScorecardRequest(
        use_case="sc_canary", comparison=epb.SCORECARD_COMPARISON_CANARY), timeout=300).scorecard
    served = sum(v in (canary_product.production, canary_product.canary) for v in canary_product.warmup_models)
    assert since.rows == canary_product.decided + served


def test_scorecard_refuses_bad_requests(arms_product: Product, canary_product: Product, channels) -> None:
    evaluator = egrpc.EvaluatorServiceStub(channels["evaluator"])
    bad = [
        (epb.GetScorecardRequest(use_case="sc_arms", covariates=["nope"]), grpc.StatusCode.INVALID_ARGUMENT),
        (epb.GetScorecardRequest(use_case="sc_arms", control_arm="c"), grpc.StatusCode.INVALID_ARGUMENT),
        (epb.GetScorecardRequest(use_case="sc_canary"), grpc.StatusCode.INVALID_ARGUMENT),  # no arms
        (epb.GetScorecardRequest(use_case="sc_arms", comparison=epb.SCORECARD_COMPARISON_CANARY),
         grpc.StatusCode.FAILED_PRECONDITION),  # no canary
        (epb.GetScorecardRequest(use_case="sc_arms", look_interval=duration_pb2.Duration(nanos=1000)),
         grpc.StatusCode.INVALID_ARGUMENT),
        (epb.GetScorecardRequest(use_case="nobody"), grpc.StatusCode.NOT_FOUND),
    ]
    for request, code in bad:
        with pytest.raises(grpc.RpcError) as refused:
            evaluator.GetScorecard(request, timeout=60)
        assert refused.value.code() == code, (request, refused.value.details())


def test_cli_prints_the_scorecard_as_json_and_writes_the_html(arms_product: Product, stack: Launcher,
                                                              tmp_path) -> None:
    env = {f"LOOPWISE_{s.upper()}_ADDRESS": stack.address(s) for s in ("decision", "feedback", "trainer",
                                                                        "evaluator")}
    env |= {"LOOPWISE_ALLOW_PLAINTEXT": "true", "LOOPWISE_DATA_DIR": str(tmp_path)}
    out = tmp_path / "scorecard.html"
    result = CliRunner().invoke(app, ["scorecard", "-u", "sc_arms", "--covariate", "x1", "--out", str(out),
                                      "--output", "json"], env=env)
    assert result.exit_code == 0, result.output
    card = json.loads(result.output)
    assert card["control"] == "a" and card["covariate_columns"] == ["x1"]
    assert '<section id="lifts">' in out.read_text()
    table = CliRunner().invoke(app, ["scorecard", "-u", "sc_arms"], env=env)
    assert table.exit_code == 0, table.output
    assert "sample ratio" in table.output and "reward" in table.output
