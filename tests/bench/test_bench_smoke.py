"""The benchmark harness end to end with tiny sizes: it runs, stops what it started
and produces the table (timings are never asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_prints_the_table(tmp_path) -> None:
    out = tmp_path / "benchmarks.md"
    env = {**os.environ, "LOOPWISE_LOG_LEVEL": "WARNING"}
    run = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stderr[-3000:]
    text = out.read_text()
    assert "| section | measure |" in text
    for section in ("Decide, logging off", "DecideBatch 1,024 rows (HGB)", "Decide, logging on (feedback running)",
                    "CPU time per decision", "Decide, 2 workers", "Resident memory, one decision worker"):
        assert f"| {section}" in text, section
    rows = [line for line in text.splitlines() if line.startswith("| Decide, logging off | req/s")]
    assert len(rows) == 2  # the two quick concurrency levels
    assert all("errors 0" in line for line in rows)
    assert "- command: `.venv/bin/python -m bench --quick" in text
    assert run.stdout.strip().startswith("# Benchmarks")
