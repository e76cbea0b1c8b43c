"""The sections `make bench` adds after its table, end to end with tiny sizes: each
starts its own servers, measures both sides of its comparison and states its verdict
(numbers are not asserted: tests never assert timings)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RATE = re.compile(r"\| [\d,]+ / [\d,]+ / [\d,]+ \|")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("module, paths", [
    ("bench.sqlite_ingest", ("LogOutcomes (gRPC, feedback service, SQLite)", "raw sqlite3 executemany")),
    ("bench.stream", ("| unary |", "| stream |")),
    ("bench.batch", ("| DecideBatch |", "| raw onnxruntime |")),
])
def test_section_runs_both_sides_and_states_its_verdict(tmp_path: Path, module: str, paths: tuple[str, str]) -> None:
    out = tmp_path / "section.md"
    run = subprocess.run([sys.executable, "-m", module, "--quick", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stderr[-3000:]
    text = out.read_text()
    for path in paths:
        line = next((row for row in text.splitlines() if path in row), None)
        assert line is not None and RATE.search(line), (path, text)
    assert re.search(r"target ≥ [\d.]+×: (met|NOT met)", text), text
