"""The API beyond Python: buf lint, buf breaking against the committed v1 baseline, the
committed Go and TypeScript stubs in sync with protos/, the Go and TypeScript clients'
own tests (`go test`, `tsc --noEmit`, `node --test`), and their smoke programs against
a real decision/feedback pair run as a deployment runs them, with mutual TLS and scoped
tokens: deciding and logging an outcome (read back through the Python SDK), refusals
that are not fallbacks, and the local fallback to the default decision with the
decision service stopped.

The Go build cache (GOCACHE) and npm's cache keep the builds and the installs after the
first run; node_modules is installed from the committed lock file (scripts/npm_client.sh,
skipped when it matches)."""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from loopwise.client import Client
from loopwise.feedback.v1 import feedback_service_pb2 as fpb
from loopwise.launcher import Launcher, free_port
from loopwise.pki import make_certs
from loopwise.settings import Settings
from tests.decision.helpers import blueprint
from tests.deploy.tools import ROOT, tool, tools_env
from tests.security.helpers import TokensFile, give_services_credentials
from tests.support import new_launcher

BASELINE = ROOT / "protos" / "baseline" / "loopwise-v1.binpb"
GO_CLIENT = ROOT / "clients" / "go"
TS_CLIENT = ROOT / "clients" / "typescript"
LANGUAGES = ["go", "typescript"]
PAIR = ("decision", "feedback")


def buf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("buf"), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_buf_lint() -> None:
    done = buf("lint")
    assert done.returncode == 0, done.stdout + done.stderr


def test_baseline_is_committed() -> None:
    """`buf breaking` compares with a committed image, not with the tree itself."""
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", str(BASELINE)], cwd=ROOT,
                             capture_output=True, text=True)
    assert tracked.returncode == 0, "protos/baseline/loopwise-v1.binpb must be committed"


def test_buf_breaking_against_the_v1_baseline(tmp_path: Path) -> None:
    done = buf("breaking", "--against", str(BASELINE))
    assert done.returncode == 0, done.stdout + done.stderr
    # A renumbered field and a removed RPC in a copy of the tree are caught.
    shutil.copytree(ROOT / "protos", tmp_path / "protos", ignore=shutil.ignore_patterns("baseline"))
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    proto = tmp_path / "protos" / "loopwise" / "decision" / "v1" / "decision_service.proto"
    text = proto.read_text()
    assert "  string unit_id = 2;\n" in text and "  rpc SetKillSwitch(" in text
    text = text.replace("  string unit_id = 2;\n", "  string unit_id = 42;\n", 1)
    text = "\n".join(line for line in text.splitlines() if not line.startswith("  rpc SetKillSwitch("))
    proto.write_text(text + "\n")
    broken = buf("breaking", "--against", str(BASELINE), cwd=tmp_path)
    assert broken.returncode != 0
    assert '"unit_id"' in broken.stdout and "SetKillSwitch" in broken.stdout, broken.stdout


STUBS = {  # language: (generator script, committed directory)
    "go": ("gen_go.sh", GO_CLIENT / "gen"),
    "typescript": ("gen_ts.sh", TS_CLIENT / "gen"),
}


@pytest.mark.parametrize("language", sorted(STUBS))
def test_stubs_match_protos(tmp_path: Path, language: str) -> None:
    script, committed = STUBS[language]
    out = tmp_path / "gen"
    done = subprocess.run(["bash", str(ROOT / "scripts" / script), str(out)], cwd=ROOT,
                          env=tools_env("buf"), capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert fresh == sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file())
    assert len(fresh) >= 10
    drifted = [str(p) for p in fresh if not filecmp.cmp(out / p, committed / p, shallow=False)]
    assert not drifted, f"{committed} drifted from protos/: {drifted}; run scripts/{script}"


def _run(args: list[str], cwd: Path, timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def smoke_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """The smoke program of each language, ready to run: the Go one built (the Go build
    cache makes it fast after the first time), the TypeScript one compiled by tsc with its
    pinned packages installed (npm ci, skipped when node_modules matches the lock file)."""
    for command in ("go", "node", "npm"):
        if shutil.which(command) is None:
            pytest.fail(f"the client smoke tests need {command}")
    binary = tmp_path_factory.mktemp("go") / "smoke"
    done = _run(["go", "build", "-o", str(binary), "./cmd/smoke"], GO_CLIENT, 1200, CGO_ENABLED="0")
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run(["bash", str(ROOT / "scripts" / "npm_client.sh")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    done = _run([str(TS_CLIENT / "node_modules" / ".bin" / "tsc"), "-p", "tsconfig.json"], TS_CLIENT, 600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"go": [str(binary)], "typescript": ["node", str(TS_CLIENT / "dist" / "smoke.js")]}


def test_go_client_tests() -> None:
    """`go test ./...`: retries, backoff, pushback, the fallback, deadlines and mutual TLS
    against fake services, and the module importable by its path (its example built)."""
    done = _run(["go", "test", "./..."], GO_CLIENT, 1200, CGO_ENABLED="0")
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert re.search(r"^ok\s+github\.com/loopwise/loopwise/clients/go/loopwise\s", done.stdout, re.M), done.stdout


def test_typescript_client_type_checks_and_tests(smoke_programs: dict[str, list[str]]) -> None:
    """`tsc --noEmit` (strict) on the sources, then `node --test` on the compiled tests
    (the fixture compiled them) against an in-process @grpc/grpc-js server."""
    done = _run([str(TS_CLIENT / "node_modules" / ".bin" / "tsc"), "-p", "tsconfig.json", "--noEmit"], TS_CLIENT, 600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    done = _run(["node", "--test", "dist/test/client.test.js"], TS_CLIENT, 600)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    passed = re.search(r"^# pass (\d+)$", done.stdout, re.M)
    assert passed and int(passed.group(1)) >= 19 and re.search(r"^# fail 0$", done.stdout, re.M), done.stdout[-3000:]


@dataclass
class SecurePair:
    """Decision and feedback services with mutual TLS and tokens, and their credentials."""

    launcher: Launcher
    pki: Path
    tokens: TokensFile

    def ready(self) -> SecurePair:
        """The pair, both services running (a test may have stopped one)."""
        for name in PAIR:
            self.launcher.start(name)
        return self

    def sdk(self) -> Client:
        """A Python SDK client with the operator's token and the client certificate."""
        return Client(settings=Settings(
            decision_address=self.launcher.address("decision"), feedback_address=self.launcher.address("feedback"),
            allow_plaintext=False, tls_ca_file=self.pki / "ca.crt", tls_client_cert_file=self.pki / "client.crt",
            tls_client_key_file=self.pki / "client.key", token=self.tokens.secrets["operator"]))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecurePair]:
    """Real decision and feedback services on free loopback ports with mutual TLS and
    tokens (the chart's default), a use case applied by an operator, and a team token
    that may decide and log outcomes for it (and decide for a use case that does not
    exist)."""
    root = tmp_path_factory.mktemp("pair")
    pki = make_certs(root / "pki")
    tokens = TokensFile(root / "tokens.yaml")
    tokens.add("operator", {"client_offer": ["admin"]})
    tokens.add("team", {"client_offer": ["decide", "log_outcomes"], "no_such_use_case": ["decide"]})
    tokens.add("other-team", {"other_case": ["decide", "log_outcomes"]})
    launcher = new_launcher(root / "stack", LOOPWISE_ALLOW_PLAINTEXT="false",
                            LOOPWISE_TOKENS_FILE=str(tokens.path), LOOPWISE_TLS_CA_FILE=str(pki / "ca.crt"))
    for name in PAIR:
        launcher.service_env[name] = {"LOOPWISE_TLS_CERT_FILE": str(pki / f"{name}.crt"),
                                      "LOOPWISE_TLS_KEY_FILE": str(pki / f"{name}.key"),
                                      "LOOPWISE_HEALTH_PORT": str(free_port())}
    give_services_credentials(launcher, tokens)
    secure = SecurePair(launcher, pki, tokens)
    try:
        launcher.start_all(PAIR)
        with secure.sdk() as client:
            client.apply_use_case(blueprint("client_offer"))
        yield secure
    finally:
        launcher.stop_all(PAIR)


def _smoke_args(program: list[str], pair: SecurePair, *args: str, tls: bool = True) -> list[str]:
    credentials = ["--ca", str(pair.pki / "ca.crt"), "--cert", str(pair.pki / "client.crt"),
                   "--key", str(pair.pki / "client.key")] if tls else []
    return [*program, "--decision", pair.launcher.address("decision"), "--feedback", pair.launcher.address("feedback"),
            *credentials, *args]


def _smoke(program: list[str], pair: SecurePair, *args: str, token: str = "team") -> subprocess.CompletedProcess[str]:
    """Run a smoke program as a backend of the team runs it: mutual TLS, its token in
    LOOPWISE_TOKEN."""
    secret = pair.tokens.secrets[token] if token else ""
    return subprocess.run(_smoke_args(program, pair, *args), env={**os.environ, "LOOPWISE_TOKEN": secret},
                          capture_output=True, text=True, timeout=120)


def _code_named(stderr: str, code: str) -> bool:
    """The status code named in an error message, as Go (PermissionDenied) or
    TypeScript (PERMISSION_DENIED) spell it."""
    return code.replace("_", "").lower() in stderr.replace("_", "").lower()


@pytest.mark.parametrize("language", LANGUAGES)
def test_client_decides_and_logs_an_outcome(smoke_programs: dict[str, list[str]], pair: SecurePair,
                                            language: str) -> None:
    pair.ready()
    done = _smoke(smoke_programs[language], pair, "--use-case", "client_offer", "--unit", f"unit-{language}",
                  "--feature", "x=1.5", "--feature", "y=2", "--feature", "country=de",
                  "--outcome", "purchase", "--value", "3.5")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    decision_id = uuid.UUID(result["decision_id"])
    assert decision_id.version == 7
    assert result["action"] in ("no", "yes") and result["fallback"]  # no model deployed
    assert 0.0 < result["probability"] <= 1.0
    assert (result["accepted"], result["duplicates"], result["retry_accepted"]) == (1, 1, 0)

    # The feedback service holds the decision (logged by the decision service) with the
    # client's outcome, stored once.
    with pair.sdk() as client:
        deadline = time.monotonic() + 60
        while True:
            try:
                reply = client.feedback_stub.GetDecision(fpb.GetDecisionRequest(
                    use_case="client_offer", decision_id=str(decision_id)), timeout=10)
                if reply.decision.decision_id:
                    break
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                    raise
            time.sleep(0.2)
    assert reply.decision.action == result["action"] and reply.decision.unit_id == f"unit-{language}"
    assert [(o.name, o.value) for o in reply.outcomes] == [("purchase", 3.5)]


@pytest.mark.parametrize("language", LANGUAGES)
def test_client_reports_errors(smoke_programs: dict[str, list[str]], pair: SecurePair, language: str) -> None:
    pair.ready()
    done = _smoke(smoke_programs[language], pair, "--use-case", "no_such_use_case")
    assert done.returncode == 1
    assert "use case 'no_such_use_case' does not exist" in done.stderr, done.stderr


@pytest.mark.parametrize("language", LANGUAGES)
def test_refusals_are_not_fallbacks(smoke_programs: dict[str, list[str]], pair: SecurePair, language: str) -> None:
    """A token of another use case, or none, is refused and never answered with the
    default decision, even with a default given; a server name the certificates do not
    hold fails the TLS handshake (the decision service is unreachable)."""
    program = smoke_programs[language]
    pair.ready()
    for token, code in (("other-team", "PERMISSION_DENIED"), ("", "UNAUTHENTICATED")):
        done = _smoke(program, pair, "--use-case", "client_offer", "--default", "client_offer=no", token=token)
        assert done.returncode == 1 and done.stdout == "", done.stdout + done.stderr
        assert _code_named(done.stderr, code), done.stderr
    done = _smoke(program, pair, "--use-case", "client_offer", "--server-name", "nowhere.invalid")
    assert done.returncode == 1 and done.stdout == "", done.stdout + done.stderr
    assert "unreachable" in done.stderr and "no default decision known" in done.stderr, done.stderr
    # The name the certificates hold is accepted.
    done = _smoke(program, pair, "--use-case", "client_offer", "--server-name", "decision", "--outcome", "")
    assert done.returncode == 0, done.stderr


def _local_fallback(result: dict, action: str) -> None:
    """A decision the client made itself: the default, probability 1, a fresh UUIDv7 of
    the local clock (the services' test clock runs 60 times faster)."""
    decision_id = uuid.UUID(result["decision_id"])
    assert decision_id.version == 7
    assert abs((decision_id.int >> 80) / 1000 - time.time()) < 60, result
    assert result["fallback"] and result["action"] == action and result["action_index"] == 0, result
    assert result["probability"] == 1.0 and result["model_version"] == 0, result


def test_clients_fall_back_when_the_decision_service_is_stopped(smoke_programs: dict[str, list[str]],
                                                                pair: SecurePair) -> None:
    """Each client decides over mutual TLS (learning the use case's default at that first
    contact), the decision service stops, and the same clients answer with the default
    decision; new clients that never reached it answer with a given default, or fail
    saying that no default is known. (The decision service is started again by the
    next test that needs it.)"""
    pair.ready()
    env = {**os.environ, "LOOPWISE_TOKEN": pair.tokens.secrets["team"]}
    running = {language: subprocess.Popen(
        _smoke_args(smoke_programs[language], pair, "--use-case", "client_offer", "--unit", f"pause-{language}",
                    "--outcome", "", "--pause"),
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for language in LANGUAGES}
    try:
        for language, process in running.items():
            assert process.stdout is not None
            first = json.loads(process.stdout.readline() or "{}")
            assert first.get("action") == "no" and first["model_version"] == 0, (language, first)  # the service's
        assert pair.launcher.stop("decision")
        for language, process in running.items():
            out, err = process.communicate("go on\n", timeout=60)
            assert process.returncode == 0, (language, err)
            _local_fallback(json.loads(out.strip().splitlines()[-1]), "no")

        for language in LANGUAGES:
            done = _smoke(smoke_programs[language], pair, "--use-case", "client_offer", "--outcome", "",
                          "--default", "client_offer=no")
            assert done.returncode == 0, (language, done.stderr)
            _local_fallback(json.loads(done.stdout), "no")
            done = _smoke(smoke_programs[language], pair, "--use-case", "client_offer", "--outcome", "")
            assert done.returncode == 1 and done.stdout == "", (language, done.stdout)
            assert "unreachable" in done.stderr and "no default decision known" in done.stderr, done.stderr
            assert _code_named(done.stderr, "UNAVAILABLE"), done.stderr
    finally:
        for process in running.values():
            if process.poll() is None:
                process.kill()
                process.wait()
