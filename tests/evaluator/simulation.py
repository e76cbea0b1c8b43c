"""Simulated data and test decision/feedback servicers for the evaluator tests.

The simulated use case ``hte`` has features x0, x1, x2 and three actions. The logged
probabilities are p(treat) = 0.8·e(x), p(control) = 0.8·(1 − e(x)), p(other) = 0.2
with e(x) = sigmoid(0.8·x1 − 0.3), so the propensity of treatment within the pair is
exactly e(x). The effect is τ(x) = 1 + 2·x0, the reward Y = x1 + 0.5·x2² + T·τ(x) + noise.
Rows come from two blueprint versions whose features and actions are in different
orders, so alignment by name is exercised; version 1's rows were decided without a model,
version 2's by model version 4. The reward is the sum of "purchase" outcomes within 10
minutes; feedback's GetStats answers STATS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from google.protobuf import duration_pb2

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.launcher import free_port
from loopwise.settings import SERVICES, Settings
from loopwise.tensors import F32, I32, I64, pack
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc

FEATURES_V2 = ["x0", "x1", "x2"]
ACTIONS_V2 = ["control", "treat", "other"]
FEATURES_V1 = ["x2", "x0", "x1"]
ACTIONS_V1 = ["treat", "control", "other"]
# The model version that decided the rows of each blueprint version (0: no model).
MODEL_OF_VERSION = {1: 0, 2: 4}
# What the test feedback service's GetStats answers for every use case.
STATS = fpb.GetStatsResponse(decisions=4000, outcomes=3900, joined_decisions=3600, join_rate=0.9,
                             orphan_outcomes=7, late_outcomes=250, unmatched_outcomes=3, closed_windows=3990,
                             open_windows=10, fallback_decisions=5, invalid_records=2, lost_decision_outcomes=1)


def tau(x: np.ndarray) -> np.ndarray:
    """The true effect of ``treat`` over ``control`` for rows with columns x0, x1, x2."""
    return 1.0 + 2.0 * x[:, 0]


def propensity(x: np.ndarray) -> np.ndarray:
    """The true propensity of ``treat`` within the (treat, control) pair."""
    return 1.0 / (1.0 + np.exp(-(0.8 * x[:, 1] - 0.3)))


@dataclass
class Simulated:
    """Rows of a use case in canonical order (x0, x1, x2) with action names."""

    x: np.ndarray
    actions: np.ndarray
    probs: dict[str, np.ndarray]
    y: np.ndarray

    def pair(self) -> np.ndarray:
        """Mask of rows whose action is treat or control."""
        return np.isin(self.actions, ["treat", "control"])


def simulate(n: int, seed: int, force: str | None = None, overlap: bool = True,
             constant: bool = False) -> Simulated:
    """Simulated logged decisions; ``force`` logs every row with one action; without
    ``overlap`` the logging policy is (almost) deterministic in x1; ``constant`` makes
    every feature a constant."""
    rng = np.random.default_rng(seed)
    x = np.ones((n, 3)) if constant else rng.normal(size=(n, 3))
    e = propensity(x) if overlap else np.where(x[:, 1] > 0, 0.9995, 0.0005)
    p = {"treat": 0.8 * e, "control": 0.8 * (1 - e), "other": np.full(n, 0.2)}
    u = rng.random(n)
    actions = np.where(u < p["treat"], "treat", np.where(u < p["treat"] + p["control"], "control", "other"))
    if force:
        actions = np.full(n, force)
    treated = actions == "treat"
    y = x[:, 1] + 0.5 * x[:, 2] ** 2 + treated * tau(x) + rng.normal(scale=0.5, size=n)
    return Simulated(x, actions, p, y)


def batch(sim: Simulated, rows: slice, version: int, outcomes: bool = True) -> fpb.ReadTrainingDataResponse:
    """One columnar batch in the layout of blueprint ``version`` (1 or 2); without
    ``outcomes`` no row had an outcome (every reward is the default 0)."""
    features, actions = (FEATURES_V1, ACTIONS_V1) if version == 1 else (FEATURES_V2, ACTIONS_V2)
    x = sim.x[rows][:, [FEATURES_V2.index(f) for f in features]]
    chosen = np.array([actions.index(a) for a in sim.actions[rows]])
    probs = np.column_stack([sim.probs[a][rows] for a in actions])
    n = x.shape[0]
    return fpb.ReadTrainingDataResponse(
        blueprint_version=version, feature_names=features, rows=n, features=pack(x, F32),
        decision_ids=[f"d{i}" for i in range(n)], decision_times_ms=pack(np.zeros(n), I64),
        action_indices=pack(chosen, I32), propensities=pack(probs[np.arange(n), chosen], F32),
        action_probabilities=pack(probs, F32), n_actions=len(actions),
        rewards=pack(sim.y[rows] if outcomes else np.zeros(n), F32),
        outcome_counts=pack(np.full(n, 1 if outcomes else 0), I32),
        model_versions=pack(np.full(n, MODEL_OF_VERSION[version]), I64),
        explored=bytes(n),
    )


def without_propensities(item: fpb.ReadTrainingDataResponse) -> fpb.ReadTrainingDataResponse:
    """A batch logged without action probabilities."""
    item.ClearField("action_probabilities")
    item.ClearField("propensities")
    item.n_actions = 0
    return item


def mu0(x: np.ndarray) -> np.ndarray:
    """The expected reward of ``control`` (and of ``other``) for rows x0, x1, x2."""
    return x[:, 1] + 0.5 * x[:, 2] ** 2


def blueprint(use_case: str, version: int) -> bp.Blueprint:
    """The blueprint of a simulated use case at a version (``arms`` has two experiment
    arms, "a" with 30% of units and "b" with 70%)."""
    features, actions = (FEATURES_V1, ACTIONS_V1) if version == 1 else (FEATURES_V2, ACTIONS_V2)
    arms = [bp.ExperimentArm(name="a", traffic_share=0.3), bp.ExperimentArm(name="b", traffic_share=0.7)] \
        if use_case == "arms" else []
    return bp.Blueprint(
        use_case=use_case, kind=bp.DECISION_KIND_ACTION_VALUE, actions=actions, arms=arms,
        features=[bp.Feature(name=f, type=bp.FEATURE_TYPE_NUMERIC) for f in features],
        reward=bp.RewardSpec(outcome_names=["purchase"], aggregation=bp.REWARD_AGGREGATION_SUM,
                             window=duration_pb2.Duration(seconds=600)),
    )


def arm_experiment(n: int, seed: int) -> tuple[Simulated, fpb.ReadTrainingDataResponse]:
    """Units assigned to arm "b" (70%) are always treated, those of arm "a" never: the
    effect of arm b over arm a is τ(x)."""
    rng = np.random.default_rng(seed)
    sim = simulate(n, seed)
    in_b = rng.random(n) < 0.7
    sim.actions = np.where(in_b, "treat", "control")
    sim.y = mu0(sim.x) + in_b * tau(sim.x) + rng.normal(scale=0.5, size=n)
    item = batch(sim, slice(0, n), 2)
    item.arms[:] = ["b" if b else "a" for b in in_b]
    return sim, item


class SimulatedDecision(dgrpc.DecisionServiceServicer):
    """GetUseCase for the simulated use cases (versions 1 and 2, latest = 2)."""

    def __init__(self, use_cases: set[str]) -> None:
        self.use_cases = use_cases

    async def GetUseCase(self, request, context):
        if request.use_case not in self.use_cases:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"use case {request.use_case!r} not found")
        version = request.version or 2
        if version not in (1, 2):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"version {version} not found")
        return dpb.GetUseCaseResponse(use_case=dpb.UseCase(
            blueprint=blueprint(request.use_case, version), version=version, latest_version=2,
        ))


class SimulatedFeedback(fgrpc.FeedbackServiceServicer):
    """ReadTrainingData streaming each use case's batches; GetStats answering STATS."""

    def __init__(self, data: dict[str, list[fpb.ReadTrainingDataResponse]]) -> None:
        self.data = data
        self.reads: list[str] = []

    async def ReadTrainingData(self, request, context):
        self.reads.append(request.use_case)
        for item in self.data.get(request.use_case, []):
            yield item

    async def GetStats(self, request, context):
        return STATS


class SimulatedTrainer(tgrpc.TrainerServiceServicer):
    """RegisterModel keeping the models in memory; DownloadModel serving them."""

    def __init__(self) -> None:
        self.models: dict[tuple[str, int], tuple[tpb.Model, bytes]] = {}

    async def RegisterModel(self, request, context):
        version = 1 + sum(1 for uc, _ in self.models if uc == request.model.use_case)
        model = tpb.Model()
        model.CopyFrom(request.model)
        model.version = version
        model.artifact_sha256 = request.sha256
        model.artifact_size = len(request.onnx)
        self.models[(model.use_case, version)] = (model, request.onnx)
        return tpb.RegisterModelResponse(model=model)

    async def DownloadModel(self, request, context):
        found = self.models.get((request.use_case, request.version))
        if found is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"model v{request.version} not found")
        model, onnx = found
        yield tpb.DownloadModelResponse(offset=0, data=onnx, total_size=len(onnx),
                                        sha256=model.artifact_sha256, model=model)


@dataclass
class World:
    """The test servers, the simulated data and an evaluator's settings."""

    settings: Settings
    hte: Simulated
    feedback: SimulatedFeedback
    trainer: SimulatedTrainer


def world_data() -> tuple[Simulated, dict[str, list[fpb.ReadTrainingDataResponse]]]:
    """Simulated rows per use case, as feedback would stream them."""
    hte = simulate(3600, seed=11)
    data = {
        "hte": [batch(hte, slice(0, 1200), 1), batch(hte, slice(1200, 2400), 2),
                batch(hte, slice(2400, 3600), 2)],
        "tiny": [batch(simulate(60, seed=3), slice(0, 60), 2)],
        "onesided": [batch(simulate(500, seed=4, force="control"), slice(0, 500), 2)],
        "empty": [],
        "nooutcomes": [batch(simulate(600, seed=5), slice(0, 600), 2, outcomes=False)],
        "constant": [batch(simulate(600, seed=6, constant=True), slice(0, 600), 2)],
        "nooverlap": [batch(simulate(600, seed=8, overlap=False), slice(0, 600), 2)],
        "nopropensities": [without_propensities(batch(simulate(300, seed=9), slice(0, 300), 2))],
        "arms": [arm_experiment(2000, seed=13)[1]],
    }
    return hte, data


def evaluator_settings(data_dir: Path, decision: str, feedback: str, trainer: str | None = None) -> Settings:
    """Settings of an in-process evaluator using the test servers."""
    values = {f"{s}_address": f"127.0.0.1:{free_port()}" for s in SERVICES}
    if trainer:
        values["trainer_address"] = trainer
    values.update(decision_address=decision, feedback_address=feedback, data_dir=data_dir,
                  clock_anchor=time.time(), clock_speed=60.0, seed=7, grace_period_s=1.0)
    return Settings(**values)
