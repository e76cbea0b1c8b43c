"""bench/floor.py end to end with tiny sizes: the bare servers, the decision service and
ghz start, the table and the verdicts come out, and everything it started is stopped
(timings are never asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.floor import ghz_path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_floor_prints_the_table(tmp_path) -> None:
    try:
        ghz_path()
    except RuntimeError:
        pytest.skip("ghz is not installed (scripts/install_tools.sh)")
    out = tmp_path / "floor.md"
    run = subprocess.run([sys.executable, "-m", "bench.floor", "--quick", "--out", str(out)], cwd=ROOT,
                         env={**os.environ, "LOOPWISE_LOG_LEVEL": "WARNING"}, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    names = {key.split("|")[0] for key in result["cells"]}
    assert names == {"raw bytes", "bare proto", "Decide", "bare proto (paired)", "Decide, logging on"}
    assert all(r["count"] > 0 and r["errors"] == 0 for runs in result["cells"].values() for r in runs)
    text = out.read_text()
    assert "| server | in flight |" in text and "| target | measured | verdict |" in text
    assert text.count("| Decide |") == 2  # the two quick levels
