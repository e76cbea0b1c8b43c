"""A running loop for the console's browser tests and screenshots: the four services
with mutual TLS and scoped tokens on SQLite, a use case with logged decisions and
outcomes (two blueprint versions), a trained and deployed model, an effect report; and
the console as its own process (``python -m loopwise.console``) holding the client
certificate and no token of its own."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loopwise.client import Client, Outcome, operation_result
from loopwise.clock import uuid7_time_ms
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.launcher import Launcher, free_port
from loopwise.pki import make_certs
from loopwise.settings import SERVICES, Settings
from loopwise.simulator import CheckoutUpsell
from tests.security.helpers import TokensFile, give_services_credentials
from tests.support import new_launcher

log = logging.getLogger("tests.console")

USE_CASE = "console_checkout"
OTHER = "console_other"
DECISIONS = 1200
WINDOW_S = 60  # simulated seconds: one real second with the test clock
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@dataclass
class Loop:
    """The running loop and what the fixture made in it."""

    launcher: Launcher
    pki: Path
    tokens: TokensFile
    world: CheckoutUpsell
    training_id: str
    effects_id: str
    report_id: str
    model_version: int
    decision_id: str  # a decision made by the model, with an outcome

    def settings(self, token_name: str = "admin") -> Settings:
        """SDK settings with the client certificate and one of the test's tokens."""
        return Settings(allow_plaintext=False, tls_ca_file=self.pki / "ca.crt",
                        tls_client_cert_file=self.pki / "client.crt",
                        tls_client_key_file=self.pki / "client.key",
                        token=self.tokens.secrets[token_name],
                        clock_anchor=float(self.launcher.env["LOOPWISE_CLOCK_ANCHOR"]),
                        clock_speed=float(self.launcher.env["LOOPWISE_CLOCK_SPEED"]),
                        **{f"{s}_address": self.launcher.address(s) for s in SERVICES})

    def client(self, token_name: str = "admin") -> Client:
        """A blocking SDK client with one of the test's tokens."""
        return Client(settings=self.settings(token_name), deadline_s=10)


def _blueprint(world: CheckoutUpsell, name: str, epsilon: float) -> bp.Blueprint:
    blueprint = world.blueprint(epsilon=epsilon)
    blueprint.use_case = name
    blueprint.description = "Offer a discount at checkout (console test)"
    # One fast candidate family keeps training short on small machines.
    blueprint.training.CopyFrom(bp.TrainingSpec(min_rows=200, candidate_families=["linear"],
                                                candidate_budget_seconds=20))
    return blueprint


def _log(client: Client, world: CheckoutUpsell, version: int, rows: int) -> list[str]:
    """Decide for ``rows`` units and log their purchases; the decision ids."""
    units = world.sample_units(rows)
    batch = client.decide_batch(USE_CASE, version, list(world.feature_names), units.matrix)
    assert not batch.fallback.any()
    times = np.array([uuid7_time_ms(d) for d in batch.decision_ids], dtype=np.int64)
    picked, values, event_ms = world.sample_outcomes(units, batch.action_indices, times)
    client.log_outcomes([
        Outcome(USE_CASE, batch.decision_ids[i], f"o-{batch.decision_ids[i]}", "purchase",
                float(value), event_time=ms / 1000)
        for i, value, ms in zip(picked, values, event_ms, strict=True)])
    return list(batch.decision_ids)


@contextmanager
def running_loop(root: Path) -> Iterator[Loop]:
    """Start the services under ``root``, run the loop through the SDK, stop them at the end."""
    pki = make_certs(root / "pki")
    tokens = TokensFile(root / "tokens.yaml")
    tokens.add("admin", {"*": ["admin"]})
    tokens.add("other-team", {OTHER: ["admin"]})
    launcher = new_launcher(root / "stack", LOOPWISE_ALLOW_PLAINTEXT="false",
                            LOOPWISE_TOKENS_FILE=str(tokens.path),
                            LOOPWISE_TLS_CA_FILE=str(pki / "ca.crt"),
                            LOOPWISE_DRIFT_INTERVAL_S="1")
    for name in SERVICES:
        launcher.service_env[name] = {"LOOPWISE_TLS_CERT_FILE": str(pki / f"{name}.crt"),
                                      "LOOPWISE_TLS_KEY_FILE": str(pki / f"{name}.key"),
                                      "LOOPWISE_HEALTH_PORT": str(free_port())}
    give_services_credentials(launcher, tokens)
    world = CheckoutUpsell(seed=5, window_s=WINDOW_S)
    began = time.monotonic()
    try:
        launcher.start_all()
        log.info("console loop: services started after %.1f s", time.monotonic() - began)
        made = Loop(launcher, pki, tokens, world, "", "", "", 0, "")
        with made.client() as client:
            client.apply_use_case(_blueprint(world, USE_CASE, 0.3), author="ada", reason="first strategy")
            version = client.apply_use_case(_blueprint(world, USE_CASE, 0.2), author="ada",
                                            reason="explore less").use_case.version
            client.apply_use_case(_blueprint(world, OTHER, 0.1), author="bob", reason="other team")
            _log(client, world, version, DECISIONS)
            deadline = time.monotonic() + 60
            while (stats := client.get_stats(USE_CASE)).closed_windows < DECISIONS:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reward windows not closed: {stats}")
                time.sleep(0.2)
            log.info("console loop: %d decisions logged and their windows closed after %.1f s",
                     DECISIONS, time.monotonic() - began)
            training = client.start_training(USE_CASE, deploy=True)
            effects = client.estimate_effects(USE_CASE, estimator="linear_dml", treatment_action="offer",
                                              control_action="no_offer", seed=3, timeout=300)
            trained = operation_result(client.wait_operation(training, timeout=150))
            if not trained.deployed:
                raise RuntimeError(f"the model was not deployed: {trained.deployment_reason}")
            log.info("console loop: model trained after %.1f s", time.monotonic() - began)
            estimated = client.wait_operation(effects, timeout=150)
            log.info("console loop: effects estimated after %.1f s", time.monotonic() - began)
            # A decision made by the deployed model (hot swapped into the decision service).
            deadline = time.monotonic() + 60
            while True:
                decided = client.decide(USE_CASE, world.sample_units(1).features(0), unit_id="u-model")
                if decided.model_version == trained.model.version:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("the model never served")
                time.sleep(0.2)
            client.log_outcome(USE_CASE, decided.decision_id, "o-model", "purchase", 12.5,
                               event_time=client.clock.now())
            _log(client, world, version, 200)
            deadline = time.monotonic() + 30
            while (stats := client.get_stats(USE_CASE)).decisions < DECISIONS + 201:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"decisions not all logged: {stats}")
                time.sleep(0.1)
            log.info("console loop: ready after %.1f s", time.monotonic() - began)
            made.training_id, made.effects_id = training.id, effects.id
            made.report_id = operation_result(estimated).report_id
            made.model_version, made.decision_id = trained.model.version, decided.decision_id
        yield made
    finally:
        # Stopped together: what they would still hand over to each other is test data.
        with ThreadPoolExecutor(len(SERVICES)) as pool:
            list(pool.map(launcher.stop, SERVICES))


@dataclass
class ConsoleProcess:
    """The console started as its own process."""

    url: str
    process: subprocess.Popen
    log: Path


@contextmanager
def running_console(loop: Loop, root: Path) -> Iterator[ConsoleProcess]:
    """``python -m loopwise.console`` on a free loopback port, with the client certificate
    and no token; stopped (by its pid) at the end."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWISE_")}
    env.update({
        "LOOPWISE_ALLOW_PLAINTEXT": "false",  # the console calls the services over mutual TLS
        "LOOPWISE_TLS_CA_FILE": str(loop.pki / "ca.crt"),
        "LOOPWISE_TLS_CLIENT_CERT_FILE": str(loop.pki / "client.crt"),
        "LOOPWISE_TLS_CLIENT_KEY_FILE": str(loop.pki / "client.key"),
        "LOOPWISE_CLOCK_ANCHOR": loop.launcher.env["LOOPWISE_CLOCK_ANCHOR"],
        "LOOPWISE_CLOCK_SPEED": loop.launcher.env["LOOPWISE_CLOCK_SPEED"],
        "LOOPWISE_DATA_DIR": str(root),
        "LOOPWISE_CONSOLE_PORT": str(port),
        "LOOPWISE_CONSOLE_SESSION_KEY": "console test session key",
        **{f"LOOPWISE_{s.upper()}_ADDRESS": loop.launcher.address(s) for s in SERVICES},
    })
    log = root / "console.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "loopwise.console"], env=env, stdout=out,
                                   stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as reply:
                    if reply.read() == b"ok":
                        break
            except OSError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"the console exited: {log.read_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError("the console did not answer /healthz")
            time.sleep(0.1)
        yield ConsoleProcess(url, process, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
