"""Training speed: StartTraining → a blessed, registered model, on the embedded store.

    .venv/bin/python -m bench.training [--rows 100000] [--out docs/benchmarks.md]

Starts decision, feedback and trainer as processes (SQLite stores in a temporary
directory), stores ``--rows`` labelled decisions with 20 numeric features in feedback
(LogDecisions + LogOutcomes, every reward window closed), then times two training
jobs from StartTraining to the final operation: the first model (to production) and a
second one (blessed against it, registered, rolled out in shadow). The share of each
job's time per stage comes from its TrainingResult.stage_seconds. The baseline, in the
same run and process: the bare scikit-learn work a minimal trainer would do on the
same training rows (HistGradientBoosting 100 trees and logistic regression, one fit
each, one thread, both exported with skl2onnx), without reading, validating, search,
parity, blessing or registering. With ``--out``, the section between the
``training:start``/``training:end`` markers of that file is replaced (or appended).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from google.protobuf.duration_pb2 import Duration
from threadpoolctl import threadpool_limits

from bench.sections import write_section
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.services.trainer.models import export_onnx, make_estimator
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc
from tests.feedback.helpers import id_at
from tests.support import new_launcher

USE_CASE = "bench_training"
WIDTH = 20
BATCH = 5000
START = "<!-- training:start -->"
END = "<!-- training:end -->"
STAGES = ("reading", "validating", "fitting", "exporting", "blessing", "registering")
SERVICES = ("decision", "feedback", "trainer")


def world(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features and 0/1 labels with a nonlinear signal (about 40% positive)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, WIDTH)).astype(np.float32)
    logit = 1.5 * x[:, 0] - x[:, 1] + 0.8 * x[:, 2] * x[:, 3] + 0.5 * np.sin(2 * x[:, 4]) - 0.4
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return x, y


def blueprint() -> bp.Blueprint:
    """Binary use case with 20 numeric features and a one-minute window."""
    return bp.Blueprint(
        use_case=USE_CASE, kind=bp.DECISION_KIND_BINARY, actions=["no", "yes"],
        features=[bp.Feature(name=f"x{i}", type=bp.FEATURE_TYPE_NUMERIC) for i in range(WIDTH)],
        default_decision=bp.DefaultDecision(action="no"),
        reward=bp.RewardSpec(outcome_names=["conversion"], window=Duration(seconds=60), default_reward=0.0),
    )


def load(channel: grpc.Channel, x: np.ndarray, y: np.ndarray) -> None:
    """Store the decisions (spread over the last two days) and their conversions."""
    feedback = fgrpc.FeedbackServiceStub(channel)
    now_ms = int(time.time() * 1000)
    times = now_ms - 3_600_000 - np.linspace(2 * 86_400_000, 0, x.shape[0]).astype(np.int64)
    ids = [id_at(int(t)) for t in times]
    for start in range(0, x.shape[0], BATCH):
        records = [fpb.DecisionRecord(
            use_case=USE_CASE, decision_id=ids[i], blueprint_version=1, unit_id=f"u{i}",
            features=x[i].astype("<f4").tobytes(), action_index=1, action="yes", score=0.5,
            action_probabilities=[0.0, 1.0], model_version=0, arm="default", deployment_role="default")
            for i in range(start, min(start + BATCH, x.shape[0]))]
        feedback.LogDecisions(fpb.LogDecisionsRequest(request_id=f"d{start}", decisions=records), timeout=120)
    positives = np.flatnonzero(y == 1)
    for start in range(0, positives.size, BATCH):
        outcomes = []
        for i in positives[start:start + BATCH]:
            o = fpb.Outcome(use_case=USE_CASE, decision_id=ids[i], outcome_id=f"o{i}", name="conversion", value=1.0)
            o.event_time.FromMilliseconds(int(times[i]) + 1000)
            outcomes.append(o)
        feedback.LogOutcomes(fpb.LogOutcomesRequest(request_id=f"o{start}", outcomes=outcomes), timeout=120)


def baseline_seconds(x: np.ndarray, y: np.ndarray) -> float:
    """Bare fit + export of HistGradientBoosting (100 trees) and logistic regression on
    the same training rows (the oldest 80%), one thread."""
    n = int(round(x.shape[0] * 0.8))
    started = time.perf_counter()
    with threadpool_limits(1):
        for family in ("hist_gradient_boosting", "linear"):
            estimator = make_estimator("binary", family, 0)
            estimator.fit(x[:n].astype(np.float64), y[:n])
            export_onnx(estimator, "binary", WIDTH)
    return time.perf_counter() - started


def read_seconds(channel: grpc.Channel) -> tuple[float, int]:
    """A bare client streaming the same ReadTrainingData (no decoding): seconds, rows."""
    started = time.perf_counter()
    rows = 0
    for batch in fgrpc.FeedbackServiceStub(channel).ReadTrainingData(
            fpb.ReadTrainingDataRequest(use_case=USE_CASE, batch_rows=8192), timeout=600):
        rows += batch.rows
    return time.perf_counter() - started, rows


def train(trainer: tgrpc.TrainerServiceStub, tag: str) -> tuple[float, tpb.TrainingResult]:
    """Wall seconds from StartTraining to the final operation, and its result."""
    started = time.perf_counter()
    operation = trainer.StartTraining(tpb.StartTrainingRequest(request_id=tag, use_case=USE_CASE),
                                      timeout=30).operation
    for update in trainer.WatchOperation(op_pb.WatchOperationRequest(id=operation.id, use_case=operation.use_case), timeout=1200):
        operation = update.operation
    seconds = time.perf_counter() - started
    if operation.state != op_pb.OPERATION_STATE_SUCCEEDED:
        raise RuntimeError(f"training {tag} failed: {operation.error_message}")
    result = tpb.TrainingResult()
    operation.result.Unpack(result)
    return seconds, result


def section(rows: int, runs: list[tuple[str, float, tpb.TrainingResult]], baseline: float, command: str,
            notes: list[str]) -> str:
    """The markdown section."""
    lines = [START, "## Training: StartTraining to a blessed, registered model (issue 6)", "",
             f"- command: `{command}`",
             f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {os.cpu_count()} cores, "
             f"shared; load average (1 min) at start {notes[0]}",
             f"- setup: {rows:,} labelled decisions × {WIDTH} numeric features in the feedback service's SQLite "
             "store (binary use case, about 40% positive); decision, feedback and trainer as processes on "
             "loopback; the trainer with one pool process; candidates logistic regression, "
             "HistGradientBoosting and random forest, each with successive halving over 3 configurations, "
             "all exported to ONNX with parity checked and single-row latency timed; the winner blessed "
             "against the default policy (first model) or production (second model)",
             "- baseline (same run): bare scikit-learn fit + skl2onnx export of HistGradientBoosting (100 trees) "
             "and logistic regression on the same training rows, one thread, in the benchmark process",
             "- target: < 60 s from StartTraining to a blessed, registered model (in shadow where a production "
             "model exists)", "",
             "| job | wall s | " + " | ".join(STAGES) + " | model | outcome | vs baseline | target |",
             "|---|---|" + "---|" * len(STAGES) + "---|---|---|---|"]
    for name, seconds, result in runs:
        total = sum(result.stage_seconds.values()) or 1.0
        shares = " | ".join(f"{result.stage_seconds.get(s, 0.0):.1f} s ({result.stage_seconds.get(s, 0.0) / total:.0%})"
                            for s in STAGES)
        outcome = ("production" if result.deployed else
                   f"rollout {tpb.RolloutStep.Name(result.rollout.step).removeprefix('ROLLOUT_STEP_').lower()}"
                   if result.HasField("rollout") else result.deployment_reason[:40])
        lines.append(f"| {name} | {seconds:.1f} | {shares} | v{result.model.version} {result.model.family} | "
                     f"{outcome} | {seconds / baseline:.1f}× | {'met' if seconds < 60 else 'NOT met'} |")
    lines += ["", f"Baseline: {baseline:.1f} s. " + " ".join(notes[1:]), "",
              "Shares are of the job's own stage times (TrainingResult.stage_seconds); wall time also "
              "includes the operation's start and the last WatchOperation update.", END]
    return "\n".join(lines) + "\n"



def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--out", type=Path, help="markdown file whose training section is replaced")
    args = parser.parse_args(argv)
    command = f"python -m bench.training --rows {args.rows}" + (f" --out {args.out}" if args.out else "")
    notes = [f"{os.getloadavg()[0]:.2f}"]
    x, y = world(args.rows)
    with tempfile.TemporaryDirectory(prefix="loopwise-bench-training-") as tmp:
        launcher = new_launcher(Path(tmp) / "var", LOOPWISE_CLOCK_SPEED="1", LOOPWISE_TRAINER_SCHEDULE_INTERVAL_S="0")
        try:
            launcher.start_all(SERVICES)
            with grpc.insecure_channel(launcher.address("decision")) as dch, \
                    grpc.insecure_channel(launcher.address("feedback"), options=[
                        ("grpc.max_send_message_length", 64 << 20)]) as fch, \
                    grpc.insecure_channel(launcher.address("trainer")) as tch:
                dgrpc.DecisionServiceStub(dch).ApplyUseCase(
                    dpb.ApplyUseCaseRequest(request_id="bench", blueprint=blueprint()), timeout=30)
                loaded = time.perf_counter()
                load(fch, x, y)
                stats = fgrpc.FeedbackServiceStub(fch).GetStats(fpb.GetStatsRequest(use_case=USE_CASE), timeout=60)
                notes.append(f"Loading took {time.perf_counter() - loaded:.0f} s; feedback counts "
                             f"{stats.closed_windows:,} closed windows, {stats.outcomes:,} outcomes.")
                baseline = baseline_seconds(x, y)
                raw_read, raw_rows = read_seconds(fch)
                notes.append(f"A bare client streams the same ReadTrainingData ({raw_rows:,} rows) in "
                             f"{raw_read:.1f} s: the feedback service's share of \"reading\".")
                trainer = tgrpc.TrainerServiceStub(tch)
                runs = []
                for name, tag in (("first model", "bench-1"), ("second model (shadow)", "bench-2")):
                    seconds, result = train(trainer, tag)
                    runs.append((name, seconds, result))
                    print(name, f"{seconds:.1f} s", dict(result.stage_seconds), flush=True)
        finally:
            launcher.stop_all(SERVICES)
    notes.append(f"Load average at the end {os.getloadavg()[0]:.2f}.")
    text = section(args.rows, runs, baseline, command, notes)
    print(text)
    if args.out:
        write_section(args.out, text, START, END)


if __name__ == "__main__":
    main()
