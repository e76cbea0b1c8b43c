"""The SDK's trainer and evaluator plumbing against scripted servers: the same methods on
both clients, channels opened only when needed, and following operations (progress,
resuming after UNAVAILABLE, failures, timeouts, deadlines)."""

from __future__ import annotations

import inspect

import grpc
import numpy as np
import pytest

from loopwise import client as sdk
from loopwise.client import (
    AsyncClient,
    Client,
    OperationCancelled,
    OperationFailed,
    OperationTimeout,
    operation_result,
)
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.launcher import free_port
from loopwise.settings import Settings
from loopwise.trainer.v1 import trainer_service_pb2 as tpb

RUNNING, SUCCEEDED = op_pb.OPERATION_STATE_RUNNING, op_pb.OPERATION_STATE_SUCCEEDED
FAILED, CANCELLED = op_pb.OPERATION_STATE_FAILED, op_pb.OPERATION_STATE_CANCELLED


def _settings(decision: str | None = None, trainer: str | None = None) -> Settings:
    return Settings(decision_address=decision or f"127.0.0.1:{free_port()}",
                    feedback_address=f"127.0.0.1:{free_port()}",
                    trainer_address=trainer or f"127.0.0.1:{free_port()}",
                    evaluator_address=f"127.0.0.1:{free_port()}",
                    client_deadline_s=1.0, client_retries=2)


def _public_methods(cls: type) -> dict[str, list[str]]:
    """Public callables of a class with their parameter names."""
    return {name: list(inspect.signature(member).parameters)
            for name, member in inspect.getmembers(cls, callable) if not name.startswith("_")}


def test_client_and_async_client_have_the_same_public_methods() -> None:
    blocking, asynchronous = _public_methods(Client), _public_methods(AsyncClient)
    assert set(blocking) == set(asynchronous), set(blocking) ^ set(asynchronous)
    assert blocking == asynchronous  # same arguments, in the same order
    wanted = {"start_training", "get_operation", "wait_operation", "list_models", "get_model",
              "set_deployment", "rollback_model", "get_rollout", "estimate_effects", "get_report",
              "list_reports", "evaluate_policy", "predict_effects", "suggest_parameters"}
    assert wanted <= set(blocking)
    for name in blocking:
        method = getattr(AsyncClient, name)
        streams = inspect.isasyncgenfunction(method) and not inspect.iscoroutinefunction(getattr(Client, name))
        assert inspect.iscoroutinefunction(method) or streams or name in {"default_for"}, name
        assert getattr(Client, name).__doc__, f"Client.{name} has no docstring"
        assert getattr(AsyncClient, name).__doc__, f"AsyncClient.{name} has no docstring"


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Addresses of the channels the SDK opens, by kind ("sync", "aio")."""
    seen: dict[str, list[str]] = {"sync": [], "aio": []}
    sync_channel, aio_channel = sdk.security.sync_channel, sdk.security.aio_channel

    def record_sync(settings, address, *args, **kwargs):
        seen["sync"].append(address)
        return sync_channel(settings, address, *args, **kwargs)

    def record_aio(settings, address, *args, **kwargs):
        seen["aio"].append(address)
        return aio_channel(settings, address, *args, **kwargs)

    monkeypatch.setattr(sdk.security, "sync_channel", record_sync)
    monkeypatch.setattr(sdk.security, "aio_channel", record_aio)
    return seen


def test_trainer_and_evaluator_channels_open_at_first_use_only(scripted, scripted_trainer,
                                                               opened) -> None:
    _, decision_address = scripted
    _, trainer_address = scripted_trainer
    settings = _settings(decision_address)
    client = Client(settings=settings, trainer_address=trainer_address)
    assert client.trainer_address == trainer_address
    assert client.evaluator_address == settings.evaluator_address
    assert not client.decide("checkout_upsell", {"basket_value": 10.0}).fallback
    assert opened["sync"] == [decision_address, settings.feedback_address]
    operation = client.start_training("checkout_upsell")
    client.get_operation(operation)
    assert opened["sync"][2:] == [trainer_address]  # opened once, reused
    client.close()
    with pytest.raises(ValueError, match="closed"):
        client.list_models("checkout_upsell")
    with pytest.raises(ValueError, match="closed"):
        client.list_reports()
    assert opened["sync"][2:] == [trainer_address]  # the evaluator was never opened


async def test_async_channels_open_at_first_use_only(scripted, scripted_trainer, opened) -> None:
    _, decision_address = scripted
    _, trainer_address = scripted_trainer
    settings = _settings(decision_address, trainer_address)
    async with AsyncClient(settings=settings) as client:
        assert not (await client.decide("checkout_upsell", {"basket_value": 10.0})).fallback
        assert opened["aio"] == [decision_address, settings.feedback_address]
        operation = await client.start_training("checkout_upsell")
        await client.get_operation(operation.id, service="trainer")
        assert opened["aio"][2:] == [trainer_address]


def test_wait_operation_streams_progress_until_success(scripted_trainer) -> None:
    servicer, address = scripted_trainer
    seen: list[op_pb.Operation] = []
    with Client(settings=_settings(trainer=address)) as client:
        started = client.start_training("checkout_upsell", deploy=True, request_id="r-1")
        assert started.request_id == "r-1" and started.state == op_pb.OPERATION_STATE_PENDING
        final = client.wait_operation(started, timeout=120, on_progress=seen.append)
    assert final.state == SUCCEEDED
    assert [o.stage for o in seen] == ["reading_data", "fitting", "exporting", "done"]
    result = operation_result(final)
    assert isinstance(result, tpb.TrainingResult) and result.model.version == 1
    # the watch runs under the caller's timeout, not the 1 s decide deadline
    assert servicer.watch_deadlines[0] is not None and servicer.watch_deadlines[0] > 100


def test_wait_operation_without_timeout_sets_no_deadline(scripted_trainer) -> None:
    servicer, address = scripted_trainer
    with Client(settings=_settings(trainer=address)) as client:
        final = client.wait_operation(client.start_training("checkout_upsell"))
    assert final.state == SUCCEEDED
    assert servicer.watch_deadlines == [None]


def test_wait_operation_resumes_with_get_operation_after_unavailable(scripted_trainer) -> None:
    servicer, address = scripted_trainer
    servicer.drop_watches = 2
    stages: list[str] = []
    with Client(settings=_settings(trainer=address)) as client:
        final = client.wait_operation(client.start_training("checkout_upsell"), timeout=60,
                                      on_progress=lambda o: stages.append(o.stage))
    assert final.state == SUCCEEDED
    assert servicer.calls["WatchOperation"] == 2 and servicer.calls["GetOperation"] == 2
    assert stages == ["reading_data", "fitting", "exporting", "done"]


@pytest.mark.parametrize(("state", "error"), [(FAILED, OperationFailed), (CANCELLED, OperationCancelled)])
def test_wait_operation_raises_when_the_job_fails_or_is_cancelled(scripted_trainer, state, error) -> None:
    servicer, address = scripted_trainer
    servicer.script[-1] = (state, "done", 1.0)
    servicer.final_error = "too few labelled rows"
    with Client(settings=_settings(trainer=address)) as client, pytest.raises(error) as caught:
        client.wait_operation(client.start_training("checkout_upsell"), timeout=60)
    failure = caught.value
    assert isinstance(failure, OperationFailed) and failure.operation.state == state
    assert failure.state == state and failure.operation.id == "op-1"
    if state == FAILED:
        assert failure.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "too few labelled rows" in str(failure) and "FAILED" in str(failure)
        with pytest.raises(OperationFailed):
            operation_result(failure.operation)
    else:
        assert failure.code is None and "CANCELLED" in str(failure)


def test_wait_operation_times_out_with_the_last_state(scripted_trainer) -> None:
    servicer, address = scripted_trainer
    servicer.step_delay_s = 2.0
    with Client(settings=_settings(trainer=address)) as client, pytest.raises(OperationTimeout) as caught:
        client.wait_operation(client.start_training("checkout_upsell"), timeout=0.5)
    assert caught.value.operation.state == RUNNING and caught.value.operation.stage == "reading_data"
    assert isinstance(caught.value, TimeoutError)


def test_get_operation_by_id_asks_the_trainer_then_the_evaluator(scripted_trainer) -> None:
    _, address = scripted_trainer
    with Client(settings=_settings(trainer=address)) as client:
        assert client.get_operation("op-1").id == "op-1"
        with pytest.raises(grpc.RpcError) as caught:  # the evaluator is not running
            client.get_operation("op-unknown")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(ValueError, match="service"):
            client.get_operation(op_pb.Operation(id="op-1", kind="something_else"))


async def test_async_wait_operation_resumes_and_awaits_progress(scripted_trainer) -> None:
    servicer, address = scripted_trainer
    servicer.drop_watches = 1
    stages: list[str] = []

    async def on_progress(operation: op_pb.Operation) -> None:
        stages.append(operation.stage)

    async with AsyncClient(settings=_settings(trainer=address)) as client:
        started = await client.start_training("checkout_upsell")
        final = await client.wait_operation(started, timeout=60, on_progress=on_progress)
        servicer.script[-1] = (FAILED, "done", 1.0)
        with pytest.raises(OperationFailed):
            await client.wait_operation(started, timeout=60)
    assert final.state == SUCCEEDED
    assert stages == ["reading_data", "fitting", "exporting", "done"]
    assert servicer.watch_deadlines[0] is not None and servicer.watch_deadlines[0] > 50


def test_request_arguments_become_the_proto_fields() -> None:
    request = sdk._estimate_effects_request(
        "checkout_upsell", "r-1", 1_760_000_000.5, None, "causal_forest_dml", "offer", "no_offer", 3,
        "ARMS", "b", "a", ["region"], 0.5, True, 8, 90.0)
    assert request.estimator == sdk.epb.ESTIMATOR_CAUSAL_FOREST_DML
    assert request.treatment_source == sdk.epb.TREATMENT_SOURCE_ARMS
    assert request.start_time.ToMilliseconds() == 1_760_000_000_500 and not request.HasField("end_time")
    assert request.timeout.seconds == 90 and list(request.segment_features) == ["region"]
    with pytest.raises(ValueError, match="linear_dml"):
        sdk._estimate_effects_request("u", "r", None, None, "no_such_estimator", "", "", 0, 0, "", "",
                                      (), 0.0, False, 0, None)
    suggest = sdk._suggest_parameters_request(
        "u", {"policy.epsilon": (0.0, 0.5)}, None, "rep-1", 0, "share:offer",
        [{"metric": "reward", "min": 1.0}], 6, 2, None, None, True)
    assert list(suggest.parameters) == ["policy.epsilon"] and suggest.ranges[0].high == 0.5
    assert suggest.constraints[0].HasField("min") and not suggest.constraints[0].HasField("max")
    policy = sdk._evaluate_policy_request("u", 0, None, None, "", "", {"type": "POLICY_TYPE_GREEDY"}, 0.0)
    assert policy.policy_variant.type == sdk.blueprint_pb2.POLICY_TYPE_GREEDY


def test_named_rows_are_coded_with_the_vocabulary() -> None:
    names = ["basket_value", "region"]
    matrix = sdk._effect_matrix([{"basket_value": 10, "region": "south"}, {"region": "mars"},
                                 {"basket_value": None, "region": None}], names,
                                {"region": ["north", "south"]})
    np.testing.assert_array_equal(matrix[:, 1], [1, -1, np.nan])
    np.testing.assert_array_equal(matrix[:, 0], [10, np.nan, np.nan])
    with pytest.raises(ValueError, match="unknown feature"):
        sdk._effect_matrix([{"basket": 1.0}], names, None)
    with pytest.raises(ValueError, match="do not match"):
        sdk._effect_matrix(np.ones((2, 3)), names, None)
    assert sdk._effect_matrix([10.0, 2.0], names, None).shape == (1, 2)  # one row as a vector
