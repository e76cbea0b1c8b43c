"""LogDecisions and LogOutcomes validate every record against its use case and blueprint
version: a batch with one invalid record is refused whole (INVALID_ARGUMENT naming the
record's index and field) and nothing of it is stored. When the decision service cannot
be reached, records are acknowledged into the spool and validated on replay."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.errors import field_violations
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.services.feedback import validation
from tests.feedback.helpers import FeedbackEnv, blueprint, id_at, outcome, record, serve

UC = "checkout_upsell"
WIDE = "wide_features"
FEATURES_20 = tuple(f"x{i}" for i in range(20))


@pytest.fixture(autouse=True)
def quick_recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown use case or version is asked about once more after a pause (decision
    workers synchronise every second); the tests shorten the pause."""
    monkeypatch.setattr(validation, "RECHECK_S", 0.05)


async def _stats(env: FeedbackEnv, use_case: str = UC) -> fpb.GetStatsResponse:
    return await env.stub.GetStats(fpb.GetStatsRequest(use_case=use_case))


async def _refused(env: FeedbackEnv, request) -> list[tuple[str, str]]:
    call = env.stub.LogDecisions if isinstance(request, fpb.LogDecisionsRequest) else env.stub.LogOutcomes
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return field_violations(err.value)


async def test_the_reported_bad_decisions_are_refused_whole(env: FeedbackEnv) -> None:
    env.decision.apply(blueprint(UC))
    env.decision.apply(blueprint(WIDE, features=FEATURES_20))
    t = env.past_ms()
    good = [record(UC, id_at(t + i)) for i in range(3)]
    bad_id = id_at(t + 100)
    reports = [
        ("probabilities [0.9, 0.9]", record(UC, bad_id, probabilities=[0.9, 0.9]), "decisions[3].action_probabilities"),
        ("chosen action with probability 0", record(UC, bad_id, action_index=1, probabilities=[1.0, 0.0]),
         "decisions[3].action_probabilities"),
        ("action name disagrees with action_index", record(UC, bad_id, action_index=0, action="offer"),
         "decisions[3].action"),
        ("action_index 5 of 2 actions", record(UC, bad_id, action_index=5, probabilities=[0.5, 0.5]),
         "decisions[3].action_index"),
        ("3 probabilities for 2 actions", record(UC, bad_id, probabilities=[0.2, 0.3, 0.5]),
         "decisions[3].action_probabilities"),
        ("3 features for a 20-feature blueprint", record(WIDE, bad_id, features=[1.0, 2.0, 3.0]),
         "decisions[3].features"),
        ("a use case that does not exist", record("no_such_use_case", bad_id), "decisions[3].use_case"),
        ("a blueprint version that does not exist", record(UC, bad_id, version=7), "decisions[3].blueprint_version"),
        ("a NaN probability", record(UC, bad_id, probabilities=[float("nan"), 1.0], action_index=1),
         "decisions[3].action_probabilities"),
        ("no probabilities", record(UC, bad_id, probabilities=[]), "decisions[3].action_probabilities"),
    ]
    for name, bad, field in reports:
        violations = await _refused(env, fpb.LogDecisionsRequest(decisions=[*good, bad]))
        assert field in [f for f, _ in violations], (name, violations)
        assert all(f.startswith("decisions[3].") for f, _ in violations), (name, violations)
    stats, wide = await _stats(env), await _stats(env, WIDE)
    assert (stats.decisions, stats.invalid_records, wide.decisions) == (0, 0, 0)  # nothing of a refused batch
    got = await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=good))
    assert got.accepted == 3
    assert (await _stats(env)).decisions == 3
    print(f"\nrefused {len(reports)} reported batches of 4 records; stored 0 of them, then 3 of a valid batch")


async def test_valid_records_of_every_kind_pass(env: FeedbackEnv) -> None:
    env.decision.apply(blueprint("binary_uc", kind=bp.DECISION_KIND_BINARY, actions=("no", "yes")))
    regression = blueprint("regression_uc", kind=bp.DECISION_KIND_REGRESSION, actions=("price",))
    env.decision.apply(regression)
    bare = blueprint("bare_regression_uc", kind=bp.DECISION_KIND_REGRESSION, actions=("price",))
    del bare.actions[:]
    env.decision.apply(bare)
    ranking = blueprint("ranking_uc", kind=bp.DECISION_KIND_RANKING, actions=("x",))
    del ranking.actions[:]
    env.decision.apply(ranking)
    t = env.past_ms()
    records = [
        record("binary_uc", id_at(t), actions=("no", "yes"), action_index=1, probabilities=[0.05, 0.95]),
        record("binary_uc", id_at(t + 1), actions=("no", "yes"), fallback=True, probabilities=[1.0, 0.0]),
        record("binary_uc", id_at(t + 2), actions=("no", "yes"), shadow=True, probabilities=[0.0, 1.0],
               action_index=1),
        record("regression_uc", id_at(t + 3), actions=("price",), probabilities=[1.0]),
        record("bare_regression_uc", id_at(t + 4), actions=("predict",), probabilities=[1.0]),
        # A ranking: one probability per candidate of the request, the chosen candidate's id.
        record("ranking_uc", id_at(t + 5), action_index=2, action="sku-9", probabilities=[0.1, 0.2, 0.3, 0.4]),
        record("ranking_uc", id_at(t + 6), action_index=0, action="sku-1", probabilities=[1.0], fallback=True),
        record(UC, id_at(t + 7), probabilities=[1 / 3, 2 / 3], action_index=1, undelivered=True),
    ]
    env.decision.apply(blueprint(UC))
    got = await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=records))
    assert got.accepted == len(records)
    counts = {uc: (await _stats(env, uc)).decisions
              for uc in ("binary_uc", "regression_uc", "bare_regression_uc", "ranking_uc")}
    assert counts == {"binary_uc": 3, "regression_uc": 1, "bare_regression_uc": 1, "ranking_uc": 2}
    assert (await _stats(env)).undelivered_decisions == 1


async def test_outcomes_of_an_unknown_use_case_are_refused_whole(env: FeedbackEnv) -> None:
    env.decision.apply(blueprint(UC))
    t = env.past_ms()
    good = [outcome(UC, id_at(t + i), f"o{i}", event_ms=t + 10) for i in range(3)]
    for bad in (outcome("no_such_use_case", id_at(t), "x"), outcome("no_such_use_case", "not-a-uuid", "y")):
        violations = await _refused(env, fpb.LogOutcomesRequest(outcomes=[*good, bad]))
        assert [f for f, _ in violations] == ["outcomes[3].use_case"]
    stats = await _stats(env)
    assert (stats.outcomes, stats.orphan_outcomes) == (0, 0)
    got = await env.stub.LogOutcomes(fpb.LogOutcomesRequest(outcomes=good))
    assert (got.accepted, got.duplicates, got.orphans) == (3, 0, 0)


async def test_a_use_case_known_a_moment_later_is_accepted(env: FeedbackEnv) -> None:
    """A decision worker that has not yet synchronised a new use case answers NOT_FOUND
    once; the record is asked about again after a pause before it is refused."""
    env.decision.apply(blueprint(UC))
    env.decision.not_found_once.add(UC)
    got = await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=[record(UC, id_at(env.past_ms()))]))
    assert got.accepted == 1
    assert (await _stats(env)).decisions == 1


async def test_decision_service_down_spools_then_validates_on_replay(env: FeedbackEnv) -> None:
    env.decision.apply(blueprint(UC))
    t = env.past_ms()
    await env.decision_server.stop(0)
    durable = env.process.feedback.durable
    valid = [record(UC, id_at(t + i)) for i in range(4)]
    wrong_name = record(UC, id_at(t + 10), action="offer")  # checkable only with the blueprint
    unknown = record("no_such_use_case", id_at(t + 11))
    # What needs no blueprint is still refused at once.
    await _refused(env, fpb.LogDecisionsRequest(decisions=[*valid, record(UC, id_at(t + 12), probabilities=[0.9, 0.9])]))
    got = await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=[*valid, wrong_name, unknown]))
    assert got.accepted == 6  # acknowledged from the spool, unchecked
    outs = await env.stub.LogOutcomes(fpb.LogOutcomesRequest(outcomes=[
        outcome(UC, valid[0].decision_id, "o1", event_ms=t + 50),
        outcome("no_such_use_case", valid[1].decision_id, "o2", event_ms=t + 50)]))
    assert (outs.accepted, outs.orphans) == (2, 0)
    assert durable.counters.depth == 8 and durable.counters.spooled == 8
    restarted = await serve(env.settings.decision_address, dgrpc.add_DecisionServiceServicer_to_server, env.decision)
    try:
        deadline = time.monotonic() + 60
        while durable.counters.depth:
            assert time.monotonic() < deadline, durable.counters
            await asyncio.sleep(0.1)
    finally:
        await restarted.stop(0)
    assert (durable.counters.replayed, durable.counters.invalid) == (5, 3)
    stats = await _stats(env)
    assert (stats.decisions, stats.outcomes, stats.invalid_records) == (4, 1, 0)
    invalid_files = sorted(p.name for p in durable.spool.dir.iterdir())
    assert len(invalid_files) == 2 and all(n.endswith(".invalid") for n in invalid_files)
    print(f"\ndecision service down: acknowledged 8, replayed {durable.counters.replayed}, "
          f"set aside invalid {durable.counters.invalid}, stored decisions {stats.decisions}, outcomes {stats.outcomes}")
