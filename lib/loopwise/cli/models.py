"""Models and jobs: train, the model registry, deployments, rollouts, and the operations
(jobs) of the trainer and the evaluator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from loopwise.cli.common import (
    Output,
    OutputOption,
    UseCaseOption,
    app,
    connect,
    console,
    enum_name,
    fail,
    follow,
    group,
    message_dict,
    print_json,
    table_or_json,
    when,
)
from loopwise.client import operation_result
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.trainer.v1 import trainer_service_pb2 as tpb


@app.command()
def train(
    use_case: UseCaseOption,
    deploy: Annotated[bool, typer.Option(help="Deploy if it beats the baseline.")] = False,
) -> None:
    """Train a model for a use case and follow the job."""
    with connect() as client:
        operation = client.start_training(use_case, deploy=deploy)
        operation = follow(client, operation, f"training {use_case}")
    result = operation_result(operation)
    assert isinstance(result, tpb.TrainingResult)
    table = Table("family", "metric", "holdout score", "fit s", "p99 ms", "params", "note", title="candidates")
    for c in result.candidates:
        table.add_row(c.family + (" ✓" if c.chosen else ""), c.metric, f"{c.score:.4f}", f"{c.fit_seconds:.2f}",
                      f"{c.latency_p99_ms:.3f}", escape(c.params), escape(c.error))
    console.print(table)
    if result.HasField("blessing"):
        console.print(escape(result.blessing.reason))
    if result.HasField("rollout"):
        console.print(f"rollout: {enum_name(tpb.RolloutStep, result.rollout.step, 'ROLLOUT_STEP_')} — "
                      f"{escape(result.rollout.message)}")
    if result.HasField("model"):
        console.print(f"model v{result.model.version} ({result.model.family}) registered; "
                      f"deployed: {result.deployed} — {escape(result.deployment_reason)}")
    else:
        console.print(f"no model registered: {escape(result.deployment_reason)}")


def _metrics(values: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(values.items()))


@app.command()
def models(use_case: UseCaseOption, output: OutputOption = Output.table) -> None:
    """The model versions of a use case, newest first."""
    with connect() as client:
        found = client.list_models(use_case)

    def show() -> None:
        table = Table("version", "family", "blueprint", "rows", "metrics", "source", "created (UTC)", title=use_case)
        for m in found:
            table.add_row(str(m.version), m.family, str(m.blueprint_version), str(m.training_rows),
                          _metrics(dict(m.metrics)), m.source, when(m.create_time))
        console.print(table)

    table_or_json(output, found, show)


@app.command()
def model(
    use_case: UseCaseOption,
    version: Annotated[int, typer.Option("--version", help="The model version (default: the latest).")] = 0,
    output: OutputOption = Output.table,
) -> None:
    """One model version: its lineage, data, metrics and artifact."""
    with connect() as client:
        found = client.get_model(use_case, version)

    def show() -> None:
        table = Table("field", "value", title=f"{use_case} model v{found.version}", show_header=False)
        rows = [("family", found.family), ("source", found.source), ("blueprint version", found.blueprint_version),
                ("parent version", found.parent_version or "-"), ("created (UTC)", when(found.create_time)),
                ("data from (UTC)", when(found.data_start_time)), ("data to (UTC)", when(found.data_end_time)),
                ("training rows", found.training_rows), ("holdout rows", found.holdout_rows),
                ("metrics", _metrics(dict(found.metrics))), ("baseline", _metrics(dict(found.baseline_metrics))),
                ("artifact", f"{found.artifact_size} bytes, sha256 {found.artifact_sha256}"),
                ("operation", found.operation_id or "-"), ("code version", found.code_version or "-"),
                ("description", found.description or "-")]
        for name, value in rows:
            table.add_row(name, escape(str(value)))
        console.print(table)

    table_or_json(output, found, show)


# ---------------------------------------------------------------- deployments

deployment_app = group("deployment", "Which model versions serve a use case, and their changes.")


def _ref(ref: tpb.ModelRef) -> str:
    return f"v{ref.version}" if ref.version else "-"


def _show_deployment(deployment: tpb.Deployment) -> None:
    production = _ref(deployment.production) if deployment.HasField("production") else "none (default decision)"
    canary = (f"{_ref(deployment.canary)} on {100 * deployment.canary_share:g}% of units"
              if deployment.HasField("canary") and deployment.canary.version else "none")
    shadows = ", ".join(_ref(s) for s in deployment.shadows) or "none"
    console.print(f"{deployment.use_case}: revision {deployment.revision} of {when(deployment.update_time)} UTC"
                  + (f" ({escape(deployment.reason)})" if deployment.reason else ""))
    console.print(f"  production: {production}\n  canary: {canary}\n  shadow: {shadows}")


@deployment_app.command("show")
def deployment_show(use_case: UseCaseOption, output: OutputOption = Output.table) -> None:
    """The deployment in force for a use case."""
    with connect() as client:
        found = client.get_deployment(use_case)
    if output == Output.json:
        print_json(found if found is not None else None)
    elif found is None:
        console.print(f"{use_case}: no deployment yet (the default decision serves)")
    else:
        _show_deployment(found)


@deployment_app.command("set")
def deployment_set(
    use_case: UseCaseOption,
    production: Annotated[int, typer.Option("--production", help="Production model version (0: none, the "
                                                                  "default decision serves).")],
    canary: Annotated[int, typer.Option("--canary", help="Canary model version (0: none).")] = 0,
    canary_share: Annotated[float, typer.Option("--canary-share", help="Share of units the canary "
                                                                       "serves, in [0, 1].")] = 0.0,
    shadow: Annotated[list[int] | None, typer.Option("--shadow", help="Shadow model version, scored and "
                                                                      "logged only (repeatable).")] = None,
    reason: Annotated[str, typer.Option(help="Why (kept in the deployment audit).")] = "",
) -> None:
    """Set which model versions serve a use case: a new deployment revision."""
    with connect() as client:
        deployment = client.set_deployment(use_case, production, canary_version=canary,
                                           canary_share=canary_share, shadow_versions=shadow or [],
                                           reason=reason)
    _show_deployment(deployment)


@deployment_app.command("rollback")
def deployment_rollback(
    use_case: UseCaseOption,
    reason: Annotated[str, typer.Option(help="Why (kept in the deployment audit).")] = "",
) -> None:
    """Return the deployment of a use case to its previous revision (models; 'loopwise
    rollback' rolls back blueprints)."""
    with connect() as client:
        deployment = client.rollback_model(use_case, reason=reason)
    _show_deployment(deployment)


@deployment_app.command("audit")
def deployment_audit(use_case: UseCaseOption, output: OutputOption = Output.table) -> None:
    """Every deployment change of a use case with its reason, oldest first."""
    with connect() as client:
        entries = client.list_deployment_audit(use_case)

    def show() -> None:
        table = Table("revision", "when (UTC)", "action", "why", title=use_case)
        for e in entries:
            table.add_row(str(e.revision), when(e.time), e.action, escape(e.reason))
        console.print(table)

    table_or_json(output, entries, show)


# ---------------------------------------------------------------- rollouts

rollout_app = group("rollout", "Automatic rollouts: shadow, canary, then promote or roll back.")


@rollout_app.command("get")
def rollout_get(use_case: UseCaseOption, output: OutputOption = Output.table) -> None:
    """The latest automatic rollout of a use case: step, guardrails and rewards."""
    with connect() as client:
        rollout = client.get_rollout(use_case)

    def show() -> None:
        console.print(f"{use_case}: model v{rollout.model_version} against production v{rollout.production_version}, "
                      f"{enum_name(tpb.RolloutStep, rollout.step, 'ROLLOUT_STEP_')} since "
                      f"{when(rollout.step_start_time)} UTC")
        console.print(f"  {rollout.decisions} decisions, {rollout.joined_outcomes} joined outcomes; reward "
                      f"{rollout.canary_reward:.4g} against {rollout.production_reward:.4g} (difference "
                      f"{rollout.reward_diff_lower:+.4g} .. {rollout.reward_diff_upper:+.4g})")
        if rollout.message:
            console.print(f"  {escape(rollout.message)}")
        table = Table("guardrail", "passed", "value", "threshold", "detail")
        for g in rollout.guardrails:
            table.add_row(g.name, "yes" if g.passed else "NO", f"{g.value:.4g}", f"{g.threshold:.4g}", escape(g.detail))
        if rollout.guardrails:
            console.print(table)

    table_or_json(output, rollout, show)


# ---------------------------------------------------------------- operations

operations_app = group("operations", "Jobs of the trainer (training) and the evaluator (effects).")

ServiceOption = Annotated[str, typer.Option(
    "--service", help="trainer or evaluator (default: both for list; for one job, the trainer is "
                      "asked first, then the evaluator).")]


def _service(value: str) -> str | None:
    if value not in ("", "trainer", "evaluator"):
        raise fail("--service must be trainer or evaluator")
    return value or None


def _operation_row(table: Table, op: op_pb.Operation) -> None:
    table.add_row(op.id, op.kind, op.use_case, enum_name(op_pb.OperationState, op.state, "OPERATION_STATE_"),
                  escape(op.stage), f"{op.progress:.0%}", when(op.create_time),
                  escape(op.error_message or op.message))


def _operations_table(found: list[op_pb.Operation]) -> None:
    table = Table("id", "kind", "use case", "state", "stage", "progress", "created (UTC)", "message")
    for op in found:
        _operation_row(table, op)
    console.print(table)


@operations_app.command("list")
def operations_list(
    use_case: Annotated[str, typer.Option("--use-case", "-u", help="Only this use case's jobs.")] = "",
    service: ServiceOption = "",
    limit: Annotated[int, typer.Option("--limit", help="At most this many per service.")] = 50,
    output: OutputOption = Output.table,
) -> None:
    """Jobs, newest first."""
    chosen = _service(service)
    found: list[op_pb.Operation] = []
    with connect() as client:
        for name in [chosen] if chosen else ["trainer", "evaluator"]:
            found += client.list_operations(use_case, service=name, limit=limit)  # type: ignore[arg-type]
    found.sort(key=lambda op: (op.create_time.seconds, op.create_time.nanos), reverse=True)
    table_or_json(output, found, lambda: _operations_table(found))


@operations_app.command("get")
def operations_get(
    operation_id: Annotated[str, typer.Argument(metavar="ID", help="The job's id.")],
    use_case: Annotated[str, typer.Option("--use-case", "-u", help="Its use case (lets a token scoped "
                                                                    "to that use case read it).")] = "",
    service: ServiceOption = "",
    output: OutputOption = Output.table,
) -> None:
    """One job: its state, stage and progress (and its result once it succeeded)."""
    with connect() as client:
        op = client.get_operation(operation_id, use_case, service=_service(service))  # type: ignore[arg-type]
    if output == Output.json:
        print_json(op)
        return
    _operations_table([op])
    if op.state == op_pb.OPERATION_STATE_SUCCEEDED and op.HasField("result"):
        print_json(message_dict(operation_result(op)))


@operations_app.command("watch")
def operations_watch(
    operation_id: Annotated[str, typer.Argument(metavar="ID", help="The job's id.")],
    use_case: Annotated[str, typer.Option("--use-case", "-u", help="Its use case.")] = "",
    service: ServiceOption = "",
) -> None:
    """Follow a job until it is final, with its progress; exit status 1 when it failed or was
    cancelled."""
    with connect() as client:
        op = client.get_operation(operation_id, use_case, service=_service(service))  # type: ignore[arg-type]
        op = follow(client, op, f"{op.kind} {op.use_case}")
    console.print(f"{op.id}: {enum_name(op_pb.OperationState, op.state, 'OPERATION_STATE_')}")


@operations_app.command("cancel")
def operations_cancel(
    operation_id: Annotated[str, typer.Argument(metavar="ID", help="The job's id.")],
    use_case: Annotated[str, typer.Option("--use-case", "-u", help="Its use case.")] = "",
    service: ServiceOption = "",
) -> None:
    """Cancel a running job (a job already final stays as it was)."""
    with connect() as client:
        op = client.cancel_operation(operation_id, use_case, service=_service(service))  # type: ignore[arg-type]
    console.print(f"{op.id}: {enum_name(op_pb.OperationState, op.state, 'OPERATION_STATE_')}")


@app.command("download-model")
def download_model(
    use_case: UseCaseOption,
    version: Annotated[int, typer.Option("--version", help="The model version.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the ONNX file.")],
) -> None:
    """Download a model's ONNX artifact (its sha256 checked)."""
    with connect() as client:
        artifact = client.download_model(use_case, version)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(artifact.onnx)
    console.print(f"{use_case} model v{version}: {len(artifact.onnx)} bytes, sha256 {artifact.sha256}, "
                  f"written to {escape(str(out.resolve()))}")
