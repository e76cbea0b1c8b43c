"""Decide, DecideBatch and DecideStream without a model, and bad input."""

from __future__ import annotations

import math
import uuid

import grpc
import numpy as np
import pytest

from loopwise.clock import uuid7_time_ms
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.errors import field_violations
from tests.decision.helpers import KINDS, blueprint, features, wait_until


def _is_uuid7(value: str) -> bool:
    return uuid.UUID(value).version == 7


@pytest.mark.parametrize("kind", list(KINDS))
async def test_no_model_gives_the_default_decision(decider, kind) -> None:
    await decider.apply(blueprint(kind=kind))
    d = await decider.decide(unit_id="u1")
    actions = KINDS[kind][1] or ["predict"]
    assert d.fallback and not d.explored and d.model_version == 0
    assert d.action == actions[0] and d.action_index == 0 and d.score == 0.25
    assert len(d.action_probabilities) == len(actions) and d.action_probabilities[0] == 1.0
    assert math.isclose(sum(d.action_probabilities), 1.0)
    assert _is_uuid7(d.decision_id) and d.arm == "default" and d.blueprint_version == 1
    assert d.decision_time.ToMilliseconds() == uuid7_time_ms(d.decision_id)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "action_value"])
async def test_explore_without_model_is_uniform(decider, kind) -> None:
    await decider.apply(blueprint(kind=kind, explore_without_model=True))
    n_actions = len(KINDS[kind][1])
    seen = set()
    for _ in range(40):
        d = await decider.decide()
        assert d.explored and not d.fallback
        assert d.action_probabilities == pytest.approx([1 / n_actions] * n_actions)
        seen.add(d.action_index)
    assert seen == set(range(n_actions))
    greedy = await decider.stub.Decide(dpb.DecideRequest(use_case="offer", features=features(), disable_exploration=True))
    assert greedy.decision.fallback and not greedy.decision.explored


async def test_arms_are_sticky_by_unit_and_follow_shares(decider) -> None:
    b = blueprint(kind="action_value", explore_without_model=True)
    b.arms.add(name="control", traffic_share=0.3)
    b.arms.add(name="test", traffic_share=0.7, epsilon=0.0)
    await decider.apply(b)
    arms = {}
    for i in range(200):
        arms[f"u{i}"] = (await decider.decide(unit_id=f"u{i}")).arm
    assert set(arms.values()) == {"control", "test"}
    assert 0.15 < list(arms.values()).count("control") / 200 < 0.45
    for unit in ["u1", "u2", "u3"]:
        assert (await decider.decide(unit_id=unit)).arm == arms[unit]


async def _invalid(call, field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert field in [f for f, _ in field_violations(err.value)], field_violations(err.value)


async def test_bad_named_features(decider) -> None:
    b = blueprint()
    b.features[0].on_missing = 1  # REJECT
    b.features[2].on_unknown = 1  # REJECT
    await decider.apply(b)
    stub = decider.stub

    def req(**kw) -> dpb.DecideRequest:
        return dpb.DecideRequest(use_case="offer", features=features(**kw))

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Decide(dpb.DecideRequest(use_case="nothing_here", features=features()))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    await _invalid(stub.Decide(req(x=None)), "features.x")
    await _invalid(stub.Decide(req(x=float("nan"))), "features.x")
    await _invalid(stub.Decide(req(x=float("inf"))), "features.x")
    await _invalid(stub.Decide(req(country="xx")), "features.country")
    extra = req()
    extra.features["colour"].number = 1.0
    await _invalid(stub.Decide(extra), "features.colour")
    wrong = req()
    wrong.features["x"].category = "fr"
    await _invalid(stub.Decide(wrong), "features.x")
    wrong = req()
    wrong.features["country"].number = 1.0
    await _invalid(stub.Decide(wrong), "features.country")
    await _invalid(stub.Decide(dpb.DecideRequest(use_case="Not A Name")), "use_case")


async def test_missing_rules_shape_the_logged_features(decider) -> None:
    await decider.apply(blueprint())
    core = decider.core
    core.log.enabled = True  # capture records without a feedback service
    captured = []
    core.log.submit_lazy = lambda n, build: captured.extend(build())
    await decider.decide(x=float("nan"), y=None, country="zz")
    await wait_until(lambda: bool(captured))  # logged once the call has ended
    row = np.frombuffer(captured[0].features, dtype="<f4")
    assert math.isnan(row[0]) and row[1] == 5.0 and row[2] == -1  # NaN rule, impute, unknown code


def _batch(matrix: np.ndarray, **kw) -> dpb.DecideBatchRequest:
    values = dict(use_case="offer", blueprint_version=1, rows=matrix.shape[0],
                  feature_names=["x", "y", "country"], features=matrix.astype("<f4").tobytes())
    values.update(kw)
    return dpb.DecideBatchRequest(**values)


async def test_batch_without_model(decider) -> None:
    await decider.apply(blueprint(kind="multiclass", explore_without_model=True))
    rows = np.array([[1, 2, 0], [np.nan, np.nan, -1], [3, 4, 2]], dtype=np.float32)
    reply = await decider.stub.DecideBatch(_batch(rows, unit_ids=["a", "b", "c"]))
    assert len(reply.decision_ids) == 3 and len(set(reply.decision_ids)) == 3
    assert all(_is_uuid7(i) for i in reply.decision_ids)
    probs = np.frombuffer(reply.action_probabilities, "<f4").reshape(3, 3)
    assert np.allclose(probs, 1 / 3)
    assert np.frombuffer(reply.explored, np.uint8).tolist() == [1, 1, 1]
    assert list(reply.actions) == ["red", "green", "blue"] and len(reply.arms) == 3
    idx = np.frombuffer(reply.action_indices, "<i4")
    assert ((idx >= 0) & (idx < 3)).all()


async def test_bad_batches(decider) -> None:
    await decider.apply(blueprint())
    stub = decider.stub
    rows = np.zeros((4, 3), dtype=np.float32)
    await _invalid(stub.DecideBatch(_batch(rows, blueprint_version=0)), "blueprint_version")
    await _invalid(stub.DecideBatch(_batch(rows, rows=5)), "features")
    await _invalid(stub.DecideBatch(_batch(rows, features=b"\0" * 7)), "features")
    await _invalid(stub.DecideBatch(_batch(rows, feature_names=["y", "x", "country"])), "feature_names")
    await _invalid(stub.DecideBatch(_batch(rows, unit_ids=["a"])), "unit_ids")
    inf = rows.copy()
    inf[2, 0] = np.inf
    await _invalid(stub.DecideBatch(_batch(inf)), "features")
    for code in (3, 0.5, -2):
        bad = rows.copy()
        bad[1, 2] = code
        await _invalid(stub.DecideBatch(_batch(bad)), "features")
    many = np.zeros((1001, 3), dtype=np.float32)  # max_batch_rows is 1000 in the fixture
    await _invalid(stub.DecideBatch(_batch(many)), "rows")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.DecideBatch(_batch(rows, blueprint_version=9))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_oversized_request_is_resource_exhausted(decider) -> None:
    await decider.apply(blueprint())
    rows = np.zeros((30_000, 3), dtype=np.float32)  # 360 kB > max_message_bytes 256 kB
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await decider.stub.DecideBatch(_batch(rows))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_stream_answers_in_order(decider) -> None:
    await decider.apply(blueprint(kind="action_value", explore_without_model=True))
    requests = [dpb.DecideRequest(use_case="offer", unit_id=f"u{i}", features=features(x=float(i)))
                for i in range(100)]

    async def gen():
        for r in requests:
            yield r

    core = decider.core
    core.log.enabled = True  # capture the logged records: they link ids to unit ids
    logged = []
    core.log.submit_lazy = lambda n, build: logged.extend(build())
    replies = [r.decision async for r in decider.stub.DecideStream(gen())]
    assert len(replies) == 100 and core.served == 100
    unit_of = {r.decision_id: r.unit_id for r in logged}
    assert [unit_of[r.decision_id] for r in replies] == [f"u{i}" for i in range(100)]


async def test_stream_ends_with_the_first_bad_request(decider) -> None:
    await decider.apply(blueprint())

    async def gen():
        yield dpb.DecideRequest(use_case="offer", features=features())
        yield dpb.DecideRequest(use_case="offer", features=features(x=float("inf")))
        yield dpb.DecideRequest(use_case="offer", features=features())

    got = []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for reply in decider.stub.DecideStream(gen()):
            got.append(reply)
    assert len(got) == 1 and err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value)[0][0] == "features.x"


async def test_stream_ends_unavailable_when_the_server_stops(make_settings) -> None:
    from tests.decision.helpers import start_decider

    d = await start_decider(make_settings(decision_log_enabled=False))
    await d.apply(blueprint())
    call = d.stub.DecideStream()
    await call.write(dpb.DecideRequest(use_case="offer", features=features()))
    assert (await call.read()).decision.fallback
    stop = __import__("asyncio").ensure_future(d.host.stop(2.0))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call.read()
        await call.read()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    await stop
    await d.channel.close()
