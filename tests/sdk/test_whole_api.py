"""The SDK methods beyond deciding and logging outcomes, against the four real services
(the session stack): decisions imported with LogDecisions (ids from loopwise.uuid7_at),
read back one by one (GetDecision) and as training data (ReadTrainingData), a unit's data
deleted; DecideStream; typed errors and per-call timeouts; both clients."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import numpy as np
import pytest

import loopwise
from loopwise.client import AsyncClient, Client, Outcome
from loopwise.clock import Clock, uuid7_time_ms
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.settings import Settings
from loopwise.simulator import CheckoutUpsell
from loopwise.tensors import F32, I32, unpack_matrix, unpack_vector

USE_CASE = "sdk_api"


@pytest.fixture(scope="module")
def api(stack, stack_settings: Settings) -> tuple[CheckoutUpsell, Settings, int]:
    """A use case of its own on the session stack: (world, settings, blueprint version)."""
    world = CheckoutUpsell(seed=31, window_s=60)
    blueprint = world.blueprint()
    blueprint.use_case = USE_CASE
    with Client(settings=stack_settings, deadline_s=10) as client:
        version = client.apply_use_case(blueprint).use_case.version
    return world, stack_settings, version


def _imported(world: CheckoutUpsell, settings: Settings, count: int, unit: str) -> list[dict]:
    """Decisions made elsewhere two hours ago (on the stack's clock), by name."""
    start = Clock.from_settings(settings).now_datetime() - timedelta(hours=2)
    units = world.sample_units(count)
    return [{"use_case": USE_CASE, "decision_id": loopwise.uuid7_at(start + timedelta(seconds=i)),
             "unit_id": f"{unit}-{i % 2}", "features": units.features(i),
             "action": world.actions[i % 2], "action_probabilities": {a: 0.5 for a in world.actions},
             "explored": True} for i in range(count)]


def test_imported_decisions_are_read_back_and_deleted(api) -> None:
    world, settings, version = api
    records = _imported(world, settings, 5, "imported")
    ids = [r["decision_id"] for r in records]
    with Client(settings=settings) as client:
        assert client.log_decisions(records, batch_size=2).accepted == 5  # three batches
        assert client.log_decisions(records[:1]).accepted == 1  # idempotent
        client.log_outcomes([Outcome(USE_CASE, ids[1], "o-imported-1", "purchase", 12.5,
                                     event_time=uuid7_time_ms(ids[1]) / 1000 + 5)])

        one = client.get_decision(USE_CASE, ids[1])
        assert one.decision.action == world.actions[1] and one.decision.action_index == 1
        assert one.decision.blueprint_version == version and one.decision.unit_id
        assert list(one.decision.action_probabilities) == [0.5, 0.5]
        features = dict(zip(one.feature_names, unpack_vector(one.decision.features, F32), strict=True))
        given = records[1]["features"]
        for name, value in given.items():
            if not isinstance(value, str):
                assert features[name] == pytest.approx(value, rel=1e-6), name
        assert [o.outcome_id for o in one.outcomes] == ["o-imported-1"]
        assert one.window_closed and one.reward == pytest.approx(12.5)

        rows = {}
        for batch in client.read_training_data(USE_CASE, batch_rows=2):
            chosen = unpack_vector(batch.action_indices, I32)
            matrix = unpack_matrix(batch.features, batch.rows, len(batch.feature_names), "features")
            for i, decision_id in enumerate(batch.decision_ids):
                rows[decision_id] = (int(chosen[i]), matrix[i])
        assert set(ids) <= set(rows)
        assert [rows[d][0] for d in ids] == [0, 1, 0, 1, 0]

        deleted = client.delete_unit_data(USE_CASE, "imported-0")
        assert deleted.decisions_deleted == 3
        with pytest.raises(loopwise.NotFound):
            client.get_decision(USE_CASE, ids[0])
        assert client.get_decision(USE_CASE, ids[1]).decision.decision_id == ids[1]


def test_records_are_checked_before_anything_is_sent(api) -> None:
    world, settings, _ = api
    record = _imported(world, settings, 1, "bad")[0]
    with Client(settings=settings) as client:
        with pytest.raises(ValueError, match="decision_id is required"):
            client.log_decisions([{**record, "decision_id": ""}])
        with pytest.raises(ValueError, match="unknown feature"):
            client.log_decisions([{**record, "features": {"no_such_feature": 1.0}}])
        with pytest.raises(ValueError, match="not one of"):
            client.log_decisions([{**record, "action": "maybe"}])


def test_decide_stream_answers_in_order(api) -> None:
    world, settings, _ = api
    units = world.sample_units(6)
    requests = [{"use_case": USE_CASE, "features": units.features(i), "unit_id": f"s{i}"}
                for i in range(6)]
    with Client(settings=settings) as client:
        decisions = list(client.decide_stream(iter(requests), timeout=30))
    assert len(decisions) == 6 and len({d.decision_id for d in decisions}) == 6
    assert all(d.use_case == USE_CASE and d.action in world.actions and not d.fallback for d in decisions)
    assert all(set(d.probabilities) == set(world.actions) for d in decisions)


def test_typed_errors_and_timeouts_from_the_real_services(api) -> None:
    _, settings, _ = api
    with Client(settings=settings) as client:
        with pytest.raises(loopwise.NotFound) as missing:
            client.get_use_case("no_such_use_case")
        assert isinstance(missing.value, grpc.RpcError) and missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert missing.value.service == "decision" and missing.value.address == settings.decision_address
        with pytest.raises(loopwise.InvalidArgument) as bad:
            client.get_decision(USE_CASE, "not-a-uuid")
        assert [field for field, _ in bad.value.field_violations] == ["decision_id"]
        assert bad.value.service == "feedback"
        # the client's deadline passes first, or the server sheds the call that cannot finish in time
        with pytest.raises((loopwise.DeadlineExceeded, loopwise.ResourceExhausted)):
            client.get_stats(USE_CASE, timeout=1e-6)
        assert client.get_stats(USE_CASE, timeout=10).decisions >= 0


async def test_the_async_client_streams_and_imports(api) -> None:
    world, settings, version = api
    records = _imported(world, settings, 3, "async")
    async with AsyncClient(settings=settings) as client:
        assert (await client.log_decisions(records)).accepted == 3
        found = await client.get_decision(USE_CASE, records[2]["decision_id"])
        assert found.decision.blueprint_version == version
        seen = set()
        async for batch in client.read_training_data(USE_CASE):
            seen.update(batch.decision_ids)
        assert {r["decision_id"] for r in records} <= seen

        async def requests():
            for i in range(3):
                yield {"use_case": USE_CASE, "features": world.sample_units(1).features(0), "unit_id": f"a{i}"}

        decisions = [d async for d in client.decide_stream(requests(), timeout=30)]
        assert len(decisions) == 3 and not any(d.fallback for d in decisions)
        assert (await client.delete_unit_data(USE_CASE, "async-1")).decisions_deleted == 1
        with pytest.raises(loopwise.NotFound):
            await client.get_decision(USE_CASE, records[1]["decision_id"])
        with pytest.raises(loopwise.InvalidArgument):
            await client.get_decision(USE_CASE, "not-a-uuid")


def test_outcome_columns_are_logged_in_batches_by_both_clients(api) -> None:
    """A table's columns (a list, a numpy array, one name for all) go out as
    OutcomeColumns in batches; the outcomes join their decisions; a retry is all
    duplicates; columns of different lengths never leave the client; a bad entry is
    named by the service."""
    world, settings, _ = api
    records = _imported(world, settings, 5, "columns")
    ids = [r["decision_id"] for r in records]
    times = [uuid7_time_ms(d) / 1000 + 5 for d in ids]
    with Client(settings=settings) as client:
        client.log_decisions(records)
        logged = client.log_outcome_columns(USE_CASE, ids, [f"col-{i}" for i in range(5)], "purchase",
                                            np.array([1.0, 2.0, 3.0, 4.0, 5.0]), event_times=times, batch_size=2)
        assert (logged.accepted, logged.duplicates, logged.orphans) == (5, 0, 0)
        again = client.log_outcome_columns(USE_CASE, ids, [f"col-{i}" for i in range(5)], "purchase",
                                           [1.0, 2.0, 3.0, 4.0, 5.0], event_times=times)
        assert (again.accepted, again.duplicates) == (0, 5)
        one = client.get_decision(USE_CASE, ids[3])
        assert [(o.outcome_id, o.value) for o in one.outcomes] == [("col-3", 4.0)]
        assert one.outcomes[0].event_time.ToMilliseconds() == round(times[3] * 1000)
        with pytest.raises(ValueError, match="outcome_ids has 4 entries"):
            client.log_outcome_columns(USE_CASE, ids, ["a", "b", "c", "d"], "purchase")
        with pytest.raises(TypeError, match=r"outcome_ids\[1\]"):
            client.log_outcome_columns(USE_CASE, ids[:2], ["x0", 7], "purchase")
        with pytest.raises(loopwise.InvalidArgument) as bad:
            client.log_outcome_columns(USE_CASE, ids[:2], ["x0", "x1"], "purchase", [1.0, float("inf")])
        assert [field for field, _ in bad.value.field_violations] == ["columns[0].values[1]"]

    async def log_async() -> fpb.LogOutcomesResponse:
        async with AsyncClient(settings=settings) as client:
            return await client.log_outcome_columns(USE_CASE, ids, [f"acol-{i}" for i in range(5)], "return",
                                                    np.float32(2.0), labels=[None, float("nan"), "", "", ""],
                                                    item_ids=[""] * 5)
    assert asyncio.run(log_async()).accepted == 5
    with Client(settings=settings) as client:
        returned = client.get_decision(USE_CASE, ids[1]).outcomes
        assert [(o.outcome_id, o.value, o.label) for o in returned if o.name == "return"] == [("acol-1", 2.0, "")]


def test_uuid7_at_carries_the_time() -> None:
    from datetime import UTC, datetime

    when = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    ids = {loopwise.uuid7_at(when) for _ in range(100)}
    assert len(ids) == 100 and {uuid7_time_ms(i) for i in ids} == {1714564800123}
    assert uuid7_time_ms(loopwise.uuid7_at(when.replace(tzinfo=None))) == 1714564800123
    assert uuid7_time_ms(loopwise.uuid7_at(1714564800.5)) == 1714564800500
    with pytest.raises(ValueError):
        loopwise.uuid7_at(-1.0)
    assert np.all(np.diff(sorted(uuid7_time_ms(loopwise.uuid7_at(t)) for t in (1.0, 2.0, 3.0))) == 1000)
