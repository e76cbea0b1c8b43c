"""Tokens on a running stack: open health, service-to-service credentials, file
reload and revocation, and no secret in any log."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loopwise.auth import TokenStore, authenticate, bearer_secret, new_token
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.errors import LoopwiseError
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.operations import FINAL_STATES
from loopwise.settings import SERVICES
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.decision.helpers import blueprint, features
from tests.security.helpers import bearer, wait_for


async def test_health_needs_no_token(auth_stack) -> None:
    for service in SERVICES:
        stub = health_pb2_grpc.HealthStub(auth_stack.channel(service))
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_services_call_each_other_with_their_own_tokens(auth_stack) -> None:
    """The team's token decides; the decision service logs the decision to feedback
    with its own credential (the team's decide token could not read it back)."""
    decision = dgrpc.DecisionServiceStub(auth_stack.channel("decision"))
    feedback = fgrpc.FeedbackServiceStub(auth_stack.channel("feedback"))
    await decision.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=blueprint("team_a")),
                                metadata=bearer(auth_stack.secret("admin-team-a")), timeout=30)
    reply = await decision.Decide(dpb.DecideRequest(use_case="team_a", unit_id="u1",
                                                    features=features()),
                                  metadata=bearer(auth_stack.secret("decide-team-a")), timeout=30)
    decision_id = reply.decision.decision_id

    async def logged() -> bool:
        try:
            await feedback.GetDecision(fpb.GetDecisionRequest(use_case="team_a", decision_id=decision_id),
                                       metadata=bearer(auth_stack.secret("report-team-a")), timeout=10)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND, error
            return False
        return True

    assert await wait_for(logged, timeout=60)
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await feedback.GetDecision(fpb.GetDecisionRequest(use_case="team_a", decision_id=decision_id),
                                   metadata=bearer(auth_stack.secret("decide-team-a")), timeout=10)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_tokens_file_is_reloaded_on_change(auth_stack) -> None:
    feedback = fgrpc.FeedbackServiceStub(auth_stack.channel("feedback"))
    secret = auth_stack.tokens.add("late-team", {"team_late": ["report"]})

    async def code() -> grpc.StatusCode:
        try:
            await feedback.GetStats(fpb.GetStatsRequest(use_case="team_late"),
                                    metadata=bearer(secret), timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    async def accepted() -> bool:
        return await code() not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)

    async def revoked() -> bool:
        return await code() == grpc.StatusCode.UNAUTHENTICATED

    assert await wait_for(accepted, timeout=30)
    auth_stack.tokens.remove("late-team")
    assert await wait_for(revoked, timeout=30)


async def test_no_secret_is_ever_logged(auth_stack) -> None:
    """Refusals are logged by token name; no secret (team or service) appears in any
    service log, even after calls with bad and with valid-but-denied tokens."""
    decision = dgrpc.DecisionServiceStub(auth_stack.channel("decision"))
    leaked = "lw_this-secret-must-not-appear-in-logs"
    for secret in (leaked, auth_stack.secret("report-team-a")):
        with pytest.raises(grpc.aio.AioRpcError):
            await decision.Decide(dpb.DecideRequest(use_case="team_a"), metadata=bearer(secret), timeout=10)
    await asyncio.sleep(0.5)  # let the log lines reach the files
    logs = {name: auth_stack.launcher.log_file(name).read_text(errors="replace") for name in SERVICES}
    assert "report-team-a" in logs["decision"]  # the refusal was logged, by name
    for name, text in logs.items():
        for secret in (leaked, *auth_stack.tokens.secrets.values()):
            assert secret not in text, f"a secret appears in the {name} log"


def test_token_store_rejects_bad_files_and_keeps_the_last_good(tmp_path) -> None:
    path = tmp_path / "tokens.yaml"
    secret, entry = new_token("team", {"uc": ["decide"]})
    import yaml

    path.write_text(yaml.safe_dump({"tokens": [entry]}))
    store = TokenStore(path, reload_s=0.0)
    assert store.lookup(secret).allows("decide", "uc")
    assert not store.lookup(secret).allows("report", "uc")
    path.write_text("tokens: [{name: x, sha256: nothex, scopes: {}}]")
    assert store.lookup(secret) is not None  # a broken edit keeps the old tokens
    with pytest.raises(ValueError):
        TokenStore(path)
    with pytest.raises(ValueError):
        new_token("team", {"uc": ["superuser"]})
    assert secret not in path.read_text() and entry["sha256"] not in secret


def test_bearer_metadata_parsing(tmp_path) -> None:
    assert bearer_secret([("authorization", "Bearer abc")]) == "abc"
    assert bearer_secret([("Authorization", "bearer  abc ")]) == "abc"
    assert bearer_secret([("authorization", "Basic abc")]) == ""
    assert bearer_secret([("x-other", "1")]) is None
    path = tmp_path / "t.yaml"
    path.write_text("tokens: []\n")
    with pytest.raises(LoopwiseError) as missing:
        authenticate(TokenStore(path), [])
    assert missing.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_cli_creates_a_token_and_prints_the_entry(tmp_path) -> None:
    import subprocess
    import sys

    import yaml

    done = subprocess.run([sys.executable, "-m", "loopwise.cli", "tokens", "create", "--name", "checkout-team",
                           "--scope", "checkout_upsell=decide,log_outcomes", "--scope", "*=report"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    first, *rest = done.stdout.splitlines()
    secret = first.removeprefix("token: ")
    entries = yaml.safe_load("\n".join(rest))
    assert secret.startswith("lw_") and secret not in "\n".join(rest)
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump({"tokens": entries}))
    principal = TokenStore(path).lookup(secret)
    assert principal.name == "checkout-team"
    assert principal.allows("decide", "checkout_upsell") and principal.allows("report", "other")
    assert not principal.allows("decide", "other") and not principal.allows("admin", "checkout_upsell")
    bad = subprocess.run([sys.executable, "-m", "loopwise.cli", "tokens", "create", "--name", "x",
                          "--scope", "uc=root"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2


async def test_a_team_follows_its_own_training_job_and_no_other(auth_stack) -> None:
    """A token scoped to one use case starts a training job and watches, reads and
    cancels it by naming its use case; without the use case it is refused, and a
    token of another use case does not find the operation under its own."""
    decision = dgrpc.DecisionServiceStub(auth_stack.channel("decision"))
    trainer = tgrpc.TrainerServiceStub(auth_stack.channel("trainer"))
    team_a = bearer(auth_stack.secret("train-team-a"))
    await decision.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=blueprint("team_a")),
                                metadata=bearer(auth_stack.secret("admin-team-a")), timeout=30)
    started = (await trainer.StartTraining(tpb.StartTrainingRequest(use_case="team_a"),
                                           metadata=team_a, timeout=30)).operation
    assert started.use_case == "team_a"
    updates = [u.operation async for u in trainer.WatchOperation(
        op_pb.WatchOperationRequest(id=started.id, use_case="team_a"), metadata=team_a, timeout=120)]
    assert updates and updates[-1].state in FINAL_STATES and {u.id for u in updates} == {started.id}
    read = await trainer.GetOperation(op_pb.GetOperationRequest(id=started.id, use_case="team_a"),
                                      metadata=team_a, timeout=10)
    assert read.operation.state == updates[-1].state
    cancelled = await trainer.CancelOperation(op_pb.CancelOperationRequest(id=started.id, use_case="team_a"),
                                              metadata=team_a, timeout=10)
    assert cancelled.operation.state == updates[-1].state  # already final: unchanged

    for request, metadata, expected in [
        (op_pb.GetOperationRequest(id=started.id), team_a, grpc.StatusCode.PERMISSION_DENIED),
        (op_pb.GetOperationRequest(id=started.id, use_case="team_b"), team_a, grpc.StatusCode.PERMISSION_DENIED),
        (op_pb.GetOperationRequest(id=started.id, use_case="team_b"), bearer(auth_stack.secret("admin-team-b")),
         grpc.StatusCode.NOT_FOUND),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await trainer.GetOperation(request, metadata=metadata, timeout=10)
        assert refused.value.code() == expected, (request, refused.value)
