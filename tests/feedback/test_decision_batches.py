"""The decision service's own batches pass feedback's validation: a real decision service
logs to a real feedback service every kind of record it makes (DecideBatch and Decide
rows from a production model and a canary, shadow records, fallbacks with the default
decision, uniform exploration without a model, rankings with a model and by default,
regression without actions) and every one is stored, none refused."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.services.feedback.server import start_process
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.decision.helpers import (
    LoopbackTrainer,
    blueprint,
    features,
    linear_onnx,
    model_ref,
    serve,
    start_decider,
    wait_until,
)


def _constant_model(best: int) -> bytes:
    """An action-value model whose best of three actions is always ``best``."""
    b = np.zeros(3)
    b[best] = 1.0
    return linear_onnx([np.zeros((3, 3))], [b], n_actions=3)


def _batch(use_case: str, units: list[str]) -> dpb.DecideBatchRequest:
    rows = np.random.default_rng(len(units)).normal(size=(len(units), 3)).astype("<f4")
    rows[:, 2] = 1  # country "de"
    return dpb.DecideBatchRequest(use_case=use_case, blueprint_version=1, rows=len(units),
                                  feature_names=["x", "y", "country"], features=rows.tobytes(), unit_ids=units)


def _ranking(name: str, **policy) -> bp.Blueprint:
    b = blueprint(name, kind="regression", **policy)
    b.kind = bp.DECISION_KIND_RANKING
    b.default_decision.action = ""
    return b


async def test_every_kind_of_decision_record_is_accepted(make_settings) -> None:
    settings = make_settings(decision_log_flush_interval_s=0.05, decision_log_batch_size=100)
    trainer = LoopbackTrainer()
    trainer_server = await serve(trainer, tgrpc.add_TrainerServiceServicer_to_server, settings.trainer_address)
    feedback = await start_process(settings)
    d = await start_decider(settings)
    channel = grpc.aio.insecure_channel(settings.feedback_address)
    stub = fgrpc.FeedbackServiceStub(channel)
    try:
        await d.apply(blueprint("served", kind="action_value", epsilon=0.2))
        await d.apply(blueprint("defaulted", kind="binary"))  # no model: the default decision
        await d.apply(blueprint("explored", kind="action_value", explore_without_model=True))
        await d.apply(blueprint("priced", kind="regression"))  # no actions: "predict"
        await d.apply(_ranking("ranked", type=bp.POLICY_TYPE_SOFTMAX, temperature=0.5))
        await d.apply(_ranking("ranked_default"))
        before = d.watcher.updates
        prod, canary, shadow = _constant_model(1), _constant_model(0), _constant_model(2)
        trainer.set_deployment("served", models={1: prod, 2: canary, 3: shadow}, production=model_ref(1, prod, 6),
                               canary=model_ref(2, canary, 6), canary_share=0.3, shadows=(model_ref(3, shadow, 6),))
        trainer.deploy("ranked", 1, linear_onnx([np.array([0.0, 1.0, 0.0])], [np.zeros(1)]),
                       score_output="variable")
        await wait_until(lambda: d.watcher.updates >= before + 2)

        await d.stub.DecideBatch(_batch("served", [f"u{i}" for i in range(300)]))
        for i in range(20):
            await d.decide("served", unit_id=f"s{i}", x=float(i))
        await d.stub.DecideBatch(_batch("defaulted", [f"u{i}" for i in range(50)]))
        for i in range(10):
            await d.decide("defaulted", unit_id=f"d{i}")
            await d.decide("explored", unit_id=f"e{i}")
            await d.decide("priced", unit_id=f"p{i}", y=None)
        await d.stub.DecideBatch(_batch("explored", [f"u{i}" for i in range(40)]))
        for i in range(15):
            for name in ("ranked", "ranked_default"):
                await d.stub.Decide(dpb.DecideRequest(
                    use_case=name, unit_id=f"r{i}", features=features(y=None),
                    candidates=[dpb.Candidate(id=f"sku-{k}", features={"y": dpb.FeatureValue(number=float(k))})
                                for k in range(4)]))
        expected = {"served": 2 * 320, "defaulted": 60, "explored": 50, "priced": 10, "ranked": 15,
                    "ranked_default": 15}

        counts: dict[str, int] = {}
        deadline = time.monotonic() + 60
        while counts != expected:
            assert time.monotonic() < deadline, (counts, d.core.log.counters)
            await asyncio.sleep(0.1)
            counts = {name: (await stub.GetStats(fpb.GetStatsRequest(use_case=name))).decisions for name in expected}
        log = d.core.log.counters
        durable = feedback.feedback.durable.counters
        print(f"\nstored per use case {counts}; decision log acked={log.acked} send_failures={log.send_failures} "
              f"rejected={log.rejected}; feedback spool invalid={durable.invalid}")
        assert (log.acked, log.send_failures, log.rejected, log.dropped) == (sum(expected.values()), 0, 0, 0)
        assert durable.invalid == 0
    finally:
        await channel.close()
        await d.stop()
        await feedback.host.stop(0)
        await trainer_server.stop(0)
