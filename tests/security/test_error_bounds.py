"""Errors are bounded: bad input that an error would echo (a 3,000-character use case
name, 999 unknown feature names, 8,000-byte ids, a long unit id) arrives at a DEFAULT
grpcio client (no channel options) as INVALID_ARGUMENT with a short message and a few
field violations, never as the RESOURCE_EXHAUSTED a client gets when the response
metadata passes its limit (which would read as "retry later"). Also: WatchDeployments
refuses use case names that are not valid ones, naming ``use_cases[i]``.

The decision, feedback and trainer services run in-process on loopback."""

from __future__ import annotations

import hashlib
import math
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2, status_pb2

from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.errors import (
    MAX_MESSAGE_BYTES,
    MAX_VIOLATIONS,
    InvalidArgument,
    NotFound,
    field_violations,
    quote,
    to_status,
)
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.launcher import free_port
from loopwise.server import ServiceHost
from loopwise.services.decision.server import start_server as start_decision
from loopwise.services.feedback.server import start_server as start_feedback
from loopwise.services.trainer.server import start_server as start_trainer
from loopwise.settings import SERVICES, Settings
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.decision.helpers import blueprint, features
from tests.support import CLOCK_SPEED

# What a status may add to the response metadata, asserted on every case: the
# serialized google.rpc.Status (grpc-status-details-bin) and the message. A default
# client starts refusing metadata at 8 KiB.
MAX_STATUS_BYTES = 2048
MAX_METADATA_BYTES = 4096

LONG_NAME = "a" * 3000
LONG_ID = "d" * 8000


@dataclass
class Stack:
    """Decision, feedback and trainer in-process, with default-channel stubs."""

    hosts: list[ServiceHost]
    channels: list[grpc.aio.Channel]
    decision: dgrpc.DecisionServiceStub
    feedback: fgrpc.FeedbackServiceStub
    trainer: tgrpc.TrainerServiceStub


@pytest_asyncio.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    values = {f"{s}_address": f"127.0.0.1:{free_port()}" for s in SERVICES}
    settings = Settings(**values, data_dir=tmp_path_factory.mktemp("error_bounds") / "var",
                        clock_anchor=time.time(), clock_speed=CLOCK_SPEED, seed=7, grace_period_s=1.0,
                        decision_log_enabled=False, trainer_schedule_interval_s=0)
    hosts = [await start_decision(settings), await start_feedback(settings), await start_trainer(settings)]
    # Default channels: no options, so the default metadata limits apply.
    channels = [grpc.aio.insecure_channel(getattr(settings, f"{s}_address"))
                for s in ("decision", "feedback", "trainer")]
    stack = Stack(hosts, channels, dgrpc.DecisionServiceStub(channels[0]), fgrpc.FeedbackServiceStub(channels[1]),
                  tgrpc.TrainerServiceStub(channels[2]))
    try:
        await stack.decision.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=blueprint("offer")), timeout=30)
        yield stack
    finally:
        for channel in channels:
            await channel.close()
        for host in reversed(hosts):
            await host.stop(0)


def _status_bytes(error: grpc.aio.AioRpcError) -> bytes:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return value
    return b""


def assert_bounded(error: grpc.aio.AioRpcError, field: str) -> list[tuple[str, str]]:
    """INVALID_ARGUMENT naming ``field`` first, with a bounded status; the violations."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), (error.details() or "")[:300])
    message = error.details() or ""
    raw = _status_bytes(error)
    assert 0 < len(raw) < MAX_STATUS_BYTES
    assert len(message.encode()) <= MAX_MESSAGE_BYTES
    status = status_pb2.Status.FromString(raw)
    assert status.message == message
    wire = len(urllib.parse.quote(message.encode(), safe=" ")) + math.ceil(len(raw) / 3) * 4
    assert wire < MAX_METADATA_BYTES
    violations = field_violations(error)
    assert violations and violations[0][0] == field, violations[:2]
    assert len(violations) <= MAX_VIOLATIONS
    return violations


async def _error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


# -- the reported cases ---------------------------------------------------------------

async def test_a_3000_character_use_case_name_on_decide(stack: Stack) -> None:
    error = await _error(stack.decision.Decide(dpb.DecideRequest(use_case=LONG_NAME, features=features()),
                                               timeout=30))
    (_, description), = assert_bounded(error, "use_case")
    assert "(3000 characters)" in description and LONG_NAME[:65] not in description


async def test_a_3000_character_use_case_name_on_apply_use_case(stack: Stack) -> None:
    b = blueprint(LONG_NAME)
    for validate_only in (False, True):
        error = await _error(stack.decision.ApplyUseCase(
            dpb.ApplyUseCaseRequest(blueprint=b, validate_only=validate_only), timeout=30))
        assert "(3000 characters)" in assert_bounded(error, "blueprint.use_case")[0][1]


async def test_a_3000_character_use_case_name_on_get_use_case(stack: Stack) -> None:
    error = await _error(stack.decision.GetUseCase(dpb.GetUseCaseRequest(use_case=LONG_NAME), timeout=30))
    assert_bounded(error, "use_case")


async def test_999_unknown_feature_names_on_decide(stack: Stack) -> None:
    unknown = {f"unknown_{i:03d}_" + "z" * 100: dpb.FeatureValue(number=1.0) for i in range(999)}
    error = await _error(stack.decision.Decide(dpb.DecideRequest(use_case="offer", features=unknown), timeout=30))
    violations = assert_bounded(error, "features.unknown_000_" + "z" * 100)
    shown = len(violations)
    assert (error.details() or "").endswith(f"; and {999 - shown} more violations")


async def test_a_long_unit_id_on_decide(stack: Stack) -> None:
    # Over the string limit: refused by the input limits, naming the field.
    error = await _error(stack.decision.Decide(
        dpb.DecideRequest(use_case="offer", unit_id="u" * 20_000, features=features()), timeout=30))
    assert_bounded(error, "unit_id")
    # Under it, with an invalid use case: the name is what is quoted, bounded.
    error = await _error(stack.decision.Decide(
        dpb.DecideRequest(use_case=LONG_NAME, unit_id="u" * 8000, features=features()), timeout=30))
    assert_bounded(error, "use_case")


async def test_8000_byte_ids_on_log_outcomes(stack: Stack) -> None:
    outcomes = [fpb.Outcome(use_case="offer", decision_id=LONG_ID, outcome_id=f"{i}" + "o" * 8000, name="",
                            value=math.nan) for i in range(30)]
    error = await _error(stack.feedback.LogOutcomes(fpb.LogOutcomesRequest(outcomes=outcomes), timeout=30))
    assert_bounded(error, "outcomes[0].name")


async def test_8000_byte_decision_ids_on_log_decisions(stack: Stack) -> None:
    records = [fpb.DecisionRecord(use_case="offer", decision_id=f"{i}" + LONG_ID, blueprint_version=1,
                                  action_probabilities=[0.5, 0.5]) for i in range(30)]
    error = await _error(stack.feedback.LogDecisions(fpb.LogDecisionsRequest(decisions=records), timeout=30))
    violations = assert_bounded(error, "decisions[0].decision_id")
    assert "(8001 characters)" in violations[0][1]


async def test_an_8000_byte_decision_id_on_get_decision(stack: Stack) -> None:
    error = await _error(stack.feedback.GetDecision(
        fpb.GetDecisionRequest(use_case="offer", decision_id=LONG_ID), timeout=30))
    (_, description), = assert_bounded(error, "decision_id")
    assert "(8000 characters)" in description


# -- WatchDeployments use case names ----------------------------------------------------

async def _watch_error(stack: Stack, use_cases: list[str]) -> grpc.aio.AioRpcError:
    call = stack.trainer.WatchDeployments(tpb.WatchDeploymentsRequest(use_cases=use_cases), timeout=30)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in call:
            pass
    return err.value


@pytest.mark.parametrize(("use_cases", "field"), [
    ([""], "use_cases[0]"),
    (["watched", ""], "use_cases[1]"),
    (["b" * 64], "use_cases[0]"),  # the longest name has 63 characters
    (["watched", "Bad-Name"], "use_cases[1]"),
    (["9lives"], "use_cases[0]"),
    (["x"], "use_cases[0]"),  # at least two characters
    (["watched", "has space", "fine_name"], "use_cases[1]"),
    ([LONG_NAME], "use_cases[0]"),
], ids=["empty", "second empty", "64 characters", "upper case and dash", "leading digit", "one character",
        "space", "3000 characters"])
async def test_watch_deployments_refuses_invalid_use_case_names(stack: Stack, use_cases: list[str],
                                                                field: str) -> None:
    assert_bounded(await _watch_error(stack, use_cases), field)


async def test_watch_deployments_lists_every_invalid_name(stack: Stack) -> None:
    fields = [f for f, _ in assert_bounded(await _watch_error(stack, ["", "ok_name", "Nope"]), "use_cases[0]")]
    assert fields == ["use_cases[0]", "use_cases[2]"]


def _identity_onnx() -> bytes:
    """A minimal valid ONNX model: ``score`` = ``features`` [N, 2]."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["features"], ["score"])], "identity",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


async def test_watch_deployments_accepts_valid_names(stack: Stack) -> None:
    longest = "b" * 63  # the longest valid name
    onnx = _identity_onnx()
    for use_case in ("watched", longest):
        model = (await stack.trainer.RegisterModel(tpb.RegisterModelRequest(
            model=tpb.Model(use_case=use_case, input_width=2, family="identity"), onnx=onnx,
            sha256=hashlib.sha256(onnx).hexdigest()), timeout=60)).model
        await stack.trainer.SetDeployment(tpb.SetDeploymentRequest(
            use_case=use_case, production_version=model.version, reason="test"), timeout=30)
    call = stack.trainer.WatchDeployments(tpb.WatchDeploymentsRequest(use_cases=["watched", longest]), timeout=30)
    seen = set()
    async for update in call:
        seen.add(update.deployment.use_case)
        if len(seen) == 2:
            break
    call.cancel()
    assert seen == {"watched", longest}


# -- the mapping itself ----------------------------------------------------------------

def test_quote_cuts_long_values_and_marks_them() -> None:
    assert quote("abc") == "'abc'"
    assert quote("a" * 3000) == "'" + "a" * 64 + "…' (3000 characters)"
    assert quote(b"\x00" * 100).endswith("…' (100 bytes)")
    assert quote(7) == "7"


@pytest.mark.parametrize("error", [
    InvalidArgument("f" * 100_000, "é" * 100_000, [(f"g{i}" * 500, "€" * 5000) for i in range(5000)]),
    InvalidArgument("features.x", "not a feature", [(f"features.{i}", "not a feature") for i in range(998)]),
    NotFound("🙂" * 1_000_000),
    NotFound(f"decision {'x' * 100_000} ; and 5 more violations"),
], ids=["huge violations", "999 short violations", "huge non-ascii message", "message ending like a count"])
def test_every_status_is_bounded(error) -> None:
    status = to_status(error)
    metadata = dict(status.trailing_metadata)
    raw = metadata["grpc-status-details-bin"]
    assert len(raw) < MAX_STATUS_BYTES
    assert len(status.details.encode()) <= MAX_MESSAGE_BYTES
    proto = status_pb2.Status.FromString(raw)
    for detail in proto.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            request = error_details_pb2.BadRequest()
            detail.Unpack(request)
            assert 1 <= len(request.field_violations) <= MAX_VIOLATIONS
            left_out = len(error.violations) - len(request.field_violations)
            assert status.details.endswith(f"; and {left_out} more violations")
