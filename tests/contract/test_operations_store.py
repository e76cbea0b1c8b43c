"""The operation store's contract, on SQLite and on Cassandra: save/get/find/list, job
leases, and "one job per use case" across two runners sharing the store."""

from __future__ import annotations

import asyncio

import pytest

from loopwise.clock import Clock
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.errors import FailedPrecondition
from loopwise.operations import OperationRunner
from loopwise.store.trainer import open_trainer_store
from tests.contract.backends import BACKENDS, backend_url, store_settings, unique


@pytest.fixture(scope="module", params=BACKENDS)
def url(request, tmp_path_factory) -> str:
    return backend_url(request, tmp_path_factory, "operations")


@pytest.fixture(scope="module")
def opened(url, tmp_path_factory):
    store = open_trainer_store(store_settings("trainer", url, tmp_path_factory))
    yield store
    store.close()


@pytest.fixture
def store(opened):
    return opened.operations


def operation(clock: Clock, use_case: str, request_id: str = "", state=op_pb.OPERATION_STATE_RUNNING) -> op_pb.Operation:
    return op_pb.Operation(id=clock.new_id(), kind="training", use_case=use_case, state=state,
                           request_id=request_id, stage="fitting")


@pytest.fixture
def clock(make_settings) -> Clock:
    return Clock.from_settings(make_settings())


async def test_save_get_find_and_replace(store, clock) -> None:
    uc = unique()
    op = operation(clock, uc, "req-" + uc)
    await store.save(op)
    assert await store.get(op.id) == op
    assert await store.find_by_request_id("req-" + uc) == op
    op.state = op_pb.OPERATION_STATE_SUCCEEDED
    op.progress = 1.0
    await store.save(op)
    assert (await store.get(op.id)).state == op_pb.OPERATION_STATE_SUCCEEDED
    assert (await store.find_by_request_id("req-" + uc)).progress == 1.0
    assert await store.get(clock.new_id()) is None
    assert await store.find_by_request_id("nope-" + uc) is None


async def test_list_newest_first_per_use_case_and_all(store, clock) -> None:
    a, b = unique("a"), unique("b")
    ops = []
    for i in range(5):
        ops.append(operation(clock, a if i % 2 == 0 else b))
        await store.save(ops[-1])
        await asyncio.sleep(0.002)
    newest_first = [o.id for o in reversed(ops)]
    assert [o.id for o in await store.list(a, 10, "")] == [o.id for o in reversed(ops) if o.use_case == a]
    assert [o.id for o in await store.list(a, 2, "")] == [ops[4].id, ops[2].id]
    assert [o.id for o in await store.list(a, 10, ops[4].id)] == [ops[2].id, ops[0].id]
    everything = [o.id for o in await store.list("", 1000, "") if o.use_case in (a, b)]
    assert everything == newest_first
    page = await store.list("", 3, ops[4].id)
    assert [o.id for o in page][:1] == [ops[3].id] and all(o.id < ops[4].id for o in page)
    assert len(page) == 3


async def test_leases_one_holder_until_released(store) -> None:
    name = "training/" + unique()
    assert await store.lease_holder(name) is None
    assert await store.acquire_lease(name, "op-1", 30)
    assert await store.acquire_lease(name, "op-1", 30)  # the holder again
    assert not await store.acquire_lease(name, "op-2", 30)
    assert await store.lease_holder(name) == "op-1"
    assert await store.renew_lease(name, "op-1", 30)
    assert not await store.renew_lease(name, "op-2", 30)
    await store.release_lease(name, "op-2")  # not the holder: no effect
    assert await store.lease_holder(name) == "op-1"
    await store.release_lease(name, "op-1")
    assert await store.lease_holder(name) is None
    assert await store.acquire_lease(name, "op-2", 30)


async def test_concurrent_acquirers_exactly_one_wins(opened, url, tmp_path_factory) -> None:
    other = open_trainer_store(store_settings("trainer", url, tmp_path_factory))
    try:
        name = "training/" + unique()
        won = await asyncio.gather(*(s.acquire_lease(name, f"op-{i}", 30)
                                     for i, s in enumerate([opened.operations, other.operations] * 3)))
        assert sum(won) == 1
        assert await other.operations.lease_holder(name) == f"op-{won.index(True)}"
    finally:
        other.close()


async def test_a_lease_lapses_after_its_ttl(store) -> None:
    name = "training/" + unique()
    assert await store.acquire_lease(name, "op-1", 1)
    await asyncio.sleep(2.2)
    assert await store.lease_holder(name) is None
    assert await store.acquire_lease(name, "op-2", 30)


async def test_one_exclusive_job_per_use_case_across_runners(opened, url, tmp_path_factory, clock) -> None:
    """Two runners (two trainer processes) on one store: the second is refused while
    the first job runs, and may start once it ended (the lease is released)."""
    other = open_trainer_store(store_settings("trainer", url, tmp_path_factory))
    first, second = (OperationRunner(opened.operations, clock, "training"),
                     OperationRunner(other.operations, clock, "training"))
    release = asyncio.Event()

    async def job(progress):
        await release.wait()
        return op_pb.Operation()

    try:
        uc = unique()
        running = await first.start(uc, "", job, exclusive=True)
        with pytest.raises(FailedPrecondition, match="another process"):
            await second.start(uc, "", job, exclusive=True)
        assert await opened.operations.lease_holder(first.lease_name(uc)) == running.id
        # A restarting runner leaves a job whose lease is held alone.
        await second.recover()
        assert (await other.operations.get(running.id)).state == op_pb.OPERATION_STATE_RUNNING
        release.set()
        done = await first.wait(running.id)
        assert done.state == op_pb.OPERATION_STATE_SUCCEEDED
        assert await opened.operations.lease_holder(first.lease_name(uc)) is None
        release.clear()
        again = await second.start(uc, "", job, exclusive=True)
        release.set()
        assert (await second.wait(again.id)).state == op_pb.OPERATION_STATE_SUCCEEDED
    finally:
        await first.close()
        await second.close()
        other.close()
