"""Running loopwise on this machine: the services in the background, their status, the
web console, and the demo."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from loopwise import local_profile
from loopwise.cli.common import (
    Output,
    OutputOption,
    app,
    console,
    errors,
    fail,
    print_json,
    rpc_errors,
    settings,
)
from loopwise.launcher import DEFAULT_PORTS, Launcher, free_port
from loopwise.settings import SERVICES, Settings


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _launcher(s: Settings) -> Launcher:
    return Launcher(s.data_dir, ports={name: _port(s.address_of(name)) for name in SERVICES})


@app.command()
def up() -> None:
    """Start the four services in the background with mutual TLS and tokens.

    Without security settings of your own, the first start creates local credentials
    under <data dir>/local (a development CA, certificates, an admin token and one token
    per service; private files) and a profile that the SDK and the CLI find by
    themselves. Pids and logs go under the data dir."""
    s = settings()
    launcher = _launcher(s)
    addresses = {name: s.address_of(name) for name in SERVICES}
    local = not local_profile.security_from_environment()
    created: list[str] = []
    if local:
        outside = [f"{name} at {a}" for name, a in addresses.items() if not local_profile.is_loopback(a)]
        if outside:
            raise fail(f"not started: {', '.join(outside)} is not a loopback address. Serving beyond "
                       "this machine needs TLS certificates and tokens of your own: "
                       "LOOPWISE_TLS_CERT_FILE, LOOPWISE_TLS_KEY_FILE, LOOPWISE_TLS_CA_FILE, "
                       "LOOPWISE_TOKENS_FILE and LOOPWISE_TOKEN (docs/security.md).", 1)
        credentials, created = local_profile.ensure_local_credentials(s.data_dir, addresses)
        for name in SERVICES:
            launcher.service_env[name] = credentials.service_env(name)
        launcher.client = Settings(**{f"{name}_address": a for name, a in addresses.items()},
                                   **credentials.client_settings())
    else:
        launcher.client = s
    try:
        pids = launcher.start_all()
    except (RuntimeError, TimeoutError) as error:
        raise fail(f"start failed: {error}", 1) from None
    for name, pid in pids.items():
        console.print(f"{name:<10} pid {pid:<8} {launcher.address(name)}")  # type: ignore[arg-type]
    console.print(f"logs: {escape(str(launcher.data_dir / 'logs'))}")
    if not local:
        return
    for line in created:
        console.print(f"created {escape(line)}")
    root = launcher.data_dir / "local"
    console.print(f"mutual TLS and tokens on; credentials in {escape(str(root))} (private to you; the admin "
                  f"token is {escape(str(root / 'secrets' / 'admin.token'))})")
    console.print("the SDK and the CLI started here connect by themselves; from another "
                  "directory or shell, first run:")
    print(f"export LOOPWISE_PROFILE={root / 'profile.yaml'}")


@app.command()
def down() -> None:
    """Stop the services started by 'loopwise up' (by their pids)."""
    launcher = _launcher(settings())
    for name in reversed(SERVICES):
        stopped = launcher.stop(name)
        console.print(f"{name:<10} {'stopped' if stopped else 'not running'}")


@app.command()
def status(output: OutputOption = Output.table) -> None:
    """Pid and health of every service."""
    s = settings()
    launcher = _launcher(s)
    launcher.client = s
    found = {name: {"address": launcher.address(name), "pid": launcher.pid(name), "health": launcher.health(name)}
             for name in SERVICES}
    if output == Output.json:
        print_json(found)
        return
    table = Table("service", "address", "pid", "health")
    for name, row in found.items():
        colour = "green" if row["health"] == "SERVING" else "red"
        table.add_row(name, str(row["address"]), str(row["pid"] or "-"), f"[{colour}]{row['health']}[/{colour}]")
    console.print(table)


@app.command()
def migrate(
    service: Annotated[list[str] | None, typer.Option(
        "--service", metavar="SERVICE",
        help="A service whose store to migrate (repeatable; default: all four)")] = None,
    output: OutputOption = Output.table,
) -> None:
    """Apply the pending schema migrations of the services' Cassandra stores (their
    LOOPWISE_<SERVICE>_STORE_URL), as the Helm chart's migrations Job does before an
    install or upgrade. Run it before starting services with
    LOOPWISE_STORE_MIGRATE_ON_START=false. SQLite stores need nothing."""
    from loopwise.store.migrate import migrate as apply_migrations

    unknown = [name for name in service or [] if name not in SERVICES]
    if unknown:
        raise fail(f"--service must be one of {', '.join(SERVICES)}, not {', '.join(unknown)}")
    try:
        applied = apply_migrations(settings(), service or SERVICES)
    except Exception as error:  # the driver's connection and query errors
        raise fail(f"migrations failed: {error}") from None
    if output == Output.json:
        print_json({name: {"store": "sqlite" if v is None else "cassandra", "applied": v or []}
                    for name, v in applied.items()})
        return
    for name, versions in applied.items():
        if versions is None:
            console.print(f"{name}: SQLite store, schema applied when the service opens it")
        else:
            console.print(f"{name}: {', '.join(versions) if versions else 'up to date'}")


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
    return {name: free_port() for name in SERVICES}


CASSANDRA_SCRIPT = Path(__file__).resolve().parents[3] / "deploy" / "cassandra" / "cassandra.sh"


def _demo_cassandra(stamp: int) -> tuple[str, Callable[[], None] | None]:
    """Start the development Cassandra (var/cassandra, port 9042) unless it runs.

    Returns a store URL with a fresh keyspace, and how to stop Cassandra again when
    the demo started it (None when it was already running)."""
    if not CASSANDRA_SCRIPT.exists():
        raise fail("deploy/cassandra/ is not here: run the demo from a source checkout")
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
    data_dir: Annotated[Path, typer.Option(help="Fresh data dir (cleaned first).")] = Path("var/demo"),
    kind: Annotated[str, typer.Option(help="Which product: checkout (an offer, effects report) or ranking "
                                           "(the product feed: rankings, clicks per item).")] = "checkout",
) -> None:
    """Run a simulated product through the whole loop and print a summary."""
    from loopwise.simulator.demo import STAGES, DemoConfig, run_demo
    from loopwise.simulator.ranking_demo import STAGES as RANKING_STAGES
    from loopwise.simulator.ranking_demo import RankingDemoConfig, run_ranking_demo

    if store not in ("sqlite", "cassandra"):
        raise fail(f"unknown store {store!r}: use sqlite or cassandra")
    if kind not in ("checkout", "ranking"):
        raise fail(f"unknown kind {kind!r}: use checkout or ranking")
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    anchor = time.time()
    env = {"LOOPWISE_CLOCK_ANCHOR": repr(anchor), "LOOPWISE_CLOCK_SPEED": repr(speed),
           "LOOPWISE_SEED": str(seed)}
    stop_cassandra = None
    if store == "cassandra":
        url, stop_cassandra = _demo_cassandra(int(anchor))
        env.update({f"LOOPWISE_{name.upper()}_STORE_URL": url for name in SERVICES})
        console.print(f"store: {url}")
    launcher = Launcher(data_dir, env=env, ports=_demo_ports())
    addresses = {name: launcher.address(name) for name in SERVICES}
    # The demo runs as production does: mutual TLS and tokens, with its own local
    # credentials under the demo's data dir.
    credentials, _ = local_profile.ensure_local_credentials(launcher.data_dir, addresses)
    for name in SERVICES:
        launcher.service_env[name] = credentials.service_env(name)
    demo_settings = Settings(**{f"{name}_address": a for name, a in addresses.items()},
                             data_dir=launcher.data_dir, clock_anchor=anchor, clock_speed=speed,
                             seed=seed, **credentials.client_settings())
    launcher.client = demo_settings
    try:
        with rpc_errors(demo_settings):
            with console.status("starting the four services…"):
                launcher.start_all()
            console.print("services up: " + ", ".join(f"{name} {launcher.address(name)}" for name in SERVICES))
            with Progress(TextColumn("[bold]{task.description:<9}"), BarColumn(),
                          TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[detail]}"),
                          TimeElapsedColumn(), console=console) as progress:
                tasks: dict[str, TaskID] = {}

                def report(stage: str, fraction: float, detail: str) -> None:
                    if stage not in tasks:
                        tasks[stage] = progress.add_task(stage, total=1.0, detail="")
                    progress.update(tasks[stage], completed=min(1.0, max(0.0, fraction)), detail=escape(detail))

                if kind == "ranking":
                    summary = run_ranking_demo(demo_settings, RankingDemoConfig(
                        n_explore=explore, n_exploit=exploit, seed=seed), progress=report)
                    assert set(tasks) <= set(RANKING_STAGES)
                else:
                    summary = run_demo(demo_settings, DemoConfig(n_explore=explore, n_exploit=exploit,
                                                                 seed=seed), progress=report)
                    assert set(tasks) <= set(STAGES)
    except (RuntimeError, TimeoutError) as error:
        errors.print(f"demo failed: {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        with console.status("stopping the services…"):
            launcher.stop_all()
        if stop_cassandra is not None:
            stop_cassandra()
    title = "loopwise demo: product_feed (ranking)" if kind == "ranking" else "loopwise demo: checkout_upsell"
    table = Table(Column("", no_wrap=True), "", title=title, show_header=False)
    for label, value in summary.rows():
        if label != "report":
            table.add_row(label, escape(value))
    console.print(table)
    if kind == "ranking":
        return
    # on its own line, so that a narrow terminal never truncates the path
    console.print(f"HTML report: {escape(str(summary.report_path))}", soft_wrap=True)
