"""Logged data: statistics, one decision, the export of joined rows, deleting a unit's
data; tokens and backups."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
import yaml
from rich.markup import escape
from rich.table import Table

from loopwise.backup import BackupSummary, export_backup, import_backup
from loopwise.cli.common import (
    Output,
    OutputOption,
    UseCaseOption,
    app,
    author,
    connect,
    console,
    errors,
    fail,
    group,
    message_dict,
    print_json,
    rpc_errors,
    settings,
    when,
)
from loopwise.client import Client
from loopwise.clock import Clock
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.security import sync_channel
from loopwise.tensors import F32, I32, I64, unpack_matrix, unpack_vector
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc


@app.command()
def stats(use_case: UseCaseOption, output: OutputOption = Output.table) -> None:
    """Decision and outcome counts of a use case: join rate, late and orphan outcomes,
    reward windows, drift."""
    with connect() as client:
        reply = client.get_stats(use_case)
    if output == Output.json:
        print_json(reply)
        return
    table = Table("statistic", "value", title=use_case)
    for name, value in message_dict(reply).items():
        table.add_row(name, escape(f"{value:.3f}" if isinstance(value, float) else str(value)))
    console.print(table)


# ---------------------------------------------------------------- one decision

decision_app = group("decision", "Logged decisions.")


def _feature_values(reply: fpb.GetDecisionResponse) -> dict[str, float]:
    if not reply.decision.features:
        return {}
    values = unpack_vector(reply.decision.features, F32)
    return {name: float(v) for name, v in zip(reply.feature_names, values, strict=False)}


@decision_app.command("get")
def decision_get(
    use_case: UseCaseOption,
    decision_id: Annotated[str, typer.Argument(metavar="DECISION_ID", help="The decision's id (a UUIDv7).")],
    output: OutputOption = Output.table,
) -> None:
    """One decision as logged: features, action and probabilities, its outcomes and reward,
    and the model that made it."""
    with connect() as client:
        reply = client.get_decision(use_case, decision_id)
    features = _feature_values(reply)
    if output == Output.json:
        print_json({**message_dict(reply), "feature_values": features})
        return
    d = reply.decision
    console.print(f"{d.decision_id} of {d.use_case}: {d.action} (index {d.action_index}) for unit "
                  f"{escape(d.unit_id or '-')}, blueprint v{d.blueprint_version}, model "
                  f"{f'v{d.model_version}' if d.model_version else 'none'} ({d.deployment_role or '-'})")
    flags = [name for name, on in (("explored", d.explored), ("fallback", d.fallback), ("shadow", d.shadow),
                                   ("undelivered", d.undelivered)) if on]
    console.print(f"  probabilities {[round(p, 4) for p in d.action_probabilities]}, score {d.score:.4g}"
                  + (f"; {', '.join(flags)}" if flags else ""))
    table = Table("feature", "value (categories as codes)")
    for name, value in features.items():
        table.add_row(name, f"{value:g}")
    console.print(table)
    outcomes = Table("outcome", "name", "value", "label", "when (UTC)")
    for o in reply.outcomes:
        outcomes.add_row(escape(o.outcome_id), escape(o.name), f"{o.value:g}", escape(o.label), when(o.event_time))
    if reply.outcomes:
        console.print(outcomes)
    console.print(f"reward {reply.reward:g} (window {'closed' if reply.window_closed else 'open'})")
    for key, value in sorted(reply.model_lineage.items()):
        console.print(f"  {key}: {escape(value)}")


# ---------------------------------------------------------------- export

FORMATS = ("parquet", "csv")


class _Columns:
    """The joined rows of ReadTrainingData batches as named columns: decision_id,
    decision_time (UTC), blueprint_version, model_version, arm, action, propensity,
    p_<action> per action of the current blueprint, reward, outcome_count, explored,
    then the features by name (categories as their values). Rows of older blueprint
    versions are aligned by feature and action name."""

    def __init__(self, latest: bp.Blueprint) -> None:
        self.features = list(latest.features)
        self.actions = list(latest.actions)
        self.columns: dict[str, list[Any]] = {name: [] for name in self.names()}

    def names(self) -> list[str]:
        return ["decision_id", "decision_time", "blueprint_version", "model_version", "arm", "action",
                "propensity", *[f"p_{a}" for a in self.actions], "reward", "outcome_count", "explored",
                *[f.name for f in self.features]]

    def add(self, batch: fpb.ReadTrainingDataResponse, version: bp.Blueprint) -> None:
        n = batch.rows
        if n == 0:
            return
        c = self.columns
        names = list(batch.feature_names)
        x = unpack_matrix(batch.features, n, len(names), "features", F32)
        chosen = unpack_vector(batch.action_indices, I32)
        probs = (unpack_matrix(batch.action_probabilities, n, batch.n_actions, "action_probabilities", F32)
                 if batch.n_actions else np.full((n, 0), np.nan, np.float32))
        times = unpack_vector(batch.decision_times_ms, I64) if batch.decision_times_ms else np.zeros(n, np.int64)
        models = unpack_vector(batch.model_versions, I64) if batch.model_versions else np.zeros(n, np.int64)
        counts = unpack_vector(batch.outcome_counts, I32) if batch.outcome_counts else np.zeros(n, np.int32)
        rewards = unpack_vector(batch.rewards, F32)
        explored = (np.frombuffer(batch.explored, np.uint8).astype(bool) if len(batch.explored) == n
                    else np.zeros(n, bool))
        actions = list(version.actions)
        c["decision_id"] += list(batch.decision_ids)
        c["decision_time"] += [datetime.fromtimestamp(int(ms) / 1000, tz=UTC) for ms in times]
        c["blueprint_version"] += [batch.blueprint_version] * n
        c["model_version"] += [int(v) for v in models]
        c["arm"] += list(batch.arms) or [""] * n
        c["action"] += [actions[i] if 0 <= i < len(actions) else "" for i in chosen]
        c["propensity"] += [float(probs[r, i]) if probs.shape[1] and 0 <= i < probs.shape[1] else float("nan")
                            for r, i in enumerate(chosen)]
        for action in self.actions:
            j = actions.index(action) if action in actions else -1
            c[f"p_{action}"] += ([float(v) for v in probs[:, j]] if 0 <= j < probs.shape[1]
                                 else [float("nan")] * n)
        c["reward"] += [float(v) for v in rewards]
        c["outcome_count"] += [int(v) for v in counts]
        c["explored"] += [bool(v) for v in explored]
        vocabularies = {f.name: list(f.vocabulary) for f in version.features
                        if f.type == bp.FEATURE_TYPE_CATEGORICAL}
        for spec in self.features:
            column = x[:, names.index(spec.name)] if spec.name in names else np.full(n, np.nan)
            if spec.type == bp.FEATURE_TYPE_CATEGORICAL:
                vocabulary = vocabularies.get(spec.name, list(spec.vocabulary))
                c[spec.name] += [vocabulary[int(v)] if np.isfinite(v) and 0 <= v < len(vocabulary) else None
                                 for v in column]
            else:
                c[spec.name] += [float(v) for v in column]

    def __len__(self) -> int:
        return len(self.columns["decision_id"])

    def write_parquet(self, path: Path) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise fail("Parquet needs pyarrow (pip install pyarrow), or write --format csv") from None
        types = {"decision_time": pa.timestamp("ms", tz="UTC"), "blueprint_version": pa.int64(),
                 "model_version": pa.int64(), "outcome_count": pa.int64(), "explored": pa.bool_()}
        categorical = {f.name for f in self.features if f.type == bp.FEATURE_TYPE_CATEGORICAL}
        arrays = {}
        for name, values in self.columns.items():
            if name in types:
                kind = types[name]
            elif name in ("decision_id", "arm", "action") or name in categorical:
                kind = pa.string()
            else:
                kind = pa.float64()
            arrays[name] = pa.array(values, type=kind)
        pq.write_table(pa.table(arrays), path)

    def write_csv(self, path: Path) -> None:
        def cell(value: Any) -> Any:
            if value is None or (isinstance(value, float) and np.isnan(value)):
                return ""
            if isinstance(value, datetime):
                return value.isoformat(timespec="milliseconds")
            return value

        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(list(self.columns))
            for row in zip(*self.columns.values(), strict=True):
                writer.writerow([cell(v) for v in row])


def _joined(client: Client, use_case: str, batches: Iterable[fpb.ReadTrainingDataResponse]) -> _Columns:
    latest = client.get_use_case(use_case).blueprint
    versions: dict[int, bp.Blueprint] = {}
    columns = _Columns(latest)
    for batch in batches:
        if batch.blueprint_version not in versions:
            versions[batch.blueprint_version] = client.get_use_case(use_case, batch.blueprint_version).blueprint
        columns.add(batch, versions[batch.blueprint_version])
    return columns


@app.command("export")
def export(
    use_case: UseCaseOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write (.parquet or .csv).")],
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv (default: from --out).")] = "",
    include_open_windows: Annotated[bool, typer.Option(
        "--include-open-windows", help="Also decisions whose reward window is still open.")] = False,
) -> None:
    """Export the joined decisions and outcomes of a use case to Parquet or CSV (read
    from the feedback service, as training reads them)."""
    fmt = fmt or out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise fail(f"--format must be one of {', '.join(FORMATS)}")
    with connect() as client:
        columns = _joined(client, use_case, client.read_training_data(
            use_case, include_open_windows=include_open_windows))
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        columns.write_parquet(out)
    else:
        columns.write_csv(out)
    console.print(f"{len(columns)} joined rows of {use_case} written to {escape(str(out.resolve()))} ({fmt})")


@app.command("delete-unit")
def delete_unit(
    use_case: UseCaseOption,
    unit: Annotated[str, typer.Option("--unit", help="The unit id, as your product knows it.")],
) -> None:
    """Delete every decision of one unit in a use case, and their outcomes."""
    with connect() as client:
        reply = client.delete_unit_data(use_case, unit)
    console.print(f"deleted {reply.decisions_deleted} decision(s) and {reply.outcomes_deleted} "
                  f"outcome(s) of unit {escape(repr(unit))} in {use_case}")


# ---------------------------------------------------------------- tokens

tokens_app = group("tokens", "Bearer tokens (the tokens file keeps only their sha256).")


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option("--name", help="Who holds it (appears in logs, never the secret).")],
    scope: Annotated[list[str], typer.Option(
        "--scope", help="USE_CASE=SCOPE[,SCOPE...] ('*' for every use case); scopes: "
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
            raise fail(f"--scope {item!r}: expected USE_CASE=SCOPE[,SCOPE...]")
        scopes.setdefault(use_case, []).extend(g.strip() for g in granted.split(",") if g.strip())
    try:
        secret, entry = new_token(name, scopes, service=service)
    except ValueError as error:
        raise fail(str(error)) from None
    print(f"token: {secret}")
    print("# add under `tokens:` in the tokens file (LOOPWISE_TOKENS_FILE):")
    print(yaml.safe_dump([entry], sort_keys=False).rstrip())


# ---------------------------------------------------------------- backup

backup_app = group("backup", "Back up and restore use cases, models and deployments.")


def _summary_line(verb: str, summary: BackupSummary) -> str:
    return (f"{verb} {len(summary.use_cases)} use case(s), {summary.blueprint_versions} blueprint "
            f"version(s), {summary.models} model(s), {summary.deployments} deployment(s)")


@backup_app.command("export")
def backup_export(
    out: Annotated[Path, typer.Option("--out", "-o", help="A new directory, or a .tar.gz archive.")],
) -> None:
    """Write use cases (all versions), models with artifacts, deployments to a dir or .tar.gz."""
    s = settings()
    try:
        with connect() as client, sync_channel(s, s.trainer_address) as channel, rpc_errors(s):
            summary = export_backup(client.decision_stub, tgrpc.TrainerServiceStub(channel), out)
    except (FileExistsError, RuntimeError) as error:
        errors.print(f"backup failed: {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(_summary_line("exported", summary) + f" to {escape(str(out))}")


@backup_app.command("import")
def backup_import(
    source: Annotated[Path, typer.Argument(exists=True, help="A backup directory or archive.")],
) -> None:
    """Restore a backup into running services; use cases that exist are left alone."""
    s = settings()
    clock = Clock.from_settings(s)
    try:
        with connect() as client, sync_channel(s, s.trainer_address) as channel, rpc_errors(s):
            summary = import_backup(client.decision_stub, tgrpc.TrainerServiceStub(channel), source,
                                    clock.new_id, author=author())
    except ValueError as error:
        errors.print(f"restore failed: {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(_summary_line("restored", summary))
    for name, reason in summary.skipped.items():
        console.print(f"skipped {escape(name)}: {escape(reason)}")
