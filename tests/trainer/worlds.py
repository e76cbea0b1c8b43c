"""Known-function data and test decision/feedback servicers for the trainer tests.

Use cases (all logged with known propensities):
- ``clicks`` (binary): reward 1 when x0 + x1 > 0 (separable); rows come from two
  blueprint versions whose features differ in order, in one feature (v1 lacks
  ``x2``) and in the ``tier`` vocabulary.
- ``uplift`` (action value, actions control/treat, uniform logging): reward
  x1 + treat·(2·x0) + noise, so treating pays exactly when x0 > 0.
- ``tiny``: 50 rows; ``held``: binary with ``rollout.hold_first_model``;
  ``big``: a larger binary data set so that fitting takes a while.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.launcher import free_port
from loopwise.settings import SERVICES, Settings
from loopwise.tensors import F32, I32, I64, pack

T0_MS = 1_760_000_000_000


def numeric(name: str) -> bp.Feature:
    """A numeric feature."""
    return bp.Feature(name=name, type=bp.FEATURE_TYPE_NUMERIC)


def tier(vocabulary: list[str]) -> bp.Feature:
    """The categorical feature ``tier``."""
    return bp.Feature(name="tier", type=bp.FEATURE_TYPE_CATEGORICAL, vocabulary=vocabulary)


CLICKS_V1 = bp.Blueprint(use_case="clicks", kind=bp.DECISION_KIND_BINARY, actions=["skip", "show"],
                         features=[numeric("x1"), tier(["gold", "silver"]), numeric("x0")])
CLICKS_V2 = bp.Blueprint(use_case="clicks", kind=bp.DECISION_KIND_BINARY, actions=["skip", "show"],
                         features=[numeric("x0"), numeric("x1"), numeric("x2"),
                                   tier(["bronze", "silver", "gold"])])
UPLIFT = bp.Blueprint(use_case="uplift", kind=bp.DECISION_KIND_ACTION_VALUE, actions=["control", "treat"],
                      features=[numeric("x0"), numeric("x1")],
                      default_decision=bp.DefaultDecision(action="control"))


def binary_blueprint(use_case: str, width: int, **extra) -> bp.Blueprint:
    """A binary use case with features x0..x{width-1}."""
    return bp.Blueprint(use_case=use_case, kind=bp.DECISION_KIND_BINARY, actions=["no", "yes"],
                        features=[numeric(f"x{i}") for i in range(width)], **extra)


def batch(version: int, names: list[str], x: np.ndarray, rewards: np.ndarray, actions: np.ndarray,
          probabilities: np.ndarray, start: int) -> fpb.ReadTrainingDataResponse:
    """One columnar batch as the feedback service streams it."""
    n = x.shape[0]
    chosen = probabilities[np.arange(n), actions]
    return fpb.ReadTrainingDataResponse(
        blueprint_version=version, feature_names=names, rows=n, features=pack(x, F32),
        decision_ids=[f"d{start + i}" for i in range(n)],
        decision_times_ms=pack(T0_MS + 1000 * (start + np.arange(n)), I64),
        action_indices=pack(actions, I32), propensities=pack(chosen, F32),
        action_probabilities=pack(probabilities, F32), n_actions=probabilities.shape[1],
        rewards=pack(rewards, F32), outcome_counts=pack(rewards > 0, I32),
        model_versions=pack(np.zeros(n), I64), explored=bytes(n),
    )


def binary_rows(n: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and a separable 0/1 reward (x0 + x1 > 0)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, width)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.float32)


def clicks_batches() -> list[fpb.ReadTrainingDataResponse]:
    """600 rows under v1 then 600 under v2 (v1: x1, tier, x0; v2: x0, x1, x2, tier)."""
    x, y = binary_rows(1200, 3, seed=1)
    codes = np.random.default_rng(2).integers(0, 2, 1200)
    logged = np.ones(1200, dtype=np.int64)
    probs = np.tile([0.0, 1.0], (1200, 1))
    v1 = np.column_stack([x[:600, 1], codes[:600], x[:600, 0]])
    # v2 codes: bronze 0, silver 1, gold 2 (v1: gold 0, silver 1).
    v2 = np.column_stack([x[600:, :3], np.where(codes[600:] == 0, 2, 1)])
    return [batch(1, ["x1", "tier", "x0"], v1, y[:600], logged[:600], probs[:600], 0),
            batch(2, ["x0", "x1", "x2", "tier"], v2, y[600:], logged[600:], probs[600:], 600)]


def uplift_effect(x: np.ndarray) -> np.ndarray:
    """Reward of treat minus reward of control."""
    return 2.0 * x[:, 0]


def uplift_batches(n: int = 2000) -> list[fpb.ReadTrainingDataResponse]:
    """Uniformly logged control/treat decisions with a heterogeneous effect."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 2)).astype(np.float32)
    a = rng.integers(0, 2, n)
    y = x[:, 1] + a * uplift_effect(x) + rng.normal(scale=0.3, size=n)
    probs = np.full((n, 2), 0.5)
    half = n // 2
    return [batch(1, ["x0", "x1"], x[:half], y[:half], a[:half], probs[:half], 0),
            batch(1, ["x0", "x1"], x[half:], y[half:], a[half:], probs[half:], half)]


def plain_binary_batches(n: int, width: int, seed: int) -> list[fpb.ReadTrainingDataResponse]:
    """A binary use case's rows in batches of 8192, all under version 1."""
    x, y = binary_rows(n, width, seed)
    names = [f"x{i}" for i in range(width)]
    probs = np.tile([0.0, 1.0], (n, 1))
    logged = np.ones(n, dtype=np.int64)
    return [batch(1, names, x[s:s + 8192], y[s:s + 8192], logged[s:s + 8192], probs[s:s + 8192], s)
            for s in range(0, n, 8192)]


class ScriptedDecision(dgrpc.DecisionServiceServicer):
    """GetUseCase over fixed blueprint versions."""

    def __init__(self, blueprints: dict[str, dict[int, bp.Blueprint]]) -> None:
        self.blueprints = blueprints

    async def GetUseCase(self, request, context):
        versions = self.blueprints.get(request.use_case)
        if not versions:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"use case {request.use_case!r} not found")
        latest = max(versions)
        version = request.version or latest
        if version not in versions:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"version {version} not found")
        return dpb.GetUseCaseResponse(use_case=dpb.UseCase(
            blueprint=versions[version], version=version, latest_version=latest))

    async def ListUseCases(self, request, context):
        return dpb.ListUseCasesResponse(use_cases=[
            dpb.UseCase(blueprint=versions[max(versions)], version=max(versions))
            for _, versions in sorted(self.blueprints.items())])


class ScriptedFeedback(fgrpc.FeedbackServiceServicer):
    """ReadTrainingData streaming fixed batches per use case."""

    def __init__(self, data: dict[str, list[fpb.ReadTrainingDataResponse]]) -> None:
        self.data = data
        self.reads: list[str] = []

    async def ReadTrainingData(self, request, context):
        self.reads.append(request.use_case)
        for item in self.data.get(request.use_case, []):
            yield item

    async def GetStats(self, request, context):
        rows = sum(b.rows for b in self.data.get(request.use_case, []))
        return fpb.GetStatsResponse(decisions=rows, closed_windows=rows)


@dataclass
class World:
    """Addresses of the test servers and an in-process trainer's settings."""

    settings: Settings
    feedback: ScriptedFeedback
    decision: ScriptedDecision | None = None


def world_servicers() -> tuple[ScriptedDecision, ScriptedFeedback]:
    """The test decision and feedback servicers with every use case."""
    blueprints = {
        "clicks": {1: CLICKS_V1, 2: CLICKS_V2},
        "uplift": {1: UPLIFT},
        "tiny": {1: binary_blueprint("tiny", 2)},
        "held": {1: binary_blueprint("held", 2, rollout=bp.RolloutSpec(hold_first_model=True))},
        "big": {1: binary_blueprint("big", 20)},
    }
    data = {
        "clicks": clicks_batches(),
        "uplift": uplift_batches(),
        "tiny": plain_binary_batches(50, 2, seed=4),
        "held": plain_binary_batches(400, 2, seed=5),
        "big": plain_binary_batches(60_000, 20, seed=6),
    }
    return ScriptedDecision(blueprints), ScriptedFeedback(data)


def trainer_settings(data_dir: Path, address: str) -> Settings:
    """Settings of an in-process trainer using the test servers at ``address``."""
    values = {f"{s}_address": f"127.0.0.1:{free_port()}" for s in SERVICES}
    values.update(decision_address=address, feedback_address=address, data_dir=data_dir,
                  clock_anchor=time.time(), clock_speed=60.0, seed=7, grace_period_s=1.0,
                  model_chunk_bytes=256)
    return Settings(**values)
