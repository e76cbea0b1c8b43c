"""The ``loopwise`` command line: run the services, manage use cases, train, report.

Every command reads the ``LOOPWISE_*`` settings (addresses, data dir, clock).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
import yaml
from google.protobuf import json_format
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from loopwise import local_profile, security
from loopwise.backup import BackupSummary, export_backup, import_backup
from loopwise.client import Client
from loopwise.clock import Clock
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.errors import field_violations
from loopwise.evaluator.v1 import evaluator_service_pb2 as epb
from loopwise.evaluator.v1 import evaluator_service_pb2_grpc as egrpc
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc
from loopwise.launcher import DEFAULT_PORTS, Launcher, free_port
from loopwise.settings import SERVICES, Settings
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc

app = typer.Typer(help="loopwise: self-hosted real-time smart strategies.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
report_app = typer.Typer(help="Analyses of logged decisions.", no_args_is_help=True)
app.add_typer(report_app, name="report")
console = Console()

FINAL = (op_pb.OPERATION_STATE_SUCCEEDED, op_pb.OPERATION_STATE_FAILED,
         op_pb.OPERATION_STATE_CANCELLED)
UseCaseOption = Annotated[str, typer.Option("--use-case", "-u", help="The use case.")]


def _settings() -> Settings:
    """Settings from the environment, read afresh for every command."""
    return Settings()


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _launcher(settings: Settings) -> Launcher:
    return Launcher(settings.data_dir, ports={s: _port(settings.address_of(s)) for s in SERVICES})


def _fail(error: grpc.RpcError) -> typer.Exit:
    """Print an RPC error (with its field violations) and return the exit to raise."""
    console.print(f"[red]error:[/red] {error.code().name}: {error.details()}")
    for field, description in field_violations(error):
        console.print(f"  [yellow]{field}[/yellow]: {description}")
    return typer.Exit(1)


@contextmanager
def _rpc_errors() -> Iterator[None]:
    try:
        yield
    except grpc.RpcError as error:
        raise _fail(error) from None


@contextmanager
def _stub(service: str, settings: Settings) -> Iterator[Any]:
    factory = {"trainer": tgrpc.TrainerServiceStub, "evaluator": egrpc.EvaluatorServiceStub,
               "decision": dgrpc.DecisionServiceStub, "feedback": fgrpc.FeedbackServiceStub}
    with security.sync_channel(settings, settings.address_of(service)) as channel:  # type: ignore[arg-type]
        yield factory[service](channel)


def _watch(stub: Any, operation: op_pb.Operation, title: str) -> op_pb.Operation:
    """Show an operation's progress (WatchOperation) until it is final."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[stage]}"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(title, total=1.0, stage="")
        while operation.state not in FINAL:
            try:
                for update in stub.WatchOperation(op_pb.WatchOperationRequest(id=operation.id, use_case=operation.use_case)):
                    operation = update.operation
                    stage = f"{operation.stage}: {operation.message}" if operation.message else operation.stage
                    progress.update(task, completed=operation.progress, stage=stage[:90])
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                time.sleep(0.5)  # the server restarted: resume
                operation = stub.GetOperation(op_pb.GetOperationRequest(id=operation.id, use_case=operation.use_case),
                                              timeout=10).operation
    if operation.state != op_pb.OPERATION_STATE_SUCCEEDED:
        console.print(f"[red]{title} {op_pb.OperationState.Name(operation.state)}:[/red] "
                      f"{operation.error_message}")
        raise typer.Exit(1)
    return operation


# ---------------------------------------------------------------- services


@app.command()
def up() -> None:
    """Start the four services in the background with mutual TLS and tokens.

    Without security settings of your own, the first start creates local credentials
    under <data dir>/local (a development CA, certificates, an admin token and one token
    per service; private files) and a profile that the SDK and the CLI find by
    themselves. Pids and logs go under the data dir."""
    settings = _settings()
    launcher = _launcher(settings)
    addresses = {s: settings.address_of(s) for s in SERVICES}
    local = not local_profile.security_from_environment()
    created: list[str] = []
    if local:
        outside = [f"{s} at {a}" for s, a in addresses.items() if not local_profile.is_loopback(a)]
        if outside:
            console.print(f"[red]not started:[/red] {', '.join(outside)} is not a loopback address. "
                          "Serving beyond this machine needs TLS certificates and tokens of your "
                          "own: LOOPWISE_TLS_CERT_FILE, LOOPWISE_TLS_KEY_FILE, LOOPWISE_TLS_CA_FILE, "
                          "LOOPWISE_TOKENS_FILE and LOOPWISE_TOKEN (docs/security.md).")
            raise typer.Exit(1)
        credentials, created = local_profile.ensure_local_credentials(settings.data_dir, addresses)
        for name in SERVICES:
            launcher.service_env[name] = credentials.service_env(name)
        launcher.client = Settings(**{f"{s}_address": a for s, a in addresses.items()},
                                   **credentials.client_settings())
    else:
        launcher.client = settings
    try:
        pids = launcher.start_all()
    except (RuntimeError, TimeoutError) as error:
        console.print(f"[red]start failed:[/red] {error}")
        raise typer.Exit(1) from None
    for name, pid in pids.items():
        console.print(f"{name:<10} pid {pid:<8} {launcher.address(name)}")  # type: ignore[arg-type]
    console.print(f"logs: {launcher.data_dir / 'logs'}")
    if not local:
        return
    for line in created:
        console.print(f"created {line}")
    root = launcher.data_dir / "local"
    console.print(f"mutual TLS and tokens on; credentials in {root} (private to you; the admin "
                  f"token is {root / 'secrets' / 'admin.token'})")
    console.print("the SDK and the CLI started here connect by themselves; from another "
                  "directory or shell, first run:")
    print(f"export LOOPWISE_PROFILE={root / 'profile.yaml'}")


@app.command()
def down() -> None:
    """Stop the services started by ``loopwise up`` (by their pids)."""
    launcher = _launcher(_settings())
    for name in reversed(SERVICES):
        stopped = launcher.stop(name)
        console.print(f"{name:<10} {'stopped' if stopped else 'not running'}")


@app.command()
def status() -> None:
    """Pid and health of every service."""
    settings = _settings()
    launcher = _launcher(settings)
    launcher.client = settings
    table = Table("service", "address", "pid", "health")
    for name in SERVICES:
        pid = launcher.pid(name)
        health = launcher.health(name)
        colour = "green" if health == "SERVING" else "red"
        table.add_row(name, launcher.address(name), str(pid or "-"), f"[{colour}]{health}[/{colour}]")
    console.print(table)


@app.command("console")
def web_console(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (LOOPWISE_CONSOLE_HOST; "
                                                  "default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (LOOPWISE_CONSOLE_PORT; default 8090).")] = None,
) -> None:
    """Serve the web console: log in with a bearer token to see and steer use cases
    (docs/console.md). It calls the services with your token over this process's TLS
    client certificate."""
    from loopwise.console import serve

    serve(host=host, port=port)


# ---------------------------------------------------------------- use cases


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
    with Client(settings=_settings()) as client, _rpc_errors():
        reply = client.apply_use_case(blueprint, validate_only=validate_only,
                                      author=os.environ.get("USER", ""), reason=reason)
    name = reply.use_case.blueprint.use_case
    if validate_only:
        console.print(f"{name}: valid (would be version {reply.use_case.version})")
    elif reply.created:
        changed = ", ".join(reply.changed_fields) or "new use case"
        console.print(f"{name}: version {reply.use_case.version} created ({changed})")
    else:
        console.print(f"{name}: unchanged (version {reply.use_case.version})")


@app.command("use-cases")
def use_cases() -> None:
    """List use cases."""
    with Client(settings=_settings()) as client, _rpc_errors():
        found = client.list_use_cases()
    table = Table("use case", "version", "kind", Column("actions", no_wrap=True), "default",
                  "kill switch")
    for uc in found:
        b = uc.blueprint
        table.add_row(b.use_case, str(uc.version), bp.DecisionKind.Name(b.kind).removeprefix(
            "DECISION_KIND_").lower(), ",".join(b.actions), b.default_decision.action,
            "on" if uc.kill_switch else "off")
    console.print(table)


@app.command("kill-switch")
def kill_switch(
    use_case: UseCaseOption,
    state: Annotated[str, typer.Argument(help="on (force the default decision) or off")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit trail).")] = "",
) -> None:
    """Force the default decision for a use case at once, or return to normal serving."""
    if state not in ("on", "off"):
        console.print("[red]state must be on or off[/red]")
        raise typer.Exit(2)
    with Client(settings=_settings()) as client, _rpc_errors():
        uc = client.set_kill_switch(use_case, state == "on", reason=reason, author=_author())
    console.print(f"{use_case}: kill switch {'on' if uc.kill_switch else 'off'} (version {uc.version})")


@app.command()
def rollback(
    use_case: UseCaseOption,
    to_version: Annotated[int, typer.Option("--to-version", help="The earlier blueprint version.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit trail).")] = "",
) -> None:
    """Make an earlier blueprint version of a use case current again."""
    with Client(settings=_settings()) as client, _rpc_errors():
        uc = client.rollback_use_case(use_case, to_version, reason=reason, author=_author())
    console.print(f"{use_case}: version {uc.version} now serves the blueprint of version {to_version}")


@app.command()
def archive(
    use_case: UseCaseOption,
    restore: Annotated[bool, typer.Option("--restore", help="Restore an archived use case.")] = False,
    reason: Annotated[str, typer.Option(help="Why (kept in the audit trail).")] = "",
) -> None:
    """Archive a use case (decisions refused, hidden from lists), or restore it."""
    with Client(settings=_settings()) as client, _rpc_errors():
        uc = client.archive_use_case(use_case, not restore, reason=reason, author=_author())
    console.print(f"{use_case}: {'archived' if uc.archived else 'active'}")


@app.command()
def history(use_case: UseCaseOption) -> None:
    """The audit trail of a use case: who changed what, when and why."""
    with Client(settings=_settings()) as client, _rpc_errors():
        changes = client.use_case_changes(use_case)
    table = Table("when (UTC)", "change", "version", "who", "why", title=use_case)
    for c in changes:
        table.add_row(c.change_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"), c.change,
                      str(c.version), c.author, c.reason)
    console.print(table)


def _author() -> str:
    """Who makes a change from this CLI (the login name)."""
    return os.environ.get("USER") or os.environ.get("LOGNAME") or "cli"


@app.command()
def stats(use_case: UseCaseOption) -> None:
    """Decision and outcome counts of a use case."""
    with Client(settings=_settings()) as client, _rpc_errors():
        reply = client.get_stats(use_case)
    table = Table("statistic", "value", title=use_case)
    for field, value in json_format.MessageToDict(
            reply, always_print_fields_with_no_presence=True,
            preserving_proto_field_name=True).items():
        table.add_row(field, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)


# ---------------------------------------------------------------- models


@app.command()
def train(
    use_case: UseCaseOption,
    deploy: Annotated[bool, typer.Option(help="Deploy if it beats the baseline.")] = False,
) -> None:
    """Train a model for a use case and follow the job."""
    settings = _settings()
    with _stub("trainer", settings) as trainer, _rpc_errors():
        operation = trainer.StartTraining(tpb.StartTrainingRequest(
            request_id=Clock.from_settings(settings).new_id(), use_case=use_case, deploy=deploy),
            timeout=30).operation
        operation = _watch(trainer, operation, f"training {use_case}")
    result = tpb.TrainingResult()
    operation.result.Unpack(result)
    table = Table("family", "metric", "holdout score", "fit s", "p99 ms", "params", "note", title="candidates")
    for c in result.candidates:
        table.add_row(c.family + (" ✓" if c.chosen else ""), c.metric, f"{c.score:.4f}", f"{c.fit_seconds:.2f}",
                      f"{c.latency_p99_ms:.3f}", c.params, c.error)
    console.print(table)
    if result.HasField("blessing"):
        console.print(result.blessing.reason)
    if result.HasField("rollout"):
        console.print(f"rollout: {tpb.RolloutStep.Name(result.rollout.step)} — {result.rollout.message}")
    if result.HasField("model"):
        console.print(f"model v{result.model.version} ({result.model.family}) registered; "
                      f"deployed: {result.deployed} — {result.deployment_reason}")
    else:
        console.print(f"no model registered: {result.deployment_reason}")


@app.command()
def models(use_case: UseCaseOption) -> None:
    """Models of a use case."""
    settings = _settings()
    with _stub("trainer", settings) as trainer, _rpc_errors():
        reply = trainer.ListModels(tpb.ListModelsRequest(use_case=use_case), timeout=30)
    table = Table("version", "family", "blueprint", "rows", "metrics", "created", title=use_case)
    for m in reply.models:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(m.metrics.items()))
        table.add_row(str(m.version), m.family, str(m.blueprint_version), str(m.training_rows),
                      metrics, m.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"))
    console.print(table)


# ---------------------------------------------------------------- backup


backup_app = typer.Typer(help="Back up and restore use cases, models and deployments.",
                         no_args_is_help=True)
app.add_typer(backup_app, name="backup")


def _summary_line(verb: str, summary: BackupSummary) -> str:
    return (f"{verb} {len(summary.use_cases)} use case(s), {summary.blueprint_versions} blueprint "
            f"version(s), {summary.models} model(s), {summary.deployments} deployment(s)")


@backup_app.command("export")
def backup_export(
    out: Annotated[Path, typer.Option("--out", "-o", help="A new directory, or a .tar.gz archive.")],
) -> None:
    """Write use cases (all versions), models with artifacts, deployments to a dir or .tar.gz."""
    settings = _settings()
    try:
        with Client(settings=settings) as client, _stub("trainer", settings) as trainer, _rpc_errors():
            summary = export_backup(client.decision_stub, trainer, out)
    except (FileExistsError, RuntimeError) as error:
        console.print(f"[red]backup failed:[/red] {error}")
        raise typer.Exit(1) from None
    console.print(_summary_line("exported", summary) + f" to {out}")


@backup_app.command("import")
def backup_import(
    source: Annotated[Path, typer.Argument(exists=True, help="A backup directory or archive.")],
) -> None:
    """Restore a backup into running services; use cases that exist are left alone."""
    settings = _settings()
    clock = Clock.from_settings(settings)
    try:
        with Client(settings=settings) as client, _stub("trainer", settings) as trainer, _rpc_errors():
            summary = import_backup(client.decision_stub, trainer, source, clock.new_id, author=_author())
    except ValueError as error:
        console.print(f"[red]restore failed:[/red] {error}")
        raise typer.Exit(1) from None
    console.print(_summary_line("restored", summary))
    for name, reason in summary.skipped.items():
        console.print(f"[yellow]skipped[/yellow] {name}: {reason}")


# ---------------------------------------------------------------- security and privacy


tokens_app = typer.Typer(help="Bearer tokens (the tokens file keeps only their sha256).",
                         no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option("--name", help="Who holds it (appears in logs, never the secret).")],
    scope: Annotated[list[str], typer.Option(
        "--scope", help="USE_CASE=SCOPE[,SCOPE…] ('*' for every use case); scopes: "
        "decide, log_outcomes, train, report, admin. Repeatable.")],
    service: Annotated[bool, typer.Option(help="A service's own credential (not rate limited).")] = False,
) -> None:
    """Create a token: print the secret once (hand it to the caller) and the entry to add
    to the tokens file."""
    from loopwise.auth import new_token

    scopes: dict[str, list[str]] = {}
    for item in scope:
        use_case, _, granted = item.partition("=")
        if not use_case or not granted:
            console.print(f"[red]--scope {item!r}: expected USE_CASE=SCOPE[,SCOPE…][/red]")
            raise typer.Exit(2)
        scopes.setdefault(use_case, []).extend(g.strip() for g in granted.split(",") if g.strip())
    try:
        secret, entry = new_token(name, scopes, service=service)
    except ValueError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    print(f"token: {secret}")
    print("# add under `tokens:` in the tokens file (LOOPWISE_TOKENS_FILE):")
    print(yaml.safe_dump([entry], sort_keys=False).rstrip())


@app.command("delete-unit")
def delete_unit(
    use_case: UseCaseOption,
    unit: Annotated[str, typer.Option("--unit", help="The unit id, as your product knows it.")],
) -> None:
    """Delete every decision of one unit in a use case, and their outcomes."""
    from loopwise.feedback.v1 import feedback_service_pb2 as fpb
    from loopwise.feedback.v1 import feedback_service_pb2_grpc as fgrpc

    settings = _settings()
    request = fpb.DeleteUnitDataRequest(request_id=Clock.from_settings(settings).new_id(),
                                        use_case=use_case, unit_id=unit)
    with security.sync_channel(settings, settings.feedback_address) as channel, _rpc_errors():
        reply = fgrpc.FeedbackServiceStub(channel).DeleteUnitData(request, timeout=120)
    console.print(f"deleted {reply.decisions_deleted} decision(s) and {reply.outcomes_deleted} "
                  f"outcome(s) of unit {unit!r} in {use_case}")


# ---------------------------------------------------------------- reports


ESTIMATORS = {"linear_dml": epb.ESTIMATOR_LINEAR_DML, "causal_forest_dml": epb.ESTIMATOR_CAUSAL_FOREST_DML,
              "dr_learner": epb.ESTIMATOR_DR_LEARNER, "auto": epb.ESTIMATOR_AUTO}


@report_app.command("hte")
def report_hte(
    use_case: UseCaseOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the HTML.")] = Path(
        "report.html"),
    treatment: Annotated[str, typer.Option(help="Treated action (default: the 2nd).")] = "",
    control: Annotated[str, typer.Option(help="Control action (default: the 1st).")] = "",
    estimator: Annotated[str, typer.Option(help=f"One of {', '.join(ESTIMATORS)}.")] = "linear_dml",
    cost: Annotated[float, typer.Option(help="Cost of treating one unit (reward units).")] = 0.0,
    segment: Annotated[list[str] | None, typer.Option(help="Feature defining segments (repeatable).")] = None,
    register: Annotated[bool, typer.Option(help="Export the effect model to ONNX and register it.")] = False,
    arms: Annotated[bool, typer.Option(help="Compare experiment arms (--treatment/--control name arms).")] = False,
) -> None:
    """Estimate heterogeneous treatment effects and write the HTML report (with a
    progress bar while the evaluator works)."""
    if estimator not in ESTIMATORS:
        console.print(f"[red]error:[/red] --estimator must be one of {', '.join(ESTIMATORS)}")
        raise typer.Exit(2)
    settings = _settings()
    request = epb.EstimateEffectsRequest(
        request_id=Clock.from_settings(settings).new_id(), use_case=use_case, estimator=ESTIMATORS[estimator],
        treatment_cost=cost, segment_features=segment or [], register_cate_model=register)
    if arms:
        request.treatment_source = epb.TREATMENT_SOURCE_ARMS
        request.treatment_arm, request.control_arm = treatment, control
    else:
        request.treatment_action, request.control_action = treatment, control
    with _stub("evaluator", settings) as evaluator, _rpc_errors():
        operation = evaluator.EstimateEffects(request, timeout=30).operation
        operation = _watch(evaluator, operation, f"effects {use_case}")
        result = epb.EstimateEffectsResult()
        operation.result.Unpack(result)
        report = evaluator.GetReport(epb.GetReportRequest(report_id=result.report_id, use_case=result.use_case),
                                    timeout=30)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(report.html)
    console.print(f"ATE of {result.treatment_action} vs {result.control_action}: "
                  f"{result.ate:.4f} (95% CI {result.ate_ci_lower:.4f} .. {result.ate_ci_upper:.4f}) "
                  f"on {result.rows} rows")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if result.cate_model.model_version:
        console.print(f"effect model registered as version {result.cate_model.model_version} "
                      f"({result.cate_model.family}, fidelity R² {result.cate_model.fidelity_r2:.4f})")
    console.print(f"report: {out.resolve()}")


@app.command()
def scorecard(
    use_case: UseCaseOption,
    canary: Annotated[bool, typer.Option("--canary", help="Canary model against production, not the arms.")] = False,
    covariate: Annotated[list[str] | None, typer.Option(
        "--covariate", help="Feature used as a CUPED covariate (repeatable).")] = None,
    control: Annotated[str, typer.Option(help="Control arm (default: the first arm).")] = "",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the HTML scorecard here.")] = None,
    output: Annotated[str, typer.Option("--output", help="table or json.")] = "table",
) -> None:
    """Experiment scorecard: arms (or the canary against production) on every metric,
    with CIs, CUPED, a sample-ratio test and an always-valid sequential test."""
    if output not in ("table", "json"):
        console.print("[red]error:[/red] --output must be table or json")
        raise typer.Exit(2)
    with Client(settings=_settings()) as client, _rpc_errors():
        reply = client.get_scorecard(use_case, canary=canary, control_arm=control, covariates=covariate or [],
                                     include_html=out is not None)
    card = reply.scorecard
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(reply.html)
    if output == "json":
        print(json_format.MessageToJson(card, preserving_proto_field_name=True))
        return
    srm = card.sample_ratio
    groups = ", ".join(f"{g.name} {g.rows} ({100 * g.observed_share:.1f}% vs {100 * g.expected_share:.1f}%)"
                       for g in card.groups)
    console.print(f"{use_case}: {card.rows} rows — {groups}")
    console.print(f"sample ratio: chi-square {srm.chi_square:.2f}, p = {srm.p_value:.3g} — "
                  + ("[red]MISMATCH[/red]" if srm.mismatch else "[green]ok[/green]"))
    table = Table("metric", "group", "difference (95% CI)", "lift (95% CI)", "CUPED var. cut",
                  "always-valid p", title=f"against {card.control}")
    for c in card.comparisons:
        table.add_row(
            c.metric, c.group,
            f"{c.difference:+.4g} ({c.difference_ci_lower:+.4g} .. {c.difference_ci_upper:+.4g})",
            f"{100 * c.relative_lift:+.2f}% ({100 * c.relative_lift_ci_lower:+.2f} .. "
            f"{100 * c.relative_lift_ci_upper:+.2f})",
            f"{100 * c.variance_reduction:.1f}%" if c.cuped else "-",
            f"{c.sequential.p_value:.3g}" + (" *" if c.sequential.significant else ""))
    console.print(table)
    for warning in card.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if out is not None:
        console.print(f"scorecard: {out.resolve()}")


@report_app.command("list")
def report_list(
    use_case: Annotated[str, typer.Option("--use-case", "-u", help="Only this use case.")] = "",
) -> None:
    """Reports, newest first."""
    with _stub("evaluator", _settings()) as evaluator, _rpc_errors():
        reports = evaluator.ListReports(epb.ListReportsRequest(use_case=use_case), timeout=30).reports
    table = Table("report", "use case", "made", "estimator", "treatment vs control", "rows", "ATE (95% CI)")
    for r in reports:
        table.add_row(r.report_id, r.use_case, r.create_time.ToJsonString(),
                      epb.Estimator.Name(r.estimator).removeprefix("ESTIMATOR_").lower(),
                      f"{r.treatment_action} vs {r.control_action}", str(r.rows),
                      f"{r.ate:.4f} ({r.ate_ci_lower:.4f} .. {r.ate_ci_upper:.4f})")
    console.print(table)


@app.command("export")
def export(
    use_case: UseCaseOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write (.parquet or .csv).")],
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv (default: from --out).")] = "",
) -> None:
    """Export the joined decisions and outcomes of a use case to Parquet or CSV."""
    from loopwise.services.evaluator.export import FORMATS, joined_frame, write_frame

    fmt = fmt or out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        console.print(f"[red]error:[/red] --format must be one of {', '.join(FORMATS)}")
        raise typer.Exit(2)
    settings = _settings()
    with _stub("decision", settings) as decision, _stub("feedback", settings) as feedback, _rpc_errors():
        latest = decision.GetUseCase(dpb.GetUseCaseRequest(use_case=use_case), timeout=30).use_case.blueprint
        versions: dict[int, bp.Blueprint] = {}

        def version_of(number: int) -> bp.Blueprint:
            if number not in versions:
                versions[number] = decision.GetUseCase(
                    dpb.GetUseCaseRequest(use_case=use_case, version=number), timeout=30).use_case.blueprint
            return versions[number]

        batches = feedback.ReadTrainingData(fpb.ReadTrainingDataRequest(use_case=use_case), timeout=600)
        frame = joined_frame(batches, latest, version_of)
    write_frame(frame, out, fmt)
    console.print(f"{len(frame)} joined rows of {use_case} written to {out.resolve()} ({fmt})")


# ---------------------------------------------------------------- demo


def _demo_ports() -> dict[str, int]:
    """The default ports when all are free, else free ones."""
    import socket

    def free(port: int) -> bool:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

    if all(free(p) for p in DEFAULT_PORTS.values()):
        return dict(DEFAULT_PORTS)
    return {s: free_port() for s in SERVICES}


CASSANDRA_SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "cassandra" / "cassandra.sh"


def _demo_cassandra(stamp: int) -> tuple[str, Callable[[], None] | None]:
    """Start the development Cassandra (var/cassandra, port 9042) unless it runs.

    Returns a store URL with a fresh keyspace, and how to stop Cassandra again when
    the demo started it (None when it was already running)."""
    if not CASSANDRA_SCRIPT.exists():
        console.print("[red]deploy/cassandra/ is not here: run the demo from a source checkout[/red]")
        raise typer.Exit(2)
    command = ["bash", str(CASSANDRA_SCRIPT)]
    where = ["--dir", "var/cassandra", "--cql-port", "9042", "--storage-port", "7000"]
    running = subprocess.run([*command, "status", *where], capture_output=True).returncode == 0
    if not running:
        with console.status("starting Cassandra (var/cassandra, port 9042)…"):
            subprocess.run([*command, "start", *where], check=True)
    url = f"cassandra://127.0.0.1:9042/loopwise_demo_{stamp}"
    if running:
        return url, None
    return url, lambda: subprocess.run([*command, "stop", *where], check=False)


@app.command()
def demo(
    explore: Annotated[int, typer.Option("--explore", help="Exploration decisions.")] = 4000,
    exploit: Annotated[int, typer.Option("--exploit", help="Model-driven decisions.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the product and the services.")] = 0,
    store: Annotated[str, typer.Option(help="Store backend: sqlite or cassandra.")] = "sqlite",
    speed: Annotated[float, typer.Option(help="Clock speed (simulated s per real s).")] = 120.0,
    data_dir: Annotated[Path, typer.Option(help="Fresh data dir (cleaned first).")] = Path(
        "var/demo"),
) -> None:
    """Run the simulated checkout product through the whole loop and print a summary."""
    from loopwise.simulator.demo import STAGES, DemoConfig, run_demo

    if store not in ("sqlite", "cassandra"):
        console.print(f"[red]unknown store {store!r}: use sqlite or cassandra[/red]")
        raise typer.Exit(2)
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    anchor = time.time()
    env = {"LOOPWISE_CLOCK_ANCHOR": repr(anchor), "LOOPWISE_CLOCK_SPEED": repr(speed),
           "LOOPWISE_SEED": str(seed)}
    stop_cassandra = None
    if store == "cassandra":
        url, stop_cassandra = _demo_cassandra(int(anchor))
        env.update({f"LOOPWISE_{s.upper()}_STORE_URL": url for s in SERVICES})
        console.print(f"store: {url}")
    launcher = Launcher(data_dir, env=env, ports=_demo_ports())
    addresses = {s: launcher.address(s) for s in SERVICES}
    # The demo runs as production does: mutual TLS and tokens, with its own local
    # credentials under the demo's data dir.
    credentials, _ = local_profile.ensure_local_credentials(launcher.data_dir, addresses)
    for name in SERVICES:
        launcher.service_env[name] = credentials.service_env(name)
    settings = Settings(**{f"{s}_address": a for s, a in addresses.items()},
                        data_dir=launcher.data_dir, clock_anchor=anchor, clock_speed=speed,
                        seed=seed, **credentials.client_settings())
    launcher.client = settings
    try:
        with console.status("starting the four services…"):
            launcher.start_all()
        console.print("services up: " + ", ".join(f"{s} {launcher.address(s)}" for s in SERVICES))
        with Progress(TextColumn("[bold]{task.description:<9}"), BarColumn(),
                      TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[detail]}"),
                      TimeElapsedColumn(), console=console) as progress:
            tasks: dict[str, TaskID] = {}

            def report(stage: str, fraction: float, detail: str) -> None:
                if stage not in tasks:
                    tasks[stage] = progress.add_task(stage, total=1.0, detail="")
                progress.update(tasks[stage], completed=min(1.0, max(0.0, fraction)), detail=detail)

            summary = run_demo(settings, DemoConfig(n_explore=explore, n_exploit=exploit,
                                                    seed=seed), progress=report)
            assert set(tasks) <= set(STAGES)
    except grpc.RpcError as error:
        raise _fail(error) from None
    except (RuntimeError, TimeoutError) as error:
        console.print(f"[red]demo failed:[/red] {error}")
        raise typer.Exit(1) from None
    finally:
        with console.status("stopping the services…"):
            launcher.stop_all()
        if stop_cassandra is not None:
            stop_cassandra()
    table = Table(Column("", no_wrap=True), "", title="loopwise demo: checkout_upsell",
                  show_header=False)
    for label, value in summary.rows():
        if label != "report":
            table.add_row(label, value)
    console.print(table)
    # on its own line, so that a narrow terminal never truncates the path
    console.print(f"HTML report: {summary.report_path}", soft_wrap=True)


def main() -> None:
    """Entry point of the ``loopwise`` console script."""
    app()


if __name__ == "__main__":
    main()
