"""LogDecisions / LogOutcomes / GetDecision / GetStats against a real feedback server."""

from __future__ import annotations

import asyncio
import math
import sqlite3

import grpc
import numpy as np
import pytest

from loopwise.errors import field_violations
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.store.sqlite import parse_store_url
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from tests.feedback.helpers import FeedbackEnv, blueprint, id_at, outcome, record

UC = "checkout_upsell"


async def test_decision_round_trip_keeps_bytes_and_probabilities(env: FeedbackEnv) -> None:
    env.decision.apply(blueprint(UC, features=("age", "spend", "country")))
    did = env.clock.new_id()
    values = [31.0, float("nan"), -1.0]
    sent = record(UC, did.upper(), features=values, action_index=1, probabilities=[0.1, 0.9], score=0.73,
                  model_version=3, arm="treatment", explored=True, shadow=True, action_scores=[0.2, 0.8],
                  unit_id="unit-42")
    response = await env.stub.LogDecisions(fpb.LogDecisionsRequest(request_id="r1", decisions=[sent]))
    assert response.accepted == 1
    env.trainer.models[(UC, 3)] = tpb.Model(
        use_case=UC, version=3, family="hist_gradient_boosting", blueprint_version=1, training_rows=640,
        holdout_rows=160, labelled_rows=800, metrics={"auc": 0.81}, code_version="loopwise 0.4.0 (abc123)",
        parent_version=2, artifact_sha256="9f" * 32, artifact_size=4096, source="trainer")
    env.trainer.models[(UC, 3)].data_start_time.FromMilliseconds(1_000)
    env.trainer.models[(UC, 3)].data_end_time.FromMilliseconds(2_000)

    got = await env.stub.GetDecision(fpb.GetDecisionRequest(use_case=UC, decision_id=did))
    d = got.decision
    assert d.decision_id == did.lower()  # ids are stored in canonical form
    assert d.features == sent.features  # exact bytes, NaN included
    assert np.isnan(np.frombuffer(d.features, "<f4")[1])
    assert list(d.action_probabilities) == [0.1, 0.9]
    assert list(d.action_scores) == [0.2, 0.8]
    assert (d.action_index, d.action, d.score, d.model_version, d.arm, d.unit_id) == (
        1, "offer", 0.73, 3, "treatment", "unit-42")
    assert d.explored and d.shadow and not d.fallback
    assert list(got.feature_names) == ["age", "spend", "country"]
    assert not got.window_closed
    assert got.reward == 0.0 and not got.outcomes
    assert got.model_lineage["family"] == "hist_gradient_boosting"
    assert got.model_lineage["training_rows"] == "640"
    assert got.model_lineage["metric.auc"] == "0.81"
    # From the decision to the whole lineage of its model (issue 6).
    lineage = dict(got.model_lineage)
    assert {k: lineage[k] for k in ("code_version", "parent_version", "artifact_sha256", "artifact_size",
                                    "blueprint_version", "holdout_rows", "labelled_rows", "source")} == {
        "code_version": "loopwise 0.4.0 (abc123)", "parent_version": "2", "artifact_sha256": "9f" * 32,
        "artifact_size": "4096", "blueprint_version": "1", "holdout_rows": "160", "labelled_rows": "800",
        "source": "trainer"}
    assert lineage["data_start_time"] == "1970-01-01T00:00:01Z" and lineage["data_end_time"] == "1970-01-01T00:00:02Z"


async def test_lineage_is_empty_when_the_trainer_is_unreachable(env: FeedbackEnv) -> None:
    env.decision.apply(blueprint(UC))
    did = env.clock.new_id()
    await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=[record(UC, did, model_version=2)]))
    await env.trainer_server.stop(0)
    got = await env.stub.GetDecision(fpb.GetDecisionRequest(use_case=UC, decision_id=did))
    assert got.decision.model_version == 2
    assert dict(got.model_lineage) == {}


async def test_outcome_retries_are_duplicates_and_change_no_count(env: FeedbackEnv) -> None:
    env.decision.apply(blueprint(UC))
    t = env.past_ms()
    ids = [id_at(t + i) for i in range(3)]
    await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=[record(UC, i) for i in ids]))
    # A retried LogDecisions is a no-op too.
    await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=[record(UC, i) for i in ids]))
    batch = fpb.LogOutcomesRequest(outcomes=[
        outcome(UC, ids[0], "o1", event_ms=t + 1000),
        outcome(UC, ids[1], "o2", event_ms=t + 2000),
        outcome(UC, ids[1], "o3", value=2.0, event_ms=t + 3000),
    ])
    first = await env.stub.LogOutcomes(batch)
    assert (first.accepted, first.duplicates, first.orphans) == (3, 0, 0)
    before = await env.stub.GetStats(fpb.GetStatsRequest(use_case=UC))
    second = await env.stub.LogOutcomes(batch)
    assert (second.accepted, second.duplicates, second.orphans) == (0, 3, 0)
    after = await env.stub.GetStats(fpb.GetStatsRequest(use_case=UC))
    assert (after.decisions, after.outcomes, after.joined_decisions) == (3, 3, 2)
    assert (before.decisions, before.outcomes, before.joined_decisions) == (3, 3, 2)
    assert after.join_rate == pytest.approx(2 / 3)
    assert after.duplicate_outcomes == 3
    got = await env.stub.GetDecision(fpb.GetDecisionRequest(use_case=UC, decision_id=ids[1]))
    assert [o.outcome_id for o in got.outcomes] == ["o2", "o3"]
    assert got.reward == 3.0 and got.window_closed


async def test_orphans_and_unmatched_outcomes(env: FeedbackEnv) -> None:
    env.decision.apply(blueprint(UC))
    t = env.past_ms()
    unknown = id_at(t)
    response = await env.stub.LogOutcomes(fpb.LogOutcomesRequest(outcomes=[
        outcome(UC, "not-a-uuid", "x1"),
        outcome(UC, "018f0000-0000-4000-8000-000000000000", "x2"),  # a UUIDv4
        outcome(UC, id_at(1_000_000_000_000), "x3"),  # UUIDv7 from 2001: not plausible
        outcome(UC, unknown, "x4", event_ms=t + 5),
    ]))
    assert (response.accepted, response.duplicates, response.orphans) == (1, 0, 3)
    again = await env.stub.LogOutcomes(fpb.LogOutcomesRequest(outcomes=[outcome(UC, "not-a-uuid", "x1")]))
    assert (again.accepted, again.duplicates, again.orphans) == (0, 1, 0)

    _, path = parse_store_url(env.settings.store_url("feedback"))
    with sqlite3.connect(path) as conn:
        stored = conn.execute("SELECT decision_id, outcome_id FROM orphan_outcomes ORDER BY outcome_id").fetchall()
    assert [s[1] for s in stored] == ["x1", "x2", "x3"] and stored[0][0] == "not-a-uuid"

    stats = await env.stub.GetStats(fpb.GetStatsRequest(use_case=UC))
    assert (stats.orphan_outcomes, stats.outcomes, stats.unmatched_outcomes, stats.decisions) == (3, 1, 1, 0)
    # The decision arrives later: the outcome now joins.
    await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=[record(UC, unknown)]))
    stats = await env.stub.GetStats(fpb.GetStatsRequest(use_case=UC))
    assert (stats.unmatched_outcomes, stats.joined_decisions, stats.join_rate) == (0, 1, 1.0)


@pytest.mark.parametrize(("aggregation", "expected"), [(1, 6.0), (2, 4.0), (3, 2.0), (4, 4.0)])
async def test_reward_by_spec(env: FeedbackEnv, aggregation: int, expected: float) -> None:
    env.decision.apply(blueprint(UC, outcome_names=["purchase"], aggregation=aggregation, default_reward=-1.0))
    t = env.past_ms()
    did, empty = id_at(t), id_at(t + 1)
    await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=[record(UC, did), record(UC, empty)]))
    await env.stub.LogOutcomes(fpb.LogOutcomesRequest(outcomes=[
        outcome(UC, did, "p1", value=2.0, event_ms=t + 10_000),
        outcome(UC, did, "p2", value=4.0, event_ms=t + 30_000),
        outcome(UC, did, "c1", name="click", value=100.0, event_ms=t + 20_000),  # not selected
        outcome(UC, did, "p3", value=50.0, event_ms=t + 61_000),  # late (window 60 s)
        outcome(UC, did, "p0", value=70.0, event_ms=t - 1),  # before the decision
        outcome(UC, empty, "p4", value=8.0, event_ms=t + 120_000),  # late for the other one
    ]))
    got = await env.stub.GetDecision(fpb.GetDecisionRequest(use_case=UC, decision_id=did))
    assert got.reward == expected
    assert [o.outcome_id for o in got.outcomes] == ["p0", "p1", "c1", "p2", "p3"]  # by event time
    default = await env.stub.GetDecision(fpb.GetDecisionRequest(use_case=UC, decision_id=empty))
    assert default.reward == -1.0
    stats = await env.stub.GetStats(fpb.GetStatsRequest(use_case=UC))
    assert (stats.late_outcomes, stats.joined_decisions, stats.closed_windows, stats.open_windows) == (2, 1, 2, 0)


async def test_window_closes_as_the_shared_clock_runs(env: FeedbackEnv) -> None:
    env.decision.apply(blueprint(UC, window_s=30))  # half a real second at speed 60
    did = env.clock.new_id()
    await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=[record(UC, did, fallback=True)]))
    await env.stub.LogOutcomes(fpb.LogOutcomesRequest(outcomes=[outcome(UC, did, "o")]))  # event time = now
    stats = await env.stub.GetStats(fpb.GetStatsRequest(use_case=UC))
    assert (stats.open_windows, stats.closed_windows, stats.fallback_decisions, stats.joined_decisions) == (1, 0, 1, 1)
    for _ in range(100):
        stats = await env.stub.GetStats(fpb.GetStatsRequest(use_case=UC))
        if stats.closed_windows:
            break
        await asyncio.sleep(0.05)
    assert (stats.open_windows, stats.closed_windows) == (0, 1)
    got = await env.stub.GetDecision(fpb.GetDecisionRequest(use_case=UC, decision_id=did))
    assert got.window_closed and got.reward == 1.0


async def test_bad_decisions_name_the_field(env: FeedbackEnv) -> None:
    good = record(UC, env.clock.new_id())
    cases = [
        (record("", env.clock.new_id()), "decisions[1].use_case"),
        (record(UC, "nope"), "decisions[1].decision_id"),
        (record(UC, "018f0000-0000-4000-8000-000000000000"), "decisions[1].decision_id"),
        (fpb.DecisionRecord(use_case=UC, decision_id=env.clock.new_id(), blueprint_version=1, features=b"12345"),
         "decisions[1].features"),
        (record(UC, env.clock.new_id(), version=0), "decisions[1].blueprint_version"),
        (record(UC, env.clock.new_id(), probabilities=[1.5, 0.0]), "decisions[1].action_probabilities"),
        (record(UC, env.clock.new_id(), action_index=2), "decisions[1].action_index"),
    ]
    for bad, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=[good, bad]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in [f for f, _ in field_violations(err.value)], field
    env.decision.apply(blueprint(UC))
    stats = await env.stub.GetStats(fpb.GetStatsRequest(use_case=UC))
    assert stats.decisions == 0  # a rejected batch stores nothing


async def test_bad_outcomes_name_the_field(env: FeedbackEnv) -> None:
    env.decision.apply(blueprint(UC))
    did = env.clock.new_id()
    cases = [
        (outcome("", did, "o"), "outcomes[0].use_case"),
        (outcome(UC, did, ""), "outcomes[0].outcome_id"),
        (outcome(UC, did, "o", name=""), "outcomes[0].name"),
        (outcome(UC, did, "o", value=math.inf), "outcomes[0].value"),
        (outcome(UC, did, "o", value=math.nan), "outcomes[0].value"),
    ]
    for bad, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await env.stub.LogOutcomes(fpb.LogOutcomesRequest(outcomes=[bad]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in field_violations(err.value)] == [field]


async def test_not_found_and_unavailable(env: FeedbackEnv) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.stub.GetStats(fpb.GetStatsRequest(use_case="nobody"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.stub.GetDecision(fpb.GetDecisionRequest(use_case=UC, decision_id=env.clock.new_id()))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.stub.GetDecision(fpb.GetDecisionRequest(use_case=UC))
    assert field_violations(err.value) == [("decision_id", "required")]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.stub.GetStats(fpb.GetStatsRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # Writes need no reward spec; reads do, and say UNAVAILABLE without the decision service.
    env.decision.apply(blueprint(UC))
    did = env.clock.new_id()
    await env.decision_server.stop(0)
    await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=[record(UC, did)]))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.stub.GetStats(fpb.GetStatsRequest(use_case=UC))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
