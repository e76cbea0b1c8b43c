"""Job durations and job spans: observe_jobs around a real OperationRunner (SQLite)."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from loopwise import tracing
from loopwise.clock import Clock
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.errors import FailedPrecondition
from loopwise.metrics import Registry, observe_jobs, parse_text, render
from loopwise.operations import OperationRunner
from loopwise.store.operations import SqliteOperationStore
from loopwise.store.sqlite import SqliteDatabase
from loopwise.trainer.v1 import trainer_service_pb2 as tpb

State = op_pb.OperationState


async def _ok(progress) -> tpb.TrainingResult:
    await asyncio.sleep(0.05)
    model = tpb.Model(use_case="uc", version=3)
    model.data_start_time.FromMilliseconds(1_700_000_000_000)
    model.data_end_time.FromMilliseconds(1_700_086_400_000)
    return tpb.TrainingResult(model=model)


async def _bad(progress) -> op_pb.Operation:
    raise FailedPrecondition("too few rows")


async def _slow(progress) -> op_pb.Operation:
    await asyncio.sleep(3600)
    return op_pb.Operation()


async def test_job_durations_by_outcome_and_a_span_per_job(tmp_path):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    db = SqliteDatabase(tmp_path / "ops.db")
    runner = OperationRunner(SqliteOperationStore(db), Clock(), "training")
    registry = Registry()
    observe_jobs(runner, registry)
    try:
        ok = await runner.start("uc", "r1", _ok)
        bad = await runner.start("uc", "r2", _bad)
        slow = await runner.start("other", "r3", _slow)
        for operation in (ok, bad):
            await runner.wait(operation.id)
        await asyncio.sleep(0.1)
        running = parse_text(render({"0": registry.snapshot()}))
        assert running['loopwise_jobs_running{kind="training",worker="0"}'] == 1
        await runner.cancel(slow.id)
        final = await runner.wait(slow.id)
        assert final.state == State.OPERATION_STATE_CANCELLED
        assert (await runner.get(ok.id)).state == State.OPERATION_STATE_SUCCEEDED
        assert (await runner.get(bad.id)).error_message == "too few rows"
    finally:
        await runner.close()
        db.close()
        tracing.uninstall()
    samples = parse_text(render({"0": registry.snapshot()}))

    def count(use_case: str, outcome: str) -> float:
        return samples[f'loopwise_job_duration_seconds_count{{kind="training",use_case="{use_case}",'
                       f'outcome="{outcome}",worker="0"}}']

    assert count("uc", "succeeded") == 1 and count("uc", "failed") == 1 and count("other", "cancelled") == 1
    ok_sum = samples['loopwise_job_duration_seconds_sum{kind="training",use_case="uc",outcome="succeeded",worker="0"}']
    assert 0.05 <= ok_sum < 60  # it slept 50 ms
    assert samples['loopwise_jobs_running{kind="training",worker="0"}'] == 0
    spans = {s.attributes["loopwise.operation_id"]: s for s in exporter.get_finished_spans()
             if s.name == "job training"}
    assert set(spans) == {ok.id, bad.id, slow.id}
    assert spans[ok.id].attributes["loopwise.use_case"] == "uc"
    # the registered model's lineage on the job's span
    assert spans[ok.id].attributes["loopwise.model_version"] == 3
    assert spans[ok.id].attributes["loopwise.model_data_start_time"] == "2023-11-14T22:13:20Z"
    assert spans[ok.id].attributes["loopwise.model_data_end_time"] == "2023-11-15T22:13:20Z"
    assert not spans[bad.id].status.is_ok
