"""The trainer's registry contract, on SQLite and on Cassandra: model versions and
deployment revisions (unique under races), chunked artifacts, request ids, audit; and
the trainer service training a use case on the backend."""

from __future__ import annotations

import asyncio
import hashlib

import grpc
import pytest

from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.launcher import free_port
from loopwise.store.trainer import ARTIFACT_CHUNK_BYTES, open_trainer_store
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.contract.backends import BACKENDS, backend_url, store_settings, unique
from tests.trainer.conftest import world  # noqa: F401 - fixture for the service smoke test


@pytest.fixture(scope="module", params=BACKENDS)
def url(request, tmp_path_factory) -> str:
    return backend_url(request, tmp_path_factory, "trainer")


@pytest.fixture(scope="module")
def opened(url, tmp_path_factory):
    store = open_trainer_store(store_settings("trainer", url, tmp_path_factory))
    yield store
    store.close()


@pytest.fixture
def store(opened):
    return opened.registry


def model(use_case: str, family: str = "logistic") -> tpb.Model:
    return tpb.Model(use_case=use_case, family=family, blueprint_version=1, metrics={"auc": 0.7})


def deployment(use_case: str, production: int, reason: str = "", t_ms: int = 1000) -> tpb.Deployment:
    d = tpb.Deployment(use_case=use_case, production=tpb.ModelRef(version=production), reason=reason)
    d.update_time.FromMilliseconds(t_ms)
    return d


async def artifact(store, use_case: str, version: int) -> bytes:
    return b"".join([chunk async for chunk in store.read_artifact(use_case, version)])


async def test_models_get_consecutive_versions_and_read_back(store) -> None:
    uc = unique()
    assert await store.get_model(uc, 0) is None and await store.list_models(uc) == []
    small = b"onnx-small"
    large = bytes(range(256)) * (ARTIFACT_CHUNK_BYTES // 256 * 2 + 10)  # > 2 chunks
    first, created = await store.add_model(model(uc), small, "")
    assert created and first.version == 1 and first.metrics["auc"] == pytest.approx(0.7)
    second, _ = await store.add_model(model(uc, "hgb"), large, "")
    assert second.version == 2
    assert [m.version for m in await store.list_models(uc)] == [2, 1]
    assert (await store.get_model(uc, 0)).family == "hgb"
    assert (await store.get_model(uc, 1)).family == "logistic"
    assert await store.get_model(uc, 3) is None
    assert await artifact(store, uc, 1) == small
    chunks = [c async for c in store.read_artifact(uc, 2)]
    assert len(chunks) == 3 and all(len(c) <= ARTIFACT_CHUNK_BYTES for c in chunks)
    assert hashlib.sha256(b"".join(chunks)).digest() == hashlib.sha256(large).digest()
    assert await artifact(store, uc, 9) == b""


async def test_model_request_ids_are_idempotent(store) -> None:
    uc = unique()
    first, created = await store.add_model(model(uc), b"a", "m-" + uc)
    again, created_again = await store.add_model(model(uc, "other"), b"b", "m-" + uc)
    assert created and not created_again
    assert again == first and [m.version for m in await store.list_models(uc)] == [1]
    same = await asyncio.gather(*(store.add_model(model(uc), b"c", "n-" + uc) for _ in range(4)))
    assert sum(c for _, c in same) == 1 and {m.version for m, _ in same} == {2}


async def test_concurrent_writers_get_unique_versions(opened, url, tmp_path_factory) -> None:
    other = open_trainer_store(store_settings("trainer", url, tmp_path_factory))
    try:
        uc = unique()
        stores = [opened.registry, other.registry] * 4
        added = await asyncio.gather(*(s.add_model(model(uc), f"m{i}".encode(), "")
                                       for i, s in enumerate(stores)))
        versions = sorted(m.version for m, _ in added)
        assert versions == list(range(1, 9))
        for i, (m, _) in enumerate(added):  # each version holds the artifact of its writer
            assert await artifact(other.registry, uc, m.version) == f"m{i}".encode()
        revised = await asyncio.gather(*(s.add_deployment(deployment(uc, 1, f"r{i}"), "", "deploy")
                                         for i, s in enumerate(stores)))
        assert sorted(d.revision for d, _ in revised) == list(range(1, 9))
        assert [d.revision for d in await opened.registry.revisions(uc)] == list(range(8, 0, -1))
    finally:
        other.close()


async def test_deployments_revisions_current_and_audit(store) -> None:
    a, b = unique("a"), unique("b")
    d1, created = await store.add_deployment(deployment(a, 1, "first", 1000), "d-" + a, "deploy")
    assert created and d1.revision == 1
    again, created_again = await store.add_deployment(deployment(a, 7, "dup", 1500), "d-" + a, "deploy")
    assert not created_again and again == d1
    d2, _ = await store.add_deployment(deployment(a, 2, "second", 2000), "", "deploy")
    d3, _ = await store.add_deployment(deployment(a, 1, "back", 3000), "", "rollback")
    await store.add_deployment(deployment(b, 5, "", 4000), "", "deploy")
    assert [d.revision for d in await store.revisions(a)] == [3, 2, 1]
    assert [d.production.version for d in await store.revisions(a)] == [1, 2, 1]
    current = await store.current_deployments([a, b])
    assert [(d.use_case, d.revision, d.production.version) for d in current] == [(a, 3, 1), (b, 1, 5)]
    everything = {d.use_case: d.revision for d in await store.current_deployments([])}
    assert everything[a] == 3 and everything[b] == 1
    assert await store.current_deployments([unique()]) == []
    assert [(e.revision, e.action, e.reason, e.time_ms, e.request_id) for e in await store.audit(a)] == [
        (1, "deploy", "first", 1000, "d-" + a), (2, "deploy", "second", 2000, ""), (3, "rollback", "back", 3000, "")]
    assert d3.reason == "back"


async def test_rollouts_are_replaced_per_use_case_and_listed(store) -> None:
    uc, other = unique(), unique()
    assert await store.get_rollout(uc) is None
    await store.save_rollout(tpb.Rollout(use_case=uc, model_version=2, step=tpb.ROLLOUT_STEP_SHADOW))
    await store.save_rollout(tpb.Rollout(use_case=other, model_version=5, step=tpb.ROLLOUT_STEP_CANARY))
    await store.save_rollout(tpb.Rollout(use_case=uc, model_version=2, step=tpb.ROLLOUT_STEP_CANARY,
                                         joined_outcomes=17))
    found = await store.get_rollout(uc)
    assert found.step == tpb.ROLLOUT_STEP_CANARY and found.joined_outcomes == 17
    listed = {r.use_case: r for r in await store.list_rollouts()}
    assert listed[uc].step == tpb.ROLLOUT_STEP_CANARY and listed[other].model_version == 5


async def test_models_keep_feature_profiles_and_lineage(store) -> None:
    uc = unique()
    m = model(uc)
    m.code_version = "loopwise 0.1.0"
    m.parent_version = 3
    m.feature_profiles.add(name="x0", bin_edges=[0.0, 1.0], bin_counts=[3, 4, 5], count=12)
    stored, _ = await store.add_model(m, b"onnx", "")
    back = await store.get_model(uc, stored.version)
    assert back.feature_profiles[0].bin_counts == [3, 4, 5] and back.parent_version == 3
    assert back.code_version == "loopwise 0.1.0"


async def test_trainer_service_trains_on_the_backend(url, world) -> None:  # noqa: F811
    """Smoke: a real training job stores its model, artifact and deployment in the backend."""
    from loopwise.services.trainer.server import start_server

    settings = world.settings.model_copy(update={
        "trainer_store_url": url, "trainer_address": f"127.0.0.1:{free_port()}"})
    host = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(settings.trainer_address) as channel:
            stub = tgrpc.TrainerServiceStub(channel)
            started = await stub.StartTraining(tpb.StartTrainingRequest(use_case="clicks", request_id="smoke"))
            second = stub.StartTraining(tpb.StartTrainingRequest(use_case="clicks"))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await second
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            last = None
            async for update in stub.WatchOperation(op_pb.WatchOperationRequest(id=started.operation.id),
                                                    timeout=180):
                last = update.operation
            assert last.state == op_pb.OPERATION_STATE_SUCCEEDED, last.error_message
            got = (await stub.GetModel(tpb.GetModelRequest(use_case="clicks"))).model
            data = b"".join([c.data async for c in stub.DownloadModel(
                tpb.DownloadModelRequest(use_case="clicks", version=got.version))])
            assert hashlib.sha256(data).hexdigest() == got.artifact_sha256 and len(data) == got.artifact_size
    finally:
        await host.stop(0)
