"""A real loop in one process for the observability tests: decision, feedback, trainer
(and evaluator) servers on loopback ports, a registered ONNX model with a training
profile and data range, and helpers to decide, log outcomes and scrape metrics."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
import numpy as np
from sklearn.linear_model import LogisticRegression

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.metrics import parse_text
from loopwise.server import ServiceHost
from loopwise.services.trainer.scores import score_profile
from loopwise.settings import Settings
from loopwise.tensors import F32, pack
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.decision.helpers import onnx_model

USE_CASE = "upsell"
VOCABULARY = ["fr", "de", "it"]


def blueprint(use_case: str = USE_CASE, **drift: float) -> bp.Blueprint:
    """Binary use case on numeric x, y and categorical country; drift thresholds as given."""
    b = bp.Blueprint(
        use_case=use_case,
        features=[
            bp.Feature(name="x", type=bp.FEATURE_TYPE_NUMERIC),
            bp.Feature(name="y", type=bp.FEATURE_TYPE_NUMERIC),
            bp.Feature(name="country", type=bp.FEATURE_TYPE_CATEGORICAL, vocabulary=VOCABULARY),
        ],
        kind=bp.DECISION_KIND_BINARY, actions=["no", "yes"],
        default_decision=bp.DefaultDecision(action="no", score=0.0),
        drift=bp.DriftSpec(**drift),
    )
    b.reward.window.seconds = 60
    b.reward.outcome_names.append("purchase")
    return b


def training_rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Training features (x, y ~ N(0, 1); country codes 0..2) and labels."""
    g = np.random.default_rng(seed)
    x = np.column_stack([g.normal(size=n), g.normal(size=n), g.integers(0, 3, size=n)]).astype(np.float32)
    labels = (x[:, 0] + 0.5 * x[:, 1] + g.normal(scale=0.5, size=n) > 0).astype(int)
    return x, labels


def profiles(x: np.ndarray) -> list[tpb.FeatureProfile]:
    """The training profile of x (numeric: 10 quantile bins; categorical: codes + unknown)."""
    out = []
    for j, name in enumerate(["x", "y"]):
        edges = np.unique(np.quantile(x[:, j], np.linspace(0, 1, 11)[1:-1]))
        counts = np.bincount(np.searchsorted(edges, x[:, j], side="left"), minlength=len(edges) + 1)
        out.append(tpb.FeatureProfile(name=name, bin_edges=edges.tolist(), bin_counts=counts.tolist(),
                                      count=len(x)))
    codes = np.bincount(x[:, 2].astype(int), minlength=len(VOCABULARY) + 1)
    out.append(tpb.FeatureProfile(name="country", categorical=True, bin_counts=codes.tolist(), count=len(x)))
    return out


def free_port_block(size: int) -> int:
    """A base port such that ``size`` consecutive loopback ports are free now."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + size > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + size):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no block of free ports")


def _text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as reply:
        return reply.read().decode()


def _scrape(port: int) -> dict[str, float]:
    return parse_text(_text(port))


async def families(port: int) -> set[str]:
    """The metric families an endpoint declares (``# TYPE`` lines), with or without series."""
    text = await asyncio.to_thread(_text, port)
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


async def scrape(port: int) -> dict[str, float]:
    """The samples of a metrics endpoint (read in a thread: the endpoint may run on
    this event loop)."""
    return await asyncio.to_thread(_scrape, port)


def sample(samples: dict[str, float], name: str, **labels: str) -> float | None:
    """The value of the one series of ``name`` whose labels include ``labels``."""
    found = [v for k, v in samples.items()
             if k.split("{", 1)[0] == name and all(f'{lk}="{lv}"' in k for lk, lv in labels.items())]
    return sum(found) if found else None


async def wait_until(predicate: Callable[[], object], timeout: float = 120.0, interval: float = 0.05) -> object:
    """Poll until ``predicate()`` (a function or a coroutine function) is truthy;
    returns its value (generous timeout: the machine may be loaded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


if TYPE_CHECKING:  # the decision service (onnxruntime) is imported when a loop starts
    from loopwise.services.decision.models import ModelWatcher


@dataclass
class Loop:
    """Decision, feedback and trainer (optionally evaluator) running in this process."""

    settings: Settings
    hosts: dict[str, ServiceHost]
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    # The decision service's models, once it started.
    decision_watcher: ModelWatcher | None = None

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(address)
        self.channels.append(channel)
        return channel

    @property
    def decision(self) -> dgrpc.DecisionServiceStub:
        """A plain (untraced) client of the decision service, like a product backend."""
        return dgrpc.DecisionServiceStub(self._channel(self.settings.decision_address))

    @property
    def feedback(self) -> fgrpc.FeedbackServiceStub:
        """A plain client of the feedback service."""
        return fgrpc.FeedbackServiceStub(self._channel(self.settings.feedback_address))

    @property
    def trainer(self) -> tgrpc.TrainerServiceStub:
        """A plain client of the trainer."""
        return tgrpc.TrainerServiceStub(self._channel(self.settings.trainer_address))

    async def register(self, x: np.ndarray, labels: np.ndarray, start_ms: int, end_ms: int,
                       use_case: str = USE_CASE) -> tpb.Model:
        """Register and deploy a logistic regression trained on ``x`` with its
        feature and prediction profiles (as the trainer makes them) and data range; returns once the decision service serves it."""
        import hashlib

        fitted = LogisticRegression().fit(x, labels)
        onnx = onnx_model(fitted, x.shape[1])
        model = tpb.Model(use_case=use_case, family="logistic_regression", blueprint_version=1,
                          training_rows=len(x), input_width=x.shape[1], score_output="probabilities",
                          feature_profiles=profiles(x),
                          prediction_profile=score_profile(fitted.predict_proba(x)[:, 1]))
        model.data_start_time.FromMilliseconds(start_ms)
        model.data_end_time.FromMilliseconds(end_ms)
        trainer = self.trainer
        registered = (await trainer.RegisterModel(tpb.RegisterModelRequest(
            model=model, onnx=onnx, sha256=hashlib.sha256(onnx).hexdigest()), timeout=60)).model
        await trainer.SetDeployment(tpb.SetDeploymentRequest(
            use_case=use_case, production_version=registered.version, reason="test"), timeout=30)
        assert self.decision_watcher is not None
        scorers = self.decision_watcher.scorers
        await wait_until(lambda: use_case in scorers and scorers[use_case].version == registered.version)
        return registered

    async def decide_batch(self, x: np.ndarray, use_case: str = USE_CASE) -> dpb.DecideBatchResponse:
        """DecideBatch over the rows of x (features x, y, country code)."""
        return await self.decision.DecideBatch(dpb.DecideBatchRequest(
            use_case=use_case, blueprint_version=1, feature_names=["x", "y", "country"], rows=len(x),
            features=pack(np.asarray(x, dtype=np.float32), F32)), timeout=60)

    async def outcome(self, decision_id: str, outcome_id: str, use_case: str = USE_CASE) -> fpb.LogOutcomesResponse:
        """LogOutcomes of one purchase."""
        return await self.feedback.LogOutcomes(fpb.LogOutcomesRequest(outcomes=[fpb.Outcome(
            use_case=use_case, decision_id=decision_id, outcome_id=outcome_id, name="purchase", value=1.0)]),
            timeout=30)

    async def stop(self) -> None:
        """Close the clients and stop every service (decision first)."""
        for channel in self.channels:
            await channel.close()
        for name in ("decision", "evaluator", "feedback", "trainer"):
            if name in self.hosts:
                await self.hosts[name].stop(0.5)


async def start_loop(settings: Settings, evaluator: bool = False) -> Loop:
    """Start trainer, feedback, (evaluator,) decision in this process."""
    from loopwise.services.decision.server import start_process as start_decision
    from loopwise.services.feedback.server import start_server as start_feedback
    from loopwise.services.trainer.server import start_server as start_trainer

    hosts: dict[str, ServiceHost] = {}
    loop = Loop(settings, hosts)
    try:
        hosts["trainer"] = await start_trainer(settings)
        hosts["feedback"] = await start_feedback(settings)
        if evaluator:
            from loopwise.services.evaluator.server import start_server as start_evaluator

            hosts["evaluator"] = await start_evaluator(settings)
        decision = await start_decision(settings)
        hosts["decision"], loop.decision_watcher = decision.host, decision.watcher
    except BaseException:
        await loop.stop()
        raise
    await loop.decision.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=blueprint(**DRIFT)), timeout=30)
    return loop


# Thresholds of the test use case (the drift test relies on them).
DRIFT = {"feature_psi_threshold": 0.25, "prediction_psi_threshold": 0.3, "min_decisions": 300}
