"""ReadTrainingData: closed windows only, batches, versions, time range, columnar values."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.services.feedback import core
from tests.feedback.helpers import FeedbackEnv, blueprint, id_at, outcome, record

UC = "checkout_upsell"


async def _read(env: FeedbackEnv, **kw) -> list[fpb.ReadTrainingDataResponse]:
    return [b async for b in env.stub.ReadTrainingData(fpb.ReadTrainingDataRequest(use_case=UC, **kw))]


def _ids(batches) -> list[str]:
    return [i for b in batches for i in b.decision_ids]


async def _two_versions(env: FeedbackEnv) -> tuple[int, list[str]]:
    """10 closed decisions of v1 then 5 of v2 (one more feature), outcomes on some."""
    env.decision.apply(blueprint(UC, features=("age", "spend"), default_reward=-1.0))
    env.decision.apply(blueprint(UC, features=("age", "spend", "tenure"), default_reward=-1.0))
    t = env.past_ms(30)
    ids, records, outcomes = [], [], []
    for i in range(15):
        did = id_at(t + i * 1000)
        ids.append(did)
        version = 1 if i < 10 else 2
        feats = [float(i), float(i) / 2] + ([float(-i)] if version == 2 else [])
        records.append(record(UC, did, version=version, features=feats, action_index=i % 2,
                              probabilities=[0.25, 0.75], model_version=i // 5, arm=f"arm{i % 3}",
                              explored=i % 4 == 0))
        if i % 3 == 0:
            outcomes.append(outcome(UC, did, f"o{i}", value=float(i), event_ms=t + i * 1000 + 500))
    await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=records[::-1]))  # order must not matter
    await env.stub.LogOutcomes(fpb.LogOutcomesRequest(outcomes=outcomes))
    return t, ids


async def test_batches_follow_versions_and_decode(env: FeedbackEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "PAGE_ROWS", 3)  # several store pages per batch
    t, ids = await _two_versions(env)
    batches = await _read(env, batch_rows=4)
    assert [(b.blueprint_version, b.rows) for b in batches] == [(1, 4), (1, 4), (1, 2), (2, 4), (2, 1)]
    assert _ids(batches) == ids  # decision-time order
    assert [list(b.feature_names) for b in batches] == [["age", "spend"]] * 3 + [["age", "spend", "tenure"]] * 2

    rows = []
    for b in batches:
        f = len(b.feature_names)
        features = np.frombuffer(b.features, "<f4").reshape(b.rows, f)
        times = np.frombuffer(b.decision_times_ms, "<i8")
        actions = np.frombuffer(b.action_indices, "<i4")
        propensities = np.frombuffer(b.propensities, "<f4")
        probabilities = np.frombuffer(b.action_probabilities, "<f4").reshape(b.rows, b.n_actions)
        rewards = np.frombuffer(b.rewards, "<f4")
        counts = np.frombuffer(b.outcome_counts, "<i4")
        models = np.frombuffer(b.model_versions, "<i8")
        assert b.n_actions == 2 and len(b.explored) == b.rows and len(b.arms) == b.rows
        for r in range(b.rows):
            rows.append((features[r].tolist(), int(times[r]), int(actions[r]), float(propensities[r]),
                         probabilities[r].tolist(), float(rewards[r]), int(counts[r]), int(models[r]),
                         b.arms[r], b.explored[r], b.labels[r]))
    for i, row in enumerate(rows):
        feats = [float(i), float(i) / 2] + ([float(-i)] if i >= 10 else [])
        assert row[0] == feats
        assert row[1] == t + i * 1000
        assert row[2] == i % 2
        assert row[3] == [0.25, 0.75][i % 2]
        assert row[4] == [0.25, 0.75]
        assert row[5] == (float(i) if i % 3 == 0 else -1.0)
        assert row[6] == (1 if i % 3 == 0 else 0)
        assert row[7] == i // 5
        assert (row[8], row[9], row[10]) == (f"arm{i % 3}", int(i % 4 == 0), "")


async def test_time_range_and_default_batch_size(env: FeedbackEnv) -> None:
    t, ids = await _two_versions(env)
    batches = [b async for b in env.stub.ReadTrainingData(_ranged(t + 3000, t + 12000))]
    assert _ids(batches) == ids[3:12]  # [start, end)
    assert [(b.blueprint_version, b.rows) for b in batches] == [(1, 7), (2, 2)]
    # The default batch size (4096) keeps each version in one batch.
    assert [b.rows for b in await _read(env)] == [10, 5]


def _ranged(start_ms: int, end_ms: int) -> fpb.ReadTrainingDataRequest:
    request = fpb.ReadTrainingDataRequest(use_case=UC)
    request.start_time.FromMilliseconds(start_ms)
    request.end_time.FromMilliseconds(end_ms)
    return request


async def test_only_closed_windows_and_no_fallbacks_by_default(env: FeedbackEnv) -> None:
    env.decision.apply(blueprint(UC, kind=bp.DECISION_KIND_MULTICLASS, actions=("a", "b", "c")))
    t = env.past_ms()
    closed, fallback, open_ = id_at(t), id_at(t + 1), env.clock.new_id()
    await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=[
        record(UC, closed, probabilities=[0.2, 0.3, 0.5], actions=("a", "b", "c")),
        record(UC, fallback, fallback=True, probabilities=[1.0, 0.0, 0.0], actions=("a", "b", "c")),
        record(UC, open_, probabilities=[0.2, 0.3, 0.5], actions=("a", "b", "c")),
    ]))
    await env.stub.LogOutcomes(fpb.LogOutcomesRequest(outcomes=[
        outcome(UC, closed, "l1", label="b", event_ms=t + 100),
        outcome(UC, closed, "l2", label="c", event_ms=t + 200),
        outcome(UC, closed, "l3", label="a", event_ms=t + 999_999),  # late: not the label
    ]))
    batches = await _read(env)
    assert _ids(batches) == [closed]
    assert list(batches[0].labels) == ["c"] and batches[0].n_actions == 3
    assert _ids(await _read(env, include_fallback=True)) == [closed, fallback]
    assert _ids(await _read(env, include_open_windows=True)) == [closed, open_]
    assert _ids(await _read(env, include_open_windows=True, include_fallback=True)) == [closed, fallback, open_]


async def test_read_errors(env: FeedbackEnv) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _read(env)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    env.decision.apply(blueprint(UC))
    assert await _read(env) == []  # known use case, no data
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _read(env, batch_rows=-1)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [b async for b in env.stub.ReadTrainingData(_ranged(2000, 1000))]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_blueprint_versions_are_cached(env: FeedbackEnv) -> None:
    await _two_versions(env)
    await _read(env)
    calls = env.decision.calls
    await _read(env)
    await env.stub.GetStats(fpb.GetStatsRequest(use_case=UC))
    assert env.decision.calls == calls


async def test_pages_split_decisions_of_the_same_millisecond(env: FeedbackEnv,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "PAGE_ROWS", 2)
    env.decision.apply(blueprint(UC))
    t = env.past_ms()
    ids = sorted(id_at(t) for _ in range(5)) + [id_at(t + 1)]
    await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=[record(UC, i) for i in ids]))
    await env.stub.LogOutcomes(fpb.LogOutcomesRequest(outcomes=[
        outcome(UC, i, "o", value=float(n), event_ms=t + 10) for n, i in enumerate(ids)]))
    batches = await _read(env, batch_rows=4)
    assert _ids(batches) == ids and [b.rows for b in batches] == [4, 2]
    rewards = np.concatenate([np.frombuffer(b.rewards, "<f4") for b in batches])
    assert rewards.tolist() == [float(n) for n in range(6)]


async def test_pages_whose_windows_are_all_open_are_skipped(env: FeedbackEnv,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """v1 has a one-hour window, v2 one minute: the read's end follows the shortest
    window, so whole pages of v1 decisions can still be open; they are left out and
    the closed rows around them keep their order and batches."""
    monkeypatch.setattr(core, "PAGE_ROWS", 2)
    env.decision.apply(blueprint(UC, window_s=3600))
    env.decision.apply(blueprint(UC, window_s=60))
    old, recent = env.past_ms(120), env.past_ms(10)
    v1_closed = [id_at(old + i) for i in range(3)]
    v1_open = [id_at(recent + i) for i in range(4)]  # 10 minutes old: a one-hour window is open
    v2_closed = [id_at(recent + 100 + i) for i in range(3)]
    await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=[
        *(record(UC, d, version=1) for d in v1_closed + v1_open),
        *(record(UC, d, version=2) for d in v2_closed),
    ]))
    batches = await _read(env, batch_rows=2)
    assert _ids(batches) == v1_closed + v2_closed
    assert [(b.blueprint_version, b.rows) for b in batches] == [(1, 2), (1, 1), (2, 2), (2, 1)]
    assert _ids(await _read(env, include_open_windows=True)) == v1_closed + v1_open + v2_closed
