"""Schema migrations outside the services (``loopwise migrate``, the chart's migrations
Job): with LOOPWISE_STORE_MIGRATE_ON_START=false a service refuses a keyspace that lacks
its migrations, naming them and the command; after ``migrate`` every store opens, and a
second run applies nothing. On the session Cassandra (skipped without Java locally)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from loopwise.settings import SERVICES, Settings
from loopwise.store.cassandra_support import CQL_DIR
from loopwise.store.decision import open_decision_store
from loopwise.store.evaluator import open_evaluator_store
from loopwise.store.feedback import open_feedback_store
from loopwise.store.migrate import migrate
from loopwise.store.trainer import open_trainer_store

OPENERS = {"decision": open_decision_store, "feedback": open_feedback_store,
           "trainer": open_trainer_store, "evaluator": open_evaluator_store}


def test_services_wait_for_migrate_when_told_not_to_migrate(cassandra, tmp_path) -> None:
    url = f"{cassandra.url}/migrate_{uuid.uuid4().hex[:12]}"
    urls = {f"{s}_store_url": url for s in SERVICES}
    off = Settings(**urls, data_dir=tmp_path / "var", store_migrate_on_start=False)
    with pytest.raises(RuntimeError) as refused:
        open_decision_store(off)
    assert "loopwise migrate" in str(refused.value) and "001_use_cases" in str(refused.value)

    # The module entry point the chart's Job runs, with the Job's environment.
    env = {**os.environ, **{f"LOOPWISE_{s.upper()}_STORE_URL": url for s in SERVICES},
           "LOOPWISE_DATA_DIR": str(tmp_path / "var")}
    done = subprocess.run([sys.executable, "-m", "loopwise.store.migrate"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["service"] for line in lines] == list(SERVICES)
    for line in lines:
        expected = sorted(p.stem for p in (CQL_DIR / line["service"]).glob("*.cql"))
        assert line["store"] == "cassandra" and line["applied"] == expected, line

    for opener in OPENERS.values():
        opener(off).close()
    assert migrate(Settings(**urls, data_dir=tmp_path / "var")) == {s: [] for s in SERVICES}


def test_migrate_refuses_an_unknown_service(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "loopwise.cli", "migrate", "--service", "ranker"],
                          env={**os.environ, "LOOPWISE_DATA_DIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--service must be one of decision" in done.stderr
    assert migrate(Settings(data_dir=tmp_path), ["trainer"]) == {"trainer": None}  # SQLite: nothing to do
