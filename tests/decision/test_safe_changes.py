"""Safe changes: 20+ model and blueprint swaps under a continuous client with zero
non-OK statuses; the last good models serve at a restart while the trainer is down;
corrupt artifacts (bad sha256, not ONNX, wrong input shape) keep the old model."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest_asyncio

from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.decision.helpers import (
    LoopbackTrainer,
    blueprint,
    linear_onnx,
    model_ref,
    serve,
    start_decider,
    wait_until,
)

SWAPS = 24


def constant_model(best: int, members: int = 1) -> bytes:
    b = np.zeros(3)
    b[best] = 1.0
    return linear_onnx([np.zeros((3, 3))] * members, [b] * members, n_actions=3)


@pytest_asyncio.fixture
async def served(make_settings):
    settings = make_settings(decision_log_enabled=False)
    trainer = LoopbackTrainer()
    server = await serve(trainer, tgrpc.add_TrainerServiceServicer_to_server, settings.trainer_address)
    d = await start_decider(settings)
    try:
        yield d, trainer, server
    finally:
        await d.stop()
        await server.stop(0)


async def _deploy(d, trainer, version: int, onnx: bytes, width: int = 6, **kw) -> None:
    before = d.watcher.updates
    trainer.set_deployment("offer", {version: onnx}, production=model_ref(version, onnx, width, **kw))
    await wait_until(lambda: d.watcher.updates > before)


async def test_many_swaps_under_load_without_failures(served) -> None:
    d, trainer, _ = served
    await d.apply(blueprint(kind="action_value"))
    models = {v: constant_model(v % 3) for v in range(1, SWAPS + 1)}  # version v answers a{v % 3}
    await _deploy(d, trainer, 1, models[1])
    seen: dict[int, set[str]] = {}
    blueprints: set[int] = set()
    errors: list[BaseException] = []
    stop = asyncio.Event()
    count = 0

    async def client() -> None:
        nonlocal count
        while not stop.is_set():
            try:
                dec = await d.decide()
                seen.setdefault(dec.model_version, set()).add(dec.action)
                blueprints.add(dec.blueprint_version)
                count += 1
            except grpc.aio.AioRpcError as exc:
                errors.append(exc)

    tasks = [asyncio.ensure_future(client()) for _ in range(3)]
    for v in range(2, SWAPS + 1):
        await _deploy(d, trainer, v, models[v])
        if v % 4 == 0:  # a new blueprint version swaps in too
            b = blueprint(kind="action_value")
            b.description = f"v{v}"
            await d.apply(b)
        mark = count
        await wait_until(lambda mark=mark: count > mark + 3)
    stop.set()
    await asyncio.gather(*tasks)
    assert not errors, errors[:3]
    assert d.watcher.failures == 0 and len(seen) >= SWAPS - 1
    for version, actions in seen.items():  # every answer came from exactly the model that served it
        assert actions == {f"a{version % 3}"}, (version, actions)
    assert 0 not in seen and len(blueprints) >= 5


async def test_cached_models_serve_while_the_trainer_is_down(served, make_settings) -> None:
    d, trainer, server = served
    await d.apply(blueprint(kind="action_value"))
    await _deploy(d, trainer, 7, constant_model(1))
    settings = d.settings
    await d.stop()
    await server.stop(0)  # trainer unreachable from now on
    d2 = await start_decider(settings)
    try:
        assert "offer" in d2.watcher.scorers  # restored before serving, without the trainer
        dec = await d2.decide()
        assert dec.model_version == 7 and dec.action == "a1" and not dec.fallback
    finally:
        await d2.stop()
    d.host = d2.host  # the fixture's stop is then a no-op on a stopped host


async def test_corrupt_artifacts_are_rejected_and_the_old_model_serves(served) -> None:
    d, trainer, _ = served
    await d.apply(blueprint(kind="action_value"))
    await _deploy(d, trainer, 1, constant_model(2))
    good = constant_model(0)
    before = d.watcher.updates
    trainer.set_deployment("offer", {2: good}, production=model_ref(2, good, 6).__class__(
        version=2, sha256="0" * 64, input_width=6, score_output="variable", blueprint_version=1))
    await wait_until(lambda: d.watcher.updates > before)  # bad sha256
    await _deploy(d, trainer, 3, b"\x08\x01garbage")  # not ONNX
    await _deploy(d, trainer, 4, linear_onnx([np.zeros(5)], [np.zeros(1)], n_features=5))  # wrong input shape
    await _deploy(d, trainer, 5, good, width=6, score_output="no_such_output")  # unknown output
    assert d.watcher.failures == 4
    dec = await d.decide()
    assert dec.model_version == 1 and dec.action == "a2"
    cached = sorted(p.name for p in (d.settings.data_dir / "decision" / "models").iterdir())
    assert "offer-v1.onnx" in cached and "offer-v3.onnx" in cached  # v3 passed sha256, failed to load
    assert "offer-v2.onnx" not in cached
