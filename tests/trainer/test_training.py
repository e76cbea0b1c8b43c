"""Training jobs over gRPC, against test decision and feedback servers on loopback."""

from __future__ import annotations

import asyncio
import hashlib

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2

from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from tests.trainer.conftest import RunningTrainer
from tests.trainer.worlds import World, uplift_effect

FINAL = (op_pb.OPERATION_STATE_SUCCEEDED, op_pb.OPERATION_STATE_FAILED, op_pb.OPERATION_STATE_CANCELLED)


async def wait_final(trainer: RunningTrainer, operation_id: str) -> op_pb.Operation:
    """Follow WatchOperation until the operation is final."""
    last = None
    async for update in trainer.stub.WatchOperation(op_pb.WatchOperationRequest(id=operation_id), timeout=180):
        last = update.operation
    assert last is not None and last.state in FINAL
    return last


def result_of(operation: op_pb.Operation) -> tpb.TrainingResult:
    """The TrainingResult packed in a succeeded operation."""
    assert operation.state == op_pb.OPERATION_STATE_SUCCEEDED, operation.error_message
    result = tpb.TrainingResult()
    assert operation.result.Unpack(result)
    return result


async def train(trainer: RunningTrainer, use_case: str, request_id: str = "", **kw) -> op_pb.Operation:
    """Start a training job and wait for its final state."""
    started = await trainer.stub.StartTraining(
        tpb.StartTrainingRequest(use_case=use_case, request_id=request_id, **kw), timeout=10)
    assert started.operation.kind == "training"
    return await wait_final(trainer, started.operation.id)


async def download(trainer: RunningTrainer, use_case: str, version: int) -> tuple[list, bytes]:
    """All chunks of a model's artifact and the joined bytes."""
    chunks = [c async for c in trainer.stub.DownloadModel(
        tpb.DownloadModelRequest(use_case=use_case, version=version), timeout=30)]
    return chunks, b"".join(c.data for c in chunks)


@pytest_asyncio.fixture(scope="module")
async def clicks(trainer: RunningTrainer) -> op_pb.Operation:
    """The binary use case ``clicks`` trained once for the module."""
    return await train(trainer, "clicks", request_id="clicks-1")


async def test_binary_training_registers_and_deploys_the_first_model(
        trainer: RunningTrainer, clicks: op_pb.Operation) -> None:
    result = result_of(clicks)
    model = result.model
    assert (model.use_case, model.version, model.blueprint_version) == ("clicks", 1, 2)
    assert model.input_width == 4 and model.score_output == "probabilities"
    assert model.operation_id == clicks.id and model.source == "trainer"
    assert result.rows == 1200 and model.training_rows == 960 and model.holdout_rows == 240
    assert model.data_end_time.ToMilliseconds() > model.data_start_time.ToMilliseconds()
    assert [c.family for c in result.candidates] == ["logistic_regression", "hist_gradient_boosting",
                                                     "random_forest"]
    assert all(c.metric == "log_loss" and c.score < 0 and c.fit_seconds > 0 for c in result.candidates)
    assert model.family == max(result.candidates, key=lambda c: c.score).family
    assert model.metrics["log_loss"] < 0.3 < model.baseline_metrics["log_loss"]
    assert model.metrics["auc"] > 0.95
    assert result.deployed and result.deployment_reason.startswith("first model beats the default policy")

    listed = (await trainer.stub.ListModels(tpb.ListModelsRequest(use_case="clicks"), timeout=5)).models
    assert [m.version for m in listed] == [1]
    latest = (await trainer.stub.GetModel(tpb.GetModelRequest(use_case="clicks"), timeout=5)).model
    assert latest == model
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await trainer.stub.GetModel(tpb.GetModelRequest(use_case="clicks", version=9), timeout=5)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_download_matches_sha256_and_scores_like_the_known_function(
        trainer: RunningTrainer, clicks: op_pb.Operation) -> None:
    model = result_of(clicks).model
    chunks, data = await download(trainer, "clicks", model.version)
    assert len(chunks) > 1 and all(len(c.data) <= 256 for c in chunks)
    assert chunks[0].model == model and not any(c.HasField("model") for c in chunks[1:])
    assert [c.offset for c in chunks] == list(np.cumsum([0] + [len(c.data) for c in chunks[:-1]]))
    assert all(c.sha256 == model.artifact_sha256 and c.total_size == len(data) for c in chunks)
    assert hashlib.sha256(data).hexdigest() == model.artifact_sha256 and len(data) == model.artifact_size

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(99).normal(size=(500, 4)).astype(np.float32)
    x[:, 3] = 1.0  # tier "silver" in the current vocabulary
    (probabilities,) = session.run(["probabilities"], {"features": x})
    assert probabilities.shape == (500, 2)
    assert np.mean((probabilities[:, 1] >= 0.5) == (x[:, 0] + x[:, 1] > 0)) > 0.93


async def test_watch_deployments_starts_with_the_current_deployment(
        trainer: RunningTrainer, clicks: op_pb.Operation) -> None:
    call = trainer.stub.WatchDeployments(tpb.WatchDeploymentsRequest(use_cases=["clicks"]), timeout=10)
    first = (await call.read()).deployment
    call.cancel()
    assert (first.use_case, first.revision, first.production.version) == ("clicks", 1, 1)
    assert first.production.sha256 == result_of(clicks).model.artifact_sha256
    assert first.production.input_width == 4 and first.production.blueprint_version == 2


async def test_request_id_retry_returns_the_same_operation(
        trainer: RunningTrainer, clicks: op_pb.Operation) -> None:
    again = await trainer.stub.StartTraining(
        tpb.StartTrainingRequest(use_case="clicks", request_id="clicks-1"), timeout=10)
    assert again.operation.id == clicks.id
    listed = await trainer.stub.ListModels(tpb.ListModelsRequest(use_case="clicks"), timeout=5)
    assert len(listed.models) == 1


async def test_action_value_model_picks_the_better_action(trainer: RunningTrainer) -> None:
    result = result_of(await train(trainer, "uplift"))
    model = result.model
    assert model.input_width == 4 and model.score_output == "variable"
    assert {c.metric for c in result.candidates} == {"policy_value_ips"}
    assert model.metrics["policy_value_ips"] > model.baseline_metrics["policy_value_ips"]
    assert result.deployed

    _, data = await download(trainer, "uplift", model.version)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(5).normal(size=(400, 2)).astype(np.float32)
    rows = np.vstack([np.hstack([x, np.tile(onehot, (400, 1))]) for onehot in np.eye(2, dtype=np.float32)])
    (values,) = session.run(["variable"], {"features": rows})
    control, treat = values[:400, 0], values[400:, 0]
    clear = np.abs(x[:, 0]) > 0.2
    picks_treat = treat > control
    assert np.mean(picks_treat[clear] == (uplift_effect(x)[clear] > 0)) > 0.9


async def test_too_few_rows_fails_the_operation(trainer: RunningTrainer) -> None:
    operation = await train(trainer, "tiny")
    assert operation.state == op_pb.OPERATION_STATE_FAILED
    assert operation.error_code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert "too few rows" in operation.error_message and "50" in operation.error_message
    models = await trainer.stub.ListModels(tpb.ListModelsRequest(use_case="tiny"), timeout=5)
    assert not models.models


async def test_hold_first_model_registers_without_deploying(trainer: RunningTrainer) -> None:
    result = result_of(await train(trainer, "held"))
    assert result.model.version == 1 and not result.deployed
    assert "hold_first_model" in result.deployment_reason
    call = trainer.stub.WatchDeployments(tpb.WatchDeploymentsRequest(use_cases=["held", "clicks"]), timeout=10)
    first = (await call.read()).deployment
    call.cancel()
    assert first.use_case == "clicks"  # nothing deployed for "held"


async def test_unknown_use_case_fails_at_once(trainer: RunningTrainer, world: World) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await trainer.stub.StartTraining(tpb.StartTrainingRequest(use_case="nope"), timeout=10)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await trainer.stub.StartTraining(tpb.StartTrainingRequest(), timeout=10)
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nope" not in world.feedback.reads


async def test_health_and_reads_answer_while_fitting_then_second_job_refused_and_cancel(
        trainer: RunningTrainer, clicks: op_pb.Operation) -> None:
    started = (await trainer.stub.StartTraining(tpb.StartTrainingRequest(use_case="big"), timeout=10)).operation
    operation = started
    for _ in range(3000):
        operation = (await trainer.stub.GetOperation(op_pb.GetOperationRequest(id=started.id), timeout=5)).operation
        if operation.stage == "fitting" or operation.state in FINAL:
            break
        await asyncio.sleep(0.01)
    assert operation.stage == "fitting" and operation.state == op_pb.OPERATION_STATE_RUNNING
    assert "of 3" in operation.message

    health = await trainer.health.Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    model = (await trainer.stub.GetModel(tpb.GetModelRequest(use_case="clicks"), timeout=2)).model
    assert model.version == 1
    with pytest.raises(grpc.aio.AioRpcError) as second:
        await trainer.stub.StartTraining(tpb.StartTrainingRequest(use_case="big"), timeout=10)
    assert second.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert started.id in second.value.details()

    cancelled = (await trainer.stub.CancelOperation(op_pb.CancelOperationRequest(id=started.id), timeout=10)).operation
    assert cancelled.state == op_pb.OPERATION_STATE_CANCELLED
    final = (await trainer.stub.GetOperation(op_pb.GetOperationRequest(id=started.id), timeout=5)).operation
    assert final.state == op_pb.OPERATION_STATE_CANCELLED and final.HasField("end_time")
    listed = await trainer.stub.ListOperations(op_pb.ListOperationsRequest(use_case="big"), timeout=5)
    assert [o.id for o in listed.operations] == [started.id]
    assert not (await trainer.stub.ListModels(tpb.ListModelsRequest(use_case="big"), timeout=5)).models
