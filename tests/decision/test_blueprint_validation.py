"""Blueprint validation through ApplyUseCase on a real decision server: every enum a
known value, every number finite and in range, every duration and count positive.

Each bad blueprint below is a valid one with one field broken; ApplyUseCase refuses it
with INVALID_ARGUMENT and a field violation naming exactly that field, and nothing is
applied. Walks over the Blueprint descriptor check every double (NaN, ±inf), every
enum (an unknown value), every integer (-1) and every duration (negative) of the
message, so that a field added later without a rule fails here."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Iterator

import grpc
import pytest
import pytest_asyncio
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.errors import field_violations
from loopwise.launcher import free_port
from loopwise.services.decision.blueprints import CANDIDATE_FAMILIES, FLOAT32_MAX
from loopwise.settings import SERVICES, Settings
from tests.decision.helpers import Decider, start_decider
from tests.support import CLOCK_SPEED

NAN, INF = math.nan, math.inf


def valid() -> bp.Blueprint:
    """A valid blueprint touching every part of the message.

    features[0] x numeric, features[1] y numeric imputed, features[2] country
    categorical; action value over three actions; two arms; every spec set; two
    metrics (purchase in the reward window, returns counted in its own), a value model
    and a guardrail."""
    b = bp.Blueprint(
        use_case="offer",
        features=[
            bp.Feature(name="x", type=bp.FEATURE_TYPE_NUMERIC),
            bp.Feature(name="y", type=bp.FEATURE_TYPE_NUMERIC, on_missing=bp.MISSING_RULE_IMPUTE, impute_value=5.0),
            bp.Feature(name="country", type=bp.FEATURE_TYPE_CATEGORICAL, vocabulary=["fr", "de", "it"],
                       on_unknown=bp.UNKNOWN_RULE_CODE, pii=bp.PII_RULE_HASH),
        ],
        kind=bp.DECISION_KIND_ACTION_VALUE,
        actions=["red", "green", "blue"],
        policy=bp.Policy(type=bp.POLICY_TYPE_EPSILON_GREEDY, epsilon=0.1, exploration_floor=0.01,
                         action_costs={"red": 0.5}),
        default_decision=bp.DefaultDecision(action="red", score=0.25),
        arms=[bp.ExperimentArm(name="control", traffic_share=0.5),
              bp.ExperimentArm(name="explore", traffic_share=0.5, epsilon=0.2)],
        reward=bp.RewardSpec(outcome_names=["purchase"], aggregation=bp.REWARD_AGGREGATION_SUM,
                             window=Duration(seconds=600), default_reward=0.0),
        training=bp.TrainingSpec(min_rows=200, holdout_fraction=0.2, max_missing_rate=0.5, min_label_rate=0.01,
                                 max_label_rate=0.99, max_psi=0.25, candidate_budget_seconds=60,
                                 blessing_tolerance=0.01, retrain_every=Duration(seconds=3600),
                                 retrain_after_labelled=1000, candidate_families=["linear", "random_forest"],
                                 min_distinct_values=2),
        rollout=bp.RolloutSpec(shadow_min_decisions=200, shadow_min_agreement=0.5, shadow_max_score_shift=0.5,
                               canary_share=0.1, canary_min_outcomes=400, canary_alpha=0.05,
                               canary_max_fallback_rate=0.05, canary_max_latency_ratio=1.5),
        latency_budget_ms=20.0,
        slices=["country"],
        drift=bp.DriftSpec(feature_psi_threshold=0.2, prediction_psi_threshold=0.2, min_decisions=500),
        unit_id_pii=bp.PII_RULE_HASH,
        retention=Duration(seconds=86_400),
        metrics=[bp.Metric(name="purchase", outcome_names=["purchase"], aggregation=bp.REWARD_AGGREGATION_SUM,
                           default_value=0.0),
                 bp.Metric(name="returns", aggregation=bp.REWARD_AGGREGATION_COUNT,
                           window=Duration(seconds=1200), default_value=0.0)],
        value_model=bp.ValueModel(weights={"purchase": 1.0, "returns": -0.5}),
        guardrails=[bp.Guardrail(metric="returns", tolerance=0.01, lower_is_better=True)],
    )
    return b


def _set(path: str, value) -> Callable[[bp.Blueprint], None]:
    """A change setting the dotted ``path`` (``features[1].on_missing``) to ``value``."""

    def change(b: bp.Blueprint) -> None:
        *parents, last = path.split(".")
        target: Message = b
        for part in parents:
            name, _, index = part.partition("[")
            target = getattr(target, name)
            if index:
                target = target[int(index.rstrip("]"))]
        name, _, index = last.partition("[")
        if index:
            getattr(target, name)[int(index.rstrip("]"))] = value
        elif isinstance(value, Duration):
            getattr(target, name).CopyFrom(value)
        else:
            setattr(target, name, value)

    return change


def _cost(action: str, value: float) -> Callable[[bp.Blueprint], None]:
    def change(b: bp.Blueprint) -> None:
        b.policy.action_costs[action] = value

    return change


def _weight(metric: str, value: float) -> Callable[[bp.Blueprint], None]:
    def change(b: bp.Blueprint) -> None:
        b.value_model.weights[metric] = value

    return change


def _extra_metric(name: str) -> Callable[[bp.Blueprint], None]:
    def change(b: bp.Blueprint) -> None:
        b.metrics.add(name=name)

    return change


def _without_metrics(b: bp.Blueprint) -> None:
    b.ClearField("metrics")
    b.ClearField("guardrails")


def _clear(name: str) -> Callable[[bp.Blueprint], None]:
    def change(b: bp.Blueprint) -> None:
        b.ClearField(name)

    return change


# (case id, change to the valid blueprint, the field path named)
BAD: list[tuple[str, Callable[[bp.Blueprint], None], str]] = [
    # Enums: a value the proto does not define (proto3 enums accept any int on the wire).
    ("feature type 99", _set("features[0].type", 99), "features[0].type"),
    ("feature type unspecified", _set("features[0].type", 0), "features[0].type"),
    ("on_missing 99", _set("features[1].on_missing", 99), "features[1].on_missing"),
    ("on_unknown 99", _set("features[2].on_unknown", 99), "features[2].on_unknown"),
    ("feature pii 99", _set("features[2].pii", 99), "features[2].pii"),
    ("unit_id_pii 99", _set("unit_id_pii", 99), "unit_id_pii"),
    ("kind 99", _set("kind", 99), "kind"),
    ("policy type 99", _set("policy.type", 99), "policy.type"),
    ("aggregation 99", _set("reward.aggregation", 99), "reward.aggregation"),
    # Features and the default decision.
    ("impute_value NaN", _set("features[1].impute_value", NAN), "features[1].impute_value"),
    ("categorical impute_value inf", _set("features[2].impute_value", INF), "features[2].impute_value"),
    ("default score inf", _set("default_decision.score", INF), "default_decision.score"),
    ("default score beyond float32", _set("default_decision.score", 1e39), "default_decision.score"),
    ("impute_value beyond float32", _set("features[1].impute_value", -1e39), "features[1].impute_value"),
    ("slice not a feature", _set("slices[0]", "nope"), "slices[0]"),
    # Policy.
    ("epsilon NaN", _set("policy.epsilon", NAN), "policy.epsilon"),
    ("epsilon 1.5", _set("policy.epsilon", 1.5), "policy.epsilon"),
    ("temperature inf", _set("policy.temperature", INF), "policy.temperature"),
    ("threshold -inf", _set("policy.threshold", -INF), "policy.threshold"),
    ("exploration_floor negative", _set("policy.exploration_floor", -0.1), "policy.exploration_floor"),
    ("exploration_floor over 1/len(actions)", _set("policy.exploration_floor", 0.5), "policy.exploration_floor"),
    ("action cost NaN", _cost("red", NAN), "policy.action_costs[red]"),
    ("action cost of no action", _cost("purple", 1.0), "policy.action_costs[purple]"),
    ("latency budget NaN", _set("latency_budget_ms", NAN), "latency_budget_ms"),
    ("latency budget negative", _set("latency_budget_ms", -1.0), "latency_budget_ms"),
    # Arms.
    ("arm share NaN", _set("arms[0].traffic_share", NAN), "arms[0].traffic_share"),
    ("arm epsilon 1.5", _set("arms[1].epsilon", 1.5), "arms[1].epsilon"),
    # Reward.
    ("reward window 0", _set("reward.window", Duration()), "reward.window"),
    ("reward window negative", _set("reward.window", Duration(seconds=-600)), "reward.window"),
    ("default reward NaN", _set("reward.default_reward", NAN), "reward.default_reward"),
    ("default reward beyond float32", _set("reward.default_reward", 1e300), "reward.default_reward"),
    ("empty outcome name", _set("reward.outcome_names[0]", ""), "reward.outcome_names[0]"),
    # Training.
    ("min_rows negative", _set("training.min_rows", -5), "training.min_rows"),
    ("holdout_fraction 0.9", _set("training.holdout_fraction", 0.9), "training.holdout_fraction"),
    ("max_missing_rate NaN", _set("training.max_missing_rate", NAN), "training.max_missing_rate"),
    ("max_missing_rate 1.5", _set("training.max_missing_rate", 1.5), "training.max_missing_rate"),
    ("min_label_rate 1", _set("training.min_label_rate", 1.0), "training.min_label_rate"),
    ("max_label_rate NaN", _set("training.max_label_rate", NAN), "training.max_label_rate"),
    ("max_label_rate below min_label_rate", _set("training.max_label_rate", 0.005), "training.max_label_rate"),
    ("max_psi negative", _set("training.max_psi", -1.0), "training.max_psi"),
    ("candidate budget inf", _set("training.candidate_budget_seconds", INF), "training.candidate_budget_seconds"),
    ("candidate budget negative", _set("training.candidate_budget_seconds", -1.0),
     "training.candidate_budget_seconds"),
    ("candidate budget over a day", _set("training.candidate_budget_seconds", 86_401.0),
     "training.candidate_budget_seconds"),
    ("blessing tolerance NaN", _set("training.blessing_tolerance", NAN), "training.blessing_tolerance"),
    ("retrain_every negative", _set("training.retrain_every", Duration(seconds=-60)), "training.retrain_every"),
    ("retrain_every negative nanos", _set("training.retrain_every", Duration(nanos=-5)), "training.retrain_every"),
    ("retrain_after_labelled negative", _set("training.retrain_after_labelled", -1),
     "training.retrain_after_labelled"),
    ("unknown candidate family", _set("training.candidate_families[1]", "xgboost"),
     "training.candidate_families[1]"),
    ("duplicate candidate family", _set("training.candidate_families[1]", "linear"),
     "training.candidate_families[1]"),
    ("min_distinct_values negative", _set("training.min_distinct_values", -3), "training.min_distinct_values"),
    ("thompson_members 1", _set("policy.thompson_members", 1), "policy.thompson_members"),
    ("thompson_members over 64", _set("policy.thompson_members", 65), "policy.thompson_members"),
    # Rollout.
    ("canary_share NaN", _set("rollout.canary_share", NAN), "rollout.canary_share"),
    ("canary_share 1", _set("rollout.canary_share", 1.0), "rollout.canary_share"),
    ("canary_share negative", _set("rollout.canary_share", -0.1), "rollout.canary_share"),
    ("canary_alpha inf", _set("rollout.canary_alpha", INF), "rollout.canary_alpha"),
    ("canary_alpha 0.5", _set("rollout.canary_alpha", 0.5), "rollout.canary_alpha"),
    ("shadow_min_decisions negative", _set("rollout.shadow_min_decisions", -1), "rollout.shadow_min_decisions"),
    ("shadow_min_agreement NaN", _set("rollout.shadow_min_agreement", NAN), "rollout.shadow_min_agreement"),
    ("shadow_min_agreement 1.5", _set("rollout.shadow_min_agreement", 1.5), "rollout.shadow_min_agreement"),
    ("shadow_max_score_shift inf", _set("rollout.shadow_max_score_shift", INF), "rollout.shadow_max_score_shift"),
    ("canary_min_outcomes negative", _set("rollout.canary_min_outcomes", -10), "rollout.canary_min_outcomes"),
    ("canary_max_fallback_rate 2", _set("rollout.canary_max_fallback_rate", 2.0),
     "rollout.canary_max_fallback_rate"),
    ("canary_max_latency_ratio NaN", _set("rollout.canary_max_latency_ratio", NAN),
     "rollout.canary_max_latency_ratio"),
    # Drift.
    ("feature_psi_threshold NaN", _set("drift.feature_psi_threshold", NAN), "drift.feature_psi_threshold"),
    ("prediction_psi_threshold -inf", _set("drift.prediction_psi_threshold", -INF),
     "drift.prediction_psi_threshold"),
    ("drift min_decisions negative", _set("drift.min_decisions", -1), "drift.min_decisions"),
    # Metrics, value model and guardrails.
    ("metric name not a name", _extra_metric("Clicks!"), "metrics[2].name"),
    ("duplicate metric name", _extra_metric("purchase"), "metrics[2].name"),
    ("metric outcome name empty", _set("metrics[0].outcome_names[0]", ""), "metrics[0].outcome_names[0]"),
    ("metric aggregation 99", _set("metrics[1].aggregation", 99), "metrics[1].aggregation"),
    ("metric window negative", _set("metrics[1].window", Duration(seconds=-5)), "metrics[1].window"),
    ("metric default NaN", _set("metrics[0].default_value", NAN), "metrics[0].default_value"),
    ("metric default beyond float32", _set("metrics[1].default_value", 1e39), "metrics[1].default_value"),
    ("weight of no metric", _weight("clicks", 1.0), "value_model.weights[clicks]"),
    ("weight inf", _weight("returns", INF), "value_model.weights[returns]"),
    ("every weight zero", _clear("value_model"), "value_model.weights"),
    ("value model without metrics", _without_metrics, "value_model.weights"),
    ("guardrail on no metric", _set("guardrails[0].metric", "clicks"), "guardrails[0].metric"),
    ("guardrail tolerance negative", _set("guardrails[0].tolerance", -0.1), "guardrails[0].tolerance"),
    ("guardrail tolerance NaN", _set("guardrails[0].tolerance", NAN), "guardrails[0].tolerance"),
    ("metrics with a multiclass kind", _set("kind", bp.DECISION_KIND_MULTICLASS), "metrics"),
    ("metrics with Thompson sampling", _set("policy.type", bp.POLICY_TYPE_THOMPSON), "policy.type"),
    ("retention shorter than a metric window", _set("retention", Duration(seconds=900)), "retention"),
    # Retention.
    ("retention negative", _set("retention", Duration(seconds=-86_400)), "retention"),
    ("retention shorter than the reward window", _set("retention", Duration(seconds=60)), "retention"),
]


@pytest_asyncio.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Decider]:
    """One decision server for the module (logging off: no feedback service)."""
    values = {f"{s}_address": f"127.0.0.1:{free_port()}" for s in SERVICES}
    settings = Settings(**values, data_dir=tmp_path_factory.mktemp("blueprints") / "var",
                        clock_anchor=time.time(), clock_speed=CLOCK_SPEED, seed=7, grace_period_s=1.0,
                        decision_log_enabled=False)
    decider = await start_decider(settings)
    try:
        yield decider
    finally:
        await decider.stop()


async def _refused(server: Decider, b: bp.Blueprint, validate_only: bool = False) -> list[str]:
    """Apply ``b``; assert INVALID_ARGUMENT and that nothing was applied; the fields named."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.stub.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=b, validate_only=validate_only),
                                       timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await server.stub.GetUseCase(dpb.GetUseCaseRequest(use_case=b.use_case), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    return [field for field, _ in field_violations(err.value)]


def test_the_table_has_at_least_25_distinct_cases() -> None:
    assert len(BAD) >= 25
    assert len({case for case, _, _ in BAD}) == len(BAD)


async def test_the_valid_blueprint_is_accepted_by_validate_only(server: Decider) -> None:
    reply = await server.stub.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=valid(), validate_only=True),
                                           timeout=10)
    assert not reply.created


@pytest.mark.parametrize(("change", "field"), [(c, f) for _, c, f in BAD], ids=[case for case, _, _ in BAD])
async def test_a_bad_blueprint_is_refused_naming_its_field(server: Decider, change, field: str) -> None:
    b = valid()
    b.use_case = "bad_blueprint"
    change(b)
    assert await _refused(server, b) == [f"blueprint.{field}"]
    assert await _refused(server, b, validate_only=True) == [f"blueprint.{field}"]


def _scalar_paths(descriptor, prefix: str, b: bp.Blueprint) -> Iterator[tuple[str, FieldDescriptor]]:
    """Every singular scalar, enum and Duration field of the valid blueprint as a path:
    repeated messages by their first element, maps and repeated scalars left out."""
    for field in descriptor.fields:
        path = f"{prefix}{field.name}"
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                continue
            if field.message_type.full_name == "google.protobuf.Duration":
                yield path, field
            elif field.is_repeated:
                yield from _scalar_paths(field.message_type, f"{path}[0].", b)
            else:
                yield from _scalar_paths(field.message_type, f"{path}.", b)
        elif not field.is_repeated:
            yield path, field


PATHS = list(_scalar_paths(bp.Blueprint.DESCRIPTOR, "", valid()))


def test_the_walk_reaches_every_part_of_the_blueprint() -> None:
    paths = {p for p, _ in PATHS}
    assert {"features[0].on_missing", "policy.temperature", "arms[0].epsilon", "reward.window",
            "training.retrain_every", "rollout.canary_alpha", "drift.min_decisions", "retention",
            "unit_id_pii"} <= paths


@pytest.mark.parametrize("value", [NAN, INF, -INF], ids=["nan", "inf", "-inf"])
async def test_every_double_refuses_non_finite_values(server: Decider, value: float) -> None:
    doubles = [p for p, f in PATHS if f.type == FieldDescriptor.TYPE_DOUBLE]
    assert len(doubles) >= 25
    for path in doubles:
        b = valid()
        b.use_case = "bad_double"
        _set(path, value)(b)
        assert await _refused(server, b) == [f"blueprint.{path}"], path
    b = valid()
    b.use_case = "bad_double"
    _cost("red", value)(b)
    assert await _refused(server, b) == ["blueprint.policy.action_costs[red]"]


async def test_every_enum_refuses_an_unknown_value(server: Decider) -> None:
    enums = [p for p, f in PATHS if f.type == FieldDescriptor.TYPE_ENUM]
    # type, on_missing, on_unknown and pii of a feature; kind; policy type; aggregation;
    # unit_id_pii; a metric's aggregation
    assert len(enums) == 9
    for path in enums:
        for value in (99, -1):
            b = valid()
            b.use_case = "bad_enum"
            _set(path, value)(b)
            assert await _refused(server, b) == [f"blueprint.{path}"], (path, value)


async def test_every_count_refuses_a_negative_value(server: Decider) -> None:
    ints = [p for p, f in PATHS if f.cpp_type in (FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_INT64)
            and f.type != FieldDescriptor.TYPE_ENUM]
    assert len(ints) == 8  # incl. policy.thompson_members and policy.ranking_top_k
    for path in ints:
        b = valid()
        b.use_case = "bad_count"
        _set(path, -1)(b)
        assert await _refused(server, b) == [f"blueprint.{path}"], path


async def test_every_duration_refuses_a_negative_value(server: Decider) -> None:
    durations = [p for p, f in PATHS if f.type == FieldDescriptor.TYPE_MESSAGE]
    assert sorted(durations) == ["metrics[0].window", "retention", "reward.window", "training.retrain_every"]
    for path in durations:
        b = valid()
        b.use_case = "bad_duration"
        _set(path, Duration(seconds=-1))(b)
        assert f"blueprint.{path}" in await _refused(server, b), path


async def test_every_broken_rule_is_listed(server: Decider) -> None:
    b = valid()
    b.use_case = "many_bad"
    for _, change, _ in BAD[:6]:
        change(b)
    fields = await _refused(server, b)
    assert {f"blueprint.{f}" for _, _, f in BAD[:6]} <= set(fields)


async def test_extreme_but_legal_values_are_accepted(server: Decider) -> None:
    b = valid()
    b.use_case = "extreme"
    b.features[1].impute_value = -FLOAT32_MAX  # features, batch scores and rewards are float32
    b.features[2].on_missing = bp.MISSING_RULE_IMPUTE
    b.features[2].impute_value = 2.0  # the last vocabulary code
    b.features[2].on_unknown = bp.UNKNOWN_RULE_REJECT
    b.features[0].pii = bp.PII_RULE_DROP
    b.features[0].on_missing = bp.MISSING_RULE_REJECT
    b.default_decision.score = FLOAT32_MAX
    b.policy.CopyFrom(bp.Policy(type=bp.POLICY_TYPE_SOFTMAX, epsilon=1.0, temperature=1e-300,
                                exploration_floor=1 / 3, action_costs={"red": -1e300, "blue": 1e300}))
    b.arms[0].traffic_share, b.arms[1].traffic_share = 1e-9, 1 - 1e-9
    b.arms[0].epsilon, b.arms[1].epsilon = 0.0, 1.0
    b.reward.window.CopyFrom(Duration(nanos=1))
    b.reward.default_reward = -FLOAT32_MAX
    b.reward.aggregation = bp.REWARD_AGGREGATION_LAST
    b.training.CopyFrom(bp.TrainingSpec(
        min_rows=2**31 - 1, holdout_fraction=0.5, max_missing_rate=1.0, min_label_rate=0.999_999,
        max_label_rate=1.0, max_psi=1e300, candidate_budget_seconds=86_400.0, blessing_tolerance=-1e300,
        retrain_every=Duration(nanos=1), retrain_after_labelled=2**63 - 1,
        candidate_families=list(CANDIDATE_FAMILIES), min_distinct_values=2**31 - 1))
    b.rollout.CopyFrom(bp.RolloutSpec(
        hold_first_model=True, manual=True, shadow_min_decisions=2**63 - 1, shadow_min_agreement=1.0,
        shadow_max_score_shift=-1e300, canary_share=0.999_999, canary_min_outcomes=2**63 - 1,
        canary_alpha=0.499_999, canary_max_fallback_rate=1.0, canary_max_latency_ratio=1e300))
    b.latency_budget_ms = 0.0
    b.drift.CopyFrom(bp.DriftSpec(feature_psi_threshold=-1.0, prediction_psi_threshold=1e300,
                                  min_decisions=2**63 - 1))
    b.unit_id_pii = bp.PII_RULE_DROP
    b.retention.CopyFrom(Duration(seconds=315_576_000_000))  # the largest Duration
    reply = await server.stub.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=b), timeout=10)
    assert reply.created and reply.use_case.blueprint == b
    # Zeros mean "the default" everywhere they are allowed.
    zeros = valid()
    zeros.use_case = "defaults"
    for name in ("training", "rollout", "drift", "retention"):
        zeros.ClearField(name)
    zeros.policy.ClearField("type")
    zeros.unit_id_pii = bp.PII_RULE_UNSPECIFIED
    reply = await server.stub.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=zeros), timeout=10)
    assert reply.created


def test_candidate_families_are_the_trainers() -> None:
    from loopwise.services.trainer.models import FAMILIES

    assert tuple(FAMILIES) == CANDIDATE_FAMILIES


async def test_the_metrics_example_is_valid(server: Decider) -> None:
    from pathlib import Path

    from loopwise.cli import load_blueprint

    path = Path(__file__).resolve().parents[2] / "examples" / "checkout_upsell_metrics.yaml"
    b = load_blueprint(path)
    assert [m.name for m in b.metrics] == ["purchase", "returns"]
    assert dict(b.value_model.weights) == {"purchase": 1.0, "returns": -10.0}
    reply = await server.stub.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=b, validate_only=True), timeout=10)
    assert not reply.created
