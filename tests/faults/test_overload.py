"""Overload (docs/architecture.md §6): a real decision + feedback pair (SQLite, default
decisions) offered three times its measured capacity by ghz, open loop, with the SDK's
default 1 s deadline.

ghz (scripts/install_tools.sh) measures capacity closed loop (16 in flight, 4 s), then
sends 3 x capacity requests per second (``--async --rps``: each on schedule, whatever
happened to the earlier ones) on 4 connections, rate x 30 s requests in all (``-n``),
so the run ends by itself after 30 s plus the last deadline. ghz runs pinned to core 0
with feedback, the decision service to core 1 (when the machine has two). ghz counts
attempts: grpc-go retries a call once by itself when the server refused its stream
(REFUSED_STREAM), so each request's own ending is taken from the counts
(``Level.finals``).

What is asserted:

- requests are shed, and every request ended OK, RESOURCE_EXHAUSTED (admission control:
  over a bound, or too little deadline left), UNAVAILABLE (more calls on a connection
  than ``LOOPWISE_MAX_STREAMS_PER_CONNECTION``, refused by grpc's core) or
  DEADLINE_EXCEEDED (no answer in time: it waited in ghz for a free stream on its
  connection, or in transit);
- the decision process's resident memory grows by at most 100 MiB;
- every decision made is logged exactly once, as served or as undelivered
  (``GetStats``), and the undelivered ones are what the decision service counted
  (``loopwise_decisions_undelivered_total``);
- the OK answers ghz got that were logged as undelivered (an answer written in time
  whose completion the server noticed after the deadline) are at most 1% of OK (plus 5),
  and the decisions logged as served that ghz did not count as OK are at most 15% of its
  DEADLINE_EXCEEDED (plus 5).

The residual, and why it is not zero. The server logs an answer as served when grpc
handed it to the transport at least 5 ms before the call's deadline as the server
computed it when the request arrived (arrival plus the request's ``grpc-timeout``).
grpc-go computes ``grpc-timeout`` before it waits for a free stream on its connection
(``http2Client.NewStream``: ``createHeaderFields``, then the stream quota), so a
request that waited in ghz arrives with a deadline later than ghz's own by that wait;
an answer the server hands over in between reaches a ghz that has given up, and it is
logged as served while ghz counts DEADLINE_EXCEEDED (a starved client reading late
does the same). Those answers are a part of ghz's DEADLINE_EXCEEDED. Seen on this
shared 2-core machine (load average 8-13): served - OK = 273 of 13,857 OK and 13,901
DEADLINE_EXCEEDED (2.0%); in other runs 6-551, at most 8% of DEADLINE_EXCEEDED with 4
connections. The SDK's channels (grpc's core) compute the timeout when the request is
written, after any such wait.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.overload import (
    GHZ_CORE,
    ROOT,
    SERVER_CORE,
    SHED_CODES,
    Ghz,
    PeakRss,
    apply,
    drained_stats,
    ghz_binary,
    metric_total,
    offer,
    pin_process,
    pinned,
    write_protoset,
)
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.launcher import Launcher, free_port
from tests.decision.helpers import blueprint, features
from tests.support import new_launcher

USE_CASE = "overload"
SECONDS = 30.0
MULTIPLE = 3.0
ALLOWED = {"OK", *SHED_CODES, "DeadlineExceeded"}
# The same statuses as grpc.StatusCode names (bench/open_loop.py), and CANCELLED: a
# call grpc's core held longer than the admission's core queue bound without Python
# asking for it is cancelled by the core (Admission.server_options).
ALLOWED_NAMES = {"OK", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"}


def _metrics_port() -> int:
    """A free port whose next one is free too and handed to nobody else in this process
    (decision and feedback metrics: LOOPWISE_METRICS_PORT + 0 and + 1)."""
    while True:
        port, following = free_port(), free_port()
        if following == port + 1:
            return port


def _launcher(tmp_path: Path) -> tuple[Launcher, int]:
    """A launcher for decision and feedback, and the metrics port they will serve on."""
    launcher = new_launcher(tmp_path / "stack", LOOPWISE_LOG_LEVEL="WARNING")
    metrics = _metrics_port()  # after the service ports
    launcher.env["LOOPWISE_METRICS_PORT"] = str(metrics)
    return launcher, metrics


def _start_pinned(launcher: Launcher) -> int:
    """Start feedback and decision, the decision process alone on the server core; its pid."""
    launcher.start_all(["feedback", "decision"])
    decision_pid, feedback_pid = launcher.pid("decision"), launcher.pid("feedback")
    assert decision_pid and feedback_pid
    pin_process(decision_pid, SERVER_CORE)
    pin_process(feedback_pid, GHZ_CORE)
    return decision_pid


@pytest.mark.timeout(240)
def test_three_times_capacity_is_shed_at_once_and_logged_as_delivered(tmp_path: Path) -> None:
    try:
        ghz_path = ghz_binary()
    except RuntimeError as error:
        pytest.fail(str(error))
    started = time.monotonic()
    launcher, metrics = _launcher(tmp_path)
    try:
        decision_pid = _start_pinned(launcher)
        apply(launcher.address("decision"), blueprint(USE_CASE))
        request = tmp_path / "decide.bin"
        request.write_bytes(dpb.DecideRequest(use_case=USE_CASE, unit_id="unit-1", features=features())
                            .SerializeToString())
        ghz = Ghz(ghz_path, launcher.address("decision"), write_protoset(tmp_path / "decision.protoset"), request)

        ghz.capacity(1.0)  # warm-up
        capacity = ghz.capacity(4.0)
        made_before = _made(metrics, USE_CASE)
        undelivered_before = metric_total(metrics, "loopwise_decisions_undelivered_total", USE_CASE)
        before = drained_stats(launcher.address("feedback"), USE_CASE, made_before)

        level = offer(ghz, MULTIPLE, capacity, SECONDS, decision_pid)

        made = _made(metrics, USE_CASE) - made_before
        counted = metric_total(metrics, "loopwise_decisions_undelivered_total", USE_CASE) - undelivered_before
        stats = drained_stats(launcher.address("feedback"), USE_CASE, made_before + made)
        served = stats.decisions - before.decisions
        undelivered = stats.undelivered_decisions - before.undelivered_decisions
        print(f"capacity {capacity:.0f}/s; offered {level.rate}/s for {level.seconds:.1f} s: {level.requests} requests "
              f"ended {level.finals} (attempts {level.codes}); "
              f"OK p99 {level.ok_p99_ms:.0f} ms; decision RSS {level.rss_start:.0f} -> {level.rss_peak:.0f} MiB; "
              f"decisions made {made:.0f}, logged served {served}, undelivered {undelivered} (counted {counted:.0f}); "
              f"served - OK = {served - level.ok}; test took {time.monotonic() - started:.0f} s")

        finals = level.finals
        assert level.shed > 0, finals
        assert set(finals) <= ALLOWED, finals
        assert level.rss_peak - level.rss_start <= 100, (level.rss_start, level.rss_peak)
        assert served + undelivered == made  # every decision logged once
        assert undelivered == counted
        # Every answer ghz got was logged as served; the surplus of served over OK comes
        # out of ghz's DEADLINE_EXCEEDED (see the module docstring).
        deadline_exceeded = finals.get("DeadlineExceeded", 0)
        assert level.ok - served <= 0.01 * level.ok + 5, (served, level.ok)
        assert served - level.ok <= 0.15 * deadline_exceeded + 5, (served, level.ok, deadline_exceeded)
    finally:
        for name in ("decision", "feedback"):
            if launcher.pid(name):
                print(launcher.log_tail(name, 10))
        launcher.stop_all()


def _made(port: int, use_case: str) -> float:
    """Decisions made: the answered ones and those whose answer was not sent."""
    return metric_total(port, "loopwise_decisions_total", use_case) \
        + metric_total(port, "loopwise_decisions_unsent_total", use_case)


def _ranking_blueprint(name: str) -> bp.Blueprint:
    b = blueprint(name, kind="regression")
    b.kind = bp.DECISION_KIND_RANKING
    b.default_decision.action = ""
    return b


def _client(target: str, request: Path, seconds: float, *args: str) -> dict:
    """bench/open_loop.py on the load core; its JSON result."""
    command = pinned([sys.executable, "-m", "bench.open_loop", "--target", target, "--request", str(request),
                      "--seconds", f"{seconds:g}", *args], GHZ_CORE)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds * 3 + 60, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(240)
def test_clients_on_grpc_core_get_the_decisions_logged_as_served(tmp_path: Path) -> None:
    """The same overload through clients on grpc's core (the SDK's channels), which tell
    the server how long they will still wait when they write a request: at 3x capacity
    for 30 s every decision made is logged once, as served or as undelivered (counted),
    and the decisions logged as served differ from the OK answers the clients counted
    only by the race in transit (docs/architecture.md §6): an answer handed over just
    before the server's deadline, which runs behind the client's by the time between
    the client writing the request and the server's core reading it (logged as served,
    missed by the client); and the reverse, an answer written in time whose completion
    the server noticed after the deadline (logged as undelivered, read as OK). Served
    minus OK seen here: 0, 14, 16 and -4 of about 5,100-5,800 OK; asserted: at most 1%
    of OK either way (plus 2).

    Why a ranking use case with 400 candidates: its Decide costs milliseconds (encoding
    400 rows), so 3x its capacity is a rate a Python client sends on one core with room
    to spare; a client that is itself starved reads answers late and counts as missed
    what reached it in time."""
    use_case = "overload_exact"
    launcher, metrics = _launcher(tmp_path)
    try:
        decision_pid = _start_pinned(launcher)
        address = launcher.address("decision")
        apply(address, _ranking_blueprint(use_case))
        request = tmp_path / "rank.bin"
        request.write_bytes(dpb.DecideRequest(
            use_case=use_case, unit_id="unit-1", features={"x": dpb.FeatureValue(number=1.0),
                                                           "country": dpb.FeatureValue(category="de")},
            candidates=[dpb.Candidate(id=f"c{i}", features={"y": dpb.FeatureValue(number=float(i))})
                        for i in range(400)]).SerializeToString())

        _client(address, request, 1.0, "--closed-loop", "16")  # warm-up
        capacity = _client(address, request, 4.0, "--closed-loop", "16")["ok_per_s"]
        made_before = _made(metrics, use_case)
        undelivered_before = metric_total(metrics, "loopwise_decisions_undelivered_total", use_case)
        before = drained_stats(launcher.address("feedback"), use_case, made_before)

        rate = max(1.0, round(capacity * MULTIPLE))
        with PeakRss(decision_pid) as rss:
            result = _client(address, request, SECONDS, "--rate", f"{rate:g}", "--deadline-s", "1.0")

        made = _made(metrics, use_case) - made_before
        counted = metric_total(metrics, "loopwise_decisions_undelivered_total", use_case) - undelivered_before
        stats = drained_stats(launcher.address("feedback"), use_case, made_before + made)
        served = stats.decisions - before.decisions
        undelivered = stats.undelivered_decisions - before.undelivered_decisions
        codes = result["codes"]
        print(f"capacity {capacity:.0f}/s; offered {rate:.0f}/s for {SECONDS:.0f} s ({result['wall_s']:.1f} s wall): "
              f"{result['requests']} requests ended {codes}; decision RSS {rss.start:.0f} -> {rss.peak:.0f} MiB; "
              f"decisions made {made:.0f}, logged served {served}, undelivered {undelivered} (counted {counted:.0f})")

        assert sum(codes.values()) == result["requests"]
        assert set(codes) <= ALLOWED_NAMES, codes
        assert sum(codes.get(c, 0) for c in ("RESOURCE_EXHAUSTED", "UNAVAILABLE")) > 0, codes
        assert rss.peak - rss.start <= 100, (rss.start, rss.peak)
        assert served + undelivered == made
        assert undelivered == counted
        ok = codes.get("OK", 0)
        assert abs(served - ok) <= 0.01 * ok + 2, (served, codes)
    finally:
        for name in ("decision", "feedback"):
            if launcher.pid(name):
                print(launcher.log_tail(name, 10))
        launcher.stop_all()
