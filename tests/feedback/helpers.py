"""Helpers for feedback tests: blueprints, ids, records, and scripted decision
(``GetUseCase`` only) and trainer (``GetModel`` only) servers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np
import uuid_utils
from google.protobuf import duration_pb2

from loopwise.clock import Clock
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.server import ServiceHost
from loopwise.services.feedback.server import FeedbackProcess
from loopwise.settings import Settings
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc

WINDOW_S = 60  # one real second at the test clock speed (60)


def blueprint(use_case: str = "checkout_upsell", features: Sequence[str] = ("age", "spend"),
              actions: Sequence[str] = ("control", "offer"), window_s: float = WINDOW_S,
              outcome_names: Sequence[str] = (), aggregation: int = bp.REWARD_AGGREGATION_SUM,
              default_reward: float = 0.0, kind: int = bp.DECISION_KIND_ACTION_VALUE) -> bp.Blueprint:
    """A small blueprint with the given reward spec."""
    window = duration_pb2.Duration()
    window.FromMilliseconds(int(window_s * 1000))
    return bp.Blueprint(
        use_case=use_case, kind=kind, actions=list(actions),
        features=[bp.Feature(name=n, type=bp.FEATURE_TYPE_NUMERIC) for n in features],
        default_decision=bp.DefaultDecision(action=actions[0]),
        reward=bp.RewardSpec(outcome_names=list(outcome_names), aggregation=aggregation, window=window,
                             default_reward=default_reward),
    )


def id_at(ms: int) -> str:
    """A UUIDv7 whose timestamp is ``ms``."""
    return str(uuid_utils.uuid7(nanoseconds=ms * 1_000_000))


def features_bytes(values: Sequence[float]) -> bytes:
    """Packed little-endian float32 features."""
    return np.asarray(values, dtype="<f4").tobytes()


ACTIONS = ("control", "offer")  # the actions of blueprint() by default


def record(use_case: str, decision_id: str, version: int = 1, features: Sequence[float] = (1.0, 2.0),
           action_index: int = 0, probabilities: Sequence[float] = (0.5, 0.5), actions: Sequence[str] = ACTIONS,
           **kw) -> fpb.DecisionRecord:
    """A decision record; the chosen action is ``actions[action_index]`` unless ``action`` is given."""
    default_action = actions[action_index] if 0 <= action_index < len(actions) else f"a{action_index}"
    return fpb.DecisionRecord(
        use_case=use_case, decision_id=decision_id, blueprint_version=version, unit_id=kw.pop("unit_id", "u1"),
        features=features_bytes(features), action_index=action_index, action=kw.pop("action", default_action),
        action_probabilities=list(probabilities), **kw,
    )


def outcome(use_case: str, decision_id: str, outcome_id: str, name: str = "purchase", value: float = 1.0,
            event_ms: int | None = None, label: str = "") -> fpb.Outcome:
    """An outcome, with an event time when ``event_ms`` is given."""
    o = fpb.Outcome(use_case=use_case, decision_id=decision_id, outcome_id=outcome_id, name=name, value=value,
                    label=label)
    if event_ms is not None:
        o.event_time.FromMilliseconds(event_ms)
    return o


class ScriptedDecision(dgrpc.DecisionServiceServicer):
    """Serves ``GetUseCase`` from blueprints the test sets; counts the calls."""

    def __init__(self) -> None:
        self.versions: dict[str, list[bp.Blueprint]] = {}
        self.calls = 0
        # Use cases answered NOT_FOUND once more (a decision worker not yet synchronised).
        self.not_found_once: set[str] = set()

    def apply(self, blueprint: bp.Blueprint) -> int:
        """Add a version of the blueprint's use case; returns its number."""
        self.versions.setdefault(blueprint.use_case, []).append(blueprint)
        return len(self.versions[blueprint.use_case])

    async def GetUseCase(self, request, context):
        self.calls += 1
        if request.use_case in self.not_found_once:
            self.not_found_once.discard(request.use_case)
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no use case {request.use_case!r} (not synchronised)")
        versions = self.versions.get(request.use_case, [])
        version = request.version or len(versions)
        if not versions or not 1 <= version <= len(versions):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no use case {request.use_case!r} v{request.version}")
        return dpb.GetUseCaseResponse(use_case=dpb.UseCase(
            blueprint=versions[version - 1], version=version, latest_version=len(versions)))


class ScriptedTrainer(tgrpc.TrainerServiceServicer):
    """Serves ``GetModel`` from models the test sets."""

    def __init__(self) -> None:
        self.models: dict[tuple[str, int], tpb.Model] = {}

    async def GetModel(self, request, context):
        model = self.models.get((request.use_case, request.version))
        if model is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such model")
        return tpb.GetModelResponse(model=model)


@dataclass
class FeedbackEnv:
    """A running feedback service with its test dependencies and a client stub."""

    settings: Settings
    process: FeedbackProcess
    stub: fgrpc.FeedbackServiceStub
    decision: ScriptedDecision
    trainer: ScriptedTrainer
    decision_server: grpc.aio.Server
    trainer_server: grpc.aio.Server
    clock: Clock
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def host(self) -> ServiceHost:
        """The feedback service's host."""
        return self.process.host

    def now_ms(self) -> int:
        """Now on the shared clock."""
        return self.clock.now_ms()

    def past_ms(self, minutes: float = 10) -> int:
        """A decision time whose window (60 s) closed long ago."""
        return self.now_ms() - int(minutes * 60_000)


async def serve(address: str, add, servicer) -> grpc.aio.Server:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    add(servicer, server)
    assert server.add_insecure_port(address)
    await server.start()
    return server


def close(a: float, b: float) -> bool:
    """Float equality for float32 round trips."""
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
