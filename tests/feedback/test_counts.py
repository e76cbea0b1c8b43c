"""What GetStats counts, on a real feedback server: undelivered decisions (stored, counted
apart, never training data, drift or joins), honest duplicates (a spool replay of the
same acknowledged request is not a duplicate; a second request is), and outcomes of lost
decisions (unmatched outcomes whose decision should have arrived by now)."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.store.feedback import StoredDecision
from tests.feedback.helpers import FeedbackEnv, blueprint, id_at, outcome, record

UC = "checkout_upsell"


async def _stats(env: FeedbackEnv) -> fpb.GetStatsResponse:
    return await env.stub.GetStats(fpb.GetStatsRequest(use_case=UC))


async def _read(env: FeedbackEnv, **kw) -> list[str]:
    request = fpb.ReadTrainingDataRequest(use_case=UC, **kw)
    return [i async for b in env.stub.ReadTrainingData(request) for i in b.decision_ids]


async def test_undelivered_decisions_are_counted_apart_and_never_read(env: FeedbackEnv) -> None:
    env.decision.apply(blueprint(UC))
    t = env.past_ms()
    delivered = [id_at(t + i) for i in range(6)]
    undelivered = [id_at(t + 100 + i) for i in range(4)]
    records = [record(UC, d, fallback=i == 5) for i, d in enumerate(delivered)]
    records += [record(UC, d, undelivered=True, fallback=i == 3) for i, d in enumerate(undelivered)]
    await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=records))
    await env.stub.LogOutcomes(fpb.LogOutcomesRequest(outcomes=[
        *(outcome(UC, d, f"o{i}", event_ms=t + 1000) for i, d in enumerate(delivered[:3])),
        outcome(UC, undelivered[0], "u0", event_ms=t + 1000),
        outcome(UC, undelivered[1], "u1", event_ms=t + 999_999),  # would be late
    ]))
    stats = await _stats(env)
    got = (stats.decisions, stats.undelivered_decisions, stats.joined_decisions, stats.join_rate,
           stats.closed_windows, stats.open_windows, stats.fallback_decisions, stats.late_outcomes,
           stats.outcomes, stats.unmatched_outcomes, stats.invalid_records)
    assert got == (6, 4, 3, 0.5, 6, 0, 1, 0, 5, 0, 0)
    assert await _read(env, include_fallback=True, include_open_windows=True) == delivered
    assert await _read(env) == delivered[:5]
    stored = await env.stub.GetDecision(fpb.GetDecisionRequest(use_case=UC, decision_id=undelivered[0]))
    assert stored.decision.undelivered and [o.outcome_id for o in stored.outcomes] == ["u0"]
    monitor = env.process.monitor
    assert monitor.undelivered.values == {(UC,): 4.0}
    assert len(monitor.drift._buffer[UC]) == 6  # drift sees delivered decisions only
    await monitor.refresh_stats()
    assert monitor.stats.values[(UC, "undelivered_decisions")] == 4
    print(f"\nundelivered: decisions={stats.decisions} undelivered={stats.undelivered_decisions} "
          f"joined={stats.joined_decisions} join_rate={stats.join_rate} training rows={len(delivered[:5])}")


class AckLostStore:
    """Writes through to the store, then fails the first ``fail`` outcome writes as if
    the acknowledgement never came back (a timeout after the rows were stored)."""

    def __init__(self, store, fail: int) -> None:
        self.store, self.fail = store, fail

    async def put_decisions(self, decisions, write_time_us=None):
        return await self.store.put_decisions(decisions, write_time_us)

    async def put_outcomes(self, outcomes, orphans, write_time_us=None):
        result = await self.store.put_outcomes(outcomes, orphans, write_time_us)
        if self.fail:
            self.fail -= 1
            raise TimeoutError("the store did not acknowledge in time")
        return result


async def test_a_replay_of_the_same_request_is_not_a_duplicate(env: FeedbackEnv) -> None:
    env.decision.apply(blueprint(UC))
    t = env.past_ms()
    ids = [id_at(t + i) for i in range(50)]
    await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=[record(UC, d) for d in ids]))
    durable = env.process.feedback.durable
    durable.store = AckLostStore(durable.store, fail=1)
    outcomes = [outcome(UC, d, f"o{i}", event_ms=t + i + 10) for i, d in enumerate(ids)]
    outcomes += [outcome(UC, "not-a-uuid", "x1"), outcome(UC, "not-a-uuid", "x2")]
    first = await env.stub.LogOutcomes(fpb.LogOutcomesRequest(outcomes=outcomes))
    assert (first.accepted, first.duplicates, first.orphans) == (50, 0, 2)  # acknowledged from the spool
    deadline = time.monotonic() + 30
    while durable.counters.depth:
        assert time.monotonic() < deadline, durable.counters
        await asyncio.sleep(0.05)
    assert (durable.counters.spooled, durable.counters.replayed) == (52, 52)
    replayed = await _stats(env)
    assert (replayed.outcomes, replayed.orphan_outcomes, replayed.duplicate_outcomes) == (50, 2, 0)
    # The same outcomes in a second request: duplicates, counted.
    again = await env.stub.LogOutcomes(fpb.LogOutcomesRequest(outcomes=outcomes[:20] + outcomes[-1:]))
    assert (again.accepted, again.duplicates, again.orphans) == (0, 21, 0)
    resent = await _stats(env)
    assert (resent.outcomes, resent.orphan_outcomes, resent.duplicate_outcomes) == (50, 2, 21)
    print(f"\nreplay of an acknowledged request: spooled={durable.counters.spooled} "
          f"replayed={durable.counters.replayed} duplicates after replay={replayed.duplicate_outcomes}, "
          f"after a second request of 21={resent.duplicate_outcomes}")


async def test_outcomes_of_lost_decisions(env: FeedbackEnv) -> None:
    env.decision.apply(blueprint(UC))
    now = env.now_ms()
    bound_ms = int(env.settings.decision_log_arrival_bound_s * 1000 * env.clock.speed)
    old = [id_at(now - bound_ms - 3_600_000 + i) for i in range(8)]  # should have arrived long ago
    recent = [id_at(now - 60_000 + i) for i in range(5)]  # may still be on its way
    logged = id_at(now - bound_ms - 7_200_000)
    await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=[record(UC, logged)]))
    await env.stub.LogOutcomes(fpb.LogOutcomesRequest(outcomes=[
        *(outcome(UC, d, f"old{i}") for i, d in enumerate(old)),
        *(outcome(UC, d, f"new{i}") for i, d in enumerate(recent)),
        outcome(UC, logged, "ok"), outcome(UC, "not-a-uuid", "orphan"),
    ]))
    stats = await _stats(env)
    assert (stats.outcomes, stats.unmatched_outcomes, stats.lost_decision_outcomes, stats.orphan_outcomes) == (
        14, 13, 8, 1)
    # Three of the old decisions turn up after all (e.g. from a decision spool): no longer lost.
    await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=[record(UC, d) for d in old[:3]]))
    later = await _stats(env)
    assert (later.unmatched_outcomes, later.lost_decision_outcomes, later.decisions) == (10, 5, 4)
    print(f"\nlost decisions: bound={bound_ms} ms on the clock; unmatched={stats.unmatched_outcomes} "
          f"lost={stats.lost_decision_outcomes}; after 3 arrived unmatched={later.unmatched_outcomes} "
          f"lost={later.lost_decision_outcomes}")
    assert np.isfinite(later.join_rate)


async def test_uninterpretable_records_are_skipped_by_every_read(env: FeedbackEnv) -> None:
    """Written straight into the store (as data from before validation would be): a
    decision of blueprint version 99, one with 3 features for version 1's 2, one whose
    action index has no probability."""
    env.decision.apply(blueprint(UC))
    t = env.past_ms()
    good = [id_at(t + i) for i in range(4)]
    await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=[record(UC, d) for d in good]))
    bad = [record(UC, id_at(t + 10), version=99), record(UC, id_at(t + 11), features=(1.0, 2.0, 3.0)),
           record(UC, id_at(t + 12), action_index=3, action="x", probabilities=(0.5, 0.5))]
    store = env.process.feedback.store
    assert await store.put_decisions([StoredDecision(r, t + 10 + i) for i, r in enumerate(bad)]) == 3
    await env.stub.LogOutcomes(fpb.LogOutcomesRequest(outcomes=[
        outcome(UC, r.decision_id, f"o{i}", event_ms=t + 100) for i, r in enumerate(bad)]))
    stats = await _stats(env)
    assert (stats.decisions, stats.invalid_records, stats.outcomes, stats.joined_decisions,
            stats.unmatched_outcomes) == (4, 3, 3, 0, 0)
    assert await _read(env) == good
    assert await _read(env, include_open_windows=True, include_fallback=True) == good
    monitor = env.process.monitor
    assert monitor.skipped.values == {(UC,): 6.0}  # 3 records skipped by each of the two reads
    got = await env.stub.GetDecision(fpb.GetDecisionRequest(use_case=UC, decision_id=bad[0].decision_id))
    assert got.decision.blueprint_version == 99 and [o.outcome_id for o in got.outcomes] == ["o0"]
    assert list(got.feature_names) == [] and got.reward == 0.0
    await monitor.refresh_stats()
    assert monitor.stats.values[(UC, "invalid_records")] == 3
