"""LogOutcomes into the feedback service on its embedded SQLite store, against a raw
``sqlite3`` ``executemany`` of the same rows into the same schema with the same pragmas
(one statement step per row; the store's own insert uses multi-row statements).

    .venv/bin/python -m bench.sqlite_ingest [--rows 50000] [--batch 1000] [--rounds 3] [--quick] [--out FILE]

Starts decision (for the use case) and feedback as processes on loopback. Each round
sends ``--rows`` new outcomes (distinct decision ids of the last minute) through one
gRPC channel, ``--batch`` per LogOutcomes call, four calls in flight, once as Outcome
messages and once as OutcomeColumns; the same loads to the bare floor (bench/bare.py:
a grpc.aio server that parses each request and stores nothing, the transport's
share); and the raw baseline inserts the same rows, as the service stores them, one
transaction per ``--batch`` rows, in this process, once per form. An insert's cost
grows with the table, and the service's one table takes both forms' rows, so the raw
baseline's table takes them too (the warm-up rows included): each form is compared with
the raw insert of its own rows, made at the table size its round found. Every row is
checked to be stored as new on both sides. Rounds alternate the six cells. Placement, with two or
more cores: the feedback service (all its threads), the bare server and the raw
baseline on the server core, this process's client on the other one. Prints a
markdown table (rows/s min / median / max, CPU µs per row of the serving process, and
the ratios of medians).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import grpc

from bench.floor import cores, pin, start_bare
from bench.run import cpu_seconds
from loopwise.clock import uuid7_time_ms
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.store.feedback import SCHEMA
from tests.feedback.helpers import blueprint, id_at
from tests.support import new_launcher

USE_CASE = "ingest"
# The table's rows.
OURS = "LogOutcomes (gRPC, feedback service, SQLite)"
OURS_COLUMNS = "LogOutcomes as OutcomeColumns (gRPC, feedback service, SQLite)"
BARE = "bare grpc.aio LogOutcomes (parsed, not stored)"
BARE_COLUMNS = "bare grpc.aio LogOutcomes as OutcomeColumns (parsed, not stored)"
RAW = "raw sqlite3 executemany, the messages round's rows"
RAW_COLUMNS = "raw sqlite3 executemany, the columns round's rows"
IN_FLIGHT = 4
INSERT = ("INSERT OR IGNORE INTO outcomes (use_case, decision_id, outcome_id, name, value, label, event_time_ms, "
          "decision_time_ms, item_id, write_time_us) VALUES (?,?,?,?,?,?,?,?,?,?)")


def outcomes(n: int, offset: int) -> list[fpb.Outcome]:
    """``n`` outcomes of distinct decisions made in the last minute."""
    now = int(time.time() * 1000)
    return [fpb.Outcome(use_case=USE_CASE, decision_id=id_at(now - 60_000 + (offset + i) % 50_000),
                        outcome_id=f"o{offset + i}", name="purchase", value=1.0) for i in range(n)]


def as_columns(rows: list[fpb.Outcome]) -> fpb.OutcomeColumns:
    """The outcomes (of one use case, no labels, times or items) as columns."""
    return fpb.OutcomeColumns(use_case=USE_CASE, decision_ids=[o.decision_id for o in rows],
                              outcome_ids=[o.outcome_id for o in rows], names=[o.name for o in rows],
                              values=[o.value for o in rows])


async def grpc_round(address: str, rows: list[fpb.Outcome], batch: int, columns: bool = False) -> float:
    """Rows per second through LogOutcomes (``columns``: sent as OutcomeColumns)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = fgrpc.FeedbackServiceStub(channel)
        requests = [fpb.LogOutcomesRequest(columns=[as_columns(rows[i:i + batch])]) if columns else
                    fpb.LogOutcomesRequest(outcomes=rows[i:i + batch]) for i in range(0, len(rows), batch)]
        queue = list(reversed(requests))
        started = time.perf_counter()

        async def sender() -> None:
            while queue:
                request = queue.pop()
                reply = await stub.LogOutcomes(request, timeout=60)
                sent = len(request.outcomes) + sum(len(c.decision_ids) for c in request.columns)
                if reply.accepted != sent:  # every row new: none a duplicate or an orphan
                    raise RuntimeError(f"{reply.accepted} of {sent} outcomes accepted as new")

        await asyncio.gather(*(sender() for _ in range(IN_FLIGHT)))
        return len(rows) / (time.perf_counter() - started)


def raw_round(conn: sqlite3.Connection, rows: list[fpb.Outcome], batch: int) -> tuple[float, float]:
    """Rows per second with executemany of the rows as the service stores them (the
    decision time from the UUIDv7 id; the tuples built beforehand, as a bare client
    would have them), and this thread's CPU µs per row meanwhile."""
    now_us = int(time.time() * 1e6)
    tuples = [(o.use_case, o.decision_id, o.outcome_id, o.name, o.value, o.label, now_us // 1000,
               uuid7_time_ms(o.decision_id), o.item_id, now_us) for o in rows]
    before = conn.total_changes
    started, cpu = time.perf_counter(), time.thread_time()
    for i in range(0, len(tuples), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT, tuples[i:i + batch])
        conn.execute("COMMIT")
    rate, cpu_us = len(rows) / (time.perf_counter() - started), (time.thread_time() - cpu) * 1e6 / len(rows)
    if conn.total_changes - before != len(rows):
        raise RuntimeError(f"{conn.total_changes - before} of {len(rows)} raw rows stored as new")
    return rate, cpu_us


async def served_round(address: str, pid: int, rows: list[fpb.Outcome], batch: int,
                       columns: bool = False) -> tuple[float, float]:
    """:func:`grpc_round` against a server process: rows per second and its CPU µs per row."""
    before = cpu_seconds([pid])
    rate = await grpc_round(address, rows, batch, columns)
    return rate, (cpu_seconds([pid]) - before) * 1e6 / len(rows)


async def run(rows: int, batch: int, rounds: int) -> str:
    """The comparison; returns a markdown table."""
    work = Path(tempfile.mkdtemp(prefix="lw-sqlite-ingest-"))
    launcher = new_launcher(work / "stack", LOOPWISE_LOG_LEVEL="WARNING")
    conn = sqlite3.connect(str(work / "raw.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    cells: dict[str, list[tuple[float, float]]] = {OURS: [], OURS_COLUMNS: [], BARE: [], BARE_COLUMNS: [], RAW: [],
                                                   RAW_COLUMNS: []}
    load = [os.getloadavg()[0], 0.0]
    server_core, client_core = cores()
    allowed = os.sched_getaffinity(0)
    started: list[subprocess.Popen] = []
    try:
        launcher.start_all(["decision", "feedback"])
        feedback_pid = launcher.pid("feedback")
        assert feedback_pid is not None
        pin(feedback_pid, server_core)
        bare_address, bare_pid = start_bare(started, 100, False, server_core)
        with grpc.insecure_channel(launcher.address("decision")) as channel:
            dgrpc.DecisionServiceStub(channel).ApplyUseCase(
                dpb.ApplyUseCaseRequest(blueprint=blueprint(USE_CASE)), timeout=30)
        warm = outcomes(2000, 10**9), outcomes(2000, 10**9 + 2000)
        for address in (launcher.address("feedback"), bare_address):  # warm-up
            for columns in (False, True):
                await grpc_round(address, warm[columns], batch, columns)
        raw_round(conn, warm[0] + warm[1], batch)  # the service's warm-up rows
        for r in range(rounds):
            pin(os.getpid(), client_core)
            fresh = outcomes(rows, 2 * r * rows), outcomes(rows, (2 * r + 1) * rows)  # new rows for each form
            cells[OURS].append(await served_round(launcher.address("feedback"), feedback_pid, fresh[0], batch))
            cells[OURS_COLUMNS].append(await served_round(launcher.address("feedback"), feedback_pid, fresh[1],
                                                          batch, columns=True))
            cells[BARE].append(await served_round(bare_address, bare_pid, fresh[0], batch))
            cells[BARE_COLUMNS].append(await served_round(bare_address, bare_pid, fresh[1], batch, columns=True))
            pin(os.getpid(), server_core)
            cells[RAW].append(raw_round(conn, fresh[0], batch))
            cells[RAW_COLUMNS].append(raw_round(conn, fresh[1], batch))
            print(f"round {r + 1}: " + ", ".join(f"{name} {cell[-1][0]:,.0f} rows/s" for name, cell in cells.items()),
                  flush=True)
    finally:
        if server_core:
            os.sched_setaffinity(0, allowed)
            pin(os.getpid(), ",".join(map(str, sorted(allowed))))
        for proc in started:
            proc.terminate()
            proc.wait(timeout=30)
        launcher.stop_all()
        conn.close()
    load[1] = os.getloadavg()[0]
    rate = {name: statistics.median(r for r, _ in cell) for name, cell in cells.items()}
    cpu = {name: statistics.median(c for _, c in cell) for name, cell in cells.items()}
    ratio, column_ratio = rate[OURS] / rate[RAW], rate[OURS_COLUMNS] / rate[RAW_COLUMNS]
    lines = [
        f"LogOutcomes into feedback on SQLite vs raw executemany; {rounds} interleaved rounds of {rows:,} rows, "
        f"{batch} rows per call / transaction, {IN_FLIGHT} calls in flight; the raw baseline inserts the same rows "
        "as the service, into a table that takes both forms' rows as the service's does (each raw row below: "
        "its form's rows, at the table size the service's round found); the feedback service (all its "
        f"threads), the bare floor and the raw baseline on core {server_core or '(any)'}, the client on core "
        f"{client_core or '(any)'}; load average {load[0]:.2f} → {load[1]:.2f}.",
        "",
        "| path | rows/s min / median / max | CPU µs per row (median) |",
        "|---|---|---|",
    ]
    for name, cell in cells.items():
        rates = [r for r, _ in cell]
        lines.append(f"| {name} | {min(rates):,.0f} / {rate[name]:,.0f} / {max(rates):,.0f} | {cpu[name]:.2f} |")
    lines += [
        "",
        f"LogOutcomes / executemany of the same rows at the same table size (medians): as Outcome messages "
        f"{ratio:.2f}× "
        f"(target ≥ 0.5×: {'met' if ratio >= 0.5 else 'NOT met'}), as OutcomeColumns {column_ratio:.2f}× "
        f"(target ≥ 0.5×: {'met' if column_ratio >= 0.5 else 'NOT met'})",
        "",
    ]
    for ours, bare, raw, form in ((OURS, BARE, RAW, "as messages"), (OURS_COLUMNS, BARE_COLUMNS, RAW_COLUMNS,
                                                                      "as columns")):
        lines.append(f"Per row {form}, the service spends {cpu[ours]:.2f} µs of CPU: the transport and parse floor "
                     f"{cpu[bare]:.2f}, the raw insert {cpu[raw]:.2f}, and {cpu[ours] - cpu[bare] - cpu[raw]:.2f} "
                     "µs more (the service's CPU is read in 10 ms ticks from /proc).")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run (2,000 rows, one round)")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.rounds = 2000, 1
    text = asyncio.run(run(args.rows, args.batch, args.rounds))
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
