"""The SDK's retries against a scripted server: UNAVAILABLE is retried by gRPC's retry
policy (the service config of every SDK channel: attempts, backoff, the pushback
trailer, the deadline, requests larger than gRPC's default retry buffer, round robin
kept), RESOURCE_EXHAUSTED with retry pushback by the SDK's own ``_retry_delay`` (the
trailer or google.rpc.RetryInfo, waiting at least the pushback); a server that says
not to retry, RESOURCE_EXHAUSTED without pushback and every other code are never
retried; ``decide`` falls back to the default when the service sheds load; failures
raise the typed errors of loopwise.client_errors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

import loopwise
from loopwise.admission import PUSHBACK_KEY, STATUS_DETAILS_KEY
from loopwise.client import AsyncClient, Client, _retry_delay, _service_config
from loopwise.clock import Clock
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.launcher import free_port
from loopwise.settings import Settings

USE_CASE = "checkout_upsell"
RE = grpc.StatusCode.RESOURCE_EXHAUSTED
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE


def _retry_info(seconds: float) -> tuple[str, bytes]:
    packed = any_pb2.Any()
    packed.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
        seconds=int(seconds), nanos=int(round((seconds - int(seconds)) * 1e9)))))
    return STATUS_DETAILS_KEY, status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="busy",
                                                 details=[packed]).SerializeToString()


class Refusing(dgrpc.DecisionServiceServicer):
    """Decide answers with the next scripted refusal (code, trailers), then decides."""

    def __init__(self) -> None:
        self.script: list[tuple[grpc.StatusCode, tuple[tuple[str, object], ...]]] = []
        self.attempts = 0  # of Decide
        self.calls: dict[str, int] = {}
        self.times: list[float] = []
        self.clock = Clock()
        self._lock = threading.Lock()

    def _refuse(self, context, method: str) -> None:
        with self._lock:
            self.calls[method] = self.calls.get(method, 0) + 1
            self.attempts += method == "Decide"
            self.times.append(time.monotonic())
            refusal = self.script.pop(0) if self.script else None
        if refusal is not None:
            code, trailers = refusal
            context.set_trailing_metadata(trailers)
            context.abort(code, f"scripted {code.name}")

    def GetUseCase(self, request, context):
        self._refuse(context, "GetUseCase")
        return dpb.GetUseCaseResponse(use_case=dpb.UseCase(version=1, blueprint=bp.Blueprint(
            use_case=request.use_case, actions=["no_offer", "offer"],
            default_decision=bp.DefaultDecision(action="no_offer"))))

    def Decide(self, request, context):
        self._refuse(context, "Decide")
        return dpb.DecideResponse(decision=dpb.Decision(
            decision_id=self.clock.new_id(), use_case=request.use_case, action="offer", action_index=1,
            action_probabilities=[0.0, 1.0]))


def _serve() -> tuple[Refusing, str, grpc.Server]:
    servicer = Refusing()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[
        ("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 64 << 20)])
    dgrpc.add_DecisionServiceServicer_to_server(servicer, server)
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    server.start()
    return servicer, address, server


@pytest.fixture
def refusing() -> Iterator[tuple[Refusing, str]]:
    servicer, address, server = _serve()
    try:
        yield servicer, address
    finally:
        server.stop(0).wait()


def _settings(address: str) -> Settings:
    return Settings(decision_address=address, feedback_address=f"127.0.0.1:{free_port()}",
                    client_deadline_s=2.0, client_retries=2)


CASES = [
    # script, attempts, outcome ("served", "fallback" or the code raised)
    pytest.param([(RE, ((PUSHBACK_KEY, "20"),))] * 2, 3, "served", id="pushback-trailer-retried"),
    pytest.param([(RE, (_retry_info(0.02),))], 2, "served", id="retry-info-retried"),
    pytest.param([(UNAVAILABLE, ())], 2, "served", id="unavailable-retried"),
    pytest.param([(UNAVAILABLE, ())] * 2, 3, "served", id="unavailable-twice-retried"),
    pytest.param([(UNAVAILABLE, ())] * 5, 3, "fallback", id="unavailable-retries-used-up"),
    pytest.param([(UNAVAILABLE, ((PUSHBACK_KEY, "-1"),))], 1, "fallback", id="unavailable-told-not-to-retry"),
    pytest.param([(UNAVAILABLE, ()), (RE, ((PUSHBACK_KEY, "20"),))], 3, "served", id="unavailable-then-shedding"),
    pytest.param([(RE, ((PUSHBACK_KEY, "20"),))] * 3, 3, "fallback", id="retries-used-up"),
    pytest.param([(RE, ((PUSHBACK_KEY, "-1"),))], 1, "fallback", id="told-not-to-retry"),
    pytest.param([(RE, ((PUSHBACK_KEY, "5000"),))], 1, "fallback", id="pushback-beyond-the-deadline"),
    pytest.param([(RE, ())], 1, RE, id="resource-exhausted-without-pushback"),
    pytest.param([(grpc.StatusCode.INVALID_ARGUMENT, ((PUSHBACK_KEY, "20"),))], 1,
                 grpc.StatusCode.INVALID_ARGUMENT, id="invalid-argument-never"),
    pytest.param([(grpc.StatusCode.NOT_FOUND, ())], 1, grpc.StatusCode.NOT_FOUND, id="not-found-never"),
]


@pytest.mark.parametrize("script, attempts, outcome", CASES)
def test_blocking_client_retries(refusing, script, attempts, outcome) -> None:
    servicer, address = refusing
    servicer.script = list(script)
    with Client(settings=_settings(address), defaults={USE_CASE: "no_offer"}) as client:
        if isinstance(outcome, grpc.StatusCode):
            with pytest.raises(grpc.RpcError) as caught:
                client.decide(USE_CASE, {"basket_value": 1.0})
            assert caught.value.code() == outcome
            assert isinstance(caught.value, loopwise.LoopwiseError)
            assert caught.value.service == "decision" and caught.value.address == address
        else:
            decision = client.decide(USE_CASE, {"basket_value": 1.0})
            assert decision.fallback == (outcome == "fallback")
            assert decision.action == ("offer" if outcome == "served" else "no_offer")
    assert servicer.attempts == attempts


@pytest.mark.parametrize("script, attempts, outcome", CASES)
async def test_async_client_retries(refusing, script, attempts, outcome) -> None:
    servicer, address = refusing
    servicer.script = list(script)
    async with AsyncClient(settings=_settings(address), defaults={USE_CASE: "no_offer"}) as client:
        if isinstance(outcome, grpc.StatusCode):
            with pytest.raises(grpc.RpcError) as caught:
                await client.decide(USE_CASE, {"basket_value": 1.0})
            assert caught.value.code() == outcome
            assert isinstance(caught.value, loopwise.LoopwiseError)
        else:
            decision = await client.decide(USE_CASE, {"basket_value": 1.0})
            assert decision.fallback == (outcome == "fallback")
    assert servicer.attempts == attempts




def test_failures_raise_the_typed_error_of_their_code(refusing) -> None:
    servicer, address = refusing
    details = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="scripted INVALID_ARGUMENT")
    packed = any_pb2.Any()
    packed.Pack(error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field="use_case", description="required")]))
    details.details.append(packed)
    servicer.script = [(grpc.StatusCode.INVALID_ARGUMENT, ((STATUS_DETAILS_KEY, details.SerializeToString()),)),
                       (grpc.StatusCode.NOT_FOUND, ()), (grpc.StatusCode.PERMISSION_DENIED, ()),
                       (grpc.StatusCode.UNAUTHENTICATED, ()), (RE, ()), (grpc.StatusCode.DATA_LOSS, ())]
    with Client(settings=_settings(address), retries=0) as client:
        raised = []
        for _ in range(6):
            with pytest.raises(loopwise.LoopwiseError) as caught:
                client.get_use_case(USE_CASE)
            raised.append(caught.value)
    assert [type(e) for e in raised] == [loopwise.InvalidArgument, loopwise.NotFound, loopwise.PermissionDenied,
                                         loopwise.Unauthenticated, loopwise.ResourceExhausted, loopwise.LoopwiseError]
    assert [e.code() for e in raised[:2]] == [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND]
    assert raised[0].field_violations == [("use_case", "required")]
    assert raised[0].details() == "scripted INVALID_ARGUMENT" and "decision at" in str(raised[0])
    assert raised[1].field_violations == [] and raised[4].retry_after is None
    assert all(isinstance(e, grpc.RpcError) and e.service == "decision" and e.address == address
               and e.method == "GetUseCase" for e in raised)
    assert raised[5].code() == grpc.StatusCode.DATA_LOSS


def test_error_classes_share_their_codes_with_the_servers_exceptions() -> None:
    """One name, one code: the SDK's class of a code has the name of the server side's
    exception of that code (loopwise.errors, loopwise.auth)."""
    from loopwise import auth, client_errors, errors

    server_side = {cls.__name__: cls.code for module in (errors, auth) for cls in vars(module).values()
                   if isinstance(cls, type) and issubclass(cls, errors.LoopwiseError) and cls is not errors.LoopwiseError
                   and cls.__module__ == module.__name__ and "code" in vars(cls)}
    assert len(server_side) >= 8
    for name in client_errors.__all__:
        cls = getattr(client_errors, name)
        if isinstance(cls, type) and cls is not client_errors.LoopwiseError:
            assert client_errors.error_class(cls.status_code) is cls
            if name in server_side:
                assert server_side[name] == cls.status_code, name
    missing = {name for name, code in server_side.items() if client_errors.error_class(code).__name__ != name}
    assert missing == set(), missing


def test_service_config_holds_the_retry_policy_and_round_robin() -> None:
    config = json.loads(_service_config(2))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = config["methodConfig"]
    assert method["retryPolicy"]["maxAttempts"] == 3
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert json.loads(_service_config(9))["methodConfig"][0]["retryPolicy"]["maxAttempts"] == 5
    assert "methodConfig" not in json.loads(_service_config(0))


def test_no_retry_when_retries_is_zero(refusing) -> None:
    servicer, address = refusing
    servicer.script = [(UNAVAILABLE, ())]
    with Client(settings=_settings(address), retries=0, defaults={USE_CASE: "no_offer"}) as client:
        assert client.decide(USE_CASE, {"basket_value": 1.0}).fallback
    assert servicer.attempts == 1


def test_grpc_waits_the_unavailable_pushback(refusing) -> None:
    servicer, address = refusing
    servicer.script = [(UNAVAILABLE, ((PUSHBACK_KEY, "300"),))]
    with Client(settings=_settings(address)) as client:
        assert not client.decide(USE_CASE, {"basket_value": 1.0}).fallback
    assert servicer.attempts == 2
    assert servicer.times[1] - servicer.times[0] >= 0.29


def test_the_deadline_bounds_the_retries(refusing) -> None:
    servicer, address = refusing
    servicer.script = [(UNAVAILABLE, ((PUSHBACK_KEY, "5000"),))]
    with Client(settings=_settings(address)) as client:
        started = time.monotonic()
        with pytest.raises(loopwise.DeadlineExceeded):
            client.get_use_case(USE_CASE, timeout=0.5)
        assert time.monotonic() - started < 1.5
    assert servicer.calls == {"GetUseCase": 1}


def test_resource_exhausted_beyond_the_deadline_gives_up_at_once(refusing) -> None:
    servicer, address = refusing
    servicer.script = [(RE, ((PUSHBACK_KEY, "5000"),))]
    with Client(settings=_settings(address)) as client:
        started = time.monotonic()
        with pytest.raises(loopwise.ResourceExhausted) as caught:
            client.get_use_case(USE_CASE, timeout=2.0)
        assert time.monotonic() - started < 1.0
    assert caught.value.retry_after == pytest.approx(5.0)


def test_requests_larger_than_grpcs_default_retry_buffer_are_retried(refusing) -> None:
    servicer, address = refusing
    servicer.script = [(UNAVAILABLE, ())]
    with Client(settings=_settings(address)) as client:
        decision = client.decide(USE_CASE, {"basket_value": 1.0}, unit_id="u" * 400_000)
    assert not decision.fallback and servicer.attempts == 2


def test_round_robin_over_a_list_is_kept_with_the_retry_policy() -> None:
    servers = [_serve() for _ in range(2)]
    try:
        for servicer, _, _ in servers:
            servicer.script = [(UNAVAILABLE, ())]
        addresses = ",".join(address for _, address, _ in servers)
        results = []
        with Client(settings=_settings(addresses)) as client:
            # round robin picks among the connections that are ready: until both are,
            # calls may all go to one
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not all(servicer.attempts >= 2 for servicer, _, _ in servers):
                results.append(client.decide(USE_CASE, {"basket_value": 1.0}))
                time.sleep(0.01)
        assert not any(d.fallback for d in results)  # the UNAVAILABLEs were retried
        seen = [(servicer.attempts, servicer.calls, len(servicer.script)) for servicer, _, _ in servers]
        assert all(servicer.attempts >= 2 for servicer, _, _ in servers), (seen, len(results))  # both were called
        assert all(not servicer.script for servicer, _, _ in servers)
    finally:
        for _, _, server in servers:
            server.stop(0).wait()


class _Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, *trailers: tuple[str, object]) -> None:
        self._code = code
        self._trailers = trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def trailing_metadata(self):
        return self._trailers


def test_retry_delay_waits_at_least_the_pushback_of_resource_exhausted_only() -> None:
    for _ in range(200):
        delay = _retry_delay(_Failed(RE, (PUSHBACK_KEY, "100")), 0, 2, left=10.0)
        assert 0.1 <= delay <= 0.15
        delay = _retry_delay(_Failed(RE, _retry_info(0.2)), 1, 2, left=10.0)
        assert 0.2 <= delay <= 0.3
    assert _retry_delay(_Failed(UNAVAILABLE), 0, 2, left=10.0) is None  # gRPC's retry policy's
    assert _retry_delay(_Failed(RE, (PUSHBACK_KEY, "1")), 2, 2, left=10.0) is None  # retries used up
    assert _retry_delay(_Failed(RE, (PUSHBACK_KEY, "100")), 0, 2, left=0.09) is None  # no time left
    assert _retry_delay(_Failed(RE, (PUSHBACK_KEY, "-5")), 0, 2, left=10.0) is None
    assert _retry_delay(_Failed(RE, (PUSHBACK_KEY, "later")), 0, 2, left=10.0) is None
    assert _retry_delay(_Failed(RE), 0, 2, left=10.0) is None
    for code in grpc.StatusCode:
        if code != RE:
            assert _retry_delay(_Failed(code, (PUSHBACK_KEY, "1")), 0, 2, left=10.0) is None, code
