"""LogOutcomes with OutcomeColumns against a real feedback server: the same outcomes
store the same rows as messages; bad columns are refused naming the column and entry,
and store nothing."""

from __future__ import annotations

import random
import sqlite3
import uuid

import grpc
import pytest

from loopwise.errors import field_violations
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.store.sqlite import parse_store_url
from tests.feedback.helpers import FeedbackEnv, blueprint, id_at, outcome

FIELDS = "decision_id, outcome_id, name, value, label, event_time_ms, item_id"


def _stored(env: FeedbackEnv, use_case: str) -> tuple[list[tuple], list[tuple]]:
    """The use case's stored outcomes and orphans (without the use case and write time)."""
    _, path = parse_store_url(env.settings.store_url("feedback"))
    with sqlite3.connect(path) as conn:
        joinable = conn.execute(f"SELECT {FIELDS}, decision_time_ms FROM outcomes WHERE use_case=? "
                                "ORDER BY outcome_id", (use_case,)).fetchall()
        orphans = conn.execute(f"SELECT {FIELDS} FROM orphan_outcomes WHERE use_case=? ORDER BY outcome_id",
                               (use_case,)).fetchall()
    return joinable, orphans


def _columns(use_case: str, outcomes: list[fpb.Outcome]) -> fpb.OutcomeColumns:
    """The outcomes as columns (every optional column given)."""
    return fpb.OutcomeColumns(
        use_case=use_case, decision_ids=[o.decision_id for o in outcomes],
        outcome_ids=[o.outcome_id for o in outcomes], names=[o.name for o in outcomes],
        values=[o.value for o in outcomes], labels=[o.label for o in outcomes],
        event_times_ms=[o.event_time.ToMilliseconds() for o in outcomes], item_ids=[o.item_id for o in outcomes])


@pytest.mark.parametrize("ids", ["made here", "mixed"])
async def test_columns_store_what_the_same_outcomes_store_as_messages(env: FeedbackEnv, ids: str) -> None:
    """Ids made here (all canonical UUIDv7s, read together), or mixed with upper-case
    ones, UUIDv4s and non-UUIDs (orphans): the rows, orphans and counts are the same."""
    for use_case in ("as_messages", "as_columns"):
        env.decision.apply(blueprint(use_case))
    rng = random.Random(7)
    t = env.past_ms()

    def decision_id(i: int) -> str:
        made = id_at(t + i)
        if ids == "made here":
            return made
        return rng.choice([made, made.upper(), str(uuid.uuid4()), f"not-a-uuid-{i}"])

    outcomes = []
    for i in range(300):
        o = outcome("as_messages", decision_id(i), f"o{i:03d}", name=rng.choice(["purchase", "return"]),
                    value=rng.uniform(-5, 50), event_ms=t + i * 7 + rng.randrange(60_000),
                    label=rng.choice(["", "offer"]))
        o.item_id = rng.choice(["", "sku-1", "sku-2"])
        outcomes.append(o)

    as_messages = await env.stub.LogOutcomes(fpb.LogOutcomesRequest(outcomes=outcomes))
    as_columns = await env.stub.LogOutcomes(fpb.LogOutcomesRequest(columns=[_columns("as_columns", outcomes)]))

    assert as_columns == as_messages and as_columns.accepted + as_columns.orphans == 300
    assert (as_columns.orphans > 0) == (ids == "mixed")
    assert _stored(env, "as_columns") == _stored(env, "as_messages")
    again = await env.stub.LogOutcomes(fpb.LogOutcomesRequest(columns=[_columns("as_columns", outcomes)]))
    assert (again.accepted, again.duplicates, again.orphans) == (0, 300, 0)  # orphans too


async def test_messages_and_columns_in_one_request_and_the_optional_columns(env: FeedbackEnv) -> None:
    """Messages and two column blocks of two use cases in one request; without labels,
    item ids or event times (or with an event time of 0) an outcome gets the defaults:
    no label, no item, the server's now."""
    env.decision.apply(blueprint("first"))
    env.decision.apply(blueprint("second"))
    t = env.past_ms()
    before = env.now_ms()
    reply = await env.stub.LogOutcomes(fpb.LogOutcomesRequest(
        outcomes=[outcome("first", id_at(t), "m0", event_ms=t + 5)],
        columns=[fpb.OutcomeColumns(use_case="first", decision_ids=[id_at(t + 1), id_at(t + 2)],
                                    outcome_ids=["c0", "c1"], names=["purchase"] * 2, values=[1.0, 2.0]),
                 fpb.OutcomeColumns(use_case="second", decision_ids=[id_at(t + 3), id_at(t + 4)],
                                    outcome_ids=["c2", "c3"], names=["purchase"] * 2, values=[3.0, 4.0],
                                    event_times_ms=[0, t + 9])]))
    after = env.now_ms()
    assert (reply.accepted, reply.duplicates, reply.orphans) == (5, 0, 0)
    first, _ = _stored(env, "first")
    second, _ = _stored(env, "second")
    assert [(r[1], r[3], r[4], r[6]) for r in first + second] == [
        ("c0", 1.0, "", ""), ("c1", 2.0, "", ""), ("m0", 1.0, "", ""), ("c2", 3.0, "", ""), ("c3", 4.0, "", "")]
    now_times = [first[0][5], first[1][5], second[0][5]]
    assert all(before <= ms <= after for ms in now_times), now_times
    assert (first[2][5], second[1][5]) == (t + 5, t + 9)
    stats = await env.stub.GetStats(fpb.GetStatsRequest(use_case="first"))
    assert stats.outcomes == 3


def _good(use_case: str, t: int) -> fpb.OutcomeColumns:
    return fpb.OutcomeColumns(use_case=use_case, decision_ids=[id_at(t + i) for i in range(3)],
                              outcome_ids=["a", "b", "c"], names=["purchase"] * 3, values=[1.0, 2.0, 3.0])


def _spoil(columns: fpb.OutcomeColumns, how: str) -> str:
    """Break ``columns`` in one way; the field violation expected."""
    if how == "short column":
        del columns.outcome_ids[2]
        return "columns[0].outcome_ids"
    if how == "optional column of another length":
        columns.labels.append("offer")
        return "columns[0].labels"
    if how == "no outcome id":
        columns.outcome_ids[1] = ""
        return "columns[0].outcome_ids[1]"
    if how == "no name":
        columns.names[2] = ""
        return "columns[0].names[2]"
    if how == "value not finite":
        columns.values[2] = float("nan")
        return "columns[0].values[2]"
    if how == "event time out of range":
        columns.event_times_ms[:] = [1, -62_135_596_800_001, 3]
        return "columns[0].event_times_ms[1]"
    if how == "no use case":
        columns.use_case = ""
        return "columns[0].use_case"
    assert how == "unknown use case"
    columns.use_case = "nobody"
    return "columns[0].use_case"


@pytest.mark.parametrize("how", ["short column", "optional column of another length", "no outcome id", "no name",
                                 "value not finite", "event time out of range", "no use case",
                                 "unknown use case"])
async def test_bad_columns_refuse_the_request_naming_column_and_entry(env: FeedbackEnv, how: str) -> None:
    env.decision.apply(blueprint("shop"))
    t = env.past_ms()
    columns = _good("shop", t)
    field = _spoil(columns, how)
    request = fpb.LogOutcomesRequest(outcomes=[outcome("shop", id_at(t), "m")], columns=[columns])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.stub.LogOutcomes(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [f for f, _ in field_violations(err.value)], err.value.details()
    assert _stored(env, "shop") == ([], [])  # nothing of the request, the good message included


async def test_messages_and_columns_count_together_against_the_row_limit(env: FeedbackEnv) -> None:
    env.decision.apply(blueprint("shop"))
    env.process.feedback.max_batch_rows = 4
    t = env.past_ms()
    request = fpb.LogOutcomesRequest(outcomes=[outcome("shop", id_at(t), "m0"), outcome("shop", id_at(t), "m1")],
                                     columns=[_good("shop", t)])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.stub.LogOutcomes(request)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "5 outcomes" in err.value.details()
    del request.outcomes[1]
    assert (await env.stub.LogOutcomes(request)).accepted == 4
