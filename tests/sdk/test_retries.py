"""The SDK's retries (``_call`` of Client and AsyncClient): UNAVAILABLE and
RESOURCE_EXHAUSTED with retry pushback are retried within the call's deadline, waiting
at least the pushback; a server that says not to retry, RESOURCE_EXHAUSTED without
pushback and every other code are never retried; ``decide`` falls back to the default
when the service sheds load."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from loopwise.admission import PUSHBACK_KEY, STATUS_DETAILS_KEY
from loopwise.client import AsyncClient, Client, _retry_delay
from loopwise.clock import Clock
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
        self.attempts = 0
        self.clock = Clock()
        self._lock = threading.Lock()

    def Decide(self, request, context):  # noqa: N802
        with self._lock:
            self.attempts += 1
            refusal = self.script.pop(0) if self.script else None
        if refusal is not None:
            code, trailers = refusal
            context.set_trailing_metadata(trailers)
            context.abort(code, f"scripted {code.name}")
        return dpb.DecideResponse(decision=dpb.Decision(
            decision_id=self.clock.new_id(), use_case=request.use_case, action="offer", action_index=1,
            action_probabilities=[0.0, 1.0]))


@pytest.fixture
def refusing() -> Iterator[tuple[Refusing, str]]:
    servicer = Refusing()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)])
    dgrpc.add_DecisionServiceServicer_to_server(servicer, server)
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    server.start()
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
        else:
            decision = await client.decide(USE_CASE, {"basket_value": 1.0})
            assert decision.fallback == (outcome == "fallback")
    assert servicer.attempts == attempts


class _Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, *trailers: tuple[str, object]) -> None:
        self._code = code
        self._trailers = trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def trailing_metadata(self):
        return self._trailers


def test_retry_delay_waits_at_least_the_pushback_and_backs_off_with_jitter() -> None:
    for _ in range(200):
        delay = _retry_delay(_Failed(RE, (PUSHBACK_KEY, "100")), 0, 2, left=10.0)
        assert 0.1 <= delay <= 0.15
        delay = _retry_delay(_Failed(RE, _retry_info(0.2)), 1, 2, left=10.0)
        assert 0.2 <= delay <= 0.3
        first = _retry_delay(_Failed(UNAVAILABLE), 0, 2, left=10.0)
        second = _retry_delay(_Failed(UNAVAILABLE), 1, 2, left=10.0)
        assert 0.025 <= first <= 0.05 and 0.05 <= second <= 0.1
    assert _retry_delay(_Failed(UNAVAILABLE), 2, 2, left=10.0) is None  # retries used up
    assert _retry_delay(_Failed(RE, (PUSHBACK_KEY, "100")), 0, 2, left=0.09) is None  # no time left
    assert _retry_delay(_Failed(RE, (PUSHBACK_KEY, "-5")), 0, 2, left=10.0) is None
    assert _retry_delay(_Failed(RE, (PUSHBACK_KEY, "later")), 0, 2, left=10.0) is None
    assert _retry_delay(_Failed(RE), 0, 2, left=10.0) is None
    for code in grpc.StatusCode:
        if code not in (RE, UNAVAILABLE):
            assert _retry_delay(_Failed(code, (PUSHBACK_KEY, "1")), 0, 2, left=10.0) is None, code
