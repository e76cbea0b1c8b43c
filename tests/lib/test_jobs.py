"""Worker processes die with the service that started them: a SIGKILLed trainer or
evaluator leaves no worker computing for nobody (nor its resource tracker)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
POOL_PARENT = """
import asyncio, os, sys, time
from loopwise.jobs import ProcessPool

async def main():
    pool = ProcessPool(1)
    pid = await pool.run(os.getpid)
    print(pid, flush=True)
    await pool.run(time.sleep, 600)

asyncio.run(main())
"""
SLEEPY_JOB = """
import os, time

def job(report):
    report("started", 0.0, str(os.getpid()))
    time.sleep(600)
"""
ISOLATED_PARENT = """
import asyncio
from loopwise.services.evaluator.isolation import run_isolated
from sleepy_job import job

async def main():
    async def on_stage(stage, progress, message):
        print(message, flush=True)
    await run_isolated(job, on_stage=on_stage)

asyncio.run(main())
"""


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
@pytest.mark.parametrize("program", [POOL_PARENT, ISOLATED_PARENT], ids=["process_pool", "evaluator_job"])
def test_a_killed_parent_takes_its_worker_with_it(program: str, tmp_path: Path) -> None:
    (tmp_path / "sleepy_job.py").write_text(SLEEPY_JOB)
    parent = subprocess.Popen([sys.executable, "-c", program], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"})
    try:
        worker = int(parent.stdout.readline())  # type: ignore[union-attr]
        assert worker != parent.pid and alive(worker)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(worker), f"worker {worker} outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
