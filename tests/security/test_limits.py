"""Input limits and rate limits on a real decision service: each limit answers with
its own status naming the field, before any work is done."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.errors import InvalidArgument, field_violations
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.limits import InputLimits, TokenBuckets
from loopwise.settings import Settings
from loopwise.tensors import F32, pack
from tests.decision.helpers import blueprint, features, start_decider
from tests.security.helpers import TokensFile, bearer

LIMITS = dict(max_string_bytes=64, max_features=5, max_candidates=3, max_batch_rows=10,
              max_blueprint_bytes=2048)


async def _violation(call) -> list[tuple[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
    return field_violations(err.value)


async def test_input_limits_name_the_field_before_any_work(make_settings) -> None:
    d = await start_decider(make_settings(decision_log_enabled=False, **LIMITS))
    try:
        long_name = "u" * 65
        assert (await _violation(d.stub.Decide(dpb.DecideRequest(use_case=long_name))))[0][0] == "use_case"
        many = {f"f{i}": dpb.FeatureValue(number=1.0) for i in range(6)}
        fields = await _violation(d.stub.Decide(dpb.DecideRequest(use_case="offer", features=many)))
        assert fields[0][0] == "features" and "limit of 5" in fields[0][1]
        key = {"k" * 100: dpb.FeatureValue(number=1.0)}
        fields = await _violation(d.stub.Decide(dpb.DecideRequest(use_case="offer", features=key)))
        assert fields[0][0].startswith("features[")
        candidates = [dpb.Candidate(id=str(i)) for i in range(4)]
        fields = await _violation(d.stub.Decide(dpb.DecideRequest(use_case="offer", candidates=candidates)))
        assert fields[0][0] == "candidates"
        rows = np.zeros((11, 3), dtype=np.float32)
        batch = dpb.DecideBatchRequest(use_case="offer", blueprint_version=1, rows=11,
                                       feature_names=["x", "y", "country"], features=pack(rows, F32))
        assert (await _violation(d.stub.DecideBatch(batch)))[0][0] == "rows"
        big = blueprint("offer")
        big.description = "d" * 60
        for i in range(60):
            big.features.add(name=f"extra_{i:03d}", description="x" * 40)
        fields = await _violation(d.stub.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=big)))
        assert fields[0][0] == "blueprint" and "2048" in fields[0][1]
        # Nothing was done: the oversized blueprint was never stored.
        listed = await d.stub.ListUseCases(dpb.ListUseCasesRequest())
        assert [u.blueprint.use_case for u in listed.use_cases] == []
        # Within the limits the same service works.
        await d.apply(blueprint("offer"))
        reply = await d.stub.Decide(dpb.DecideRequest(use_case="offer", unit_id="u", features=features()))
        assert reply.decision.decision_id
    finally:
        await d.stop()


def test_limits_cover_feedback_batches() -> None:
    limits = InputLimits(max_string_bytes=64, max_batch_rows=2, max_features=5, max_candidates=3,
                         max_blueprint_bytes=1024)
    request = fpb.LogOutcomesRequest(outcomes=[fpb.Outcome(use_case="uc") for _ in range(3)])
    with pytest.raises(InvalidArgument) as err:
        limits.check(request)
    assert err.value.violations[0][0] == "outcomes"
    nested = fpb.LogOutcomesRequest(outcomes=[fpb.Outcome(use_case="uc", outcome_id="o" * 65)])
    with pytest.raises(InvalidArgument) as err:
        limits.check(nested)
    assert err.value.violations[0][0] == "outcomes[0].outcome_id"
    limits.check(fpb.LogOutcomesRequest(outcomes=[fpb.Outcome(use_case="uc")] * 2))


def test_limits_cover_outcome_columns() -> None:
    """Columns are limited like messages: entries per column, and each string, wherever
    it is in its column (a long string in a column of short ones, multi-byte text)."""
    limits = InputLimits(max_string_bytes=64, max_batch_rows=3, max_features=5, max_candidates=3,
                         max_blueprint_bytes=1024)
    names = ["buy", "buy", "é" * 33]  # 33 characters, 66 bytes
    columns = fpb.OutcomeColumns(use_case="uc", decision_ids=["d"] * 3, outcome_ids=["o1", "o2", "o3"],
                                 names=names, values=[1.0, 2.0, 3.0], event_times_ms=[1, 2, 3])
    with pytest.raises(InvalidArgument) as err:
        limits.check(fpb.LogOutcomesRequest(columns=[columns]))
    assert [field for field, _ in err.value.violations] == ["columns[0].names[2]"]
    columns.names[2] = "é" * 32  # 64 bytes: at the limit
    limits.check(fpb.LogOutcomesRequest(columns=[columns]))
    columns.values.append(4.0)
    with pytest.raises(InvalidArgument) as err:
        limits.check(fpb.LogOutcomesRequest(columns=[columns]))
    assert [field for field, _ in err.value.violations] == ["columns[0].values"]
    # A packed varint entry takes one byte: a small message can still hold too many.
    wide = InputLimits(max_string_bytes=8192, max_batch_rows=100, max_features=1000, max_candidates=1000,
                       max_blueprint_bytes=256 * 1024)
    packed = fpb.LogOutcomesRequest(columns=[fpb.OutcomeColumns(event_times_ms=[0] * 180)])
    assert packed.ByteSize() < 2 * wide.max_batch_rows
    with pytest.raises(InvalidArgument) as err:
        wide.check(packed)
    assert [field for field, _ in err.value.violations] == ["columns[0].event_times_ms"]


def _retry_delay(error: grpc.aio.AioRpcError) -> float:
    status = rpc_status.from_call(error)
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    raise AssertionError("no RetryInfo detail")


async def _code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_rate_limit_per_client(make_settings, tmp_path) -> None:
    tokens = TokensFile(tmp_path / "tokens.yaml")
    one = tokens.add("client-one", {"*": ["decide"]})
    two = tokens.add("client-two", {"*": ["decide"]})
    # 0.01 calls/s: nothing refills during the test, however loaded the machine.
    d = await start_decider(make_settings(decision_log_enabled=False, tokens_file=tokens.path,
                                          rate_limit_client_rps=0.01, rate_limit_client_burst=3))
    try:
        request = dpb.DecideRequest(use_case="offer", unit_id="u", features=features())
        for _ in range(3):  # the burst passes the limiter (NOT_FOUND: no such use case yet)
            assert await _code(d.stub.Decide(request, metadata=bearer(one))) == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await d.stub.Decide(request, metadata=bearer(one))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "client-one" in err.value.details()
        assert 50 <= _retry_delay(err.value) <= 100  # one token at 0.01/s: ~100 s
        # Another client has its own budget.
        assert await _code(d.stub.Decide(request, metadata=bearer(two))) == grpc.StatusCode.NOT_FOUND
    finally:
        await d.stop()


async def test_rate_limit_per_use_case(make_settings) -> None:
    d = await start_decider(make_settings(decision_log_enabled=False, rate_limit_use_case_rps=0.01,
                                          rate_limit_use_case_burst=2))
    try:
        busy = dpb.DecideRequest(use_case="busy", unit_id="u", features=features())
        quiet = dpb.DecideRequest(use_case="quiet", unit_id="u", features=features())
        codes = [await _code(d.stub.Decide(busy)) for _ in range(3)]
        assert codes[:2] == [grpc.StatusCode.NOT_FOUND] * 2
        assert codes[2] == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await _code(d.stub.Decide(quiet)) == grpc.StatusCode.NOT_FOUND
    finally:
        await d.stop()


def test_token_buckets_refill_and_bound_memory() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=2, max_keys=3, now=lambda: now[0])
    assert buckets.take("a") == 0 and buckets.take("a") == 0
    assert buckets.take("a") == pytest.approx(0.5)
    now[0] += 0.5
    assert buckets.take("a") == 0
    for key in "bcdefg":
        buckets.take(key)
    assert len(buckets._buckets) == 3


def test_out_of_range_timestamps_and_durations_are_invalid_arguments() -> None:
    """protobuf raises on such values when they are read: they are refused up front."""
    limits = InputLimits.from_settings(Settings())
    bad = fpb.LogOutcomesRequest(outcomes=[fpb.Outcome(use_case="uc")])
    bad.outcomes[0].event_time.nanos = -5
    with pytest.raises(InvalidArgument) as err:
        limits.check(bad)
    assert err.value.violations[0][0] == "outcomes[0].event_time"
    late = fpb.ReadTrainingDataRequest(use_case="uc")
    late.end_time.seconds = 2**62
    with pytest.raises(InvalidArgument):
        limits.check(late)
    fine = fpb.LogOutcomesRequest(outcomes=[fpb.Outcome(use_case="uc")])
    fine.outcomes[0].event_time.FromMilliseconds(1_700_000_000_000)
    limits.check(fine)


def test_a_large_batch_is_checked_entry_by_entry() -> None:
    """Entries too small to break a size limit are only looked at for their times and
    row counts: a bad time deep in a large batch is still found, and so is an
    oversized string in one large entry."""
    limits = InputLimits(max_string_bytes=200, max_batch_rows=5000, max_features=100, max_candidates=100,
                         max_blueprint_bytes=10_000)
    request = fpb.LogOutcomesRequest(outcomes=[fpb.Outcome(use_case="uc", decision_id=f"d{i}", outcome_id="o",
                                                           name="buy") for i in range(1000)])
    assert request.ByteSize() > limits.small_bytes
    limits.check(request)
    request.outcomes[700].event_time.seconds = 2**62
    request.outcomes[900].label = "x" * 300
    with pytest.raises(InvalidArgument) as err:
        limits.check(request)
    assert [field for field, _ in err.value.violations] == ["outcomes[700].event_time", "outcomes[900].label"]
