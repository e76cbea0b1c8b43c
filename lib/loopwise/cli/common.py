"""What every command shares: the Typer app and its groups, the global options
(addresses, token, TLS) and the settings they make, the SDK client, output as tables or
JSON, and errors that name the setting to fix."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import grpc
import pydantic
import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

import loopwise
from loopwise import local_profile
from loopwise.client import Client, OperationFailed
from loopwise.client_errors import LoopwiseError, from_rpc_error
from loopwise.common.v1 import operation_pb2 as op_pb
from loopwise.settings import SECURITY_FIELDS, SERVICES, Settings

HELP = ("loopwise: self-hosted real-time smart strategies. Global options (before the "
        "command) set where the services are and how to reach them; each also has a "
        "LOOPWISE_* variable. An option wins over its variable, a variable over the profile "
        "that 'loopwise up' writes (which is not read when a TLS or token setting is given).")

app = typer.Typer(help=HELP, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None)


def group(name: str, help: str) -> typer.Typer:  # Typer's own name
    """A command group (``loopwise <name> <command>``)."""
    sub = typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(sub, name=name)
    return sub


console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)

UseCaseOption = Annotated[str, typer.Option("--use-case", "-u", help="The use case.")]


class Output(StrEnum):
    """How a reading command prints what it read."""

    table = "table"
    json = "json"


OutputOption = Annotated[Output, typer.Option(
    "--output", help="table (for people) or json (the protobuf messages as JSON, for scripts).")]

# The global options: (Settings field, option, help).
GLOBAL_OPTIONS: dict[str, tuple[str, str]] = {
    "decision_address": ("--decision-address", "Where the decision service is (host:port)."),
    "feedback_address": ("--feedback-address", "Where the feedback service is (host:port)."),
    "trainer_address": ("--trainer-address", "Where the trainer service is (host:port)."),
    "evaluator_address": ("--evaluator-address", "Where the evaluator service is (host:port)."),
    "token": ("--token", "Bearer token sent with every call. A command line can be seen by "
                         "other users of the machine: prefer --token-file or the variable."),
    "tls_ca_file": ("--ca-file", "PEM CA that verifies the services' certificates."),
    "tls_client_cert_file": ("--cert-file", "PEM client certificate (mutual TLS)."),
    "tls_client_key_file": ("--key-file", "PEM private key of the client certificate."),
    "tls_server_name": ("--server-name", "Server name expected in the services' certificates "
                                         "(default: the host of the address)."),
}


def variable(field_name: str) -> str:
    """The environment variable of a setting."""
    return f"LOOPWISE_{field_name.upper()}"


@dataclass
class Options:
    """The global options given on the command line (Settings field -> value)."""

    given: dict[str, Any] = field(default_factory=dict)


# The global options of the command being run (set by the app's callback, which runs
# before every command).
_GIVEN: ContextVar[Options | None] = ContextVar("loopwise_cli_options", default=None)


def _options() -> Options:
    return _GIVEN.get() or Options()


def settings() -> Settings:
    """The settings of this command: the global options, then the LOOPWISE_* variables,
    then the local profile (not read when an option or a variable sets TLS or a token)."""
    try:
        return Settings(**_options().given)
    except (pydantic.ValidationError, ValueError, FileNotFoundError) as error:
        errors.print(f"error: the settings are not valid: {escape(str(error))}")
        raise typer.Exit(2) from None


def origin(field_name: str) -> str:
    """Where the value of a setting came from, for messages."""
    given = _options().given
    if field_name in given:
        return f"the option {GLOBAL_OPTIONS[field_name][0]}"
    if os.environ.get(variable(field_name)):
        return f"the variable {variable(field_name)}"
    if field_name == "tls_client_cert_file" and os.environ.get("LOOPWISE_TLS_CERT_FILE"):
        return "the variable LOOPWISE_TLS_CERT_FILE"
    if field_name == "tls_client_key_file" and os.environ.get("LOOPWISE_TLS_KEY_FILE"):
        return "the variable LOOPWISE_TLS_KEY_FILE"
    try:
        profile = {} if SECURITY_FIELDS & set(given) else local_profile.read_profile()
    except (OSError, ValueError):
        profile = {}
    if profile.get(field_name) not in (None, ""):
        return f"the profile {local_profile.profile_path()}"
    return "the default"


def setting_names(field_name: str) -> str:
    """How to set a setting: "--option or LOOPWISE_VARIABLE"."""
    option = GLOBAL_OPTIONS.get(field_name, ("",))[0]
    return f"{option} or {variable(field_name)}" if option else variable(field_name)


# ---------------------------------------------------------------- errors


def _tls_on(s: Settings) -> bool:
    return not (s.tls_ca_file is None and s.allow_plaintext)


def explain(error: LoopwiseError, s: Settings) -> list[str]:
    """What went wrong and which setting fixes it, for people: the first line says what
    happened, the others what to check."""
    code, details = error.code(), error.details()
    service = error.service or "a"
    where = f"the {service} service" + (f" at {error.address}" if error.address else "")
    address_field = f"{error.service}_address" if error.service in SERVICES else ""
    lines = [f"error: {code.name}: {details}"]
    lowered = details.lower()
    if code == grpc.StatusCode.UNAVAILABLE and any(
            word in lowered for word in ("handshake", "ssl", "tsi_", "certificate")):
        lines = [f"error: the TLS handshake with {where} failed: {details}",
                 f"  The CA that verifies the service's certificate comes from "
                 f"{origin('tls_ca_file')} ({s.tls_ca_file or 'none: the system roots'}); set it "
                 f"with {setting_names('tls_ca_file')}.",
                 f"  The client certificate comes from {origin('tls_client_cert_file')}; set it with "
                 f"{setting_names('tls_client_cert_file')} and {setting_names('tls_client_key_file')}."]
    elif code == grpc.StatusCode.UNAVAILABLE and "hostname verification" in lowered:
        lines = [f"error: the certificate of {where} is not for the name called: {details}",
                 f"  Call it by a name its certificate has, or set the expected name with "
                 f"{setting_names('tls_server_name')}."]
    elif code == grpc.StatusCode.UNAVAILABLE and "socket closed" in lowered:
        if _tls_on(s):
            lines = [f"error: {where} closed the connection during the TLS handshake: {details}",
                     "  It probably refused the client certificate: it must be signed by the CA "
                     "the services trust. The client certificate comes from "
                     f"{origin('tls_client_cert_file')}; set it with "
                     f"{setting_names('tls_client_cert_file')} and {setting_names('tls_client_key_file')}."]
        else:
            lines = [f"error: {where} closed the connection: {details}",
                     "  It probably serves TLS only, and this command called it in plaintext: give "
                     f"the CA with {setting_names('tls_ca_file')}, the client certificate with "
                     f"{setting_names('tls_client_cert_file')} and {setting_names('tls_client_key_file')}, "
                     f"and a token with {setting_names('token')}."]
    elif code == grpc.StatusCode.UNAVAILABLE:
        lines = [f"error: {where} cannot be reached: {details}"]
        if address_field:
            lines.append(f"  Is it running ('loopwise status')? Its address comes from "
                         f"{origin(address_field)}; set it with {setting_names(address_field)}.")
    elif code == grpc.StatusCode.UNAUTHENTICATED:
        token = "set" if s.token.get_secret_value() else "not set"
        lines = [f"error: {where} did not accept the token: {details}",
                 f"  The token ({token}) comes from {origin('token')}; set it with "
                 f"{setting_names('token')} (or --token-file)."]
    elif code == grpc.StatusCode.PERMISSION_DENIED:
        lines = [f"error: the token may not do this: {details}",
                 f"  The token comes from {origin('token')}; use one with the scope this call needs "
                 f"(docs/security.md) through {setting_names('token')}."]
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        lines = [f"error: no answer from {where} in time: {details}"]
    lines += [f"  {violation}: {description}" for violation, description in error.field_violations]
    return lines


@contextmanager
def rpc_errors(s: Settings | None = None) -> Iterator[None]:
    """Print a failed call as what to fix (exit status 1), and a failed job likewise."""
    try:
        yield
    except grpc.RpcError as error:
        typed = from_rpc_error(error)
        for line in explain(typed, s or settings()):
            errors.print(escape(line), soft_wrap=True)
        raise typer.Exit(1) from None
    except OperationFailed as error:
        errors.print(f"error: {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from None


def _setting_of_path(s: Settings, path: str) -> str:
    for name in ("tls_ca_file", "tls_client_cert_file", "tls_client_key_file", "tls_cert_file", "tls_key_file"):
        if str(getattr(s, name) or "") == path:
            return f" (from {origin(name)}; set it with {setting_names(name)})"
    return ""


@contextmanager
def connect() -> Iterator[Client]:
    """The SDK client of this command's settings, with errors printed as :func:`rpc_errors`
    does."""
    s = settings()
    with rpc_errors(s):
        try:
            client = Client(settings=s)
        except OSError as error:
            path = str(getattr(error, "filename", "") or "")
            errors.print(f"error: cannot read {escape(path or str(error))}{_setting_of_path(s, path)}: "
                         f"{escape(error.strerror or str(error))}", soft_wrap=True)
            raise typer.Exit(2) from None
        with client:
            yield client


def fail(message: str, status: int = 2) -> typer.Exit:
    """Print an error of the command's own (bad input) and return the exit to raise."""
    errors.print(f"error: {escape(message)}", soft_wrap=True)
    return typer.Exit(status)


def author() -> str:
    """Who makes a change from this CLI (the login name)."""
    return os.environ.get("USER") or os.environ.get("LOGNAME") or "cli"


# ---------------------------------------------------------------- output


def message_dict(message: Message) -> dict[str, Any]:
    """A protobuf message as JSON data: proto field names, every field present (zeros
    too), so scripts find the same keys every time."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def print_json(value: Any) -> None:
    """Print JSON data (messages converted with :func:`message_dict`) on stdout."""

    def convert(item: Any) -> Any:
        if isinstance(item, Message):
            return message_dict(item)
        if isinstance(item, Mapping):
            return {str(k): convert(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [convert(v) for v in item]
        return item

    sys.stdout.write(json.dumps(convert(value), indent=2, ensure_ascii=False) + "\n")


def when(stamp: Any) -> str:
    """A Timestamp as "YYYY-MM-DD HH:MM:SS" UTC ("-" when unset)."""
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")


def enum_name(enum: Any, value: int, prefix: str) -> str:
    """An enum value's name without its prefix, in lower case."""
    try:
        return enum.Name(value).removeprefix(prefix).lower()
    except ValueError:
        return str(value)


def follow(client: Client, operation: op_pb.Operation, title: str) -> op_pb.Operation:
    """Show an operation's progress until it is final (WatchOperation, resumed after a
    restart of its service); exit 1 when it did not succeed."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[stage]}"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(escape(title), total=1.0, stage="")

        def update(op: op_pb.Operation) -> None:
            stage = f"{op.stage}: {op.message}" if op.message else op.stage
            progress.update(task, completed=op.progress, stage=escape(stage[:90]))

        try:
            return client.wait_operation(operation, on_progress=update)
        except OperationFailed as error:
            final = error.operation
    errors.print(f"error: {escape(title)} {enum_name(op_pb.OperationState, final.state, 'OPERATION_STATE_')}: "
                 f"{escape(final.error_message)}", soft_wrap=True)
    raise typer.Exit(1)


# ---------------------------------------------------------------- global options


def _version(value: bool) -> None:
    if value:
        print(f"loopwise {loopwise.__version__}")
        raise typer.Exit()


@app.callback()
def global_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    decision_address: Annotated[str | None, typer.Option(
        "--decision-address", metavar="HOST:PORT", help=GLOBAL_OPTIONS["decision_address"][1]
        + " Variable: LOOPWISE_DECISION_ADDRESS.")] = None,
    feedback_address: Annotated[str | None, typer.Option(
        "--feedback-address", metavar="HOST:PORT", help=GLOBAL_OPTIONS["feedback_address"][1]
        + " Variable: LOOPWISE_FEEDBACK_ADDRESS.")] = None,
    trainer_address: Annotated[str | None, typer.Option(
        "--trainer-address", metavar="HOST:PORT", help=GLOBAL_OPTIONS["trainer_address"][1]
        + " Variable: LOOPWISE_TRAINER_ADDRESS.")] = None,
    evaluator_address: Annotated[str | None, typer.Option(
        "--evaluator-address", metavar="HOST:PORT", help=GLOBAL_OPTIONS["evaluator_address"][1]
        + " Variable: LOOPWISE_EVALUATOR_ADDRESS.")] = None,
    token: Annotated[str | None, typer.Option(
        "--token", metavar="TOKEN", help=GLOBAL_OPTIONS["token"][1] + " Variable: LOOPWISE_TOKEN.")] = None,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", metavar="FILE", exists=True, dir_okay=False,
        help="File holding the bearer token (instead of --token).")] = None,
    ca_file: Annotated[Path | None, typer.Option(
        "--ca-file", metavar="FILE", help=GLOBAL_OPTIONS["tls_ca_file"][1]
        + " Variable: LOOPWISE_TLS_CA_FILE.")] = None,
    cert_file: Annotated[Path | None, typer.Option(
        "--cert-file", metavar="FILE", help=GLOBAL_OPTIONS["tls_client_cert_file"][1]
        + " Variable: LOOPWISE_TLS_CLIENT_CERT_FILE.")] = None,
    key_file: Annotated[Path | None, typer.Option(
        "--key-file", metavar="FILE", help=GLOBAL_OPTIONS["tls_client_key_file"][1]
        + " Variable: LOOPWISE_TLS_CLIENT_KEY_FILE.")] = None,
    server_name: Annotated[str | None, typer.Option(
        "--server-name", metavar="NAME", help=GLOBAL_OPTIONS["tls_server_name"][1]
        + " Variable: LOOPWISE_TLS_SERVER_NAME.")] = None,
) -> None:
    if token is not None and token_file is not None:
        raise typer.BadParameter("give --token or --token-file, not both")
    if token_file is not None:
        token = token_file.read_text().strip()
    values = {"decision_address": decision_address, "feedback_address": feedback_address,
              "trainer_address": trainer_address, "evaluator_address": evaluator_address,
              "token": token, "tls_ca_file": ca_file, "tls_client_cert_file": cert_file,
              "tls_client_key_file": key_file, "tls_server_name": server_name}
    _GIVEN.set(Options({k: v for k, v in values.items() if v is not None}))


def table_or_json(output: Output, data: Any, show: Callable[[], None]) -> None:
    """Print ``data`` as JSON, or call ``show`` to print it for people."""
    if output == Output.json:
        print_json(data)
    else:
        show()


def parse_pairs(items: Sequence[str], what: str) -> list[tuple[str, str]]:
    """NAME=VALUE items of a repeatable option."""
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise fail(f"{what} {item!r}: expected NAME=VALUE")
        out.append((name.strip(), value.strip()))
    return out
