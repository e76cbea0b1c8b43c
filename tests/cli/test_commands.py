"""Every command of the CLI against the four real services (the session stack, plaintext):
use cases, logged data, training, models, deployments, jobs, reports and analyses; the
JSON output of the reading commands parsed; and the messages for an unreachable service,
an unknown use case and a bad field."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner, Result

import loopwise
from loopwise.cli import app, blueprint_yaml
from loopwise.client import Client, Outcome
from loopwise.clock import Clock, uuid7_time_ms
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.launcher import Launcher, free_port
from loopwise.settings import Settings
from loopwise.simulator import CheckoutUpsell

runner = CliRunner()
USE_CASE = "cli_api"
ROWS = 600
# Estimating effects and training share the machine with other test runs.
pytestmark = pytest.mark.timeout(900)


@dataclass(frozen=True)
class Product:
    """The use case of this module on the session stack."""

    world: CheckoutUpsell
    settings: Settings
    env: dict[str, str]
    decision_ids: list[str]

    def run(self, *args: str, ok: bool = True, env: dict[str, str] | None = None) -> Result:
        result = runner.invoke(app, list(args), prog_name="loopwise",
                               env={**self.env, "COLUMNS": "220", **(env or {})})
        if ok:
            assert result.exit_code == 0, (args, result.output)
        return result

    def json(self, *args: str):
        return json.loads(self.run(*args, "--output", "json").stdout)


def _env(stack: Launcher) -> dict[str, str]:
    return {k: v for k, v in stack.env.items() if k.startswith("LOOPWISE_")}


def _records(world: CheckoutUpsell, settings: Settings, n: int, unit: str) -> tuple[list[dict], np.ndarray, object]:
    """``n`` decisions made two hours ago (at random, half and half), by name."""
    start = Clock.from_settings(settings).now_datetime() - timedelta(hours=2)
    units = world.sample_units(n)
    actions = world.rng.integers(0, 2, n)
    records = [{"use_case": USE_CASE, "decision_id": loopwise.uuid7_at(start + timedelta(seconds=i)),
                "unit_id": f"{unit}-{i}", "features": units.features(i), "action_index": int(actions[i]),
                "action_probabilities": [0.5, 0.5], "explored": True} for i in range(n)]
    return records, actions, units


@pytest.fixture(scope="module")
def product(stack: Launcher, stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Product:
    """The use case applied with the CLI and ROWS decisions (two hours old, their windows
    closed) with their purchases imported through the SDK."""
    world = CheckoutUpsell(seed=41, window_s=60)
    blueprint = world.blueprint(epsilon=0.2)
    blueprint.use_case = USE_CASE
    blueprint.training.CopyFrom(bp.TrainingSpec(min_rows=200, candidate_families=["linear"],
                                                candidate_budget_seconds=20))
    path = tmp_path_factory.mktemp("cli") / "cli_api.yaml"
    path.write_text(blueprint_yaml(blueprint))
    env = _env(stack)
    applied = runner.invoke(app, ["apply", "-f", str(path), "--reason", "cli test"], env=env)
    assert applied.exit_code == 0, applied.output
    records, actions, units = _records(world, stack_settings, ROWS, "unit")
    ids = [r["decision_id"] for r in records]
    times = np.array([uuid7_time_ms(d) for d in ids], dtype=np.int64)
    rows, values, event_ms = world.sample_outcomes(units, actions, times)
    with Client(settings=stack_settings) as client:
        assert client.log_decisions(records).accepted == ROWS
        client.log_outcomes([Outcome(USE_CASE, ids[i], f"o-{ids[i]}", "purchase", float(v), event_time=ms / 1000)
                             for i, v, ms in zip(rows, values, event_ms, strict=True)])
    return Product(world, stack_settings, env, ids)


def test_use_case_commands(product: Product) -> None:
    listed = product.json("use-cases")
    assert USE_CASE in [u["blueprint"]["use_case"] for u in listed]
    one = product.json("use-case", "-u", USE_CASE, "--version", "1")
    assert one["version"] == "1" and one["blueprint"]["actions"] == ["no_offer", "offer"]
    assert one["reason"] == "cli test" and one["kill_switch"] is False  # every field, zeros too
    shown = product.run("use-case", "-u", USE_CASE)
    assert f"useCase: {USE_CASE}" in shown.stdout and "version 1 of 1" in shown.stdout
    history = product.json("history", "-u", USE_CASE)
    assert [c["change"] for c in history] == ["create"]
    table = product.run("use-cases").stdout
    assert USE_CASE in table and "no_offer,offer" in table


def test_data_commands(product: Product, tmp_path: Path) -> None:
    stats = product.json("stats", "-u", USE_CASE)
    assert int(stats["decisions"]) == ROWS and int(stats["outcomes"]) > 0
    assert "join rate" in product.run("stats", "-u", USE_CASE).stdout.replace("_", " ")

    decision_id = product.decision_ids[3]
    found = product.json("decision", "get", "-u", USE_CASE, decision_id)
    assert found["decision"]["decision_id"] == decision_id
    assert list(found["feature_values"]) == list(product.world.feature_names)
    assert set(found) >= {"outcomes", "reward", "window_closed", "model_lineage"}
    shown = product.run("decision", "get", "-u", USE_CASE, decision_id).stdout
    assert decision_id in shown and "basket_value" in shown and "reward" in shown

    out = tmp_path / "rows.csv"
    assert f"{ROWS} joined rows" in " ".join(product.run("export", "-u", USE_CASE, "-o", str(out)).stdout.split())
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == ROWS and {r["decision_id"] for r in rows} == set(product.decision_ids)
    assert set(rows[0]) >= {"decision_time", "action", "propensity", "p_no_offer", "p_offer", "reward",
                            "region", "basket_value"}
    assert {r["region"] for r in rows} <= {"north", "south", "east", "west"}
    parquet = tmp_path / "rows.parquet"
    product.run("export", "-u", USE_CASE, "-o", str(parquet))
    table = pq.read_table(parquet)
    assert table.num_rows == ROWS and str(table.schema.field("decision_time").type) == "timestamp[ms, tz=UTC]"
    assert sorted(table.column("decision_id").to_pylist()) == sorted(product.decision_ids)
    bad = product.run("export", "-u", USE_CASE, "-o", str(tmp_path / "rows.xlsx"), ok=False)
    assert bad.exit_code == 2 and "--format must be one of parquet, csv" in bad.output

    extra, _, _ = _records(product.world, product.settings, 2, "leaving")
    for record in extra:
        record["unit_id"] = "leaving-unit"
    with Client(settings=product.settings) as client:
        client.log_decisions(extra)
    deleted = product.run("delete-unit", "-u", USE_CASE, "--unit", "leaving-unit").stdout
    assert "deleted 2 decision(s) and 0 outcome(s)" in " ".join(deleted.split())
    gone = product.run("decision", "get", "-u", USE_CASE, extra[0]["decision_id"], ok=False)
    assert gone.exit_code == 1 and "NOT_FOUND" in gone.output


def test_training_models_deployments_and_jobs(product: Product, tmp_path: Path) -> None:
    trained = product.run("train", "-u", USE_CASE, "--deploy")
    assert "registered" in trained.stdout and "candidates" in trained.stdout
    models = product.json("models", "-u", USE_CASE)
    version = int(models[0]["version"])
    model = product.json("model", "-u", USE_CASE, "--version", str(version))
    assert model["version"] == str(version) and model["family"] == models[0]["family"] != ""
    assert "sha256" in product.run("model", "-u", USE_CASE).stdout

    onnx = tmp_path / "model.onnx"
    product.run("download-model", "-u", USE_CASE, "--version", str(version), "-o", str(onnx))
    assert hashlib.sha256(onnx.read_bytes()).hexdigest() == model["artifact_sha256"]

    product.run("deployment", "set", "-u", USE_CASE, "--production", str(version), "--reason", "cli test")
    before = product.json("deployment", "show", "-u", USE_CASE)
    assert before["production"]["version"] == str(version) and before["reason"] == "cli test"
    changed = product.run("deployment", "set", "-u", USE_CASE, "--production", "0", "--shadow", str(version),
                          "--reason", "cli test: shadow only").stdout
    assert "production: none" in changed and f"shadow: v{version}" in changed
    product.run("deployment", "rollback", "-u", USE_CASE, "--reason", "cli test: undo")
    after = product.json("deployment", "show", "-u", USE_CASE)
    assert after["production"]["version"] == str(version)
    assert int(after["revision"]) == int(before["revision"]) + 2
    audit = product.json("deployment", "audit", "-u", USE_CASE)
    assert [e["action"] for e in audit][-2:] == ["set", "rollback"]
    assert "cli test: undo" in product.run("deployment", "audit", "-u", USE_CASE).stdout

    rollout = product.run("rollout", "get", "-u", USE_CASE, ok=False)  # --deploy skips the rollout
    assert rollout.exit_code == 0 or "NOT_FOUND" in rollout.output, rollout.output

    jobs = product.json("operations", "list", "-u", USE_CASE)
    training = [j for j in jobs if j["kind"] == "training"]
    assert training and training[0]["state"] == "OPERATION_STATE_SUCCEEDED"
    job = training[0]["id"]
    one = product.json("operations", "get", job, "-u", USE_CASE, "--service", "trainer")
    assert one["id"] == job and one["result"]["model"]["version"] == str(version)
    assert "succeeded" in product.run("operations", "watch", job, "-u", USE_CASE).stdout
    assert "succeeded" in product.run("operations", "cancel", job, "-u", USE_CASE).stdout  # already final
    missing = product.run("operations", "get", "no-such-job", "-u", USE_CASE, ok=False)
    assert missing.exit_code == 1 and "NOT_FOUND" in missing.output


def test_reports_and_analyses(product: Product, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page = tmp_path / "hte.html"
    made = product.run("report", "hte", "-u", USE_CASE, "-o", str(page), "--treatment", "offer",
                       "--control", "no_offer", "--segment", "region")
    assert "ATE of offer vs no_offer" in made.stdout and page.read_bytes().startswith(b"<!")
    reports = product.json("report", "list", "-u", USE_CASE)
    report_id = reports[0]["report_id"]
    result = product.json("report", "get", report_id, "-u", USE_CASE)
    assert result["report_id"] == report_id and result["use_case"] == USE_CASE
    assert float(result["ate_ci_lower"]) <= float(result["ate"]) <= float(result["ate_ci_upper"])

    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    written = tmp_path / "again.html"
    product.run("report", "get", report_id, "--out", str(written), "--open")
    assert written.read_bytes() == page.read_bytes() and opened == [written.resolve().as_uri()]
    product.run("report", "open", report_id, env={"LOOPWISE_DATA_DIR": str(tmp_path / "data")})
    assert opened[-1].endswith(f"/data/reports/{report_id}.html")
    assert Path(opened[-1].removeprefix("file://")).read_bytes() == page.read_bytes()

    value = product.json("evaluate-policy", "-u", USE_CASE, "--constant-action", "offer")
    assert int(value["rows"]) > 0 and "doubly_robust" in value
    assert "doubly robust" in product.run("evaluate-policy", "-u", USE_CASE, "--report", report_id).stdout

    units = product.world.sample_units(3)
    rows_csv = tmp_path / "rows.csv"
    with rows_csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(product.world.feature_names))
        writer.writeheader()
        writer.writerows(units.features(i) for i in range(3))
    rows_json = tmp_path / "rows.json"
    rows_json.write_text(json.dumps([units.features(i) for i in range(3)]))
    by_csv = product.json("predict-effects", "--report", report_id, "--rows", str(rows_csv), "-u", USE_CASE)
    by_json = product.json("predict-effects", "--report", report_id, "--rows", str(rows_json))
    assert len(by_csv) == 3
    for a, b in zip(by_csv, by_json, strict=True):
        assert a == pytest.approx(b)
    assert all(r["lower"] <= r["effect"] <= r["upper"] for r in by_csv)

    suggested = product.json("suggest-parameters", "-u", USE_CASE, "--parameter", "policy.epsilon=0:0.5",
                             "--report", report_id, "--iterations", "3", "--seed", "2",
                             "--constraint", "share:offer<=0.9")
    assert 0.0 <= suggested["suggestion"]["policy.epsilon"] <= 0.5 and len(suggested["history"]) == 3
    bad = product.run("suggest-parameters", "-u", USE_CASE, "--parameter", "policy.epsilon", ok=False)
    assert bad.exit_code == 2 and "NAME=LOW:HIGH" in bad.output


def test_errors_name_what_to_fix(product: Product) -> None:
    port = free_port()
    by_option = product.run("--decision-address", f"127.0.0.1:{port}", "use-cases", ok=False)
    assert by_option.exit_code == 1
    text = " ".join(by_option.output.split())
    assert f"the decision service at 127.0.0.1:{port} cannot be reached" in text
    assert "comes from the option --decision-address" in text
    assert "set it with --decision-address or LOOPWISE_DECISION_ADDRESS" in text

    by_variable = product.run("stats", "-u", USE_CASE, ok=False,
                              env={"LOOPWISE_FEEDBACK_ADDRESS": f"127.0.0.1:{port}"})
    text = " ".join(by_variable.output.split())
    assert by_variable.exit_code == 1 and f"the feedback service at 127.0.0.1:{port} cannot be reached" in text
    assert "comes from the variable LOOPWISE_FEEDBACK_ADDRESS" in text

    # an option wins over its variable
    product.run("--feedback-address", product.settings.feedback_address, "stats", "-u", USE_CASE,
                env={"LOOPWISE_FEEDBACK_ADDRESS": f"127.0.0.1:{port}"})

    missing = product.run("use-case", "-u", "no_such_case", ok=False)
    assert missing.exit_code == 1 and "NOT_FOUND" in missing.output
    bad = product.run("decision", "get", "-u", USE_CASE, "not-a-uuid", ok=False)
    assert bad.exit_code == 1 and "INVALID_ARGUMENT" in bad.output and "decision_id:" in bad.output
    assert bad.stdout == ""  # errors go to stderr
