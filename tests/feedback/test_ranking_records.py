"""Ranking decision records: what validation accepts of a drawn ranking's items."""

from __future__ import annotations

import time

import numpy as np
import pytest

from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.ranking import RankingPolicy, sample_ranking
from loopwise.services.feedback.validation import Violations, check_decision
from tests.feedback.helpers import id_at


def ranking_record(seed: int = 0, k: int = 3) -> fpb.DecisionRecord:
    """A record as the decision service logs a Plackett-Luce ranking of 5 candidates."""
    scores = np.array([0.1, 1.0, 0.4, -0.3, 0.7])
    draw = sample_ranking(RankingPolicy(softmax=True, temperature=0.5), scores, k, np.random.default_rng(seed))
    positions = np.zeros(5, dtype=int)
    positions[draw.order[:k]] = np.arange(1, k + 1)
    propensities = np.zeros(5)
    propensities[draw.order[:k]] = draw.propensities
    row = np.ones(2, dtype="<f4").tobytes()
    top = int(draw.order[0])
    now_ms = int(time.time() * 1000)
    return fpb.DecisionRecord(
        decision_id=id_at(now_ms), use_case="feed", blueprint_version=1, features=row, action_index=top,
        action=f"c{top}", action_probabilities=draw.top_probabilities.tolist(),
        ranked_items=[fpb.RankedItem(item_id=f"c{i}", position=int(positions[i]), features=row,
                                     propensity=float(propensities[i]), score=float(scores[i]))
                      for i in range(5)],
        ranking_probability=draw.prefix_probability,
    )


def violations(record: fpb.DecisionRecord) -> list[tuple[str, str]]:
    bad = Violations()
    check_decision("decisions[0]", record, int(time.time() * 1000), bad)
    return bad.items


def test_a_drawn_ranking_is_accepted() -> None:
    for seed in range(5):
        assert violations(ranking_record(seed)) == []


@pytest.mark.parametrize(("change", "field"), [
    (lambda r: r.ranked_items[0].ClearField("item_id"), "decisions[0].ranked_items[0].item_id"),
    (lambda r: setattr(r.ranked_items[1], "item_id", "c0"), "decisions[0].ranked_items[1].item_id"),
    (lambda r: setattr(r, "ranking_probability", 0.5), "decisions[0].ranking_probability"),
    (lambda r: r.ranked_items.pop(), "decisions[0].ranked_items"),
    (lambda r: setattr(r.ranked_items[0], "features", b"\0" * 4), "decisions[0].ranked_items[0].features"),
])
def test_an_inconsistent_ranking_is_refused(change, field) -> None:
    record = ranking_record()
    change(record)
    assert field in [f for f, _ in violations(record)], violations(record)


def test_positions_and_propensities_must_fit() -> None:
    record = ranking_record()
    shown = [i for i in record.ranked_items if i.position]
    shown[0].position = 9
    assert ("decisions[0].ranked_items", "the shown positions must be 1..k, each once") in violations(record)
    record = ranking_record()
    hidden = next(i for i in record.ranked_items if not i.position)
    hidden.propensity = 0.2
    assert [f for f, _ in violations(record)] == [f"decisions[0].ranked_items[{list(record.ranked_items).index(hidden)}]"
                                                  ".propensity"]
    record = ranking_record()
    top = next(i for i in record.ranked_items if i.position == 1)
    other = next(i for i in record.ranked_items if i.position == 2)
    record.action_index = list(record.ranked_items).index(other)
    record.action = other.item_id
    assert "decisions[0].action_index" in [f for f, _ in violations(record)]
    assert top.item_id != other.item_id


async def test_ranking_decisions_become_item_rows(env) -> None:
    """Two logged rankings (5 candidates, 3 shown) with clicks naming their items:
    ReadTrainingData returns one row per shown item with its row, position, propensity,
    prefix propensity and its own reward; GetDecision returns the items and the
    outcomes' item ids."""
    from loopwise.common.v1 import blueprint_pb2 as bp
    from loopwise.tensors import F32, I32
    from tests.feedback.helpers import blueprint, outcome

    ranking = blueprint("feed", features=("x", "y"), kind=bp.DECISION_KIND_RANKING, outcome_names=("click",))
    ranking.ClearField("actions")
    ranking.default_decision.action = ""
    env.decision.apply(ranking)
    t = env.past_ms(30)
    records = []
    for n in range(2):
        r = ranking_record(seed=n)
        r.decision_id = id_at(t + n * 1000)
        for i, item in enumerate(r.ranked_items):
            item.features = np.array([float(n), float(i)], dtype="<f4").tobytes()
        r.features = r.ranked_items[r.action_index].features
        records.append(r)
    assert (await env.stub.LogDecisions(fpb.LogDecisionsRequest(decisions=records))).accepted == 2
    first = records[0]
    shown = sorted((i for i in first.ranked_items if i.position), key=lambda i: i.position)
    clicks = [outcome("feed", first.decision_id, "o1", name="click", event_ms=t + 100),
              outcome("feed", first.decision_id, "o2", name="click", event_ms=t + 200),
              outcome("feed", first.decision_id, "o3", name="click", event_ms=t + 300)]
    clicks[0].item_id = shown[1].item_id
    clicks[1].item_id = shown[1].item_id
    clicks[2].item_id = ""  # about the whole ranking: no item row counts it
    assert (await env.stub.LogOutcomes(fpb.LogOutcomesRequest(outcomes=clicks))).accepted == 3

    batches = [b async for b in env.stub.ReadTrainingData(fpb.ReadTrainingDataRequest(use_case="feed"))]
    assert sum(b.rows for b in batches) == 6
    b = batches[0]
    positions = np.frombuffer(b.positions, I32).tolist()
    assert positions == [1, 2, 3, 1, 2, 3]
    assert list(b.item_ids[:3]) == [i.item_id for i in shown]
    propensities = np.frombuffer(b.propensities, F32)
    assert propensities[:3] == pytest.approx([i.propensity for i in shown], rel=1e-6)
    prefix = np.frombuffer(b.prefix_propensities, F32)
    assert prefix[:3] == pytest.approx(np.cumprod([i.propensity for i in shown]), rel=1e-6)
    rewards = np.frombuffer(b.rewards, F32).tolist()
    assert rewards == [0.0, 2.0, 0.0, 0.0, 0.0, 0.0]
    features = np.frombuffer(b.features, F32).reshape(6, 2)
    index = list(first.ranked_items).index(shown[0])
    assert features[0].tolist() == [0.0, float(index)]
    assert np.frombuffer(b.action_indices, I32)[0] == index

    got = await env.stub.GetDecision(fpb.GetDecisionRequest(use_case="feed", decision_id=first.decision_id))
    assert list(got.decision.ranked_items) == list(first.ranked_items)
    assert got.decision.ranking_probability == pytest.approx(first.ranking_probability)
    assert sorted(o.item_id for o in got.outcomes) == sorted(["", shown[1].item_id, shown[1].item_id])
