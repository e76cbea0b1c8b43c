"""The CLI against real services on free loopback ports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopwise.cli import app, blueprint_yaml, load_blueprint
from loopwise.launcher import Launcher
from loopwise.settings import SERVICES
from loopwise.simulator import CheckoutUpsell
from tests.support import new_launcher

runner = CliRunner()

BLUEPRINT_YAML = """
useCase: cli_upsell
description: offer or not
kind: DECISION_KIND_ACTION_VALUE
actions: [no_offer, offer]
features:
  - {name: basket_value, type: FEATURE_TYPE_NUMERIC}
  - {name: region, type: FEATURE_TYPE_CATEGORICAL, vocabulary: [north, south]}
policy: {type: POLICY_TYPE_EPSILON_GREEDY, epsilon: 0.1, exploreWithoutModel: true}
defaultDecision: {action: no_offer}
reward: {outcomeNames: [purchase], window: 1800s}
"""


def _env(launcher: Launcher) -> dict[str, str]:
    return {k: v for k, v in launcher.env.items() if k.startswith("LOOPWISE_")}


@pytest.fixture
def decision_only(tmp_path: Path) -> Iterator[Launcher]:
    """The real decision service alone, as a process on a free port."""
    launcher = new_launcher(tmp_path / "var")
    try:
        launcher.start("decision")
        yield launcher
    finally:
        launcher.stop_all()


def test_blueprint_yaml_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "checkout.yaml"
    blueprint = CheckoutUpsell().blueprint()
    path.write_text(blueprint_yaml(blueprint))
    assert load_blueprint(path) == blueprint


def test_apply_then_use_cases_lists_it(decision_only: Launcher, tmp_path: Path) -> None:
    path = tmp_path / "bp.yaml"
    path.write_text(BLUEPRINT_YAML)
    env = _env(decision_only)
    checked = runner.invoke(app, ["apply", "-f", str(path), "--validate-only"], env=env)
    assert checked.exit_code == 0, checked.output
    assert "valid" in checked.output
    listed = runner.invoke(app, ["use-cases"], env=env)
    assert "cli_upsell" not in listed.output  # validate-only stored nothing
    applied = runner.invoke(app, ["apply", "-f", str(path)], env=env)
    assert applied.exit_code == 0, applied.output
    assert "cli_upsell: version 1 created" in applied.output
    again = runner.invoke(app, ["apply", "-f", str(path)], env=env)
    assert "unchanged (version 1)" in again.output
    listed = runner.invoke(app, ["use-cases"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "cli_upsell" in listed.output and "no_offer,offer" in listed.output


def test_apply_reports_the_bad_field(decision_only: Launcher, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BLUEPRINT_YAML.replace("defaultDecision: {action: no_offer}",
                                           "defaultDecision: {action: maybe}"))
    result = runner.invoke(app, ["apply", "-f", str(path)], env=_env(decision_only))
    assert result.exit_code == 1
    assert "INVALID_ARGUMENT" in result.output and "default_decision" in result.output


def test_apply_rejects_unknown_yaml_fields(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(BLUEPRINT_YAML + "polcy: {}\n")
    result = runner.invoke(app, ["apply", "-f", str(path)])
    assert result.exit_code != 0 and "polcy" in result.output


def _all_services_present() -> bool:
    services = Path(__file__).resolve().parents[2] / "services"
    return all((services / name / "__main__.py").exists() for name in SERVICES)


@pytest.mark.skipif(not _all_services_present(), reason="not every service is present yet")
def test_up_status_down(tmp_path: Path) -> None:
    launcher = new_launcher(tmp_path / "var")
    env = _env(launcher)
    try:
        started = runner.invoke(app, ["up"], env=env)
        assert started.exit_code == 0, started.output
        status = runner.invoke(app, ["status"], env=env)
        assert status.output.count("SERVING") == 4, status.output
        pids = {s: launcher.pid(s) for s in SERVICES}
        assert all(pids.values())
        assert all(str(pid) in status.output for pid in pids.values())
        listed = json.loads(runner.invoke(app, ["status", "--output", "json"], env=env).stdout)
        assert {s: (row["pid"], row["health"]) for s, row in listed.items()} == {
            s: (pids[s], "SERVING") for s in SERVICES}
    finally:
        stopped = runner.invoke(app, ["down"], env=env)
    assert stopped.exit_code == 0, stopped.output
    assert stopped.output.count("stopped") == 4
    assert all(launcher.pid(s) is None for s in SERVICES)
    status = runner.invoke(app, ["status"], env=env)
    assert status.output.count("UNREACHABLE") == 4


def test_lifecycle_commands_against_the_real_service(decision_only: Launcher, tmp_path: Path) -> None:
    """kill-switch, rollback, archive and history go through the SDK to the real service."""
    from loopwise.client import Client
    from tests.support import launcher_settings

    env = {**_env(decision_only), "USER": "ana"}
    path = tmp_path / "bp.yaml"
    path.write_text(BLUEPRINT_YAML)
    assert runner.invoke(app, ["apply", "-f", str(path)], env=env).exit_code == 0
    path.write_text(BLUEPRINT_YAML.replace("epsilon: 0.1", "epsilon: 0.2"))
    assert runner.invoke(app, ["apply", "-f", str(path)], env=env).exit_code == 0

    on = runner.invoke(app, ["kill-switch", "-u", "cli_upsell", "on", "--reason", "incident"], env=env)
    assert on.exit_code == 0 and "kill switch on" in on.output, on.output
    with Client(settings=launcher_settings(decision_only)) as client:
        forced = client.decide("cli_upsell", {"basket_value": 10.0, "region": "north"}, unit_id="u1")
        assert forced.fallback and forced.action == "no_offer"
    off = runner.invoke(app, ["kill-switch", "-u", "cli_upsell", "off"], env=env)
    assert "kill switch off" in off.output, off.output

    back = runner.invoke(app, ["rollback", "-u", "cli_upsell", "--to-version", "1", "--reason", "eps"], env=env)
    assert back.exit_code == 0 and "version 3 now serves the blueprint of version 1" in back.output, back.output
    with Client(settings=launcher_settings(decision_only)) as client:
        assert client.get_use_case("cli_upsell").blueprint.policy.epsilon == 0.1

    archived = runner.invoke(app, ["archive", "-u", "cli_upsell", "--reason", "done"], env=env)
    assert archived.exit_code == 0 and "archived" in archived.output, archived.output
    assert "cli_upsell" not in runner.invoke(app, ["use-cases"], env=env).output
    restored = runner.invoke(app, ["archive", "-u", "cli_upsell", "--restore"], env=env)
    assert "active" in restored.output, restored.output

    history = runner.invoke(app, ["history", "-u", "cli_upsell"], env={**env, "COLUMNS": "200"})
    assert history.exit_code == 0, history.output
    for change in ("create", "apply", "kill_switch_on", "kill_switch_off", "rollback", "archive"):
        assert change in history.output, (change, history.output)
    assert "ana" in history.output and "incident" in history.output

    missing = runner.invoke(app, ["kill-switch", "-u", "no_such_case", "on"], env=env)
    assert missing.exit_code == 1 and "NOT_FOUND" in missing.output
