"""Use cases: apply a blueprint, list and show use cases, kill switch, rollback,
archive, the audit trail."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from google.protobuf import json_format
from rich.markup import escape
from rich.table import Column, Table

from loopwise.cli.common import (
    Output,
    OutputOption,
    UseCaseOption,
    app,
    author,
    connect,
    console,
    enum_name,
    fail,
    parse_pairs,
    table_or_json,
    when,
)
from loopwise.common.v1 import blueprint_pb2 as bp


def load_blueprint(path: Path) -> bp.Blueprint:
    """A blueprint from a YAML file (proto JSON field names; a top-level ``blueprint:``
    key is accepted too)."""
    data = yaml.safe_load(path.read_text())
    if isinstance(data, dict) and set(data) == {"blueprint"}:
        data = data["blueprint"]
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path}: expected a mapping")
    try:
        return json_format.ParseDict(data, bp.Blueprint())
    except json_format.ParseError as error:
        raise typer.BadParameter(f"{path}: {error}") from None


def blueprint_yaml(blueprint: bp.Blueprint) -> str:
    """A blueprint as YAML (the inverse of :func:`load_blueprint`)."""
    return yaml.safe_dump(json_format.MessageToDict(blueprint), sort_keys=False)


@app.command()
def apply(
    file: Annotated[Path, typer.Option("--file", "-f", exists=True, dir_okay=False,
                                       help="Blueprint YAML.")],
    validate_only: Annotated[bool, typer.Option("--validate-only", help="Only validate.")] = False,
    reason: Annotated[str, typer.Option(help="Why it is applied.")] = "",
) -> None:
    """Create a use case or a new blueprint version from a YAML blueprint."""
    blueprint = load_blueprint(file)
    with connect() as client:
        reply = client.apply_use_case(blueprint, validate_only=validate_only, author=author(),
                                      reason=reason)
    name = reply.use_case.blueprint.use_case
    if validate_only:
        console.print(f"{name}: valid (would be version {reply.use_case.version})")
    elif reply.created:
        changed = ", ".join(reply.changed_fields) or "new use case"
        console.print(f"{name}: version {reply.use_case.version} created ({escape(changed)})")
    else:
        console.print(f"{name}: unchanged (version {reply.use_case.version})")


@app.command("use-cases")
def use_cases(output: OutputOption = Output.table) -> None:
    """List use cases (the current version of each; archived ones are left out)."""
    with connect() as client:
        found = client.list_use_cases()

    def show() -> None:
        table = Table("use case", "version", "kind", Column("actions", no_wrap=True), "default",
                      "kill switch")
        for uc in found:
            b = uc.blueprint
            table.add_row(b.use_case, str(uc.version), enum_name(bp.DecisionKind, b.kind, "DECISION_KIND_"),
                          ",".join(b.actions), b.default_decision.action, "on" if uc.kill_switch else "off")
        console.print(table)

    table_or_json(output, found, show)


@app.command("use-case")
def use_case(
    use_case: UseCaseOption,
    version: Annotated[int, typer.Option("--version", help="A blueprint version (default: the current one).")] = 0,
    output: OutputOption = Output.table,
) -> None:
    """Show one use case: its state and its blueprint as YAML (which apply takes back)."""
    with connect() as client:
        uc = client.get_use_case(use_case, version)

    def show() -> None:
        state = ", ".join(filter(None, ["archived" if uc.archived else "active",
                                        "kill switch on" if uc.kill_switch else ""]))
        console.print(f"{uc.blueprint.use_case}: version {uc.version} of {uc.latest_version}, {state}")
        console.print(f"made {when(uc.create_time)} UTC by {escape(uc.author or '-')}"
                      + (f": {escape(uc.reason)}" if uc.reason else ""))
        print(blueprint_yaml(uc.blueprint).rstrip())

    table_or_json(output, uc, show)


@app.command("kill-switch")
def kill_switch(
    use_case: UseCaseOption,
    state: Annotated[str, typer.Argument(help="on (force the default decision) or off")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit trail).")] = "",
) -> None:
    """Force the default decision for a use case at once, or return to normal serving."""
    if state not in ("on", "off"):
        raise fail("state must be on or off")
    with connect() as client:
        uc = client.set_kill_switch(use_case, state == "on", reason=reason, author=author())
    console.print(f"{use_case}: kill switch {'on' if uc.kill_switch else 'off'} (version {uc.version})")


@app.command()
def rollback(
    use_case: UseCaseOption,
    to_version: Annotated[int, typer.Option("--to-version", help="The earlier blueprint version.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit trail).")] = "",
) -> None:
    """Make an earlier blueprint version of a use case current again (as a new version);
    'loopwise deployment rollback' rolls back models."""
    with connect() as client:
        uc = client.rollback_use_case(use_case, to_version, reason=reason, author=author())
    console.print(f"{use_case}: version {uc.version} now serves the blueprint of version {to_version}")


@app.command()
def archive(
    use_case: UseCaseOption,
    restore: Annotated[bool, typer.Option("--restore", help="Restore an archived use case.")] = False,
    reason: Annotated[str, typer.Option(help="Why (kept in the audit trail).")] = "",
) -> None:
    """Archive a use case (decisions refused, hidden from lists), or restore it."""
    with connect() as client:
        uc = client.archive_use_case(use_case, not restore, reason=reason, author=author())
    console.print(f"{use_case}: {'archived' if uc.archived else 'active'}")


@app.command()
def history(use_case: UseCaseOption, output: OutputOption = Output.table) -> None:
    """The audit trail of a use case: who changed what, when and why."""
    with connect() as client:
        changes = client.use_case_changes(use_case)

    def show() -> None:
        table = Table("when (UTC)", "change", "version", "who", "why", title=use_case)
        for c in changes:
            table.add_row(when(c.change_time), c.change, str(c.version), escape(c.author), escape(c.reason))
        console.print(table)

    table_or_json(output, changes, show)


def _parse_weights(pairs: list[str]) -> dict[str, float]:
    """``METRIC=WEIGHT`` arguments as a mapping (an error naming a bad one)."""
    weights: dict[str, float] = {}
    for name, value in parse_pairs(pairs, "weight"):
        try:
            weights[name] = float(value)
        except ValueError:
            raise fail(f"weight {name}={value!r}: expected a number, e.g. returns=-20") from None
    return weights


@app.command()
def weights(
    use_case: UseCaseOption,
    set_weights: Annotated[list[str] | None, typer.Argument(
        metavar="METRIC=WEIGHT", help="New weights of the value model, repeatable (others keep theirs).")] = None,
    reason: Annotated[str, typer.Option(help="Why (kept in the audit trail).")] = "",
    output: OutputOption = Output.table,
) -> None:
    """The product metrics of a use case with their value-model weights and guardrails;
    with METRIC=WEIGHT pairs, apply a new blueprint version with those weights, which
    decisions follow at once with the deployed models (no retraining)."""
    with connect() as client:
        if set_weights:
            reply = client.set_value_weights(use_case, _parse_weights(set_weights), author=author(),
                                             reason=reason)
            uc = reply.use_case
        else:
            uc = client.get_use_case(use_case)
    blueprint = uc.blueprint
    guardrails = {g.metric: g for g in blueprint.guardrails}
    rows = [{"metric": m.name, "weight": blueprint.value_model.weights.get(m.name, 0.0),
             "aggregation": enum_name(bp.RewardAggregation, m.aggregation or bp.REWARD_AGGREGATION_SUM,
                                      "REWARD_AGGREGATION_"),
             "outcomes": list(m.outcome_names) or [m.name],
             "guardrail": ({"tolerance": guardrails[m.name].tolerance,
                            "lower_is_better": guardrails[m.name].lower_is_better}
                           if m.name in guardrails else None)} for m in blueprint.metrics]

    def show() -> None:
        if not rows:
            console.print(f"{use_case}: no product metrics (one reward, docs/blueprints.md)")
            return
        table = Table("metric", "weight", "aggregation", "outcomes", "guardrail",
                      title=f"{use_case} v{uc.version}: reward = Σ weight × metric")
        for row in rows:
            guard = row["guardrail"]
            table.add_row(row["metric"], f"{row['weight']:g}", row["aggregation"], ",".join(row["outcomes"]),
                          "-" if guard is None else
                          f"{'lower' if guard['lower_is_better'] else 'higher'} is better, "
                          f"tolerance {guard['tolerance']:g}")
        console.print(table)

    table_or_json(output, {"use_case": use_case, "version": uc.version, "metrics": rows}, show)
