"""Smoke test of a running loopwise installation: ``python -m loopwise.smoke``.

The Helm chart's ``helm test`` hook runs it in a pod with the release's settings. It
reads the usual ``LOOPWISE_*`` settings (:class:`loopwise.settings.Settings`: the four
service addresses, the TLS files, the bearer token) and calls the services over the
same channels as the SDK (:func:`loopwise.security.sync_channel`: mutual TLS and the
token when configured, plaintext only where plaintext is allowed):

1. ``grpc.health.v1.Health/Check`` on each of the four services;
2. the smoke use case (``--use-case``, default ``loopwise_smoke``) exists with a tiny
   blueprint — GetUseCase first, ApplyUseCase only when it is missing or differs, so
   repeated runs add no blueprint versions;
3. one Decide on it.

It prints one line per step and exits 0 when every step passed, or 1 with a message on
stderr naming the service, the call and the setting to check. The token needs ``admin``
on the smoke use case, and on nothing else (admin implies ``decide``)::

    loopwise tokens create --name helm-test --scope loopwise_smoke=admin
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from contextlib import closing

import grpc
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError

from loopwise import security
from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.settings import SERVICES, ServiceName, Settings

USE_CASE = "loopwise_smoke"
UNIT_ID = "loopwise-smoke"
TLS_FILES = ("tls_ca_file", "tls_cert_file", "tls_key_file", "tls_client_cert_file",
             "tls_client_key_file")


class SmokeFailure(Exception):
    """A step failed; the message says which service, which call and what to check."""


def smoke_blueprint(use_case: str = USE_CASE) -> bp.Blueprint:
    """The smoke use case: binary, two actions, one numeric feature, a default decision."""
    blueprint = bp.Blueprint(
        use_case=use_case,
        description="Smoke test of the installation (python -m loopwise.smoke, helm test).",
        features=[bp.Feature(name="x", type=bp.FEATURE_TYPE_NUMERIC,
                             on_missing=bp.MISSING_RULE_NAN)],
        kind=bp.DECISION_KIND_BINARY,
        actions=["control", "treatment"],
        policy=bp.Policy(type=bp.POLICY_TYPE_GREEDY),
        default_decision=bp.DefaultDecision(action="control", score=0.0),
    )
    blueprint.reward.window.CopyFrom(duration_pb2.Duration(seconds=3600))
    return blueprint


def _env(field: str) -> str:
    return f"LOOPWISE_{field.upper()}"


def _hint(code: grpc.StatusCode, service: ServiceName, use_case: str) -> str:
    """What to check for a failed call's status."""
    if code == grpc.StatusCode.UNAVAILABLE:
        return (f"check {_env(service + '_address')}, that the {service} service runs, and the "
                "TLS settings: LOOPWISE_TLS_CA_FILE (the CA that signed the servers), "
                "LOOPWISE_TLS_CERT_FILE / LOOPWISE_TLS_KEY_FILE (the client certificate) and "
                "LOOPWISE_TLS_SERVER_NAME (the name in the servers' certificates)")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer within --timeout; check {_env(service + '_address')} and the network policies"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return "LOOPWISE_TOKEN is empty or not in the services' tokens file"
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return f"the token in LOOPWISE_TOKEN needs admin on use case {use_case!r}"
    return ""


def _failure(step: str, service: ServiceName, address: str, error: grpc.RpcError,
             use_case: str) -> SmokeFailure:
    code = error.code()
    name = code.name if code is not None else "UNKNOWN"
    hint = _hint(code, service, use_case)
    message = f"{step} on {service} at {address}: {name}: {error.details()}"
    return SmokeFailure(message + (f" ({hint})" if hint else ""))


def check_files(settings: Settings) -> None:
    """Every configured TLS file is readable (else the failure names its setting)."""
    problems = [f"{_env(field)}={path} is not a readable file"
                for field in TLS_FILES
                if (path := getattr(settings, field)) is not None and not os.access(path, os.R_OK)]
    if problems:
        raise SmokeFailure("settings: " + "; ".join(problems))


def check_health(settings: Settings, timeout: float) -> None:
    """Health of the four services, a line for each that serves; raises naming every
    one that failed."""
    failed = []
    for service in SERVICES:
        address = settings.address_of(service)
        try:
            with closing(security.sync_channel(settings, address)) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as error:
            failed.append(str(_failure("health check", service, address, error, "")))
            continue
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            failed.append(f"health check on {service} at {address}: {status}")
            continue
        print(f"health {service} {address}: {status}", flush=True)
    if failed:
        raise SmokeFailure("; ".join(failed))


def ensure_use_case(stub: dgrpc.DecisionServiceStub, use_case: str, timeout: float) -> str:
    """Make sure the smoke use case exists with the smoke blueprint; returns the step's line."""
    wanted = smoke_blueprint(use_case)
    try:
        current: dpb.UseCase | None = stub.GetUseCase(
            dpb.GetUseCaseRequest(use_case=use_case), timeout=timeout).use_case
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        current = None
    if current is not None and current.archived:
        raise SmokeFailure(f"use case {use_case!r} is archived: restore it (ArchiveUseCase) "
                           "or pass another --use-case")
    if current is not None and current.blueprint == wanted:
        return f"use case {use_case}: present (blueprint v{current.version})"
    reply = stub.ApplyUseCase(dpb.ApplyUseCaseRequest(
        blueprint=wanted, author="loopwise.smoke", reason="smoke test"), timeout=timeout)
    done = "created" if current is None else "blueprint restored"
    return f"use case {use_case}: {done} (blueprint v{reply.use_case.version})"


def decide(stub: dgrpc.DecisionServiceStub, use_case: str, timeout: float) -> str:
    """One Decide on the smoke use case; returns the step's line."""
    reply = stub.Decide(dpb.DecideRequest(
        use_case=use_case, unit_id=UNIT_ID, features={"x": dpb.FeatureValue(number=1.0)},
        disable_exploration=True), timeout=timeout)
    decision = reply.decision
    how = "default decision" if decision.fallback else f"model v{decision.model_version}"
    return (f"decide {use_case}: action {decision.action} (score {decision.score:.3f}, {how}), "
            f"decision {decision.decision_id}")


def run(settings: Settings, use_case: str, timeout: float) -> None:
    """Every step in order, printing one line each; raises SmokeFailure on the first
    failed step."""
    check_files(settings)
    check_health(settings, timeout)
    address = settings.address_of("decision")
    with closing(security.sync_channel(settings, address)) as channel:
        stub = dgrpc.DecisionServiceStub(channel)
        for step, call in (("GetUseCase/ApplyUseCase", ensure_use_case), ("Decide", decide)):
            try:
                line = call(stub, use_case, timeout)
            except grpc.RpcError as error:
                raise _failure(step, "decision", address, error, use_case) from None
            print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; returns the exit status (0 passed, 1 failed)."""
    parser = argparse.ArgumentParser(
        prog="python -m loopwise.smoke",
        description="Smoke test of a running loopwise: Health of the four services, the "
                    "smoke use case, one Decide. Settings from the LOOPWISE_* environment.")
    parser.add_argument("--use-case", default=USE_CASE,
                        help=f"use case to create (if missing) and decide on (default {USE_CASE})")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="deadline of each call in seconds (default 10)")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be > 0")
    try:
        settings = Settings()
    except ValidationError as error:
        print(f"smoke test FAILED: settings: {error}", file=sys.stderr)
        return 1
    try:
        run(settings, args.use_case, args.timeout)
    except SmokeFailure as failure:
        print(f"smoke test FAILED: {failure}", file=sys.stderr)
        return 1
    print("smoke test passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
