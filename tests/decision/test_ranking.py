"""Ranking of request-supplied candidates, and bad input on the new paths."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import pytest_asyncio
from scipy.stats import chisquare

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.errors import field_violations
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.decision.helpers import (
    LoopbackTrainer,
    RecordingFeedback,
    blueprint,
    linear_onnx,
    model_ref,
    serve,
    start_decider,
    wait_until,
)


def ranking_blueprint(**policy) -> bp.Blueprint:
    b = blueprint(kind="regression", **policy)
    b.kind = bp.DECISION_KIND_RANKING
    b.default_decision.action = ""
    return b


@pytest_asyncio.fixture
async def served(make_settings):
    settings = make_settings(decision_log_flush_interval_s=0.05)
    trainer, feedback = LoopbackTrainer(), RecordingFeedback()
    servers = [await serve(trainer, tgrpc.add_TrainerServiceServicer_to_server, settings.trainer_address),
               await serve(feedback, fgrpc.add_FeedbackServiceServicer_to_server, settings.feedback_address)]
    d = await start_decider(settings)
    try:
        yield d, trainer, feedback
    finally:
        await d.stop()
        for s in servers:
            await s.stop(0)


def _request(ys: list[float], **kw) -> dpb.DecideRequest:
    """Shared x and country; each candidate brings its own y (the model's score)."""
    return dpb.DecideRequest(
        use_case="offer", unit_id="u1",
        features={"x": dpb.FeatureValue(number=1.0), "country": dpb.FeatureValue(category="de")},
        candidates=[dpb.Candidate(id=f"c{i}", features={"y": dpb.FeatureValue(number=y)}) for i, y in enumerate(ys)],
        **kw)


async def _deploy(d, trainer) -> None:
    onnx = linear_onnx([np.array([0.0, 1.0, 0.0])], [np.zeros(1)])  # score = y
    before = d.watcher.updates
    trainer.set_deployment("offer", {1: onnx}, production=model_ref(1, onnx, 3))
    await wait_until(lambda: d.watcher.updates > before)


async def test_greedy_ranking_and_default_order(served) -> None:
    d, trainer, feedback = served
    await d.apply(ranking_blueprint())
    ys = [0.2, 3.0, -1.0, 1.5]
    fallback = (await d.stub.Decide(_request(ys))).decision
    assert fallback.fallback and list(fallback.ranked_candidate_ids) == ["c0", "c1", "c2", "c3"]
    assert fallback.action == "c0" and fallback.deployment_role == "default"
    await _deploy(d, trainer)
    dec = (await d.stub.Decide(_request(ys))).decision
    assert list(dec.ranked_candidate_ids) == ["c1", "c3", "c0", "c2"]
    assert dec.action == "c1" and dec.action_index == 1 and dec.action_probabilities == [0, 1, 0, 0]
    assert dec.action_scores == pytest.approx(ys) and dec.model_version == 1
    await wait_until(lambda: dec.decision_id in feedback.ids)
    record = next(r for r in feedback.records if r.decision_id == dec.decision_id)
    assert record.action == "c1" and np.frombuffer(record.features, "<f4").tolist() == [1.0, 3.0, 1.0]
    assert list(record.action_probabilities) == [0, 1, 0, 0]


async def test_softmax_ranking_propensity(served) -> None:
    d, trainer, _ = served
    await d.apply(ranking_blueprint(type=bp.POLICY_TYPE_SOFTMAX, temperature=1.0))
    await _deploy(d, trainer)
    ys = [0.0, 1.0, 0.5]
    expected = np.exp(ys) / np.exp(ys).sum()
    counts = np.zeros(3)
    for _ in range(600):
        dec = (await d.stub.Decide(_request(ys))).decision
        assert dec.action_probabilities == pytest.approx(expected.tolist())
        assert dec.ranked_candidate_ids[0] == dec.action and len(set(dec.ranked_candidate_ids)) == 3
        counts[dec.action_index] += 1
    assert chisquare(counts, expected * 600).pvalue > 0.001


async def test_bad_ranking_input(served) -> None:
    d, trainer, _ = served
    await d.apply(ranking_blueprint())

    async def invalid(request, field: str) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await d.stub.Decide(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(err.value)[0][0] == field, field_violations(err.value)

    await invalid(_request([]), "candidates")
    await invalid(_request([0.0] * 1001), "candidates")
    bad = _request([1.0, 2.0])
    bad.candidates[1].features["zz"].number = 1
    await invalid(bad, "candidates[1].features.zz")
    bad = _request([1.0, 2.0])
    bad.candidates[0].features["y"].number = float("inf")
    await invalid(bad, "candidates[0].features.y")
    bad = _request([1.0, 2.0])
    bad.candidates[1].id = "c0"
    await invalid(bad, "candidates[1].id")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await d.stub.DecideBatch(dpb.DecideBatchRequest(use_case="offer", blueprint_version=1, rows=0,
                                                        feature_names=["x", "y", "country"]))
    assert field_violations(err.value)[0][0] == "candidate_counts"
    await d.apply(blueprint("plain"))
    plain = _request([1.0])
    plain.use_case = "plain"
    await invalid(plain, "candidates")
    ok = (await d.stub.Decide(_request([1.0, 2.0]))).decision  # still serving
    assert ok.ranked_candidate_ids


async def test_ranking_blueprint_rules(served) -> None:
    d, _, _ = served
    b = ranking_blueprint()
    b.actions.append("x")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await d.apply(b)
    assert field_violations(err.value)[0][0] == "blueprint.actions"
    for bad_k, kind in ((-1, "ranking"), (3, "binary")):
        b = ranking_blueprint(ranking_top_k=bad_k) if kind == "ranking" else blueprint(ranking_top_k=bad_k)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await d.apply(b)
        assert field_violations(err.value)[0][0] == "blueprint.policy.ranking_top_k"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await d.apply(blueprint(type=bp.POLICY_TYPE_SOFTMAX, temperature=1.0))  # binary
    assert field_violations(err.value)[0][0] == "blueprint.policy.type"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await d.apply(blueprint(kind="action_value", type=bp.POLICY_TYPE_SOFTMAX))
    assert field_violations(err.value)[0][0] == "blueprint.policy.temperature"


def _plackett_luce(scores: list[float], order: list[int], temperature: float) -> list[float]:
    """P(item | items above) of each item of ``order`` under Plackett-Luce."""
    z = np.exp(np.asarray(scores) / temperature)
    left = list(range(len(scores)))
    out = []
    for i in order:
        out.append(float(z[i] / z[left].sum()))
        left.remove(i)
    return out


async def test_plackett_luce_ranking_is_logged_per_position(served) -> None:
    """Softmax rankings draw every shown position from Plackett-Luce: the answer and the
    record carry each shown item's propensity given the items above (checked against
    the formula), the prefix probability, and every candidate with its row and position;
    the second position's frequencies given the top item follow the model."""
    d, trainer, feedback = served
    await d.apply(ranking_blueprint(type=bp.POLICY_TYPE_SOFTMAX, temperature=0.5, ranking_top_k=3))
    await _deploy(d, trainer)
    ys = [0.0, 1.0, 0.5, -0.5, 0.8]
    second = np.zeros(5)
    with_top_1 = 0
    decisions = []
    for _ in range(500):
        dec = (await d.stub.Decide(_request(ys))).decision
        order = [int(c[1:]) for c in dec.ranked_candidate_ids]
        assert sorted(order) == list(range(5))
        expected = _plackett_luce(ys, order[:3], 0.5)
        assert list(dec.position_propensities) == pytest.approx(expected, rel=1e-6)
        assert dec.ranking_probability == pytest.approx(float(np.prod(expected)), rel=1e-6)
        assert order[3:] == sorted(order[3:], key=lambda i: -ys[i])  # the rest by score
        if order[0] == 1:
            with_top_1 += 1
            second[order[1]] += 1
        decisions.append(dec)
    left = [0, 2, 3, 4]
    p_second = np.exp(np.asarray(ys)[left] / 0.5) / np.exp(np.asarray(ys)[left] / 0.5).sum()
    assert chisquare(second[left], p_second * with_top_1).pvalue > 0.001
    last = decisions[-1]
    await wait_until(lambda: last.decision_id in feedback.ids)
    record = next(r for r in feedback.records if r.decision_id == last.decision_id)
    assert [i.item_id for i in record.ranked_items] == [f"c{i}" for i in range(5)]
    positions = {i.item_id: i.position for i in record.ranked_items}
    assert [c for c, p in sorted(positions.items(), key=lambda kv: kv[1]) if p] == list(last.ranked_candidate_ids[:3])
    assert sum(p == 0 for p in positions.values()) == 2
    shown = sorted((i for i in record.ranked_items if i.position), key=lambda i: i.position)
    assert [i.propensity for i in shown] == pytest.approx(list(last.position_propensities))
    assert record.ranking_probability == pytest.approx(last.ranking_probability)
    for k, item in enumerate(record.ranked_items):
        assert np.frombuffer(item.features, "<f4").tolist() == pytest.approx([1.0, ys[k], 1.0])
        assert item.score == pytest.approx(ys[k])
    assert sum(record.action_probabilities) == pytest.approx(1.0)  # the first position's distribution


async def test_top_k_from_the_request(served) -> None:
    d, trainer, _ = served
    await d.apply(ranking_blueprint(type=bp.POLICY_TYPE_SOFTMAX, temperature=1.0, ranking_top_k=3))
    await _deploy(d, trainer)
    assert len((await d.stub.Decide(_request([0.1, 0.2, 0.3, 0.4]))).decision.position_propensities) == 3
    assert len((await d.stub.Decide(_request([0.1, 0.2, 0.3, 0.4], top_k=1))).decision.position_propensities) == 1
    assert len((await d.stub.Decide(_request([0.1, 0.2], top_k=9))).decision.position_propensities) == 2
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await d.stub.Decide(_request([0.1, 0.2], top_k=-1))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value)[0][0] == "top_k"


async def test_sdk_rank(served) -> None:
    """AsyncClient.rank sends context and per-candidate features and returns the order
    with the shown items' propensities; the item scores map back to candidate ids."""
    from loopwise.client import AsyncClient

    d, trainer, _ = served
    await d.apply(ranking_blueprint(type=bp.POLICY_TYPE_SOFTMAX, temperature=0.5))
    await _deploy(d, trainer)
    client = AsyncClient(settings=d.settings, deadline_s=30)
    try:
        ranking = await client.rank("offer", {"x": 1.0, "country": "de"},
                                    {"a": {"y": 0.3}, "b": {"y": 2.0}, "c": {"y": -1.0}}, unit_id="u1", top_k=2)
    finally:
        await client.close()
    assert sorted(ranking.ranked_ids) == ["a", "b", "c"] and len(ranking.shown) == 2
    assert ranking.scores == pytest.approx({"a": 0.3, "b": 2.0, "c": -1.0})
    order = [{"a": 0, "b": 1, "c": 2}[i] for i in ranking.ranked_ids]
    assert ranking.propensities == pytest.approx(_plackett_luce([0.3, 2.0, -1.0], order[:2], 0.5), rel=1e-6)
    assert ranking.probability == pytest.approx(float(np.prod(ranking.propensities)))
    assert ranking.decision_id and not ranking.fallback and ranking.model_version == 1


async def test_decide_batch_and_stream_rank(served) -> None:
    """DecideBatch ranks consecutive candidate groups (one ranking and one logged record
    per group, Plackett-Luce propensities per position); DecideStream ranks each
    message's candidates; bad groups are INVALID_ARGUMENT naming the field."""
    from loopwise.tensors import F32, I32, pack, unpack_vector

    d, trainer, feedback = served
    await d.apply(ranking_blueprint(type=bp.POLICY_TYPE_SOFTMAX, temperature=0.5, ranking_top_k=2))
    await _deploy(d, trainer)
    groups = [[0.2, 1.0, -0.3], [0.5, 0.1], [2.0, 0.0, 1.0, 0.4]]
    matrix = np.array([[1.0, y, 1.0] for g in groups for y in g], dtype=np.float32)
    request = dpb.DecideBatchRequest(
        use_case="offer", blueprint_version=1, rows=matrix.shape[0], feature_names=["x", "y", "country"],
        features=pack(matrix, F32), candidate_counts=[len(g) for g in groups], unit_ids=["u1", "u2", "u3"],
        candidate_ids=[f"g{i}c{j}" for i, g in enumerate(groups) for j in range(len(g))])
    reply = await d.stub.DecideBatch(request)
    assert len(reply.decision_ids) == 3
    ranked = unpack_vector(reply.ranked_indices, I32).tolist()
    propensities = unpack_vector(reply.position_propensities, F32)
    assert unpack_vector(reply.shown_counts, I32).tolist() == [2, 2, 2]
    at = 0
    for g, ys in enumerate(groups):
        order = ranked[at:at + len(ys)]
        assert sorted(order) == list(range(len(ys)))
        assert propensities[at:at + 2] == pytest.approx(_plackett_luce(ys, order[:2], 0.5), rel=1e-5)
        assert all(p == 0 for p in propensities[at + 2:at + len(ys)])
        assert unpack_vector(reply.action_indices, I32)[g] == order[0]
        at += len(ys)
    await wait_until(lambda: set(reply.decision_ids) <= set(feedback.ids))
    records = {r.decision_id: r for r in feedback.records}
    last = records[reply.decision_ids[2]]
    assert [i.item_id for i in last.ranked_items] == ["g2c0", "g2c1", "g2c2", "g2c3"]
    assert last.unit_id == "u3" and sorted(i.position for i in last.ranked_items) == [0, 0, 1, 2]

    bad = dpb.DecideBatchRequest()
    bad.CopyFrom(request)
    bad.candidate_counts[:] = [3, 2, 3]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await d.stub.DecideBatch(bad)
    assert field_violations(err.value)[0][0] == "candidate_counts"
    bad.candidate_counts[:] = [3, 2, 4]
    bad.candidate_ids[1] = "g0c0"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await d.stub.DecideBatch(bad)
    assert field_violations(err.value)[0][0] == "candidate_ids"

    async def messages():
        for ys in groups:
            yield _request(ys)

    streamed = [r.decision async for r in d.stub.DecideStream(messages())]
    assert [len(r.position_propensities) for r in streamed] == [2, 2, 2]
    assert [len(r.ranked_candidate_ids) for r in streamed] == [3, 2, 4]
