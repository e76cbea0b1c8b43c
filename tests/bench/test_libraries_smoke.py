"""bench/libraries.py end to end with tiny sizes: every variant's decision server starts
(own code, prometheus_client in multiprocess mode, the OpenTelemetry gRPC interceptor),
ghz drives it, the table and the decisions come out, and everything it started is
stopped (timings are never asserted)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.floor import ghz_path
from bench.libraries import END, START, VARIANTS

ROOT = Path(__file__).resolve().parents[2]


def test_quick_libraries_bench_prints_the_table(tmp_path) -> None:
    try:
        ghz_path()
    except RuntimeError:
        pytest.skip("ghz is not installed (scripts/install_tools.sh)")
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nkept text\n")
    run = subprocess.run([sys.executable, "-m", "bench.libraries", "--quick", "--out", str(out)], cwd=ROOT,
                         env={**os.environ, "LOOPWISE_LOG_LEVEL": "WARNING"}, capture_output=True, text=True,
                         timeout=280)
    assert run.returncode == 0, run.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nkept text\n")
    assert text.count(START) == 1 and text.count(END) == 1
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    for name in VARIANTS:
        cells = rows[name].strip("| ").split(" | ")
        assert len(cells) == 8, rows[name]
        assert re.fullmatch(r"[\d,]+ / [\d,]+ / [\d,]+", cells[1]), cells[1]
        assert cells[7] == "0", f"{name}: errors {cells[7]}"
    assert rows["own, tracing off"].split(" | ")[2] == "1.000"
    assert rows["own, tracing on"].split(" | ")[2] == "1.000"
    for library in ("prometheus_client (multiprocess)", "opentelemetry-instrumentation-grpc"):
        assert rows[library].rstrip(" |").endswith(("| adopt", "| keep the own code")), rows[library]
    assert "- command: `.venv/bin/python -m bench.libraries --quick" in text
    # The prometheus_client variant really counted the Decide calls in its multiprocess files.
    counted = re.search(r'loopwise_rpc_requests_total\{code="OK",rpc="Decide"[^}]*\} (\d+)', run.stderr)
    assert counted and float(counted.group(1)) > 0, run.stderr[-2000:]
