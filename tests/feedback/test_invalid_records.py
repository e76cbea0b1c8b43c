"""Reads are defensive: a stored record that cannot be interpreted (a blueprint version
the decision service does not know, features that do not match its version), written
straight into the store as data from before validation would be, is skipped and
counted (GetStats.invalid_records) and never fails the use case: GetStats,
ReadTrainingData, EvaluatePolicy, EstimateEffects and StartTraining all work, on the
four real services with the feedback store on SQLite and on Cassandra."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.evaluator.v1 import evaluator_service_pb2_grpc as egrpc
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.launcher import Launcher
from loopwise.store.feedback import OutcomeRow, StoredDecision, open_feedback_store
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.e2e.driver import Product, treatment_blueprint
from tests.feedback.helpers import id_at, record
from tests.support import launcher_settings, new_launcher

UC = "defensive_reads"
FINAL = (op_pb.OPERATION_STATE_SUCCEEDED, op_pb.OPERATION_STATE_FAILED, op_pb.OPERATION_STATE_CANCELLED)
DECISIONS = 1000


@pytest.fixture(params=["sqlite", "cassandra"])
def stack_on(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Launcher, str]]:
    """The four services (processes), feedback on the parametrised backend; yields the
    launcher and the feedback store URL."""
    env = {}
    if request.param == "cassandra":
        cassandra = request.getfixturevalue("cassandra")
        env["LOOPWISE_FEEDBACK_STORE_URL"] = f"{cassandra.url}/defensive_{int(time.time() * 1000)}"
    launcher = new_launcher(tmp_path / "stack", **env)
    try:
        launcher.start_all()
        yield launcher, env.get("LOOPWISE_FEEDBACK_STORE_URL", "")
    finally:
        launcher.stop_all()


def _wait(get, operation: op_pb.Operation, timeout: float = 240) -> op_pb.Operation:
    deadline = time.monotonic() + timeout
    while operation.state not in FINAL:
        assert time.monotonic() < deadline, operation
        time.sleep(0.2)
        operation = get(op_pb.GetOperationRequest(id=operation.id, use_case=UC), timeout=10).operation
    return operation


async def _write_uninterpretable(launcher: Launcher, url: str, decision_ms: int) -> list[str]:
    """Straight into the feedback store: a decision of blueprint version 99 (unknown to
    the decision service) and one whose 2 features do not fit version 1's 3, each with
    an outcome."""
    settings = launcher_settings(launcher)
    if url:
        settings = settings.model_copy(update={"feedback_store_url": url})
    store = open_feedback_store(settings)
    try:
        v99 = record(UC, id_at(decision_ms), version=99, features=(1.0, 2.0, 3.0), actions=("control", "treat"))
        narrow = record(UC, id_at(decision_ms + 1), version=1, features=(1.0, 2.0), actions=("control", "treat"))
        assert await store.put_decisions([StoredDecision(v99, decision_ms), StoredDecision(narrow, decision_ms + 1)]) == 2
        await store.put_outcomes([OutcomeRow(UC, r.decision_id, f"o-{r.decision_id}", "purchase", 1.0, "",
                                             decision_ms + 1000, t) for r, t in ((v99, decision_ms),
                                                                                 (narrow, decision_ms + 1))], [])
        return [v99.decision_id, narrow.decision_id]
    finally:
        store.close()


async def test_uninterpretable_records_are_skipped_and_counted(stack_on: tuple[Launcher, str]) -> None:
    launcher, url = stack_on
    settings = launcher_settings(launcher)
    product = Product(settings, UC, seed=3)
    version = product.apply(treatment_blueprint(UC))
    for _ in range(DECISIONS // 500):
        x, served = product.decide_batch(500, version)
        product.log_outcomes(x, served)
    product.wait_logged_and_closed(DECISIONS)
    bad_ids = await _write_uninterpretable(launcher, url, product.clock.now_ms() - 3_600_000)

    stats = product.stats()
    assert (stats.decisions, stats.invalid_records) == (DECISIONS, 2)
    assert stats.outcomes == stats.joined_decisions + 2  # the two outcomes of skipped records are stored
    batches = list(product.feedback.ReadTrainingData(fpb.ReadTrainingDataRequest(use_case=UC), timeout=60))
    read_ids = [i for b in batches for i in b.decision_ids]
    assert len(read_ids) == DECISIONS and not set(bad_ids) & set(read_ids)
    with grpc.insecure_channel(launcher.address("trainer")) as tch, \
            grpc.insecure_channel(launcher.address("evaluator")) as ech:
        trainer, evaluator = tgrpc.TrainerServiceStub(tch), egrpc.EvaluatorServiceStub(ech)
        value = evaluator.EvaluatePolicy(epb.EvaluatePolicyRequest(use_case=UC, constant_action="treat"), timeout=120)
        assert value.rows == DECISIONS
        training = trainer.StartTraining(tpb.StartTrainingRequest(use_case=UC), timeout=30).operation
        training = _wait(trainer.GetOperation, training)
        effects = evaluator.EstimateEffects(epb.EstimateEffectsRequest(use_case=UC), timeout=30).operation
        effects = _wait(evaluator.GetOperation, effects)
    product.close()
    print(f"\n{url or 'sqlite'}: decisions={stats.decisions} invalid_records={stats.invalid_records} "
          f"read rows={len(read_ids)} EvaluatePolicy rows={value.rows} training={op_pb.OperationState.Name(training.state)} "
          f"effects={op_pb.OperationState.Name(effects.state)}")
    assert training.state == op_pb.OPERATION_STATE_SUCCEEDED, training.error_message
    assert effects.state == op_pb.OPERATION_STATE_SUCCEEDED, effects.error_message
