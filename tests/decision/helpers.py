"""Helpers for the decision tests: in-process servers, blueprints, and real loopback
gRPC doubles of the trainer (deployments + model download) and the feedback service
(records LogDecisions)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.server import ServiceHost
from loopwise.services.decision.core import DecisionCore
from loopwise.services.decision.models import ModelWatcher
from loopwise.services.decision.server import start_process
from loopwise.services.decision.servicer import DecisionServicer
from loopwise.settings import Settings
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc

KINDS = {
    "binary": (bp.DECISION_KIND_BINARY, ["no", "yes"]),
    "multiclass": (bp.DECISION_KIND_MULTICLASS, ["red", "green", "blue"]),
    "regression": (bp.DECISION_KIND_REGRESSION, []),
    "action_value": (bp.DECISION_KIND_ACTION_VALUE, ["a0", "a1", "a2"]),
}


def blueprint(name: str = "offer", kind: str = "binary", **policy) -> bp.Blueprint:
    """A valid blueprint: numeric x, y and categorical country; kind and policy as asked."""
    decision_kind, actions = KINDS[kind]
    b = bp.Blueprint(
        use_case=name,
        features=[
            bp.Feature(name="x", type=bp.FEATURE_TYPE_NUMERIC),
            bp.Feature(name="y", type=bp.FEATURE_TYPE_NUMERIC, on_missing=bp.MISSING_RULE_IMPUTE, impute_value=5.0),
            bp.Feature(name="country", type=bp.FEATURE_TYPE_CATEGORICAL, vocabulary=["fr", "de", "it"]),
        ],
        kind=decision_kind,
        actions=actions,
        policy=bp.Policy(**policy),
        default_decision=bp.DefaultDecision(action=actions[0] if actions else "", score=0.25),
    )
    b.reward.window.seconds = 600
    return b


def features(x: float | None = 1.0, y: float | None = 2.0, country: str | None = "fr") -> dict:
    """Named features for Decide (None leaves one out)."""
    out = {}
    if x is not None:
        out["x"] = dpb.FeatureValue(number=x)
    if y is not None:
        out["y"] = dpb.FeatureValue(number=y)
    if country is not None:
        out["country"] = dpb.FeatureValue(category=country)
    return out


@dataclass
class Decider:
    """A running in-process decision service and a client stub."""

    host: ServiceHost
    core: DecisionCore
    watcher: ModelWatcher
    stub: dgrpc.DecisionServiceStub
    channel: grpc.aio.Channel
    settings: Settings
    servicer: DecisionServicer

    async def apply(self, b: bp.Blueprint) -> dpb.ApplyUseCaseResponse:
        """ApplyUseCase."""
        return await self.stub.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=b))

    async def decide(self, use_case: str = "offer", unit_id: str = "", **kw) -> dpb.Decision:
        """Decide with features(**kw)."""
        reply = await self.stub.Decide(dpb.DecideRequest(use_case=use_case, unit_id=unit_id, features=features(**kw)))
        return reply.decision

    async def stop(self) -> None:
        """Close the client and stop the service."""
        await self.channel.close()
        await self.host.stop(0.5)


async def start_decider(settings: Settings) -> Decider:
    """Start a decision service in-process and connect to it."""
    process = await start_process(settings)
    channel = grpc.aio.insecure_channel(settings.decision_address)
    return Decider(process.host, process.core, process.watcher, dgrpc.DecisionServiceStub(channel), channel,
                   settings, process.servicer)


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def serve(servicer, add, address: str) -> grpc.aio.Server:
    """A real aio server for a double on ``address``."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    add(servicer, server)
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"cannot bind {address}")
    await server.start()
    return server


class LoopbackTrainer(tgrpc.TrainerServiceServicer):
    """Serves WatchDeployments and DownloadModel from models given by the test."""

    def __init__(self, chunk_bytes: int = 4096) -> None:
        self.artifacts: dict[tuple[str, int], bytes] = {}
        self.deployments: dict[str, tpb.Deployment] = {}
        self.subscribers: set[asyncio.Queue] = set()
        self.chunk_bytes = chunk_bytes
        self.downloads = 0

    def deploy(self, use_case: str, version: int, onnx: bytes | None, input_width: int = 3,
               score_output: str = "", sha256: str | None = None) -> None:
        """Make ``version`` the production model (``onnx=None``: remove it)."""
        revision = self.deployments[use_case].revision + 1 if use_case in self.deployments else 1
        deployment = tpb.Deployment(use_case=use_case, revision=revision)
        if onnx is not None:
            self.artifacts[(use_case, version)] = onnx
            deployment.production.CopyFrom(tpb.ModelRef(
                version=version, sha256=sha256 or hashlib.sha256(onnx).hexdigest(),
                input_width=input_width, score_output=score_output, blueprint_version=1,
            ))
        self.deployments[use_case] = deployment
        for queue in self.subscribers:
            queue.put_nowait(deployment)

    def set_deployment(self, use_case: str, models: dict[int, bytes], production: tpb.ModelRef | None = None,
                       canary: tpb.ModelRef | None = None, canary_share: float = 0.0,
                       shadows: tuple[tpb.ModelRef, ...] = ()) -> None:
        """Publish a deployment with production, canary and shadow models
        (``models``: artifact bytes by version)."""
        for version, data in models.items():
            self.artifacts[(use_case, version)] = data
        revision = self.deployments[use_case].revision + 1 if use_case in self.deployments else 1
        deployment = tpb.Deployment(use_case=use_case, revision=revision, canary_share=canary_share,
                                    shadows=list(shadows))
        if production is not None:
            deployment.production.CopyFrom(production)
        if canary is not None:
            deployment.canary.CopyFrom(canary)
        self.deployments[use_case] = deployment
        for queue in self.subscribers:
            queue.put_nowait(deployment)

    async def WatchDeployments(self, request, context):
        queue: asyncio.Queue = asyncio.Queue()
        self.subscribers.add(queue)
        try:
            for deployment in list(self.deployments.values()):
                yield tpb.WatchDeploymentsResponse(deployment=deployment)
            while True:
                yield tpb.WatchDeploymentsResponse(deployment=await queue.get())
        finally:
            self.subscribers.discard(queue)

    async def DownloadModel(self, request, context):
        self.downloads += 1
        data = self.artifacts[(request.use_case, request.version)]
        sha = hashlib.sha256(data).hexdigest()
        for offset in range(0, len(data), self.chunk_bytes):
            yield tpb.DownloadModelResponse(offset=offset, data=data[offset : offset + self.chunk_bytes],
                                            total_size=len(data), sha256=sha)


class RecordingFeedback(fgrpc.FeedbackServiceServicer):
    """Records every LogDecisions call (ids in arrival order)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.records: list[fpb.DecisionRecord] = []
        self.calls = 0

    async def LogDecisions(self, request, context):
        self.calls += 1
        self.records.extend(request.decisions)
        self.ids.extend(d.decision_id for d in request.decisions)
        return fpb.LogDecisionsResponse(accepted=len(request.decisions))


def onnx_model(model, width: int) -> bytes:
    """An ONNX artifact of a fitted scikit-learn model, input ``features`` [None, width]."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None
    onx = to_onnx(model, initial_types=[("features", FloatTensorType([None, width]))], options=options)
    return onx.SerializeToString()


def rng() -> np.random.Generator:
    """A fixed random stream for test data."""
    return np.random.default_rng(0)


def linear_onnx(weights: list[np.ndarray], biases: list[np.ndarray], n_features: int = 3,
                n_actions: int = 0) -> bytes:
    """A hand-built ONNX model whose scores the test controls; output ``variable`` [N, K]
    for K members. Action value (``n_actions`` > 0): input features ⊕ one-hot(action),
    member k's value is ``x @ weights[k][:, a] + biases[k][a]`` of the row's action.
    Otherwise (ranking, regression): ``x @ weights[k] + biases[k]`` with weights [F]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    width = n_features + n_actions
    nodes, inits, outs = [], [], []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    x = "features"
    if n_actions:
        nodes.append(helper.make_node("Slice", [x, const("s0", np.array([0])), const("s1", np.array([n_features])),
                                                const("ax", np.array([1]))], ["x"]))
        nodes.append(helper.make_node("Slice", [x, "s1", const("s2", np.array([width])), "ax"], ["h"]))
        x = "x"
    for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
        w = np.asarray(w, dtype=np.float32).reshape(n_features, max(n_actions, 1))
        b = np.asarray(b, dtype=np.float32).reshape(max(n_actions, 1))
        nodes.append(helper.make_node("MatMul", [x, const(f"w{k}", w)], [f"m{k}"]))
        nodes.append(helper.make_node("Add", [f"m{k}", const(f"b{k}", b)], [f"v{k}"]))
        if n_actions:
            nodes.append(helper.make_node("Mul", [f"v{k}", "h"], [f"p{k}"]))
            nodes.append(helper.make_node("ReduceSum", [f"p{k}", const(f"r{k}", np.array([1]))], [f"o{k}"], keepdims=1))
            outs.append(f"o{k}")
        else:
            outs.append(f"v{k}")
    nodes.append(helper.make_node("Concat", outs, ["variable"], axis=1))
    graph = helper.make_graph(
        nodes, "controlled", [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, width])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, len(weights)])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def model_ref(version: int, onnx: bytes, input_width: int, score_output: str = "variable",
              blueprint_version: int = 1) -> tpb.ModelRef:
    """A ModelRef for LoopbackTrainer.set_deployment."""
    return tpb.ModelRef(version=version, sha256=hashlib.sha256(onnx).hexdigest(), input_width=input_width,
                        score_output=score_output, blueprint_version=blueprint_version)
