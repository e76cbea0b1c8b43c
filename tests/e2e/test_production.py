"""The configuration users deploy, end to end: the most important test of the suite.

Mutual TLS on every service and every call between them, hashed bearer tokens with
scopes (each service with its own service token), the four services storing in one
real Cassandra keyspace, and the decision service running 2 worker processes that
share its port. A product team holds a token scoped to its own use case only, and
through the SDK runs the whole loop: apply the use case → decisions → outcomes →
reward windows close → StartTraining → blessed → deployed (the decision workers learn
of it through WatchDeployments and download it) → Decide answered by the model →
EstimateEffects → GetReport → EvaluatePolicy → PredictEffects. Another team's token,
scoped to another use case, is refused (PERMISSION_DENIED) on each of those calls.

The stages' seconds, the decisions, the serving model and the ATE are printed (`-s`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from loopwise.client import Client, Outcome
from loopwise.clock import Clock
from loopwise.launcher import Launcher
from loopwise.pki import make_certs
from loopwise.settings import SERVICES, Settings
from loopwise.simulator.checkout import USE_CASE, CheckoutUpsell
from loopwise.simulator.demo import DemoConfig, run_demo
from tests.security.helpers import TokensFile, give_services_credentials
from tests.support import launcher_settings, new_launcher

OTHER_USE_CASE = "another_teams_use_case"
CLOCK_SPEED = "240"  # 240 simulated seconds per real second: 600 s windows close in 2.5 s


@dataclass
class ProductionStack:
    """The running stack, its certificates and the two teams' tokens."""

    launcher: Launcher
    pki: Path
    tokens: TokensFile

    def client_settings(self, token_name: str) -> Settings:
        """Settings of a team's SDK: the client certificate and the team's token."""
        base = launcher_settings(self.launcher)
        return Settings(**{f"{s}_address": self.launcher.address(s) for s in SERVICES},
                        data_dir=base.data_dir, clock_anchor=base.clock_anchor,
                        clock_speed=base.clock_speed, seed=base.seed,
                        allow_plaintext=False, tls_ca_file=self.pki / "ca.crt",
                        tls_client_cert_file=self.pki / "client.crt",
                        tls_client_key_file=self.pki / "client.key",
                        token=self.tokens.secrets[token_name])


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory, cassandra) -> Iterator[ProductionStack]:
    """mTLS + scoped tokens + Cassandra + 2 decision workers, as real processes."""
    root = tmp_path_factory.mktemp("production")
    pki = make_certs(root / "pki")
    tokens = TokensFile(root / "tokens.yaml")
    tokens.add("checkout-team", {USE_CASE: ["admin"]})
    tokens.add("other-team", {OTHER_USE_CASE: ["admin"]})
    store = f"{cassandra.url}/production_{int(time.time())}"
    launcher = new_launcher(root / "stack", seed=11, LOOPWISE_CLOCK_SPEED=CLOCK_SPEED,
                            LOOPWISE_ALLOW_PLAINTEXT="false", LOOPWISE_TOKENS_FILE=str(tokens.path),
                            LOOPWISE_TLS_CA_FILE=str(pki / "ca.crt"),
                            **{f"LOOPWISE_{s.upper()}_STORE_URL": store for s in SERVICES})
    for name in SERVICES:
        launcher.service_env[name] = {"LOOPWISE_TLS_CERT_FILE": str(pki / f"{name}.crt"),
                                      "LOOPWISE_TLS_KEY_FILE": str(pki / f"{name}.key")}
    launcher.service_env["decision"]["LOOPWISE_DECISION_WORKERS"] = "2"
    give_services_credentials(launcher, tokens)
    # Health is checked over mutual TLS (no plaintext port anywhere).
    launcher.client = Settings(allow_plaintext=False, tls_ca_file=pki / "ca.crt",
                               tls_client_cert_file=pki / "client.crt",
                               tls_client_key_file=pki / "client.key")
    try:
        launcher.start_all()
        yield ProductionStack(launcher, pki, tokens)
    finally:
        launcher.stop_all()


class StageClock:
    """Seconds spent in each demo stage, from its progress reports."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def __call__(self, stage: str, fraction: float, detail: str) -> None:
        now = time.monotonic()
        self.first.setdefault(stage, now)
        self.last[stage] = now

    def seconds(self) -> dict[str, float]:
        """Stage → seconds from its first to its last report (in order of start)."""
        ordered = sorted(self.first, key=self.first.get)  # type: ignore[arg-type]
        ends = [self.first[s] for s in ordered[1:]] + [self.last[ordered[-1]]]
        return {s: round(end - self.first[s], 1) for s, end in zip(ordered, ends, strict=True)}


def _code(call) -> grpc.StatusCode:
    """The status a call ends with (OK when it returns)."""
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def test_the_whole_loop_in_the_production_configuration(production: ProductionStack) -> None:
    """Through the SDK with a token scoped to the use case: the loop closes on Cassandra
    over mutual TLS, the model serves from both decision workers, effects and policy
    evaluation answer; another use case's token is refused on every step."""
    team = production.client_settings("checkout-team")
    stages = StageClock()
    started = time.monotonic()
    summary = run_demo(team, DemoConfig(n_explore=3000, n_exploit=1000, seed=11, window_s=600.0,
                                        timeout_s=180.0), progress=stages)
    loop_seconds = time.monotonic() - started

    # Every decision that was served was logged (through mTLS with the decision
    # service's own token, from both workers), and the model made by the trainer serves.
    assert summary.decisions_served == summary.decisions_logged >= 4000
    assert summary.model_version >= 1
    lo, hi = summary.ate_ci
    assert math.isfinite(summary.ate) and lo < summary.ate < hi

    timings: dict[str, float] = {}
    world = CheckoutUpsell(seed=99, window_s=600.0)
    with Client(settings=team, deadline_s=5.0) as client:
        # Decide answered by the model in both workers: separate connections land on
        # either process (SO_REUSEPORT); none may answer from the fallback.
        t0 = time.monotonic()
        units = world.sample_units(40)
        served = []
        for row in range(len(units)):
            with Client(settings=team, deadline_s=5.0) as fresh:
                served.append(fresh.decide(USE_CASE, units.features(row), unit_id=f"prod-{row}"))
        assert all(d.model_version >= 1 and not d.fallback for d in served), \
            [(d.model_version, d.fallback) for d in served]
        timings["decide on new connections"] = round(time.monotonic() - t0, 1)

        t0 = time.monotonic()
        report = client.get_report(summary.report_id, use_case=USE_CASE)
        assert report.result.report_id == summary.report_id and report.html.startswith(b"<!DOCTYPE")
        timings["GetReport"] = round(time.monotonic() - t0, 1)

        t0 = time.monotonic()
        evaluation = client.evaluate_policy(USE_CASE, model_version=summary.model_version,
                                            deadline_s=120.0)
        assert evaluation.rows > 0 and math.isfinite(evaluation.doubly_robust.value)
        timings["EvaluatePolicy"] = round(time.monotonic() - t0, 1)

        t0 = time.monotonic()
        rows = [units.features(i) for i in range(10)]
        predicted = client.predict_effects(summary.report_id, rows, use_case=USE_CASE)
        assert len(predicted) == 10 and np.isfinite(predicted.effects).all()
        assert (predicted.lower <= predicted.effects).all() and (predicted.effects <= predicted.upper).all()
        timings["PredictEffects"] = round(time.monotonic() - t0, 1)
        operations = client.list_operations(USE_CASE, service="trainer")

    # Another team's token: the same calls on this use case are refused.
    other = production.client_settings("other-team")
    blueprint = world.blueprint()
    decision_id = served[0].decision_id
    with Client(settings=other, deadline_s=5.0) as intruder:
        refused = {
            "ApplyUseCase": _code(lambda: intruder.apply_use_case(blueprint)),
            "Decide": _code(lambda: intruder.decide(USE_CASE, units.features(0))),
            "DecideBatch": _code(lambda: intruder.decide_batch(
                USE_CASE, 1, list(world.feature_names), units.matrix[:2])),
            "LogOutcomes": _code(lambda: intruder.log_outcomes([Outcome(
                USE_CASE, decision_id, "intruder-1", "purchase", 1.0)])),
            "GetStats": _code(lambda: intruder.get_stats(USE_CASE)),
            "StartTraining": _code(lambda: intruder.start_training(USE_CASE)),
            "GetOperation": _code(lambda: intruder.get_operation(operations[0].id, USE_CASE)),
            "ListModels": _code(lambda: intruder.list_models(USE_CASE)),
            "EstimateEffects": _code(lambda: intruder.estimate_effects(USE_CASE)),
            "GetReport": _code(lambda: intruder.get_report(summary.report_id, use_case=USE_CASE)),
            "GetReport (no use case)": _code(lambda: intruder.get_report(summary.report_id)),
            "EvaluatePolicy": _code(lambda: intruder.evaluate_policy(
                USE_CASE, model_version=summary.model_version)),
            "PredictEffects": _code(lambda: intruder.predict_effects(
                summary.report_id, rows, use_case=USE_CASE)),
        }
    not_refused = {rpc: code.name for rpc, code in refused.items() if code != grpc.StatusCode.PERMISSION_DENIED}
    assert not not_refused, f"another use case's token was not refused: {not_refused}"

    clock = Clock.from_settings(team)
    print(f"\nproduction configuration (mTLS, scoped tokens, Cassandra, 2 decision workers), "
          f"clock ×{CLOCK_SPEED}, at {clock.now_ms()} ms:")
    print(f"  decisions served {summary.decisions_served}, logged {summary.decisions_logged}; "
          f"outcomes {summary.outcomes_logged}; join rate {summary.join_rate:.1%}")
    print(f"  model v{summary.model_version} ({summary.model_family}) serving: "
          f"{len(served)} of {len(served)} Decide calls on new connections answered by it")
    print(f"  value per decision: random {summary.value_random:.3f}, model {summary.value_model:.3f}, "
          f"oracle {summary.value_oracle:.3f} (gap closed {summary.gap_closed:.1%})")
    print(f"  ATE {summary.ate:.3f} [95% CI {lo:.3f}, {hi:.3f}] on {summary.analysed_rows} rows "
          f"(true {summary.true_ate:.3f})")
    print(f"  EvaluatePolicy DR {evaluation.doubly_robust.value:.3f} on {evaluation.rows} rows; "
          f"PredictEffects mean {float(np.mean(predicted.effects)):.3f} on 10 rows")
    print(f"  seconds per stage: {stages.seconds()} (loop {loop_seconds:.1f}); then {timings}")
    print(f"  refused for the other team's token: {sorted(refused)}")
