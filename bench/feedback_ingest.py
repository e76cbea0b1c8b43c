"""Feedback on one Cassandra node: LogOutcomes ingestion vs raw cassandra-driver
``execute_concurrent`` of the same prepared insert, ReadTrainingData rows/s over joined
decisions, and the feedback service's resident memory under that load.

    .venv/bin/python -m bench.feedback_ingest [--ingest-rows 100000] [--rounds 3]
        [--read-rows 1000000] [--out FILE]

Starts its own Cassandra (deploy/cassandra/cassandra.sh, free ports, a temporary
directory) and the feedback service as a process. Each round inserts ``--ingest-rows``
new outcomes with the raw driver, then sends as many through LogOutcomes; rounds
alternate the two, after a warm-up of each. Cassandra, the feedback service and this
client share the machine's cores (not pinned: Cassandra's JVM uses them all). Then,
unless ``--read-rows 0``, it loads that many joined decisions and reads them back with
ReadTrainingData. Prints a markdown table (rows/s min / median / max, the ratio of
medians and its verdict).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np

from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.store import feedback_cassandra as fc
from tests.feedback.helpers import blueprint, features_bytes, id_at
from tests.support import CassandraInstance, new_launcher

KEYSPACE = "bench"
READ_UC = "bench_read"


class Blueprints(dgrpc.DecisionServiceServicer):
    """GetUseCase for the read benchmark's use case."""

    def GetUseCase(self, request, context):
        return dpb.GetUseCaseResponse(use_case=dpb.UseCase(
            blueprint=blueprint(request.use_case, window_s=60), version=1, latest_version=1))


class RssSampler(threading.Thread):
    """Samples VmRSS of a pid every 0.1 s; keeps the maximum (MiB)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.peak = max(self.peak, int(line.split()[1]) / 1024)
            time.sleep(0.1)

    def take(self) -> float:
        peak, self.peak = self.peak, 0.0
        return peak


def _ids(n: int, t0: int, step: int = 1) -> list[str]:
    return [id_at(t0 + i * step) for i in range(n)]


def raw_ingest(session, n: int, concurrency: int) -> float:
    """Rows/s of execute_concurrent_with_args with the store's prepared outcome insert
    (new decision ids on every call)."""
    from cassandra.concurrent import execute_concurrent_with_args

    insert = session.prepare(fc._INSERT_OUTCOME)
    t0 = int(time.time() * 1000) - 7_200_000
    ts = time.time_ns() // 1000
    params = []
    for i, d in enumerate(_ids(n, t0)):
        ms = t0 + i
        params.append(("bench_raw", fc.day_of(ms), fc.bucket_of(d), d, "purchase", f"o{i}", 1.0, "", ms + 5, ms, "", ts))
    start = time.perf_counter()
    results = execute_concurrent_with_args(session, insert, params, concurrency=concurrency, raise_on_first_error=True)
    elapsed = time.perf_counter() - start
    assert all(ok for ok, _ in results)
    return n / elapsed


def service_ingest(address: str, n: int, batch: int, channels: int) -> float:
    """Rows/s of LogOutcomes in batches over several client channels (threads), new
    decision ids on every call."""
    t0 = int(time.time() * 1000) - 7_000_000
    ids = _ids(n, t0)
    requests = []
    for i in range(0, n, batch):
        outs = []
        for k in range(i, min(i + batch, n)):
            o = fpb.Outcome(use_case="bench_svc", decision_id=ids[k], outcome_id=f"o{k}", name="purchase", value=1.0)
            o.event_time.FromMilliseconds(t0 + k + 5)
            outs.append(o)
        requests.append(fpb.LogOutcomesRequest(outcomes=outs))
    stubs = [fgrpc.FeedbackServiceStub(grpc.insecure_channel(address)) for _ in range(channels)]
    accepted = [0] * channels

    def send(c: int) -> None:
        for r in requests[c::channels]:
            accepted[c] += stubs[c].LogOutcomes(r, timeout=120).accepted

    start = time.perf_counter()
    with futures.ThreadPoolExecutor(channels) as pool:
        list(pool.map(send, range(channels)))
    elapsed = time.perf_counter() - start
    assert sum(accepted) == n, sum(accepted)
    return n / elapsed


def load_joined(session, n: int, concurrency: int) -> float:
    """Write n decisions with one outcome each (raw execute_concurrent); seconds taken."""
    from cassandra.concurrent import execute_concurrent_with_args

    insert_d = session.prepare(fc._INSERT_DECISION)
    insert_o = session.prepare(fc._INSERT_OUTCOME)
    ts = time.time_ns() // 1000
    t0 = int(time.time() * 1000) - 30 * 86_400_000
    step = max(1, (29 * 86_400_000) // n)  # spread over 29 days
    feats = features_bytes([1.0, 2.0])
    probs = bytes(16)
    start = time.perf_counter()
    chunk = 50_000
    for lo in range(0, n, chunk):
        ids = [id_at(t0 + i * step) for i in range(lo, min(lo + chunk, n))]
        dparams, oparams, days = [], [], set()
        for j, d in enumerate(ids):
            ms = t0 + (lo + j) * step
            day, b = fc.day_of(ms), fc.bucket_of(d)
            days.add(day)
            dparams.append((READ_UC, day, b, ms, d, 1, "u", feats, j % 2, f"a{j % 2}", 0.0, probs, 0, "", False,
                            False, False, b"", 0.0, False, b"", ts))
            oparams.append((READ_UC, day, b, d, "purchase", f"o{lo + j}", 1.0, "", ms + 5, ms, "", ts))
        for statement, params in ((insert_d, dparams), (insert_o, oparams)):
            results = execute_concurrent_with_args(session, statement, params, concurrency=concurrency)
            assert all(ok for ok, _ in results)
        for day in days:
            for kind in ("decisions", "outcomes"):
                session.execute(session.prepare(fc._INSERT_DAY), (READ_UC, kind, day, ts))
    session.execute(session.prepare(fc._INSERT_VERSION), (READ_UC, 1, ts))
    return time.perf_counter() - start


def read_training(address: str, expected: int) -> float:
    """Rows/s of one ReadTrainingData stream over every decision of READ_UC."""
    stub = fgrpc.FeedbackServiceStub(grpc.insecure_channel(address, options=[
        ("grpc.max_receive_message_length", 64 * 1024 * 1024)]))
    start = time.perf_counter()
    rows = joined = 0
    for b in stub.ReadTrainingData(fpb.ReadTrainingDataRequest(use_case=READ_UC, include_open_windows=True,
                                                               batch_rows=8192), timeout=3600):
        rows += b.rows
        joined += int(np.count_nonzero(np.frombuffer(b.outcome_counts, "<i4")))
    elapsed = time.perf_counter() - start
    assert rows == expected, (rows, expected)
    assert joined == expected, (joined, expected)
    return rows / elapsed


def spread(rates: list[float]) -> str:
    """``min / median / max`` of rows/s."""
    return f"{min(rates):,.0f} / {statistics.median(rates):,.0f} / {max(rates):,.0f}"


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ingest-rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the ingest comparison")
    parser.add_argument("--read-rows", type=int, default=1_000_000, help="0: no ReadTrainingData part")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=512, help="raw execute_concurrent concurrency")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args()

    from cassandra.cluster import Cluster
    from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

    raw: list[float] = []
    svc: list[float] = []
    read = load_s = read_rss = 0.0
    load = [os.getloadavg()[0], 0.0]
    with tempfile.TemporaryDirectory(prefix="loopwise-bench-") as tmp:
        root = Path(tmp)
        cassandra = CassandraInstance(root / "cassandra")
        cassandra.start()
        launcher = new_launcher(root / "stack", LOOPWISE_FEEDBACK_STORE_URL=f"{cassandra.url}/{KEYSPACE}",
                                LOOPWISE_LOG_LEVEL="WARNING")
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 0)])
        dgrpc.add_DecisionServiceServicer_to_server(Blueprints(), server)
        server.add_insecure_port(launcher.address("decision"))
        server.start()
        cluster = None
        try:
            pid = launcher.start("feedback")  # creates the keyspace and tables
            cluster = Cluster(["127.0.0.1"], port=cassandra.cql_port, protocol_version=5,
                              load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()))
            session = cluster.connect(KEYSPACE)
            sampler = RssSampler(pid)
            sampler.start()
            time.sleep(0.5)
            idle_rss = sampler.take()
            address = launcher.address("feedback")
            raw_ingest(session, min(5000, args.ingest_rows), args.concurrency)  # warm-up
            service_ingest(address, min(5000, args.ingest_rows), args.batch, args.channels)
            sampler.take()
            for r in range(args.rounds):
                raw.append(raw_ingest(session, args.ingest_rows, args.concurrency))
                svc.append(service_ingest(address, args.ingest_rows, args.batch, args.channels))
                print(f"round {r + 1}: execute_concurrent {raw[-1]:,.0f} rows/s, LogOutcomes {svc[-1]:,.0f} rows/s",
                      file=sys.stderr, flush=True)
            ingest_rss = sampler.take()
            if args.read_rows:
                print("loading joined decisions ...", file=sys.stderr, flush=True)
                load_s = load_joined(session, args.read_rows, args.concurrency)
                print("ReadTrainingData ...", file=sys.stderr, flush=True)
                read = read_training(address, args.read_rows)
                read_rss = sampler.take()
            sampler.stop.set()
        finally:
            if cluster is not None:
                cluster.shutdown()
            launcher.stop("feedback")
            server.stop(0)
            cassandra.kill()
    load[1] = os.getloadavg()[0]

    ratio = statistics.median(svc) / statistics.median(raw)
    lines = [
        f"LogOutcomes into feedback on one Cassandra 5.0 node against the raw cassandra-driver's "
        f"`execute_concurrent` of the same prepared insert (concurrency {args.concurrency}); {args.rounds} "
        f"interleaved rounds of {args.ingest_rows:,} new rows after a warm-up; LogOutcomes in batches of "
        f"{args.batch} over {args.channels} channels; Cassandra, the feedback service and the client share the "
        f"machine's cores (not pinned); load average {load[0]:.2f} → {load[1]:.2f}.",
        "",
        "| path | rows/s min / median / max |",
        "|---|---|",
        f"| LogOutcomes (gRPC, feedback service, Cassandra) | {spread(svc)} |",
        f"| raw cassandra-driver execute_concurrent | {spread(raw)} |",
        "",
        f"LogOutcomes / execute_concurrent (medians): {ratio:.2f}× (target ≥ 0.5×: "
        f"{'met' if ratio >= 0.5 else 'NOT met'})",
        "",
        "| measure | value |",
        "|---|---|",
    ]
    if args.read_rows:
        lines += [f"| ReadTrainingData, {args.read_rows:,} joined decisions over 29 days | {read:,.0f} rows/s |",
                  f"| loading them (raw execute_concurrent, decisions + outcomes) | {load_s:,.0f} s |",
                  f"| feedback RSS: idle / peak during ingestion / peak during the read "
                  f"| {idle_rss:,.0f} / {ingest_rss:,.0f} / {read_rss:,.0f} MiB |"]
    else:
        lines += [f"| feedback RSS: idle / peak during ingestion | {idle_rss:,.0f} / {ingest_rss:,.0f} MiB |"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
