"""RegisterModel, deployments, rollback, watch order, restart recovery, and parity checks."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3

import grpc
import numpy as np
import pytest

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.errors import field_violations
from loopwise.launcher import free_port
from loopwise.services.trainer.data import Rows, collect_rows, prepare
from loopwise.services.trainer.models import (
    BINARY,
    BOOSTING,
    REGRESSION,
    TrainingSet,
    check_parity,
    export_onnx,
    fit_candidate,
)
from loopwise.services.trainer.server import start_server
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.trainer.conftest import RunningTrainer
from tests.trainer.worlds import CLICKS_V1, CLICKS_V2, World, clicks_batches


def tiny_model(seed: int) -> bytes:
    """A small valid ONNX regressor with input ``features`` of width 2."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    data = TrainingSet(REGRESSION, 1, x, x[:, 0] * 2.0, x[:20], x[:20, 0] * 2.0)
    return export_onnx(fit_candidate("linear", data, 0).estimator, REGRESSION, 2)


async def register(stub: tgrpc.TrainerServiceStub, use_case: str, onnx: bytes,
                   request_id: str = "", sha256: str | None = None) -> tpb.Model:
    """RegisterModel with the right sha256 unless one is given."""
    response = await stub.RegisterModel(tpb.RegisterModelRequest(
        request_id=request_id, model=tpb.Model(use_case=use_case, input_width=2, family="ridge"),
        onnx=onnx, sha256=hashlib.sha256(onnx).hexdigest() if sha256 is None else sha256), timeout=30)
    return response.model


async def expect_error(call, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """Await a call that must fail with ``code``."""
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    assert error.value.code() == code, error.value.details()
    return error.value


async def test_register_model_checks_bytes_and_is_idempotent(trainer: RunningTrainer) -> None:
    onnx = tiny_model(1)
    bad_sha = await expect_error(register(trainer.stub, "reg", onnx, sha256="0" * 64),
                                 grpc.StatusCode.INVALID_ARGUMENT)
    assert [f for f, _ in field_violations(bad_sha)] == ["sha256"]
    junk = b"this is not an ONNX model"
    not_onnx = await expect_error(register(trainer.stub, "reg", junk), grpc.StatusCode.INVALID_ARGUMENT)
    assert [f for f, _ in field_violations(not_onnx)] == ["onnx"]
    no_use_case = await expect_error(register(trainer.stub, "", onnx), grpc.StatusCode.INVALID_ARGUMENT)
    assert field_violations(no_use_case)[0][0] == "model.use_case"

    first = await register(trainer.stub, "reg", onnx, request_id="reg-1")
    retry = await register(trainer.stub, "reg", onnx, request_id="reg-1")
    second = await register(trainer.stub, "reg", tiny_model(2), request_id="reg-2")
    assert (first.version, retry.version, second.version) == (1, 1, 2)
    assert first.artifact_sha256 == hashlib.sha256(onnx).hexdigest() and first.artifact_size == len(onnx)
    assert first.score_output == "variable" and first.source == "external"
    models = (await trainer.stub.ListModels(tpb.ListModelsRequest(use_case="reg"), timeout=5)).models
    assert [m.version for m in models] == [2, 1]
    chunks = [c async for c in trainer.stub.DownloadModel(tpb.DownloadModelRequest(use_case="reg", version=1))]
    assert b"".join(c.data for c in chunks) == onnx


async def test_deployment_revisions_rollback_and_watch_order(trainer: RunningTrainer, world: World) -> None:
    onnx = tiny_model(3)
    v1 = await register(trainer.stub, "deploy", onnx)
    v2 = await register(trainer.stub, "deploy", tiny_model(4))
    await expect_error(trainer.stub.Rollback(tpb.RollbackRequest(use_case="deploy"), timeout=5),
                       grpc.StatusCode.FAILED_PRECONDITION)

    watch = trainer.stub.WatchDeployments(tpb.WatchDeploymentsRequest(use_cases=["deploy"]), timeout=30)
    seen: list[tpb.Deployment] = []

    async def follow() -> None:
        async for update in watch:
            seen.append(update.deployment)
            if len(seen) == 3:
                return

    follower = asyncio.ensure_future(follow())
    await asyncio.sleep(0.2)  # the watch is open before the first revision

    set_first = tpb.SetDeploymentRequest(use_case="deploy", production_version=v1.version,
                                         reason="first", request_id="dep-1")
    rev1 = (await trainer.stub.SetDeployment(set_first, timeout=5)).deployment
    again = (await trainer.stub.SetDeployment(set_first, timeout=5)).deployment
    assert again == rev1
    rev2 = (await trainer.stub.SetDeployment(tpb.SetDeploymentRequest(
        use_case="deploy", production_version=v2.version, shadow_versions=[v1.version],
        canary_version=v1.version, canary_share=0.1, reason="second"), timeout=5)).deployment
    rev3 = (await trainer.stub.Rollback(tpb.RollbackRequest(use_case="deploy", reason="bad metrics"),
                                        timeout=5)).deployment
    await asyncio.wait_for(follower, 10)
    watch.cancel()

    assert [d.revision for d in (rev1, rev2, rev3)] == [1, 2, 3]
    assert [d.revision for d in seen] == [1, 2, 3]
    assert [d.production.version for d in seen] == [1, 2, 1]
    assert rev2.canary.version == 1 and rev2.canary_share == pytest.approx(0.1)
    assert [s.version for s in rev2.shadows] == [1]
    assert rev1.production.sha256 == v1.artifact_sha256
    assert rev3.reason == "rollback to revision 1: bad metrics" and not rev3.HasField("canary")
    rev4 = (await trainer.stub.Rollback(tpb.RollbackRequest(use_case="deploy"), timeout=5)).deployment
    assert (rev4.revision, rev4.production.version) == (4, 2)

    missing = await expect_error(trainer.stub.SetDeployment(tpb.SetDeploymentRequest(
        use_case="deploy", production_version=9), timeout=5), grpc.StatusCode.NOT_FOUND)
    assert "production_version" in missing.details()
    share = await expect_error(trainer.stub.SetDeployment(tpb.SetDeploymentRequest(
        use_case="deploy", production_version=1, canary_version=2, canary_share=1.5), timeout=5),
        grpc.StatusCode.INVALID_ARGUMENT)
    assert field_violations(share)[0][0] == "canary_share"
    shadow = await expect_error(trainer.stub.SetDeployment(tpb.SetDeploymentRequest(
        use_case="deploy", shadow_versions=[1, 7]), timeout=5), grpc.StatusCode.NOT_FOUND)
    assert "shadow_versions[1]" in shadow.details()
    await expect_error(trainer.stub.SetDeployment(tpb.SetDeploymentRequest(use_case="ghost"), timeout=5),
                       grpc.StatusCode.NOT_FOUND)
    with sqlite3.connect(world.settings.data_dir / "trainer.db") as conn:
        audit = conn.execute("SELECT revision, action, reason FROM deployment_audit "
                             "WHERE use_case='deploy' ORDER BY id").fetchall()
    assert audit == [(1, "set", "first"), (2, "set", "second"),
                     (3, "rollback", "rollback to revision 1: bad metrics"),
                     (4, "rollback", "rollback to revision 2")]


async def test_restart_fails_unfinished_jobs_and_watch_ends_unavailable(
        world: World, tmp_path) -> None:
    settings = world.settings.model_copy(
        update={"data_dir": tmp_path / "var", "trainer_address": f"127.0.0.1:{free_port()}"})
    host = await start_server(settings)
    await host.stop(0)
    stale = op_pb.Operation(id="01900000-0000-7000-8000-000000000001", kind="training", use_case="clicks",
                            state=op_pb.OPERATION_STATE_RUNNING, stage="fitting")
    with sqlite3.connect(tmp_path / "var" / "trainer.db") as conn:
        conn.execute("INSERT INTO operations (id, use_case, request_id, body) VALUES (?,?,?,?)",
                     (stale.id, stale.use_case, None, stale.SerializeToString()))

    host = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(settings.trainer_address) as channel:
            stub = tgrpc.TrainerServiceStub(channel)
            recovered = (await stub.GetOperation(op_pb.GetOperationRequest(id=stale.id), timeout=5)).operation
            assert recovered.state == op_pb.OPERATION_STATE_FAILED
            assert recovered.error_code == grpc.StatusCode.UNAVAILABLE.value[0]

            watch = stub.WatchDeployments(tpb.WatchDeploymentsRequest(), timeout=30)
            await asyncio.sleep(0.2)
            stopping = asyncio.ensure_future(host.stop(1.0))
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                async for _ in watch:
                    pass
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            await stopping
    finally:
        await host.stop(0)


@pytest.mark.parametrize("kind", [REGRESSION, BINARY])
def test_hist_gradient_boosting_exports_with_parity(kind: str) -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=(1500, 6)).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    signal = np.nan_to_num(x[:, 0]) * 3 + np.nan_to_num(x[:, 1]) ** 2
    y = (signal > 1).astype(np.int64) if kind == BINARY else 100 * signal + rng.normal(size=1500)
    data = TrainingSet(kind, 2, x[:1200], y[:1200], x[1200:], y[1200:])
    fit = fit_candidate(BOOSTING, data, seed=7)
    assert fit.family == "hist_gradient_boosting"
    onnx = export_onnx(fit.estimator, kind, 6)
    report = check_parity(onnx, fit.estimator, data)
    assert report.ok, report.reason
    assert report.agreement == 1.0 and report.violations == 0

    other = fit_candidate(BOOSTING, TrainingSet(kind, 2, x[:600], y[600:1200], x[1200:], y[1200:]), seed=7)
    mismatch = check_parity(export_onnx(other.estimator, kind, 6), fit.estimator, data)
    assert not mismatch.ok and mismatch.violations > 0


async def test_batches_of_two_versions_align_by_name_and_vocabulary() -> None:
    async def batches():
        for item in clicks_batches():
            yield item

    async def blueprint_of(version: int):
        return {1: CLICKS_V1, 2: CLICKS_V2}[version]

    rows = await collect_rows(batches(), CLICKS_V2, 2, blueprint_of)
    assert rows.features.shape == (1200, 4) and rows.read == 1200
    first, second = rows.features[:600], rows.features[600:]
    assert np.isnan(first[:, 2]).all() and not np.isnan(second[:, 2]).any()
    # Codes are translated: v1 gold=0/silver=1 become v2 gold=2/silver=1.
    assert set(np.unique(first[:, 3]).tolist()) == {1.0, 2.0}
    assert set(np.unique(second[:, 3]).tolist()) == {1.0, 2.0}
    np.testing.assert_array_equal(first[:, 0] + first[:, 1] > 0, rows.rewards[:600] > 0)


@pytest.mark.parametrize("kind", [bp.DECISION_KIND_MULTICLASS, bp.DECISION_KIND_REGRESSION])
def test_prepare_targets_split_by_time_and_export(kind: int) -> None:
    rng = np.random.default_rng(12)
    n = 600
    x = rng.normal(size=(n, 3)).astype(np.float32)
    actions = ["low", "mid", "high"]
    label_index = np.digitize(x[:, 0], [-0.5, 0.5])
    labels = [actions[i] for i in label_index]
    labels[:30] = [""] * 30  # rows without a label are dropped for multiclass
    times = rng.permutation(n).astype(np.int64) * 1000
    rows = Rows(x, times, np.zeros(n, np.int64), np.ones(n), 2.0 * x[:, 0] + 1.0, labels, n)
    blueprint = bp.Blueprint(kind=kind, actions=actions if kind == bp.DECISION_KIND_MULTICLASS else [],
                             features=[bp.Feature(name=f"x{i}") for i in range(3)],
                             training=bp.TrainingSpec(min_rows=100, holdout_fraction=0.25))
    prepared = prepare(rows, blueprint)
    data = prepared.training
    usable = n - 30 if kind == bp.DECISION_KIND_MULTICLASS else n
    assert prepared.training_rows + prepared.holdout_rows == usable
    assert prepared.holdout_rows == round(usable * 0.25)
    # The holdout is the newest rows (times are unique).
    candidates = np.arange(30, n) if kind == bp.DECISION_KIND_MULTICLASS else np.arange(n)
    newest = candidates[np.argsort(times[candidates])][-prepared.holdout_rows:]
    assert set(data.x_holdout[:, 0].tolist()) == set(x[newest, 0].tolist())
    fit = fit_candidate("linear", data, 0)
    if kind == bp.DECISION_KIND_MULTICLASS:
        assert set(np.unique(data.y_train).tolist()) == {0, 1, 2}
        assert fit.metrics["accuracy"] > 0.9
    else:
        assert fit.metrics["rmse"] < 0.01
    report = check_parity(export_onnx(fit.estimator, data.kind, 3), fit.estimator, data)
    assert report.ok, report.reason
