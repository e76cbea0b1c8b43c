"""The model registry and deployments: plain logic, no gRPC types.

Models are registered with their ONNX artifact (sha256 checked, loadable in ONNX
Runtime); deployments are revisions per use case, each audited, and every new
revision is published to the watchers of :meth:`Registry.watch`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator

from loopwise.clock import Clock
from loopwise.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable, quote
from loopwise.jobs import ProcessPool
from loopwise.services.trainer.models import check_loads
from loopwise.store.trainer import AuditEntry, RegistryStore
from loopwise.trainer.v1 import trainer_service_pb2 as tpb

WATCH_QUEUE_SIZE = 1000


def model_ref(model: tpb.Model) -> tpb.ModelRef:
    """The deployment's reference to a model version."""
    return tpb.ModelRef(
        version=model.version, sha256=model.artifact_sha256, input_width=model.input_width,
        score_output=model.score_output, blueprint_version=model.blueprint_version,
    )


def _roles(deployment: tpb.Deployment) -> tuple:
    """What a deployment serves, for comparing revisions."""
    return (
        deployment.production.version if deployment.HasField("production") else 0,
        deployment.canary.version if deployment.HasField("canary") else 0,
        deployment.canary_share,
        tuple(s.version for s in deployment.shadows),
    )


def check_profile(field: str, profile: tpb.FeatureProfile) -> None:
    """A profile drift can bin against: ascending numeric edges, one count per bin
    (numeric: ``len(bin_edges) + 1``), no negative counts."""
    edges = list(profile.bin_edges)
    if not all(math.isfinite(e) for e in edges) or any(b <= a for a, b in zip(edges[:-1], edges[1:], strict=True)):
        raise InvalidArgument(f"{field}.bin_edges", "must be finite and strictly ascending")
    if not profile.categorical and profile.bin_counts and len(profile.bin_counts) != len(edges) + 1:
        raise InvalidArgument(f"{field}.bin_counts", f"needs len(bin_edges) + 1 = {len(edges) + 1} counts, "
                                                     f"has {len(profile.bin_counts)}")
    if any(c < 0 for c in profile.bin_counts) or profile.missing_count < 0:
        raise InvalidArgument(f"{field}.bin_counts", "counts must be >= 0")


class Registry:
    """Models, artifacts and deployments of every use case."""

    def __init__(self, store: RegistryStore, pool: ProcessPool, clock: Clock, chunk_bytes: int) -> None:
        self.store = store
        self.pool = pool
        self.clock = clock
        self.chunk_bytes = max(1, chunk_bytes)
        self._watchers: set[asyncio.Queue[tpb.Deployment]] = set()
        self._deploy_lock = asyncio.Lock()

    # Models ------------------------------------------------------------------------

    async def list_models(self, use_case: str) -> list[tpb.Model]:
        """The models of a use case, newest first."""
        if not use_case:
            raise InvalidArgument("use_case", "required")
        return await self.store.list_models(use_case)

    async def get_model(self, use_case: str, version: int, field: str = "version") -> tpb.Model:
        """One model version (0: the latest); NOT_FOUND if there is none."""
        if not use_case:
            raise InvalidArgument("use_case", "required")
        if version < 0:
            raise InvalidArgument(field, "must be >= 0")
        model = await self.store.get_model(use_case, version)
        if model is None:
            which = f"version {version}" if version else "any model"
            raise NotFound(f"{field}: use case {quote(use_case)} has no {which}")
        return model

    async def download(self, use_case: str, version: int) -> tuple[tpb.Model, AsyncIterator[tuple[int, bytes]]]:
        """The model and its artifact as (offset, bytes) chunks of at most ``chunk_bytes``."""
        model = await self.get_model(use_case, version)

        async def chunks() -> AsyncIterator[tuple[int, bytes]]:
            offset = 0
            async for stored in self.store.read_artifact(model.use_case, model.version):
                for start in range(0, len(stored), self.chunk_bytes):
                    piece = stored[start:start + self.chunk_bytes]
                    yield offset, piece
                    offset += len(piece)
            if offset != model.artifact_size:
                raise Unavailable(f"artifact of {quote(use_case)} v{model.version} is incomplete in the store")

        return model, chunks()

    async def add_model(self, model: tpb.Model, onnx: bytes, request_id: str) -> tpb.Model:
        """Store a model whose artifact is already checked; assigns version, size, sha256, time."""
        model.artifact_sha256 = hashlib.sha256(onnx).hexdigest()
        model.artifact_size = len(onnx)
        model.create_time.FromMilliseconds(self.clock.now_ms())
        stored, _ = await self.store.add_model(model, onnx, request_id)
        return stored

    async def register_model(self, model: tpb.Model, onnx: bytes, sha256: str, request_id: str) -> tpb.Model:
        """Register a model made elsewhere, after checking its bytes and that it loads."""
        if not model.use_case:
            raise InvalidArgument("model.use_case", "required")
        if not onnx:
            raise InvalidArgument("onnx", "required")
        if not sha256:
            raise InvalidArgument("sha256", "required")
        actual = hashlib.sha256(onnx).hexdigest()
        if actual != sha256.lower():
            raise InvalidArgument("sha256", f"does not match the bytes of onnx (their sha256 is {actual})")
        if model.input_width < 0:
            raise InvalidArgument("model.input_width", "must be >= 0")
        try:
            inputs, outputs = await self.pool.run(check_loads, onnx)
        except Exception as exc:  # whatever ONNX Runtime rejects
            raise InvalidArgument("onnx", f"ONNX Runtime cannot load it: {str(exc)[:300]}") from exc
        if inputs != ["features"]:
            raise InvalidArgument("onnx", f"must have one input named 'features', has {inputs}")
        if model.score_output and model.score_output not in outputs:
            raise InvalidArgument("model.score_output", f"{quote(model.score_output)} is not an output of the model {outputs}")
        for i, profile in enumerate(model.feature_profiles):
            check_profile(f"model.feature_profiles[{i}]", profile)
        if model.HasField("prediction_profile"):
            check_profile("model.prediction_profile", model.prediction_profile)
        incoming = tpb.Model()
        incoming.CopyFrom(model)
        incoming.source = incoming.source or "external"
        incoming.score_output = incoming.score_output or outputs[0]
        return await self.add_model(incoming, onnx, request_id)

    # Deployments -------------------------------------------------------------------

    async def current_deployment(self, use_case: str) -> tpb.Deployment | None:
        """The deployment in force for a use case, or None."""
        found = await self.store.current_deployments([use_case])
        return found[0] if found else None

    async def set_deployment(self, request: tpb.SetDeploymentRequest, action: str = "set") -> tpb.Deployment:
        """Validate and store a new deployment revision; watchers see it."""
        use_case = request.use_case
        if not use_case:
            raise InvalidArgument("use_case", "required")
        share = request.canary_share
        if not math.isfinite(share) or not 0.0 <= share <= 1.0:
            raise InvalidArgument("canary_share", "must be in [0, 1]")
        if share > 0 and not request.canary_version:
            raise InvalidArgument("canary_share", "needs a canary_version")
        for name, value in (("production_version", request.production_version),
                            ("canary_version", request.canary_version)):
            if value < 0:
                raise InvalidArgument(name, "must be >= 0")
        for i, value in enumerate(request.shadow_versions):
            if value <= 0:
                raise InvalidArgument(f"shadow_versions[{i}]", "must be > 0")
        if len(set(request.shadow_versions)) != len(request.shadow_versions):
            raise InvalidArgument("shadow_versions", "must not repeat a version")
        deployment = tpb.Deployment(use_case=use_case, canary_share=share, reason=request.reason)
        if request.production_version:
            deployment.production.CopyFrom(model_ref(
                await self.get_model(use_case, request.production_version, "production_version")))
        if request.canary_version:
            deployment.canary.CopyFrom(model_ref(
                await self.get_model(use_case, request.canary_version, "canary_version")))
        for i, version in enumerate(request.shadow_versions):
            deployment.shadows.append(model_ref(await self.get_model(use_case, version, f"shadow_versions[{i}]")))
        if not deployment.HasField("production") and not deployment.HasField("canary") and not deployment.shadows:
            if not await self.store.list_models(use_case) and await self.current_deployment(use_case) is None:
                raise NotFound(f"use case {quote(use_case)} has no models and no deployment")
        return await self._add(deployment, request.request_id, action)

    async def rollback(self, use_case: str, reason: str, request_id: str) -> tpb.Deployment:
        """Restore the previous revision (the latest one serving something else) as a new one."""
        if not use_case:
            raise InvalidArgument("use_case", "required")
        revisions = await self.store.revisions(use_case)
        if not revisions:
            raise FailedPrecondition(f"use case {quote(use_case)} has no deployment to roll back")
        current = revisions[0]
        target = next((r for r in revisions[1:] if _roles(r) != _roles(current)), None)
        if target is None:
            raise FailedPrecondition(
                f"use case {quote(use_case)} has no previous revision that differs from revision {current.revision}")
        restored = tpb.Deployment()
        restored.CopyFrom(target)
        restored.ClearField("update_time")
        restored.reason = f"rollback to revision {target.revision}" + (f": {reason}" if reason else "")
        return await self._add(restored, request_id, "rollback")

    async def _add(self, deployment: tpb.Deployment, request_id: str, action: str) -> tpb.Deployment:
        async with self._deploy_lock:  # publish revisions in the order they were made
            deployment.update_time.FromMilliseconds(self.clock.now_ms())
            stored, created = await self.store.add_deployment(deployment, request_id, action)
            if created:
                for queue in list(self._watchers):
                    if queue.full():  # a stalled watcher is cut off rather than blocking
                        self._watchers.discard(queue)
                        continue
                    queue.put_nowait(stored)
        return stored

    async def audit(self, use_case: str) -> list[AuditEntry]:
        """The deployment changes of a use case, oldest first."""
        return await self.store.audit(use_case)

    async def watch(self, use_cases: list[str], stopping: asyncio.Event | None) -> AsyncIterator[tpb.Deployment]:
        """The current deployment of each (wanted) use case, then every new revision.

        Ends with UNAVAILABLE when ``stopping`` is set (clients reconnect)."""
        wanted = set(use_cases)
        queue: asyncio.Queue[tpb.Deployment] = asyncio.Queue(WATCH_QUEUE_SIZE)
        self._watchers.add(queue)  # before reading, so no revision falls between
        sent: dict[str, int] = {}
        stop = asyncio.Event() if stopping is None else stopping
        try:
            for deployment in await self.store.current_deployments(use_cases):
                sent[deployment.use_case] = deployment.revision
                yield deployment
            while True:
                if queue not in self._watchers and queue.empty():
                    raise Unavailable("this watcher fell behind; reconnect")
                getter = asyncio.ensure_future(queue.get())
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait([getter, stopper], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopper.cancel()
                    if not getter.done():
                        getter.cancel()
                if not getter.done() or getter.cancelled():
                    raise Unavailable("the trainer is shutting down; reconnect")
                deployment = getter.result()
                if wanted and deployment.use_case not in wanted:
                    continue
                if deployment.revision <= sent.get(deployment.use_case, 0):
                    continue
                sent[deployment.use_case] = deployment.revision
                yield deployment
        finally:
            self._watchers.discard(queue)
