"""The sections `make bench` adds after its table, end to end with tiny sizes: each
starts its own servers, measures both sides of its comparison and states its verdict
(numbers are not asserted: tests never assert timings)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import java_available

ROOT = Path(__file__).resolve().parents[2]
RATE = re.compile(r"\| [\d,]+ / [\d,]+ / [\d,]+ \|")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("module, paths", [
    ("bench.sqlite_ingest", ("| LogOutcomes (gRPC, feedback service, SQLite) |",
                             "| raw sqlite3 executemany, the messages round's rows |",
                             "| LogOutcomes as OutcomeColumns (gRPC, feedback service, SQLite) |",
                             "| raw sqlite3 executemany, the columns round's rows |")),
    ("bench.stream", ("| Decide (unary) |", "| DecideStream, answer awaited |", "| DecideStream, sent ahead |",
                      "| bare unary |", "| bare stream, answer awaited |", "| bare stream, sent ahead |")),
    ("bench.batch", ("| DecideBatch, 1 in flight |", "| DecideBatch, 2 in flight |", "| raw onnxruntime |")),
])
def test_section_runs_both_sides_and_states_its_verdict(tmp_path: Path, module: str, paths: tuple[str, ...]) -> None:
    out = tmp_path / "section.md"
    run = subprocess.run([sys.executable, "-m", module, "--quick", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stderr[-3000:]
    text = out.read_text()
    for path in paths:
        line = next((row for row in text.splitlines() if path in row), None)
        assert line is not None and RATE.search(line), (path, text)
    assert re.search(r"target ≥ [\d.]+×: (met|NOT met)", text), text


@pytest.mark.timeout(300)
def test_cassandra_ingest_bench_measures_both_sides() -> None:
    """bench/feedback_ingest.py with tiny sizes: it starts its own Cassandra and the
    feedback service, and measures raw execute_concurrent, LogOutcomes and
    ReadTrainingData (a change of the stored columns that the bench's raw inserts miss
    fails here, not in the next benchmark run)."""
    if not java_available():
        if os.environ.get("CI") == "true":
            pytest.fail("CI needs Java to run Cassandra")
        pytest.skip("no java on this machine: the Cassandra bench needs Java 17")
    run = subprocess.run([sys.executable, "-m", "bench.feedback_ingest", "--ingest-rows", "2000", "--rounds", "2",
                          "--read-rows", "2000", "--concurrency", "64"], cwd=ROOT, capture_output=True, text=True,
                         timeout=280)
    assert run.returncode == 0, run.stderr[-3000:]
    for path in ("LogOutcomes (gRPC, feedback service, Cassandra)", "raw cassandra-driver execute_concurrent"):
        line = next((row for row in run.stdout.splitlines() if path in row), None)
        assert line is not None and RATE.search(line), (path, run.stdout)
    assert re.search(r"target ≥ 0\.5×: (met|NOT met)", run.stdout), run.stdout
    line = next((row for row in run.stdout.splitlines() if "ReadTrainingData" in row), None)
    assert line is not None and re.search(r"\| [\d,]+ rows/s \|", line), run.stdout
