"""Deletion by unit and retention in the feedback store, on SQLite and on Cassandra."""

from __future__ import annotations

import time

import pytest

from loopwise.privacy import stored_unit_ids
from loopwise.store.feedback import OutcomeRow, StoredDecision, open_feedback_store, unit_digest
from loopwise.store.feedback_cassandra import id_prefix
from tests.contract.backends import BACKENDS, backend_url, store_settings, unique
from tests.feedback.helpers import id_at, record

DAY = 86_400_000


@pytest.fixture(scope="module", params=BACKENDS)
def store(request, tmp_path_factory):
    url = backend_url(request, tmp_path_factory, "feedback")
    opened = open_feedback_store(store_settings("feedback", url, tmp_path_factory))
    yield opened
    opened.close()


def _decision(use_case: str, unit_id: str, ms: int) -> StoredDecision:
    decision_id = id_at(ms)
    return StoredDecision(record(use_case, decision_id, unit_id=unit_id), ms)


def _outcome(d: StoredDecision, outcome_id: str) -> OutcomeRow:
    r = d.record
    return OutcomeRow(r.use_case, r.decision_id, outcome_id, "purchase", 1.0, "", d.decision_time_ms + 1000,
                      d.decision_time_ms)


async def _present(store, decisions: list[StoredDecision]) -> list[bool]:
    return [await store.get_decision(d.record.use_case, d.record.decision_id) is not None for d in decisions]


async def test_delete_unit_removes_its_decisions_and_outcomes_only(store) -> None:
    uc = unique("privacy")
    now = int(time.time() * 1000)
    hashed = stored_unit_ids("key", uc, "alice")[1]
    alice = [_decision(uc, "alice", now - 3 * DAY), _decision(uc, "alice", now), _decision(uc, hashed, now - 5)]
    bob = [_decision(uc, "bob", now - 7)]
    other_use_case = [_decision(unique("other"), "alice", now)]
    await store.put_decisions([*alice, *bob, *other_use_case])
    outcomes = [_outcome(alice[0], "o1"), _outcome(alice[0], "o2"), _outcome(alice[2], "o3"),
                _outcome(bob[0], "o4"), _outcome(other_use_case[0], "o5")]
    await store.put_outcomes(outcomes, [])
    assert await store.delete_unit(uc, stored_unit_ids("key", uc, "alice"), now) == (3, 3)
    assert await _present(store, alice) == [False, False, False]
    assert await _present(store, [*bob, *other_use_case]) == [True, True]
    assert [o.outcome_id for o in await store.outcomes_of(uc, alice[0].record.decision_id)] == []
    assert [o.outcome_id for o in await store.outcomes_of(uc, bob[0].record.decision_id)] == ["o4"]
    # Idempotent: nothing left to delete.
    assert await store.delete_unit(uc, ["alice"], now) == (0, 0)


async def test_deleted_units_stay_deleted_when_their_decisions_arrive_again(store) -> None:
    uc = unique("redelivered")
    now = int(time.time() * 1000)
    hashed = stored_unit_ids("key", uc, "carol")[1]
    before = [_decision(uc, "carol", now - DAY), _decision(uc, hashed, now - 10), _decision(uc, "carol", now)]
    never_stored = [_decision(uc, "carol", now - 20)]  # still in a spool when the unit is deleted
    others = [_decision(uc, "dave", now - 30), _decision(unique("elsewhere"), "carol", now - 40),
              _decision(uc, "", now - 50)]
    assert await store.put_decisions([*before, *others]) == 6
    assert await store.delete_unit(uc, stored_unit_ids("key", uc, "carol"), now) == (3, 0)
    assert await store.deletion_times(uc, [unit_digest(uc, "carol"), unit_digest(uc, "dave")]) == {
        unit_digest(uc, "carol"): now}

    # A spool replay or a retry delivers the unit's decisions again: none comes back.
    assert await store.put_decisions([*before, *never_stored]) == 0
    assert await _present(store, [*before, *never_stored]) == [False] * 4
    assert await _present(store, others) == [True] * 3
    # The unit's decisions made after the deletion are new data, and are stored.
    after = [_decision(uc, "carol", now + 1), _decision(uc, hashed, now + 2)]
    assert await store.put_decisions([*after, before[0]]) == 2
    assert await _present(store, [*after, before[0]]) == [True, True, False]
    # The register keeps digests, never the ids.
    assert "carol" not in repr(await store.deletion_times(uc, [unit_digest(uc, "carol")]))


async def test_purge_before_applies_retention_to_one_use_case(store) -> None:
    uc, keep = unique("retained"), unique("kept")
    now = int(time.time() * 1000)
    cutoff = now - DAY
    old = [_decision(uc, "u1", now - 5 * DAY), _decision(uc, "u2", cutoff - 60_000)]
    recent = [_decision(uc, "u3", cutoff + 60_000), _decision(uc, "u4", now)]
    untouched = [_decision(keep, "u5", now - 5 * DAY)]
    await store.put_decisions([*old, *recent, *untouched])
    await store.put_outcomes([_outcome(d, "o") for d in [*old, *recent, *untouched]], [])
    await store.purge_before(uc, cutoff)
    assert await _present(store, old) == [False, False]
    assert await _present(store, recent) == [True, True]
    assert await _present(store, untouched) == [True]
    assert len(await store.outcomes_between(uc, 0, now + DAY)) == 2
    assert len(await store.outcomes_between(keep, 0, now + DAY)) == 1


def test_id_prefix_bounds_the_ids_of_a_millisecond() -> None:
    ms = int(time.time() * 1000)
    assert id_prefix(ms) <= id_at(ms) < id_prefix(ms + 1)
