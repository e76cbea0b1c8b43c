"""The evaluator's report store contract, on SQLite and on Cassandra: results, HTML and
estimators (several MiB, chunked), listings newest first; and the evaluator service
serving a stored report from the backend."""

from __future__ import annotations

import asyncio
import os

import grpc
import pytest

from loopwise.clock import Clock
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.evaluator.v1 import evaluator_service_pb2_grpc as egrpc
from loopwise.store.evaluator import open_evaluator_store
from tests.contract.backends import BACKENDS, backend_url, store_settings, unique


@pytest.fixture(scope="module", params=BACKENDS)
def url(request, tmp_path_factory) -> str:
    return backend_url(request, tmp_path_factory, "evaluator")


@pytest.fixture(scope="module")
def opened(url, tmp_path_factory):
    store = open_evaluator_store(store_settings("evaluator", url, tmp_path_factory))
    yield store
    store.close()


@pytest.fixture
def store(opened):
    return opened.reports


@pytest.fixture
def clock(make_settings) -> Clock:
    return Clock.from_settings(make_settings())


def result(clock: Clock, use_case: str, ate: float = 0.1) -> epb.EstimateEffectsResult:
    return epb.EstimateEffectsResult(report_id=clock.new_id(), use_case=use_case, ate=ate)


async def test_save_and_read_back_large_blobs(store, clock) -> None:
    uc = unique()
    html = b"<html>" + os.urandom(3 * 1024 * 1024 + 17) + b"</html>"
    estimator = os.urandom(2 * 1024 * 1024)
    saved = result(clock, uc, ate=0.25)
    await store.save(saved, html, estimator)
    got = await store.get(saved.report_id)
    assert got is not None and got.result == saved and got.html == html
    assert await store.get_estimator(saved.report_id) == estimator
    small = result(clock, uc)
    await store.save(small, b"", b"e")
    assert (await store.get(small.report_id)).html == b""
    assert await store.get_estimator(small.report_id) == b"e"
    unknown = clock.new_id()
    assert await store.get(unknown) is None and await store.get_estimator(unknown) is None


async def test_save_replaces_a_report(store, clock) -> None:
    saved = result(clock, unique(), ate=1.0)
    await store.save(saved, b"old", b"old")
    saved.ate = 2.0
    await store.save(saved, b"new", b"new")
    got = await store.get(saved.report_id)
    assert got.result.ate == 2.0 and got.html == b"new"
    assert await store.get_estimator(saved.report_id) == b"new"
    assert [r.ate for r in await store.list(saved.use_case, 10)] == [2.0]


async def test_list_newest_first_per_use_case_and_all(store, clock) -> None:
    a, b = unique("a"), unique("b")
    saved = []
    for i in range(5):
        saved.append(result(clock, a if i % 2 == 0 else b, ate=i))
        await store.save(saved[-1], b"h", b"e")
        await asyncio.sleep(0.002)
    assert [r.ate for r in await store.list(a, 10)] == [4, 2, 0]
    assert [r.ate for r in await store.list(a, 2)] == [4, 2]
    assert [r.ate for r in await store.list(b, 10)] == [3, 1]
    everything = [r.ate for r in await store.list("", 1000) if r.use_case in (a, b)]
    assert everything == [4, 3, 2, 1, 0]
    newest = await store.list("", 2)
    assert [r.report_id for r in newest] == sorted((r.report_id for r in newest), reverse=True)
    assert await store.list(unique(), 10) == []


async def test_evaluator_service_serves_reports_from_the_backend(url, store, clock, make_settings) -> None:
    """Smoke: the evaluator started on the backend serves a stored report and lists it."""
    from loopwise.common.v1 import operation_pb2 as op_pb
    from loopwise.services.evaluator.server import start_server

    uc = unique("smoke")
    saved = result(clock, uc, ate=0.5)
    await store.save(saved, b"<html>report</html>", b"pickled")
    settings = make_settings(evaluator_store_url=url)
    host = await start_server(settings)
    try:
        async with grpc.aio.insecure_channel(settings.evaluator_address) as channel:
            stub = egrpc.EvaluatorServiceStub(channel)
            got = await stub.GetReport(epb.GetReportRequest(report_id=saved.report_id))
            assert got.result == saved and got.html == b"<html>report</html>"
            listed = await stub.ListReports(epb.ListReportsRequest(use_case=uc))
            assert [r.report_id for r in listed.reports] == [saved.report_id]
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetReport(epb.GetReportRequest(report_id=clock.new_id()))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            await stub.ListOperations(op_pb.ListOperationsRequest(use_case=uc))
    finally:
        await host.stop(0)
