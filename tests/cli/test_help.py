"""Every command's --help renders as plain text: a description, no markup of docstrings
(backticks, reST roles) or of rich (tags) leaking into it; --version."""

from __future__ import annotations

import re
from typing import Any

import click
import typer
from typer.testing import CliRunner

import loopwise
from loopwise.cli import app

runner = CliRunner()

# reST/Markdown code, reST roles and directives, rich tags, click's no-rewrap marker.
LEAKS = re.compile(r"`|:(?:meth|class|func|mod|attr):|\.\. |\[/?(?:red|green|yellow|bold|dim|"
                   r"italic|cyan|blue|magenta)\b|\[/\]|\x08")


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under a (Typer) group, groups included."""
    found = [path]
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        if hasattr(command, "list_commands"):
            found += _commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


def test_every_help_is_plain_text_with_a_description() -> None:
    commands = _commands(typer.main.get_command(app))  # type: ignore[arg-type]
    assert len(commands) > 40, commands
    for path in commands:
        result = runner.invoke(app, [*path, "--help"], prog_name="loopwise", env={"COLUMNS": "100"})
        assert result.exit_code == 0, (path, result.output)
        text = result.output
        assert text.startswith("Usage: loopwise"), (path, text[:200])
        leak = LEAKS.search(text)
        assert leak is None, f"loopwise {' '.join(path)} --help shows {leak.group()!r}:\n{text}"
        description = text.split("\n\n")[1].strip() if "\n\n" in text else ""
        assert description and not description.startswith(("Options:", "Commands:")), (path, text)


def test_reading_commands_offer_json_and_every_command_is_listed() -> None:
    commands = {" ".join(path) for path in _commands(typer.main.get_command(app))}  # type: ignore[arg-type]
    wanted = {"apply", "use-cases", "use-case", "kill-switch", "rollback", "archive", "history", "stats",
              "decision get", "export", "delete-unit", "train", "models", "model", "download-model",
              "deployment show", "deployment set", "deployment rollback", "deployment audit", "rollout get",
              "operations list", "operations get", "operations watch", "operations cancel", "report hte",
              "report list", "report get", "report open", "scorecard", "evaluate-policy", "predict-effects",
              "suggest-parameters", "tokens create", "backup export", "backup import", "up", "down",
              "status", "console", "demo", "weights"}
    assert wanted <= commands, wanted - commands
    reading = ["status", "use-cases", "use-case", "history", "stats", "decision get", "models", "model", "deployment show",
               "deployment audit", "rollout get", "operations list", "operations get", "report list",
               "report get", "scorecard", "evaluate-policy", "predict-effects", "suggest-parameters", "weights"]
    for command in reading:
        text = runner.invoke(app, [*command.split(), "--help"]).output
        assert "--output" in text and "json" in text, command


def test_global_options_and_version() -> None:
    text = runner.invoke(app, ["--help"], env={"COLUMNS": "120"}).output
    for option, variable in (("--decision-address", "LOOPWISE_DECISION_ADDRESS"),
                             ("--feedback-address", "LOOPWISE_FEEDBACK_ADDRESS"),
                             ("--trainer-address", "LOOPWISE_TRAINER_ADDRESS"),
                             ("--evaluator-address", "LOOPWISE_EVALUATOR_ADDRESS"),
                             ("--token", "LOOPWISE_TOKEN"), ("--ca-file", "LOOPWISE_TLS_CA_FILE"),
                             ("--cert-file", "LOOPWISE_TLS_CLIENT_CERT_FILE"),
                             ("--key-file", "LOOPWISE_TLS_CLIENT_KEY_FILE")):
        assert option in text and variable in text, option
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.strip() == f"loopwise {loopwise.__version__}"
