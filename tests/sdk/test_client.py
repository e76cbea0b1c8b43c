"""The SDK against a real gRPC decision server on loopback."""

from __future__ import annotations

import time
import uuid

import grpc
import numpy as np
import pytest

import loopwise
from loopwise.client import AsyncClient, Client, DecisionUnavailable
from loopwise.clock import Clock, uuid7_time_ms
from loopwise.launcher import free_port
from loopwise.settings import Settings


def _settings(address: str, **overrides) -> Settings:
    return Settings(decision_address=address, feedback_address=f"127.0.0.1:{free_port()}",
                    client_deadline_s=2.0, client_retries=2, **overrides)


def _assert_fresh_uuid7(decision_id: str) -> None:
    assert uuid.UUID(decision_id).version == 7
    assert abs(uuid7_time_ms(decision_id) - Clock().now_ms()) < 60_000


def test_decide_returns_the_servers_decision(scripted) -> None:
    servicer, address = scripted
    with Client(settings=_settings(address)) as client:
        low = client.decide("checkout_upsell", {"basket_value": 20.0, "region": "north"}, unit_id="u1")
        high = client.decide("checkout_upsell", {"basket_value": 80, "mobile": True})
    assert (low.action, low.action_index, high.action) == ("offer", 1, "no_offer")
    assert low.probabilities == {"no_offer": pytest.approx(0.05), "offer": pytest.approx(0.95)}
    assert low.score == pytest.approx(0.2) and low.model_version == 3 and low.arm == "default"
    assert not low.fallback and low.action_scores == {"no_offer": 0.1, "offer": 0.2}
    _assert_fresh_uuid7(low.decision_id)
    # the default decision was learned once, at the first successful contact
    assert servicer.calls["GetUseCase"] == 1


def test_decide_retries_after_unavailable(scripted) -> None:
    servicer, address = scripted
    servicer.fail_next = 2
    with Client(settings=_settings(address)) as client:
        decision = client.decide("checkout_upsell", {"basket_value": 10.0})
    assert not decision.fallback and decision.action == "offer"
    assert servicer.calls["Decide"] == 3


def test_other_errors_are_not_retried_and_raise(scripted) -> None:
    servicer, address = scripted
    with Client(settings=_settings(address)) as client, pytest.raises(grpc.RpcError) as caught:
        client.decide("unknown_case", {"basket_value": 10.0})
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert servicer.calls["Decide"] == 1


def test_fallback_to_learned_default_when_the_service_is_gone(scripted) -> None:
    servicer, address = scripted
    client = Client(settings=_settings(address))
    assert client.decide("checkout_upsell", {"basket_value": 10.0}).action == "offer"
    servicer.fail_next = 10  # outage longer than the retries
    decision = client.decide("checkout_upsell", {"basket_value": 10.0})
    client.close()
    assert decision.fallback and decision.action == "no_offer" and decision.action_index == 0
    assert decision.probabilities == {"no_offer": 1.0, "offer": 0.0}
    assert decision.score == pytest.approx(0.25) and decision.model_version == 0
    assert servicer.calls["Decide"] == 1 + 3  # one success, then 1 + 2 retries
    _assert_fresh_uuid7(decision.decision_id)


def test_fallback_when_nothing_listens_uses_the_given_default() -> None:
    address = f"127.0.0.1:{free_port()}"
    with Client(settings=_settings(address, clock_anchor=Clock().now(), clock_speed=60.0),
                defaults={"checkout_upsell": "no_offer"}) as client:
        decision = client.decide("checkout_upsell", {"basket_value": 10.0})
        batch = client.decide_batch("checkout_upsell", 1, ["basket_value"], np.ones((3, 1)))
    assert decision.fallback and decision.action == "no_offer"
    assert uuid.UUID(decision.decision_id).version == 7
    assert batch.fallback.all() and batch.chosen == ["no_offer"] * 3
    assert len(set(batch.decision_ids)) == 3


def test_raises_when_unreachable_and_no_default_is_known() -> None:
    with Client(settings=_settings(f"127.0.0.1:{free_port()}"), retries=0) as client:
        with pytest.raises(DecisionUnavailable, match="checkout_upsell"):
            client.decide("checkout_upsell", {"basket_value": 10.0})


def test_deadline_exceeded_falls_back(scripted) -> None:
    servicer, address = scripted
    servicer.delay_s = 0.5
    with Client(settings=_settings(address), deadline_s=0.1,
                defaults={"checkout_upsell": "no_offer"}) as client:
        decision = client.decide("checkout_upsell", {"basket_value": 10.0})
    assert decision.fallback and decision.action == "no_offer"


def test_decide_batch_packs_float32_little_endian(scripted) -> None:
    servicer, address = scripted
    matrix = np.array([[10.0, 1.0, np.nan], [70.5, 0.0, 2.0], [49.0, 3.0, -1.0]])
    with Client(settings=_settings(address)) as client:
        batch = client.decide_batch("checkout_upsell", 2, ["basket_value", "mobile", "region"],
                                    matrix, unit_ids=["a", "b", "c"])
    sent = servicer.batches[-1]
    assert sent.dtype == np.dtype("<f4") and sent.shape == (3, 3)
    np.testing.assert_array_equal(sent, matrix.astype(np.float32))
    assert len(batch) == 3 and batch.chosen == ["offer", "no_offer", "offer"]
    np.testing.assert_array_equal(batch.action_indices, [1, 0, 1])
    np.testing.assert_allclose(batch.scores[1:], [72.5, 51.0])
    assert np.isnan(batch.scores[0])
    assert batch.probabilities.shape == (3, 2) and batch.probabilities[0, 1] == pytest.approx(0.9)
    assert not batch.fallback.any() and batch.blueprint_version == 2
    with Client(settings=_settings(address)) as client, pytest.raises(ValueError):
        client.decide_batch("checkout_upsell", 2, ["basket_value"], matrix)


async def test_async_client_basics(scripted) -> None:
    servicer, address = scripted
    servicer.fail_next = 1
    async with AsyncClient(settings=_settings(address)) as client:
        decision = await client.decide("checkout_upsell", {"basket_value": 30.0})
        batch = await client.decide_batch("checkout_upsell", 2, ["basket_value"],
                                          np.array([[10.0], [90.0]]))
        servicer.fail_next = 10
        fallback = await client.decide("checkout_upsell", {"basket_value": 30.0})
    assert decision.action == "offer" and not decision.fallback
    assert servicer.calls["Decide"] == 2 + 3
    assert batch.chosen == ["offer", "no_offer"]
    assert fallback.fallback and fallback.action == "no_offer"
    _assert_fresh_uuid7(fallback.decision_id)
    async with AsyncClient(settings=_settings(f"127.0.0.1:{free_port()}"), retries=0) as client:
        with pytest.raises(DecisionUnavailable):
            await client.decide("checkout_upsell", {"basket_value": 1.0})


def test_timeout_replaces_the_default_deadline_of_one_call(scripted) -> None:
    servicer, address = scripted
    servicer.delay_s = 0.4
    with Client(settings=_settings(address), deadline_s=0.1,
                defaults={"checkout_upsell": "no_offer"}) as client:
        assert client.decide("checkout_upsell", {"basket_value": 10.0}).fallback  # 0.1 s
        served = client.decide("checkout_upsell", {"basket_value": 10.0}, timeout=5)
        assert not served.fallback and served.action == "offer"
        started = time.monotonic()
        with pytest.raises(loopwise.DeadlineExceeded) as caught:
            client.get_use_case("checkout_upsell", timeout=0.1)  # bulk calls default to 30 s
        assert time.monotonic() - started < 0.35
        assert isinstance(caught.value, grpc.RpcError) and caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        with pytest.raises(ValueError):
            client.get_use_case("checkout_upsell", timeout=0)
