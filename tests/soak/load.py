"""Load for the soak test: threads that decide, log outcomes (retrying until
acknowledged) and read, counting everything they see."""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from loopwise.clock import uuid7_time_ms
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.tensors import F32, I32, pack, unpack_vector
from tests.e2e.driver import FEATURES, expected_reward

ROWS = 10
# Outcomes sent in one LogOutcomes at most (what queued meanwhile goes together).
MAX_OUTCOMES_PER_CALL = 500


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Tally:
    """What the clients saw (shared by the threads, guarded by ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    served: set[str] = field(default_factory=set)
    fallbacks: int = 0
    failed_decides: list[str] = field(default_factory=list)
    model_versions: Counter = field(default_factory=Counter)
    outcomes_sent: set[str] = field(default_factory=set)
    outcomes_acked: set[str] = field(default_factory=set)
    outcome_retries: int = 0
    reads_ok: int = 0
    reads_failed: Counter = field(default_factory=Counter)
    # Every outcome of the decisions made before this time (service clock, ms) is acknowledged.
    outcomes_through_ms: int = 0

    def count(self, name: str) -> int:
        """The size (or value) of one tally, read under the lock."""
        with self.lock:
            value = getattr(self, name)
            return value if isinstance(value, int) else len(value)

    def summary(self) -> str:
        """A one-line view for timeout messages."""
        with self.lock:
            return (f"(served {len(self.served)}, failed decides {len(self.failed_decides)}, outcomes acked "
                    f"{len(self.outcomes_acked)} of {len(self.outcomes_sent)}, retries {self.outcome_retries})")


class Load:
    """Decide (batches of 10 rows, about ten a second per thread), LogOutcomes (every batch retried until
    acknowledged) and reads (GetStats, GetDecision) in background threads."""

    def __init__(self, decision_address: str, feedback_address: str, use_case: str, version: int,
                 seed: int = 0) -> None:
        self.use_case, self.version = use_case, version
        self.tally = Tally()
        self.stop = threading.Event()
        self._outcomes: queue.Queue = queue.Queue()
        self._channels = [grpc.insecure_channel(decision_address), grpc.insecure_channel(feedback_address)]
        self.decision = dgrpc.DecisionServiceStub(self._channels[0])
        self.feedback = fgrpc.FeedbackServiceStub(self._channels[1])
        self.rng = np.random.default_rng(seed)
        self.threads = [threading.Thread(target=self._decide, args=(s,), daemon=True) for s in (1, 2)]
        self.threads += [threading.Thread(target=self._log_outcomes, daemon=True),
                         threading.Thread(target=self._read, daemon=True)]

    def start(self) -> None:
        """Start every client thread."""
        for thread in self.threads:
            thread.start()

    def finish(self, timeout: float = 180.0) -> None:
        """Stop deciding, let the outcome thread deliver what is queued, join."""
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout)
        if not any(thread.is_alive() for thread in self.threads):
            for channel in self._channels:
                channel.close()

    def _decide(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not self.stop.is_set():
            x = rng.normal(size=(ROWS, len(FEATURES))).astype(np.float32)
            request = dpb.DecideBatchRequest(use_case=self.use_case, blueprint_version=self.version, rows=ROWS,
                                             feature_names=FEATURES, features=pack(x, F32),
                                             unit_ids=[f"u{rng.integers(1 << 30)}" for _ in range(ROWS)])
            try:
                reply = self.decision.DecideBatch(request, timeout=10)
            except grpc.RpcError as error:
                with self.tally.lock:
                    self.tally.failed_decides.append(error.code().name)
                continue
            fallback = np.frombuffer(reply.fallback, np.uint8)
            with self.tally.lock:
                self.tally.served.update(reply.decision_ids)
                self.tally.fallbacks += int(fallback.sum())
                self.tally.model_versions[reply.model_version] += ROWS
            actions = unpack_vector(reply.action_indices, I32).astype(float)
            bought = rng.random(ROWS) < expected_reward(x, actions)
            self._outcomes.put((min(uuid7_time_ms(d) for d in reply.decision_ids),
                                [d for d, b in zip(reply.decision_ids, bought, strict=True) if b]))
            time.sleep(0.1)

    def _next_outcomes(self) -> tuple[int, list[str]] | None:
        """What the decide threads queued (up to MAX_OUTCOMES_PER_CALL outcomes), as (the
        time of the latest batch's first decision, the decision ids to send outcomes for)."""
        try:
            through_ms, ids = self._outcomes.get(timeout=0.2)
        except queue.Empty:
            return None
        while len(ids) < MAX_OUTCOMES_PER_CALL:
            try:
                through_ms, more = self._outcomes.get_nowait()
            except queue.Empty:
                break
            ids = ids + more
        return through_ms, ids

    def _log_outcomes(self) -> None:
        while not (self.stop.is_set() and self._outcomes.empty()):
            taken = self._next_outcomes()
            if taken is None:
                continue
            through_ms, ids = taken
            outcomes = []
            for decision_id in ids:
                outcome = fpb.Outcome(use_case=self.use_case, decision_id=decision_id,
                                      outcome_id=f"o-{decision_id}", name="purchase", value=1.0)
                outcome.event_time.FromMilliseconds(uuid7_time_ms(decision_id) + 5_000)
                outcomes.append(outcome)
            with self.tally.lock:
                self.tally.outcomes_sent.update(o.outcome_id for o in outcomes)
            deadline = time.monotonic() + 240
            while outcomes:  # the same batch (same outcome ids) until it is acknowledged
                try:
                    reply = self.feedback.LogOutcomes(fpb.LogOutcomesRequest(outcomes=outcomes), timeout=15)
                    assert reply.accepted + reply.duplicates + reply.orphans == len(outcomes)
                    with self.tally.lock:
                        self.tally.outcomes_acked.update(o.outcome_id for o in outcomes)
                    break
                except grpc.RpcError:
                    with self.tally.lock:
                        self.tally.outcome_retries += 1
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            with self.tally.lock:
                self.tally.outcomes_through_ms = through_ms

    def _read(self) -> None:
        while not self.stop.is_set():
            with self.tally.lock:
                some = next(iter(self.tally.served), None)
            try:
                self.feedback.GetStats(fpb.GetStatsRequest(use_case=self.use_case), timeout=10)
                if some is not None:
                    try:
                        self.feedback.GetDecision(fpb.GetDecisionRequest(use_case=self.use_case,
                                                                         decision_id=some), timeout=10)
                    except grpc.RpcError as error:
                        if error.code() != grpc.StatusCode.NOT_FOUND:
                            raise
                self.decision.GetUseCase(dpb.GetUseCaseRequest(use_case=self.use_case), timeout=10)
                with self.tally.lock:
                    self.tally.reads_ok += 1
            except grpc.RpcError as error:
                with self.tally.lock:
                    self.tally.reads_failed[error.code().name] += 1
            time.sleep(0.1)
