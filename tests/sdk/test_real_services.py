"""The SDK against the real decision service (a process on a free loopback port)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from loopwise.client import AsyncClient, Client
from loopwise.launcher import Launcher
from loopwise.simulator import CheckoutUpsell
from tests.support import launcher_settings, new_launcher


@pytest.fixture(scope="module")
def decision(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    """The real decision service; the feedback service is not needed for decisions."""
    launcher = new_launcher(tmp_path_factory.mktemp("sdk") / "var")
    try:
        launcher.start("decision")
        yield launcher
    finally:
        launcher.stop_all()


def test_decide_explores_uniformly_before_any_model(decision: Launcher) -> None:
    world = CheckoutUpsell(seed=11)
    settings = launcher_settings(decision)
    with Client(settings=settings, deadline_s=5) as client:
        version = client.apply_use_case(world.blueprint()).use_case.version
        units = world.sample_units(40)
        decisions = [client.decide(world.use_case, units.features(i), unit_id=f"u{i}")
                     for i in range(len(units))]
        matrix = units.matrix.copy()
        matrix[0, -1] = -1  # an unknown region code
        batch = client.decide_batch(world.use_case, version, list(world.feature_names), matrix)
    for d in decisions:
        assert uuid.UUID(d.decision_id).version == 7
        assert not d.fallback and d.explored and d.model_version == 0
        assert d.probabilities == {"no_offer": pytest.approx(0.5), "offer": pytest.approx(0.5)}
        assert d.action in world.actions and d.blueprint_version == version
    assert {d.action for d in decisions} == set(world.actions)
    assert len(batch) == 40 and batch.actions == list(world.actions)
    assert not batch.fallback.any() and batch.explored.all()
    np.testing.assert_allclose(batch.probabilities, 0.5)
    assert len(set(batch.decision_ids)) == 40


def test_unknown_feature_value_and_use_case_errors(decision: Launcher) -> None:
    settings = launcher_settings(decision)
    with Client(settings=settings, deadline_s=5) as client:
        client.apply_use_case(CheckoutUpsell().blueprint())
        with pytest.raises(grpc.RpcError) as caught:
            client.decide("no_such_case", {"basket_value": 1.0})
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        decision = client.decide("checkout_upsell", {"basket_value": 1.0, "region": "mars"})
        assert not decision.fallback  # unknown categories are coded -1 by the blueprint's rule


def test_learned_default_serves_after_the_service_stops(tmp_path: Path) -> None:
    launcher = new_launcher(tmp_path / "var")
    settings = launcher_settings(launcher)
    try:
        launcher.start("decision")
        client = Client(settings=settings, deadline_s=5, retries=1)
        world = CheckoutUpsell(seed=2)
        client.apply_use_case(world.blueprint())
        assert not client.decide(world.use_case, world.sample_units(1).features(0)).fallback
    finally:
        launcher.stop_all()
    decision = client.decide(world.use_case, world.sample_units(1).features(0))
    client.close()
    assert decision.fallback and decision.action == "no_offer"
    assert uuid.UUID(decision.decision_id).version == 7


async def test_async_client_against_the_real_service(decision: Launcher) -> None:
    world = CheckoutUpsell(seed=12)
    async with AsyncClient(settings=launcher_settings(decision), deadline_s=5) as client:
        applied = await client.apply_use_case(world.blueprint())
        units = world.sample_units(5)
        decision_ = await client.decide(world.use_case, units.features(0))
        batch = await client.decide_batch(world.use_case, applied.use_case.version,
                                          list(world.feature_names), units.matrix)
    assert not decision_.fallback and decision_.explored
    assert len(batch) == 5 and not batch.fallback.any()
