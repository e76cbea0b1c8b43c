"""Decide's one-row path (binary and regression use cases, Python floats) decides
exactly as the vectorised path does for the same row and the same uniform draw."""

from __future__ import annotations

import math
import random

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.services.decision.encoding import UseCaseVersion
from loopwise.services.decision.policy import Choices, assign_arms, decide_rows
from loopwise.store.decision import BlueprintVersion

POLICY_TYPES = [bp.POLICY_TYPE_GREEDY, bp.POLICY_TYPE_EPSILON_GREEDY, bp.POLICY_TYPE_SOFTMAX,
                bp.POLICY_TYPE_THOMPSON]
SCORES = [0.1, 0.2, 0.49999, 0.5, 0.7, 3.0, -1.0, math.nan, math.inf]


class FixedScorer:
    """A model whose scores are given (every row the same)."""

    def __init__(self, row: np.ndarray, version: int) -> None:
        self.row, self.version = row, version

    def score(self, uc: UseCaseVersion, rows: np.ndarray) -> np.ndarray:
        return np.repeat(self.row[None], rows.shape[0], axis=0).reshape(rows.shape[0], *self.row.shape[1:]) \
            if self.row.ndim > 1 else np.repeat(self.row, rows.shape[0])


def _use_case(r: random.Random) -> UseCaseVersion:
    kind = r.choice([bp.DECISION_KIND_BINARY, bp.DECISION_KIND_REGRESSION])
    actions = ["no", "yes"] if kind == bp.DECISION_KIND_BINARY else r.choice([["a"], ["a", "b"], ["a", "b", "c"]])
    policy = bp.Policy(type=r.choice(POLICY_TYPES))
    if r.random() < 0.6:
        policy.epsilon = r.choice([0.0, 0.05, 0.1, 0.5, 1.0])
    if r.random() < 0.4:
        policy.exploration_floor = r.choice([0.01, 0.1, 0.3])
    if r.random() < 0.5:
        policy.threshold = r.choice([0.2, 0.5, 0.7])
    b = bp.Blueprint(use_case="one_row", features=[bp.Feature(name="x", type=bp.FEATURE_TYPE_NUMERIC)],
                     kind=kind, actions=actions, policy=policy,
                     default_decision=bp.DefaultDecision(action=actions[-1], score=0.25))
    if r.random() < 0.4:
        b.arms.add(name="A", traffic_share=0.5)
        b.arms.add(name="B", traffic_share=0.5).epsilon = r.choice([0.0, 0.2])
    return UseCaseVersion(BlueprintVersion("one_row", 1, b, 0))


def _row(c: Choices, i: int) -> tuple:
    return (int(c.action_index[i]), float(c.score[i]), c.probabilities[i].tolist(), bool(c.explored[i]),
            bool(c.fallback[i]), int(c.model_version[i]), c.arms[i], c.roles[i])


def test_one_row_path_decides_as_the_vectorised_path() -> None:
    r = random.Random(20261123)
    outcomes = set()
    for _ in range(600):
        uc = _use_case(r)
        members = r.choice([1, 3])
        row = np.array([r.choice(SCORES) for _ in range(members)])
        scorer = FixedScorer(row if members == 1 else row[None, :], r.randint(1, 9))
        unit = r.choice(["u1", "u2", ""])
        arms, eps = assign_arms(uc, [unit], 1, np.random.default_rng(1))
        disable = r.random() < 0.2
        seed = r.randrange(2**32)
        one = decide_rows(uc, np.zeros((1, 1), np.float32), arms, eps, scorer, np.random.default_rng(seed),
                          disable, role="canary")
        # Two equal rows take the vectorised path; its first row uses the same first draw.
        two = decide_rows(uc, np.zeros((2, 1), np.float32), arms * 2, np.repeat(eps, 2), scorer,
                          np.random.default_rng(seed), disable, role="canary")
        assert _row(one, 0) == _row(two, 0)
        assert one.action_scores is None and two.action_scores is None
        outcomes.add((_row(one, 0)[0], _row(one, 0)[3], _row(one, 0)[4]))
    # The cases covered greedy, explored and fallback decisions on more than one action.
    assert {(0, False, False), (1, False, False), (1, True, False), (0, False, True)} <= outcomes
