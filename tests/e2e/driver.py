"""A small product for end-to-end tests, talking to loopwise only through its stubs."""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc
import numpy as np
from google.protobuf import duration_pb2

from loopwise.clock import Clock, uuid7_time_ms
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.settings import Settings
from loopwise.tensors import F32, I32, pack, unpack_vector

FEATURES = ["x0", "x1", "x2"]


def treatment_blueprint(use_case: str, window_s: int = 60) -> bp.Blueprint:
    """Action value over [control, treat]; explores uniformly until a model serves."""
    return bp.Blueprint(
        use_case=use_case,
        description="end-to-end test use case",
        features=[bp.Feature(name=n, type=bp.FEATURE_TYPE_NUMERIC) for n in FEATURES],
        kind=bp.DECISION_KIND_ACTION_VALUE,
        actions=["control", "treat"],
        policy=bp.Policy(type=bp.POLICY_TYPE_EPSILON_GREEDY, epsilon=0.1, explore_without_model=True),
        default_decision=bp.DefaultDecision(action="control"),
        reward=bp.RewardSpec(outcome_names=["purchase"], window=duration_pb2.Duration(seconds=window_s)),
        training=bp.TrainingSpec(min_rows=100),
    )


def expected_reward(x: np.ndarray, treat: np.ndarray) -> np.ndarray:
    """P(purchase): treating helps when x0 > 0 and hurts otherwise."""
    return 0.3 + 0.1 * x[:, 1] + treat * 0.25 * np.sign(x[:, 0])


@dataclass
class Served:
    """What a batch of decisions returned."""

    decision_ids: list[str]
    actions: np.ndarray
    model_version: int


class Product:
    """Drives decisions and outcomes through the public API."""

    def __init__(self, settings: Settings, use_case: str, seed: int = 0) -> None:
        self.settings = settings
        self.use_case = use_case
        self.clock = Clock.from_settings(settings)
        self.rng = np.random.default_rng(seed)
        self._decision_channel = grpc.insecure_channel(settings.decision_address)
        self._feedback_channel = grpc.insecure_channel(settings.feedback_address)
        self.decision = dgrpc.DecisionServiceStub(self._decision_channel)
        self.feedback = fgrpc.FeedbackServiceStub(self._feedback_channel)
        self.served = 0

    def apply(self, blueprint: bp.Blueprint) -> int:
        """Apply the blueprint; returns its version."""
        reply = self.decision.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=blueprint), timeout=10)
        return reply.use_case.version

    def decide_batch(self, rows: int, version: int) -> tuple[np.ndarray, Served]:
        """DecideBatch for ``rows`` random units."""
        x = self.rng.normal(size=(rows, len(FEATURES))).astype(np.float32)
        reply = self.decision.DecideBatch(
            dpb.DecideBatchRequest(
                use_case=self.use_case, blueprint_version=version, rows=rows,
                feature_names=FEATURES, features=pack(x, F32),
                unit_ids=[f"u{self.rng.integers(1 << 40)}" for _ in range(rows)],
            ),
            timeout=10,
        )
        self.served += len(reply.decision_ids)
        actions = unpack_vector(reply.action_indices, I32)
        return x, Served(list(reply.decision_ids), actions, reply.model_version)

    def log_outcomes(self, x: np.ndarray, served: Served) -> int:
        """Sample purchases from the expected reward and log them inside the window."""
        p = expected_reward(x, served.actions.astype(float))
        bought = self.rng.random(len(p)) < p
        outcomes = []
        for decision_id, buy in zip(served.decision_ids, bought, strict=True):
            if not buy:
                continue
            outcome = fpb.Outcome(use_case=self.use_case, decision_id=decision_id,
                                  outcome_id=f"o-{decision_id}", name="purchase", value=1.0)
            outcome.event_time.FromMilliseconds(uuid7_time_ms(decision_id) + 5_000)
            outcomes.append(outcome)
        if outcomes:
            self.feedback.LogOutcomes(fpb.LogOutcomesRequest(outcomes=outcomes), timeout=10)
        return len(outcomes)

    def stats(self) -> fpb.GetStatsResponse:
        """GetStats of the use case."""
        return self.feedback.GetStats(fpb.GetStatsRequest(use_case=self.use_case), timeout=10)

    def wait_logged_and_closed(self, decisions: int, timeout: float = 60.0) -> fpb.GetStatsResponse:
        """Wait until ``decisions`` are stored and every window has closed."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats.decisions >= decisions and stats.closed_windows >= decisions:
                return stats
            if time.monotonic() > deadline:
                raise TimeoutError(f"stats stuck at {stats}")
            time.sleep(0.2)

    def close(self) -> None:
        """Close the channels."""
        self._decision_channel.close()
        self._feedback_channel.close()
