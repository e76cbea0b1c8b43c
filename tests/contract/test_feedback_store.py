"""The feedback store's contract, on SQLite and on Cassandra: idempotent writes that
say what was new, lookups, decision-time scans across days and hash buckets, orphans,
blueprint versions and stats derived from data; and the feedback service on the backend."""

from __future__ import annotations

import sqlite3
import time

import grpc
import numpy as np
import pytest

from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.settings import Settings
from loopwise.store.feedback import (
    SCHEMA,
    CountingRule,
    DecisionColumns,
    OutcomeRow,
    StoredDecision,
    StoredStats,
    open_feedback_store,
)
from tests.contract.backends import BACKENDS, backend_url, store_settings, unique
from tests.feedback.helpers import ScriptedDecision, blueprint, id_at, outcome, record, serve

DAY = 86_400_000


@pytest.fixture(scope="module", params=BACKENDS)
def url(request, tmp_path_factory) -> str:
    return backend_url(request, tmp_path_factory, "feedback")


@pytest.fixture(scope="module")
def store(url, tmp_path_factory):
    opened = open_feedback_store(store_settings("feedback", url, tmp_path_factory))
    yield opened
    opened.close()


def now_ms() -> int:
    return int(time.time() * 1000)


def decision(uc: str, t: int, version: int = 1, fallback: bool = False, **kw) -> StoredDecision:
    did = kw.pop("decision_id", None) or id_at(t)
    return StoredDecision(record(uc, did, version=version, fallback=fallback, **kw), t)


def out(uc: str, d: StoredDecision | str, oid: str, event_ms: int, name: str = "purchase", value: float = 1.0,
        label: str = "") -> OutcomeRow:
    if isinstance(d, StoredDecision):
        return OutcomeRow(uc, d.record.decision_id, oid, name, value, label, event_ms, d.decision_time_ms)
    return OutcomeRow(uc, d, oid, name, value, label, event_ms, 0)


async def test_decisions_round_trip_and_report_new(store) -> None:
    uc, t = unique(), now_ms() - 60_000
    d = decision(uc, t, version=3, features=(1.5, -2.0, 3.25), action_index=1, probabilities=(0.2, 0.8),
                 unit_id="user-9", model_version=4, arm="champion", explored=True, shadow=True, score=0.75,
                 action_scores=[0.1, 0.9])
    others = [decision(uc, t + i) for i in range(1, 5)]
    assert await store.put_decisions([d, *others]) == 5
    assert await store.put_decisions([d, others[0], decision(uc, t + 10)]) == 1  # two already stored
    got = await store.get_decision(uc, d.record.decision_id)
    assert got is not None and got.decision_time_ms == t
    assert got.record == d.record
    assert await store.get_decision(uc, id_at(t + 99)) is None
    assert await store.get_decision(unique(), d.record.decision_id) is None  # other use case
    assert await store.get_decision(uc, "not-a-uuid") is None


async def test_stored_rows_are_left_untouched_by_a_second_write(store) -> None:
    uc, t = unique(), now_ms() - 60_000
    d = decision(uc, t, arm="first")
    assert await store.put_decisions([d], write_time_us=time.time_ns() // 1000) == 1
    again = StoredDecision(record(uc, d.record.decision_id, arm="second"), t)
    assert await store.put_decisions([again], write_time_us=(time.time_ns() // 1000) - 10_000_000) == 0
    assert (await store.get_decision(uc, d.record.decision_id)).record.arm == "first"
    o = out(uc, d, "o1", t + 5, value=1.0)
    assert await store.put_outcomes([o], []) == ([True], [])
    changed = out(uc, d, "o1", t + 5, value=7.0)
    assert await store.put_outcomes([changed], [], write_time_us=1) == ([False], [])
    assert [x.value for x in await store.outcomes_of(uc, d.record.decision_id)] == [1.0]


async def test_outcomes_report_new_and_duplicates(store) -> None:
    uc, t = unique(), now_ms() - 60_000
    d1, d2 = decision(uc, t), decision(uc, t + 1)
    await store.put_decisions([d1, d2])
    rows = [out(uc, d1, "a", t + 10), out(uc, d1, "b", t + 5, name="click"), out(uc, d2, "a", t + 20)]
    orphans = [out(uc, "bogus", "x", t + 1), out(uc, "12345", "y", t + 2)]
    assert await store.put_outcomes(rows, orphans) == ([True, True, True], [True, True])
    again = [rows[0], out(uc, d2, "c", t + 30), rows[0]]  # a stored one, a new one, a repeat in the batch
    assert await store.put_outcomes(again, [orphans[1]]) == ([False, True, False], [False])
    # An outcome of an unknown (valid) decision id is stored like any other.
    ghost = id_at(t + 500)
    assert await store.put_outcomes([OutcomeRow(uc, ghost, "g", "purchase", 2.0, "", t + 600, t + 500)], []) == (
        [True], [])
    assert [(o.outcome_id, o.name) for o in await store.outcomes_of(uc, d1.record.decision_id)] == [
        ("b", "click"), ("a", "purchase")]  # by event time
    assert [o.outcome_id for o in await store.outcomes_of(uc, d2.record.decision_id)] == ["a", "c"]
    assert [o.outcome_id for o in await store.outcomes_of(uc, ghost)] == ["g"]
    assert await store.outcomes_of(uc, id_at(t + 3)) == []
    listed = await store.orphans(uc)
    assert [(o.decision_id, o.outcome_id, o.decision_time_ms) for o in listed] == [("bogus", "x", 0), ("12345", "y", 0)]
    assert await store.orphans(unique()) == []


async def test_outcomes_between_is_inclusive_and_by_decision_time(store) -> None:
    uc, t = unique(), now_ms() - 3 * DAY
    ds = [decision(uc, t + i * DAY // 2) for i in range(5)]  # spans three days
    await store.put_decisions(ds)
    rows = [out(uc, d, f"o{i}", d.decision_time_ms + 100 - i, value=float(i), label=f"l{i}") for i, d in enumerate(ds)]
    await store.put_outcomes(rows, [])
    between = await store.outcomes_between(uc, ds[1].decision_time_ms, ds[3].decision_time_ms)
    assert sorted(o.outcome_id for o in between) == ["o1", "o2", "o3"]
    assert [o.event_time_ms for o in between] == sorted(o.event_time_ms for o in between)
    assert {(o.value, o.label) for o in between} == {(1.0, "l1"), (2.0, "l2"), (3.0, "l3")}
    assert await store.outcomes_between(uc, ds[1].decision_time_ms + 1, ds[2].decision_time_ms - 1) == []
    assert len(await store.outcomes_between(uc, 0, now_ms())) == 5


def _key(d: StoredDecision) -> tuple[int, str]:
    return d.decision_time_ms, d.record.decision_id


async def test_decision_pages_merge_days_and_buckets_in_order(store) -> None:
    uc, t0 = unique(), now_ms() - 4 * DAY
    ds = []
    for i in range(120):  # three days, several decisions in the same millisecond
        t = t0 + (i // 3) * (DAY // 20)
        ds.append(decision(uc, t, fallback=i % 7 == 0))
    await store.put_decisions(ds[::-1])  # write order must not matter
    expected = sorted(ds, key=_key)
    start, end = expected[0].decision_time_ms, expected[-1].decision_time_ms + 1

    pages, after = [], None
    while True:
        page = await store.decision_page(uc, start, end, True, after, 17)
        pages.append(page)
        if len(page) < 17:
            break
        after = _key(page[-1])
    assert [len(p) for p in pages] == [17] * 7 + [1]
    assert [_key(d) for p in pages for d in p] == [_key(d) for d in expected]

    without = [d for d in expected if not d.record.fallback]
    first = await store.decision_page(uc, start, end, False, None, 50)
    assert [_key(d) for d in first] == [_key(d) for d in without[:50]]  # full page despite the filter
    # [start, end): the end is exclusive, the start inclusive.
    mid = expected[60].decision_time_ms
    window = await store.decision_page(uc, mid, mid + DAY // 20, True, None, 100)
    assert [_key(d) for d in window] == [_key(d) for d in expected if mid <= d.decision_time_ms < mid + DAY // 20]
    assert await store.decision_page(uc, end, end + DAY, True, None, 10) == []

    scanned = [page async for page in store.scan_decisions(uc, start, end, False, 25)]
    assert [len(p) for p in scanned[:-1]] == [25] * (len(scanned) - 1)
    assert [_key(d) for p in scanned for d in p] == [_key(d) for d in without]
    assert [page async for page in store.scan_decisions(unique(), start, end, True, 25)] == []


async def test_blueprint_versions(store) -> None:
    uc, t = unique(), now_ms() - 60_000
    assert await store.blueprint_versions(uc) == []
    await store.put_decisions([decision(uc, t, version=2), decision(uc, t + 1, version=1),
                               decision(uc, t + 2, version=2), decision(uc, t + 3, version=5)])
    assert await store.blueprint_versions(uc) == [1, 2, 5]


async def test_stats_are_derived_from_the_stored_rows(store) -> None:
    uc, now = unique(), now_ms()
    w1, w2 = 60_000, 600_000
    rules = {1: CountingRule(w1, frozenset()), 2: CountingRule(w2, frozenset({"purchase"}))}
    old = now - 2 * DAY
    d = [
        decision(uc, old, version=1),                 # closed; joined
        decision(uc, old + 1, version=1, fallback=True),  # closed; late outcome only
        decision(uc, now - 1000, version=1),          # open; joined
        decision(uc, old + 2, version=2),             # closed (w2); "click" does not count, purchase does
        decision(uc, now - 2000, version=2),          # open; nothing
    ]
    await store.put_decisions(d)
    await store.put_outcomes(
        [out(uc, d[0], "a", old + 10), out(uc, d[0], "b", old + 20),
         out(uc, d[1], "c", old + 1 + w1 + 1),
         out(uc, d[2], "d", now - 500),
         out(uc, d[3], "e", old + 5, name="click"), out(uc, d[3], "f", old + w2, name="purchase"),
         out(uc, d[3], "g", old + w2 + 3, name="click"),
         OutcomeRow(uc, id_at(old + 50), "h", "purchase", 1.0, "", old + 60, old + 50)],  # unknown decision
        [out(uc, "nope", "i", now)],
    )
    stats = await store.stats(uc, rules, now)
    assert stats == StoredStats(decisions=5, fallback_decisions=1, closed_windows=3, outcomes=8,
                                joined_decisions=3, late_outcomes=1, unmatched_outcomes=1, orphan_outcomes=1)
    assert await store.stats(unique(), rules, now) == StoredStats()


async def test_feedback_service_runs_on_the_backend(url, make_settings) -> None:
    """LogDecisions, LogOutcomes (with a duplicate), GetDecision, GetStats and
    ReadTrainingData through a feedback server on this backend."""
    from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
    from loopwise.services.feedback.server import start_server

    settings = make_settings(feedback_store_url=url)
    decisions = ScriptedDecision()
    uc = unique()
    decisions.apply(blueprint(uc, window_s=60))
    decision_server = await serve(settings.decision_address, dgrpc.add_DecisionServiceServicer_to_server, decisions)
    host = await start_server(settings)
    channel = grpc.aio.insecure_channel(settings.feedback_address)
    stub = fgrpc.FeedbackServiceStub(channel)
    try:
        t = now_ms() - 3_600_000  # windows long closed on the test clock
        ids = [id_at(t + i) for i in range(30)]
        reply = await stub.LogDecisions(fpb.LogDecisionsRequest(decisions=[record(uc, i) for i in ids]))
        assert reply.accepted == 30
        outs = [outcome(uc, i, f"o{k}", value=2.0, event_ms=t + k + 10) for k, i in enumerate(ids[:10])]
        first = await stub.LogOutcomes(fpb.LogOutcomesRequest(outcomes=outs))
        again = await stub.LogOutcomes(fpb.LogOutcomesRequest(outcomes=outs[:4] + [outcome(uc, "x", "z")]))
        assert (first.accepted, first.duplicates) == (10, 0)
        assert (again.accepted, again.duplicates, again.orphans) == (0, 4, 1)
        got = await stub.GetDecision(fpb.GetDecisionRequest(use_case=uc, decision_id=ids[3]))
        assert got.reward == 2.0 and len(got.outcomes) == 1
        stats = await stub.GetStats(fpb.GetStatsRequest(use_case=uc))
        assert (stats.decisions, stats.outcomes, stats.joined_decisions, stats.orphan_outcomes) == (30, 10, 10, 1)
        assert (stats.spool_depth, stats.store_unavailable, stats.duplicate_outcomes) == (0, False, 4)
        batches = [b async for b in stub.ReadTrainingData(fpb.ReadTrainingDataRequest(use_case=uc, batch_rows=7))]
        assert [i for b in batches for i in b.decision_ids] == ids
    finally:
        await channel.close()
        await host.stop(0)
        await decision_server.stop(0)


async def test_training_columns_match_the_records_and_keep_the_latency(store) -> None:
    uc, t0 = unique(), now_ms() - 2 * DAY
    ds = []
    for i in range(90):  # two days, pairs of decisions in the same millisecond
        d = decision(uc, t0 + (i // 2) * (DAY // 40), fallback=i % 11 == 0, features=(float(i), -1.0),
                     probabilities=(0.25, 0.75), action_index=i % 2, model_version=i % 3, arm=f"a{i % 2}",
                     explored=i % 5 == 0)
        d.record.serving_latency_ms = 0.5 + i
        ds.append(d)
    await store.put_decisions(ds)
    stored = await store.get_decision(uc, ds[7].record.decision_id)
    assert stored is not None and stored.record.serving_latency_ms == 7.5
    start, end = t0, ds[-1].decision_time_ms + 1
    pages = [p async for p in store.scan_decision_columns(uc, start, end, False, 20)]
    records = [p async for p in store.scan_decisions(uc, start, end, False, 20)]
    assert [len(p) for p in pages] == [len(p) for p in records] == [20, 20, 20, 20, 1]
    got, want = DecisionColumns.concat(pages), DecisionColumns.concat([DecisionColumns.of(p) for p in records])
    assert got.decision_ids == want.decision_ids and len(got) == 81
    for name in ("times_ms", "blueprint_versions", "action_indices", "model_versions", "explored", "latencies_ms"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    assert got.features == want.features and got.arms == want.arms
    assert got.action_probabilities == want.action_probabilities
    assert sorted(got.latencies_ms.tolist()) == [0.5 + i for i in range(90) if i % 11]


async def test_an_older_sqlite_file_gains_the_latency_column(tmp_path) -> None:
    """A decisions table written before serving_latency_ms existed is migrated on
    open: its rows read with latency 0, new rows keep theirs."""
    path = tmp_path / "old.db"
    old_schema = SCHEMA.replace("    serving_latency_ms REAL NOT NULL DEFAULT 0,\n", "")
    assert "serving_latency_ms" not in old_schema
    uc, t = unique(), now_ms() - 60_000
    old = decision(uc, t)
    with sqlite3.connect(path) as conn:
        conn.executescript(old_schema)
        conn.execute("INSERT INTO decisions (decision_id, use_case, decision_time_ms, blueprint_version, unit_id, "
                     "features, action_index, action, score, action_probabilities, model_version, arm, explored, "
                     "fallback, shadow, action_scores) VALUES (?,?,?,1,'u1',?,0,'a0',0,?,0,'',0,0,0,?)",
                     (old.record.decision_id, uc, t, old.record.features, b"", b""))
    opened = open_feedback_store(Settings(feedback_store_url=f"sqlite:///{path}", data_dir=tmp_path / "var"))
    try:
        new = decision(uc, t + 1)
        new.record.serving_latency_ms = 3.25
        assert await opened.put_decisions([new]) == 1
        assert (await opened.get_decision(uc, old.record.decision_id)).record.serving_latency_ms == 0.0
        assert (await opened.get_decision(uc, new.record.decision_id)).record.serving_latency_ms == 3.25
    finally:
        opened.close()


async def test_stats_count_undelivered_invalid_and_lost_apart(store) -> None:
    uc, now = unique(), now_ms()
    rules = {1: CountingRule(60_000, frozenset(), feature_count=2)}
    old = now - 2 * DAY
    ok = decision(uc, old)
    fallback = decision(uc, old + 1, fallback=True)
    undelivered = decision(uc, old + 2, undelivered=True)
    undelivered_fallback = decision(uc, old + 3, undelivered=True, fallback=True)
    unknown_version = decision(uc, old + 4, version=99)
    narrow = decision(uc, old + 5, features=(1.0,))  # one feature of version 1's two
    no_probability = decision(uc, old + 6, action_index=2, probabilities=(0.5, 0.5))
    await store.put_decisions([ok, fallback, undelivered, undelivered_fallback, unknown_version, narrow,
                               no_probability])
    lost_before = now - 3_600_000
    await store.put_outcomes([
        out(uc, ok, "a", old + 10), out(uc, undelivered, "b", old + 10), out(uc, unknown_version, "c", old + 10),
        out(uc, narrow, "d", old + 120_000),  # would be late
        OutcomeRow(uc, id_at(old + 50), "e", "purchase", 1.0, "", old + 60, old + 50),  # lost
        OutcomeRow(uc, id_at(old + 51), "f", "purchase", 1.0, "", old + 60, old + 51),  # lost
        OutcomeRow(uc, id_at(now - 1000), "g", "purchase", 1.0, "", now, now - 1000),  # may still come
    ], [])
    stats = await store.stats(uc, rules, now, lost_before_ms=lost_before)
    assert stats == StoredStats(decisions=2, fallback_decisions=1, closed_windows=2, outcomes=7, joined_decisions=1,
                                late_outcomes=0, unmatched_outcomes=3, orphan_outcomes=0, undelivered_decisions=2,
                                invalid_records=3, lost_decision_outcomes=2)
    # Without a feature count, the narrow decision is interpreted (and its outcome is late).
    lenient = await store.stats(uc, {1: CountingRule(60_000, frozenset())}, now)
    assert (lenient.decisions, lenient.invalid_records, lenient.late_outcomes, lenient.lost_decision_outcomes) == (
        3, 2, 1, 0)


async def test_scans_leave_undelivered_decisions_out(store) -> None:
    uc, t = unique(), now_ms() - 60_000
    ds = [decision(uc, t + i, undelivered=i % 3 == 0) for i in range(9)]
    await store.put_decisions(ds)
    delivered = [_key(d) for d in ds if not d.record.undelivered]
    scanned = [_key(d) for p in [p async for p in store.scan_decisions(uc, t, t + 9, True, 4)] for d in p]
    assert scanned == delivered
    columns = [p async for p in store.scan_decision_columns(uc, t, t + 9, True, 4)]
    assert [i for p in columns for i in p.decision_ids] == [k[1] for k in delivered]
    everything = await store.decision_page(uc, t, t + 9, True, None, 100, include_undelivered=True)
    assert [_key(d) for d in everything] == [_key(d) for d in ds]
    assert (await store.get_decision(uc, ds[0].record.decision_id)).record.undelivered


async def test_a_write_replayed_with_its_own_time_is_not_a_duplicate(store) -> None:
    uc, t = unique(), now_ms() - 60_000
    d = decision(uc, t)
    await store.put_decisions([d])
    ts = time.time_ns() // 1000
    rows = [out(uc, d, f"o{i}", t + i) for i in range(3)]
    orphans = [out(uc, "bogus", "x", t)]
    assert await store.put_outcomes(rows[:2], orphans, write_time_us=ts) == ([True, True], [True])
    # The whole request again with its own accept time (a spool replay after a partial
    # or unacknowledged first attempt): everything is this request's, nothing a duplicate.
    assert await store.put_outcomes(rows, orphans, write_time_us=ts) == ([True, True, True], [True])
    # Within one request a repeated key is a duplicate all the same.
    assert await store.put_outcomes([rows[0], rows[0]], [], write_time_us=ts) == ([True, False], [])
    # Another request (another accept time) with the same keys: duplicates.
    assert await store.put_outcomes(rows, orphans, write_time_us=ts + 1) == ([False, False, False], [False])
    assert [o.outcome_id for o in await store.outcomes_of(uc, d.record.decision_id)] == ["o0", "o1", "o2"]


async def test_a_replayed_decision_write_lists_its_rows_again(store) -> None:
    """A first attempt cut short after the decision row (Cassandra: before its
    feedback_days, decision_versions and by-unit rows): the replay with the request's
    own accept time writes the row again with its index rows, so it is read."""
    uc, t = unique(), now_ms() - 60_000
    d = decision(uc, t, version=4)
    ts = time.time_ns() // 1000
    conn = getattr(store, "conn", None)
    if conn is not None:  # Cassandra: only the decision row of the first attempt
        from loopwise.store.feedback_cassandra import _INSERT_DECISION, bucket_of

        r = d.record
        await conn.write(_INSERT_DECISION, (
            uc, t // DAY, bucket_of(r.decision_id), t, r.decision_id, r.blueprint_version, r.unit_id, r.features,
            r.action_index, r.action, r.score, np.asarray(r.action_probabilities, "<f8").tobytes(), r.model_version,
            r.arm, r.explored, r.fallback, r.shadow, b"", 0.0, False, b"", ts))
        assert await store.blueprint_versions(uc) == []
        assert [p async for p in store.scan_decisions(uc, t, t + 1, True, 10)] == []
    assert await store.put_decisions([d], write_time_us=ts) == 1  # this request's row: stored by it
    assert await store.blueprint_versions(uc) == [4]
    assert [_key(x) for p in [p async for p in store.scan_decisions(uc, t, t + 1, True, 10)] for x in p] == [_key(d)]
    assert await store.put_decisions([d], write_time_us=ts + 1) == 0  # another request: already stored


async def test_an_older_sqlite_file_gains_the_undelivered_and_write_time_columns(tmp_path) -> None:
    path = tmp_path / "old.db"
    old_schema = SCHEMA.replace("    undelivered INTEGER NOT NULL DEFAULT 0,\n", "").replace(
        "    write_time_us INTEGER NOT NULL DEFAULT 0,\n", "").replace(  # and the later ranking columns
        "    item_id TEXT NOT NULL DEFAULT '',\n", "").replace("    ranking BLOB NOT NULL DEFAULT x'',\n", "")
    assert "undelivered" not in old_schema and "write_time_us" not in old_schema
    uc, t = unique(), now_ms() - 60_000
    old = decision(uc, t)
    with sqlite3.connect(path) as conn:
        conn.executescript(old_schema)
        conn.execute("INSERT INTO decisions (decision_id, use_case, decision_time_ms, blueprint_version, unit_id, "
                     "features, action_index, action, score, action_probabilities, model_version, arm, explored, "
                     "fallback, shadow, action_scores) VALUES (?,?,?,1,'u1',?,0,'control',0,?,0,'',0,0,0,?)",
                     (old.record.decision_id, uc, t, old.record.features, np.array([1.0, 0.0]).tobytes(), b""))
        conn.execute("INSERT INTO outcomes VALUES (?,?,'o1','purchase',1.0,'',?,?)",
                     (uc, old.record.decision_id, t + 5, t))
    opened = open_feedback_store(Settings(feedback_store_url=f"sqlite:///{path}", data_dir=tmp_path / "var"))
    try:
        new = decision(uc, t + 1, undelivered=True)
        assert await opened.put_decisions([new]) == 1
        assert not (await opened.get_decision(uc, old.record.decision_id)).record.undelivered
        assert (await opened.get_decision(uc, new.record.decision_id)).record.undelivered
        again = out(uc, old, "o1", t + 5)
        assert await opened.put_outcomes([again], [], write_time_us=123) == ([False], [])  # stored before: a duplicate
        stats = await opened.stats(uc, {1: CountingRule(60_000, frozenset())}, now_ms())
        assert (stats.decisions, stats.undelivered_decisions, stats.joined_decisions) == (1, 1, 1)
    finally:
        opened.close()
