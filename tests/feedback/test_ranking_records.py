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
