"""Models: ONNX scorers, and the watcher that follows the trainer's deployments.

The watcher subscribes to ``TrainerService.WatchDeployments`` (reconnecting with
backoff), downloads each new production, canary and shadow model with
``DownloadModel``, verifies its size and sha256, caches it under
``<service_dir>/models/<use_case>-v<version>.onnx``, builds an onnxruntime session,
checks its input, and swaps the use case's :class:`Serving` in atomically: a request
reads it once, so in-flight requests finish with the old models. On any failure the
old model of that slot stays. A deployment without models brings the default decision
back. What is served is also written to ``<use_case>.deployment`` next to the
artifacts, so a restart serves the last good models before (or without) the trainer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.durable import write_file_durably
from loopwise.services.decision.encoding import UseCaseVersion, column_map, remap
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc

log = logging.getLogger("loopwise.decision.models")

INPUT_NAME = "features"
# The per-metric output of a model trained for a blueprint with metrics
# (services/trainer/value_model.py): [rows, metrics] in its blueprint version's order.
METRIC_OUTPUT = "metric_values"


class ModelError(Exception):
    """A model artifact cannot be used (bad bytes, wrong input, unknown output)."""


@dataclass
class OnnxScorer:
    """One production model: an onnxruntime session and what its input follows."""

    use_case: str
    version: int
    sha256: str
    blueprint_version: int
    input_width: int
    score_output: str
    session: ort.InferenceSession
    # The model's feature encoding (its blueprint version), when known.
    model_uc: UseCaseVersion | None = None
    _maps: dict[int, object] = field(default_factory=dict)
    # Number of ensemble members in the score output (1: a single model).
    members: int = 1
    # Whether rows were seen to score alike alone and among others, at any place
    # (checked when the model is loaded: :func:`rows_score_alike`); only then does the
    # Decide queue score a pass's rows in one run.
    rows_score_alike: bool = False
    # With metrics: the metric names of the model's METRIC_OUTPUT columns; its action
    # values are those columns weighted by the value model of the version in force.
    metric_names: tuple[str, ...] = ()
    # By (version, id of the blueprint): an experiment arm that overrides the weights
    # decides with its own view of the version (services/decision/arm_parameters.py).
    # The blueprint is kept with its weights, so a reused id is never mistaken for it.
    _weights: dict[tuple[int, int], tuple[bp.Blueprint, np.ndarray]] = field(default_factory=dict)

    def metric_weights(self, uc: UseCaseVersion) -> np.ndarray:
        """The value model's weight of each of the model's metrics under ``uc`` (a
        version without metrics: the weights the model was trained with)."""
        blueprint = uc.blueprint
        key = (uc.version, id(blueprint))
        entry = self._weights.get(key)
        if entry is None or entry[0] is not blueprint:
            source = blueprint if blueprint.metrics or self.model_uc is None else self.model_uc.blueprint
            weights = source.value_model.weights
            entry = (blueprint, np.array([float(weights.get(m, 0.0)) for m in self.metric_names],
                                         dtype=np.float32).reshape(-1, 1))
            self._weights[key] = entry
        return entry[1]

    def _model_rows(self, uc: UseCaseVersion, rows: np.ndarray) -> np.ndarray:
        if self.model_uc is None or uc.version == self.model_uc.version:
            return rows
        if uc.version not in self._maps:
            self._maps[uc.version] = column_map(uc, self.model_uc)
        mapping = self._maps[uc.version]
        return rows if mapping is None else remap(rows, mapping)  # type: ignore[arg-type]

    def run(self, output: str, x: np.ndarray) -> np.ndarray:
        """The session's ``output`` for the [n, input_width] float32 rows ``x``. A lone
        row is run beside a copy of itself: onnxruntime's kernels for one row (e.g. a
        matrix-vector product) can round differently from those for several. A model
        whose rows then score alike at any place in a run of any size (checked on
        random rows when it is loaded: ``rows_score_alike``) gives a row the same bits
        from Decide, a pass of the Decide queue and DecideBatch."""
        if x.shape[0] == 1:
            return self.session.run([output], {INPUT_NAME: np.concatenate((x, x))})[0][:1]
        return self.session.run([output], {INPUT_NAME: x})[0]

    def score_one(self, uc: UseCaseVersion, row: np.ndarray) -> float:
        """:meth:`score` of one [1, F] float32 row of a binary or regression use case, as
        a float (the same value; one session run, nothing else vectorised)."""
        return self.score_rows(uc, row)[0]

    def score_rows(self, uc: UseCaseVersion, rows: np.ndarray) -> list[float]:
        """:meth:`score_one` of each of the [n, F] float32 ``rows``, in one session run."""
        x = rows if self.model_uc is None or uc.version == self.model_uc.version \
            else np.ascontiguousarray(self._model_rows(uc, rows), dtype=np.float32)
        if x.shape[1] != self.input_width:
            raise ModelError(f"model v{self.version} takes {self.input_width} columns, got {x.shape[1]}")
        out = self.run(self.score_output, x)
        if uc.blueprint.kind == bp.DECISION_KIND_BINARY and out.ndim == 2 and out.shape[1] == 2:
            return out[:, 1].tolist()
        return out.reshape(x.shape[0]).tolist()

    def score(self, uc: UseCaseVersion, rows: np.ndarray) -> np.ndarray:
        """Scores by kind (see policy.Scorer); one session run per call."""
        x = np.ascontiguousarray(self._model_rows(uc, rows), dtype=np.float32)
        kind, n, n_actions = uc.blueprint.kind, x.shape[0], len(uc.actions)
        if kind == bp.DECISION_KIND_ACTION_VALUE:
            onehot = np.tile(np.eye(n_actions, dtype=np.float32), (n, 1))
            x = np.hstack([np.repeat(x, n_actions, axis=0), onehot])
        if x.shape[1] != self.input_width:
            raise ModelError(f"model v{self.version} takes {self.input_width} columns, got {x.shape[1]}")
        if self.metric_names and kind == bp.DECISION_KIND_ACTION_VALUE:
            metrics = self.run(METRIC_OUTPUT, x)
            return (metrics @ self.metric_weights(uc)).reshape(n, n_actions, 1)
        out = np.asarray(self.run(self.score_output, x))
        if kind == bp.DECISION_KIND_RANKING:
            if self.score_output == "probabilities" and out.ndim == 2 and out.shape[1] == 2:
                return out[:, 1:2]
            return out.reshape(n, -1)
        if kind == bp.DECISION_KIND_BINARY:
            return out[:, 1] if out.ndim == 2 and out.shape[1] == 2 else out.reshape(n)
        if kind == bp.DECISION_KIND_MULTICLASS:
            if out.shape != (n, n_actions):
                raise ModelError(f"model v{self.version} gives {out.shape} probabilities for {n_actions} actions")
            return out
        if kind == bp.DECISION_KIND_REGRESSION:
            return out.reshape(n)
        return out.reshape(n, n_actions, -1)  # [n, A, K]: K ensemble members


@dataclass(frozen=True)
class Serving:
    """The models serving one use case: production, a canary with its share of units,
    and shadows (scored and logged, never returned). Replaced as a whole on a change."""

    production: OnnxScorer | None = None
    canary: OnnxScorer | None = None
    canary_share: float = 0.0
    shadows: tuple[OnnxScorer, ...] = ()
    deployment: tpb.Deployment | None = None  # what is served, as a deployment

    @property
    def version(self) -> int:
        """The production model version (0: none)."""
        return self.production.version if self.production else 0


def load_session(path: Path) -> ort.InferenceSession:
    """An onnxruntime session tuned for many small parallel runs: one intra-op thread,
    sequential execution, all graph optimisations."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def build_scorer(use_case: str, ref: tpb.ModelRef, path: Path, model_uc: UseCaseVersion | None) -> OnnxScorer:
    """Load ``path`` and check it fits ``ref`` (input name/width, score output)."""
    session = load_session(path)
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        raise ModelError(f"model input must be one tensor named {INPUT_NAME!r}, got {[i.name for i in inputs]}")
    shape = inputs[0].shape
    width = shape[1] if len(shape) == 2 else None
    if isinstance(width, int) and width != ref.input_width:
        raise ModelError(f"model input width {width} but deployment says {ref.input_width}")
    outputs = [o.name for o in session.get_outputs()]
    score_output = ref.score_output or outputs[-1]
    if score_output not in outputs:
        raise ModelError(f"score output {score_output!r} not in {outputs}")
    if model_uc is not None:
        expected = len(model_uc.feature_names)
        if model_uc.blueprint.kind == bp.DECISION_KIND_ACTION_VALUE:
            expected += len(model_uc.actions)
        if ref.input_width != expected:
            raise ModelError(f"input width {ref.input_width} does not fit blueprint v{model_uc.version} ({expected})")
    out_shape = next(o.shape for o in session.get_outputs() if o.name == score_output)
    members = out_shape[1] if len(out_shape) == 2 and isinstance(out_shape[1], int) else 1
    metric_names: tuple[str, ...] = ()
    if model_uc is not None and model_uc.blueprint.metrics and METRIC_OUTPUT in outputs:
        metric_names = tuple(m.name for m in model_uc.blueprint.metrics)
        metric_shape = next(o.shape for o in session.get_outputs() if o.name == METRIC_OUTPUT)
        if len(metric_shape) != 2 or metric_shape[1] != len(metric_names):
            raise ModelError(f"output {METRIC_OUTPUT!r} has shape {metric_shape}, blueprint v{model_uc.version} "
                             f"declares {len(metric_names)} metrics")
        members = 1
    scorer = OnnxScorer(use_case, ref.version, ref.sha256, ref.blueprint_version, ref.input_width,
                        score_output, session, model_uc, members=members, metric_names=metric_names)
    if model_uc is not None:  # one probe row: wrong shapes fail here, not on requests
        probe = np.zeros((1, len(model_uc.feature_names)), dtype=np.float32)
        try:
            scorer.score(model_uc, probe)
        except Exception as exc:
            raise ModelError(f"model v{ref.version} cannot score a row of blueprint v{model_uc.version}: {exc}") from exc
    scorer.rows_score_alike = rows_score_alike(scorer)
    return scorer


# Random rows scored, alone and in runs of several, by rows_score_alike; the Decide
# queue scores at most this many rows in one run.
ALIKE_PROBE_ROWS = 64


def rows_score_alike(scorer: OnnxScorer) -> bool:
    """Whether each of ``ALIKE_PROBE_ROWS`` random rows gets the same score output, bit
    for bit, alone (:meth:`OnnxScorer.run`) and in runs of 2, 5 and all of them, at
    different places in the run. False when any differs or the model cannot run them."""
    rows = np.random.default_rng(0).normal(size=(ALIKE_PROBE_ROWS, scorer.input_width)).astype(np.float32)
    try:
        alone = np.concatenate([scorer.run(scorer.score_output, rows[i:i + 1]) for i in range(len(rows))])
        for size in (2, 5, len(rows)):
            for start in range(0, len(rows) - size + 1, size):
                index = np.roll(np.arange(len(rows)), -start - 1)[:size]
                if not np.array_equal(scorer.run(scorer.score_output, rows[index]), alone[index]):
                    return False
    except Exception:
        return False
    return True


class ModelWatcher:
    """Follows deployments and keeps ``scorers[use_case]`` up to date."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        models_dir: Path,
        lookup_version: Callable[[str, int], UseCaseVersion | None],
        backoff_s: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        self.stub = tgrpc.TrainerServiceStub(channel)
        self.models_dir = models_dir
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.lookup_version = lookup_version
        self.scorers: dict[str, Serving] = {}
        self.backoff_s = backoff_s
        self.updates = 0  # deployments handled (tests wait on it)
        self.failures = 0  # models that could not be loaded
        self._task: asyncio.Task | None = None
        self._call = None

    def start(self) -> None:
        """Start following deployments in the background."""
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop following deployments."""
        if self._call is not None:
            self._call.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _run(self) -> None:
        delay = self.backoff_s[0]
        while True:
            try:
                self._call = self.stub.WatchDeployments(tpb.WatchDeploymentsRequest())
                async for update in self._call:
                    delay = self.backoff_s[0]
                    await self.apply(update.deployment)
                log.info("deployment stream ended; reconnecting")
            except asyncio.CancelledError:
                raise
            except grpc.RpcError as exc:
                log.debug("trainer unreachable (%s); retrying in %.1fs", exc.code(), delay)
            except Exception:
                log.exception("deployment watch failed; retrying in %.1fs", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_s[1])

    async def restore(self) -> None:
        """Serve the deployments cached on disk (verified artifacts only), so the
        service decides with its last good models while the trainer is unreachable."""
        for path in sorted(self.models_dir.glob("*.deployment")):
            try:
                deployment = tpb.Deployment.FromString(await asyncio.to_thread(path.read_bytes))
            except Exception:
                log.exception("unreadable cached deployment %s; ignored", path)
                continue
            await self.apply(deployment, offline=True)
            log.info("%s: restored cached deployment (production v%d)", deployment.use_case,
                     self.scorers[deployment.use_case].version if deployment.use_case in self.scorers else 0)

    async def apply(self, deployment: tpb.Deployment, offline: bool = False) -> None:
        """Bring one use case's models in line with ``deployment`` (``offline``: from
        the disk cache only). A slot whose new model cannot be used keeps its old one."""
        use_case = deployment.use_case
        try:
            current = self.scorers.get(use_case)

            def ref_of(name: str) -> tpb.ModelRef | None:
                return getattr(deployment, name) if deployment.HasField(name) and getattr(deployment, name).version else None

            production = await self._slot(use_case, ref_of("production"), current.production if current else None, offline)
            canary = await self._slot(use_case, ref_of("canary"), current.canary if current else None, offline)
            old_shadows = {s.version: s for s in current.shadows} if current else {}
            shadows = []
            for ref in deployment.shadows:
                if ref.version:
                    scorer = await self._slot(use_case, ref, old_shadows.get(ref.version), offline)
                    if scorer is not None:
                        shadows.append(scorer)
            if production is None and canary is None and not shadows:
                if self.scorers.pop(use_case, None) is not None:
                    log.info("%s: no model deployed; serving the default decision", use_case)
                await asyncio.to_thread(_remove, self.models_dir / f"{use_case}.deployment")
                return
            served = tpb.Deployment(use_case=use_case, revision=deployment.revision)
            if production is not None:
                served.production.CopyFrom(_ref(production))
            if canary is not None:
                served.canary.CopyFrom(_ref(canary))
                served.canary_share = min(max(deployment.canary_share, 0.0), 1.0)
            served.shadows.extend(_ref(s) for s in shadows)
            serving = Serving(production, canary, served.canary_share, tuple(shadows), served)
            if current is None or current.deployment != served:
                self.scorers[use_case] = serving  # the swap: one dict assignment
                log.info("%s: serving production v%d, canary v%d (share %.3f), shadows %s", use_case,
                         serving.version, canary.version if canary else 0, served.canary_share,
                         [s.version for s in shadows])
                if not offline:
                    await asyncio.to_thread(write_file_durably, self.models_dir / f"{use_case}.deployment",
                                            served.SerializeToString())
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failures += 1
            log.exception("%s: cannot apply the deployment; keeping the previous models", use_case)
        finally:
            self.updates += 1

    async def _slot(self, use_case: str, ref: tpb.ModelRef | None, current: OnnxScorer | None,
                    offline: bool) -> OnnxScorer | None:
        """The scorer for one deployment slot: the current one when unchanged, the new
        one when it loads, else the current one (the failure is counted and logged)."""
        if ref is None:
            return None
        if current is not None and current.version == ref.version and current.sha256 == ref.sha256:
            return current
        try:
            path = await self._artifact(use_case, ref, offline)
            model_uc = self.lookup_version(use_case, ref.blueprint_version)
            return await asyncio.to_thread(build_scorer, use_case, ref, path, model_uc)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failures += 1
            log.exception("%s: cannot use model v%d; keeping v%d in its slot", use_case, ref.version,
                          current.version if current else 0)
            return current

    async def _artifact(self, use_case: str, ref: tpb.ModelRef, offline: bool = False) -> Path:
        """The verified artifact on disk, downloaded unless cached."""
        path = self.models_dir / f"{use_case}-v{ref.version}.onnx"
        if path.exists():
            data = await asyncio.to_thread(path.read_bytes)
            if hashlib.sha256(data).hexdigest() == ref.sha256:
                return path
        if offline:
            raise ModelError(f"no verified cached artifact for model v{ref.version}")
        chunks: list[bytes] = []
        offset, total, sha = 0, -1, ref.sha256
        async for chunk in self.stub.DownloadModel(
            tpb.DownloadModelRequest(use_case=use_case, version=ref.version), timeout=60
        ):
            if chunk.offset != offset:
                raise ModelError(f"chunk at offset {chunk.offset}, expected {offset}")
            chunks.append(chunk.data)
            offset += len(chunk.data)
            total = chunk.total_size
            sha = chunk.sha256 or sha
        data = b"".join(chunks)
        if len(data) != total:
            raise ModelError(f"artifact has {len(data)} bytes, expected {total}")
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha or (ref.sha256 and digest != ref.sha256):
            raise ModelError(f"artifact sha256 {digest} does not match {ref.sha256 or sha}")
        await asyncio.to_thread(write_file_durably, path, data)
        return path


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _ref(scorer: OnnxScorer) -> tpb.ModelRef:
    return tpb.ModelRef(version=scorer.version, sha256=scorer.sha256, input_width=scorer.input_width,
                        score_output=scorer.score_output, blueprint_version=scorer.blueprint_version)
