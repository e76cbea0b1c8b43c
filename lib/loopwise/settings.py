"""Settings from ``LOOPWISE_*`` environment variables, with laptop defaults.

One mechanism for every service, the simulator and the CLI: a pydantic-settings
class. ``LOOPWISE_FEEDBACK_ADDRESS=10.0.0.5:50052`` sets ``feedback_address``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from loopwise.local_profile import read_profile

ServiceName = Literal["decision", "feedback", "trainer", "evaluator"]
SERVICES: tuple[ServiceName, ...] = ("decision", "feedback", "trainer", "evaluator")


# Fields that configure security: given any of them as an argument, a Settings ignores
# the local profile (explicit settings are never mixed with the local ones).
SECURITY_FIELDS = frozenset({
    "allow_plaintext", "tls_cert_file", "tls_key_file", "tls_ca_file", "tls_client_cert_file",
    "tls_client_key_file", "tls_server_name", "tls_require_client_cert", "tokens_file", "token"})


class ProfileSource(PydanticBaseSettingsSource):
    """The local profile written by ``loopwise up``, below the environment (see
    :mod:`loopwise.local_profile`); unused when arguments configure security."""

    def __init__(self, settings_cls: type[BaseSettings], arguments: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self.arguments = arguments

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: :meth:`__call__` reads the whole profile at once."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if SECURITY_FIELDS & set(self.arguments):
            return {}
        return {k: v for k, v in read_profile().items() if k in self.settings_cls.model_fields}


class Settings(BaseSettings):
    """Every knob of loopwise; each field is the env var ``LOOPWISE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="LOOPWISE_", extra="ignore")

    # Addresses.
    decision_address: str = Field(
        "127.0.0.1:50051",
        description="`host:port` where the decision service listens and where the others reach it")
    feedback_address: str = Field(
        "127.0.0.1:50052",
        description="`host:port` where the feedback service listens and where the others reach it")
    trainer_address: str = Field(
        "127.0.0.1:50053",
        description="`host:port` where the trainer service listens and where the others reach it")
    evaluator_address: str = Field(
        "127.0.0.1:50054",
        description="`host:port` where the evaluator service listens and where the others reach "
                    "it")

    # Local state and stores.
    data_dir: Path = Field(
        Path("var"),
        description="Directory of local state: SQLite files, spools, model cache, reports, pids "
                    "and logs")
    decision_store_url: str = Field(
        "",
        description="Store of the decision service; empty: `sqlite:///<data_dir>/decision.db`; "
                    "`cassandra://[user:pass@]host1:9042,host2:9042/keyspace?local_dc=…"
                    "&consistency=…&replication=…&tls=true&tls_ca=…` for Cassandra "
                    "(see docs/storage.md)")
    feedback_store_url: str = Field(
        "",
        description="Store of the feedback service; empty: `sqlite:///<data_dir>/feedback.db`; "
                    "same URL forms as `LOOPWISE_DECISION_STORE_URL`")
    trainer_store_url: str = Field(
        "",
        description="Store of the trainer service; empty: `sqlite:///<data_dir>/trainer.db`; "
                    "same URL forms as `LOOPWISE_DECISION_STORE_URL`")
    evaluator_store_url: str = Field(
        "",
        description="Store of the evaluator service; empty: `sqlite:///<data_dir>/evaluator.db`; "
                    "same URL forms as `LOOPWISE_DECISION_STORE_URL`")
    store_migrate_on_start: bool = Field(
        True,
        description="Each service applies its Cassandra schema migrations when it opens its "
                    "store; false: it only checks that they were applied (by `loopwise migrate`, "
                    "or the Helm chart's pre-install/pre-upgrade Job) and refuses to start "
                    "otherwise. SQLite schemas are always applied at open")

    # Shared clock and randomness (docs/architecture.md §11).
    clock_anchor: float = Field(
        0.0,
        description="Shared clock anchor, in Unix seconds: `now = anchor + speed × (real − "
                    "anchor)`; every service and the simulator must use the same value")
    clock_speed: float = Field(
        1.0,
        description="Shared clock speed: 1 in production (the real clock); above 1 in the demo "
                    "and tests, so reward windows close in seconds")
    seed: int | None = Field(
        None, ge=0, lt=2**32,
        description="Seed for exploration and splits; services derive their own random streams "
                    "from it; empty: each process draws its own from the operating system and "
                    "logs it (set it only to reproduce a run: replicas with one seed explore in "
                    "lockstep)")

    @field_validator("seed", mode="before")
    @classmethod
    def _empty_seed_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    # Server behaviour.
    grace_period_s: float = Field(
        5.0,
        description="On SIGTERM, seconds that unary calls in flight get to finish before the "
                    "server stops")
    keepalive_time_s: float = Field(
        30.0, gt=0,
        description="Seconds between keepalive pings on an idle connection, sent by servers and "
                    "clients alike (servers accept client pings every half of it); a peer that "
                    "does not answer within `LOOPWISE_KEEPALIVE_TIMEOUT_S` is dropped")
    keepalive_timeout_s: float = Field(
        10.0, gt=0, description="Seconds to wait for the answer to a keepalive ping")
    max_connection_age_s: float = Field(
        60.0, ge=0,
        description="Decision service: close each client connection after about this many "
                    "seconds (±10%), so that long-lived clients re-resolve their target and "
                    "spread onto replicas started since (docs/operations.md); 0: never. The "
                    "other services keep connections: their long streams would be cut")
    max_connection_age_grace_s: float = Field(
        30.0, ge=0,
        description="Seconds calls in progress on a connection closed for its age get to "
                    "finish (a `DecideStream` lives at most the age plus this, then reconnects)")
    max_message_bytes: int = Field(
        16 * 1024 * 1024,
        description="Largest gRPC message sent or received, in bytes (RESOURCE_EXHAUSTED above)")
    max_batch_rows: int = Field(
        100_000,
        description="Most rows in a batch (e.g. `DecideBatch`) and most entries in any repeated "
                    "field of a request; also the most rows an evaluation reads")
    max_candidates: int = Field(1000, description="Most candidates in one ranking request")
    max_workers_processes: int = Field(
        1,
        description="Worker processes of the trainer for CPU-heavy jobs; in the evaluator, the "
                    "native threads (OpenMP, BLAS) of each job")
    decide_queue_turns: int = Field(
        8, ge=0, le=64,
        description="Turns of the event loop a `Decide` call (or `DecideStream` message) may let "
                    "the loop's other ready work go first, so that the calls arriving meanwhile "
                    "are decided with it in one pass (only while other work is ready: a lone "
                    "call is not held; 0: each call is decided at its first turn)")
    decision_workers: int = Field(
        1, ge=1, le=64,
        description="Decision service worker processes sharing its port with SO_REUSEPORT "
                    "(1: a single process)")
    metrics_port: int = Field(
        0, ge=0, le=65535,
        description="Base port of the Prometheus text endpoint: decision = port, feedback = "
                    "port + 1, trainer = port + 2, evaluator = port + 3 (the Helm chart "
                    "uses 9464); 0: no metrics endpoint")
    metrics_host: str = Field(
        "127.0.0.1",
        description="Interface of the metrics endpoint (`0.0.0.0` in a pod, so Prometheus can "
                    "scrape it)")

    # Decision logging to the feedback service.
    decision_log_enabled: bool = Field(
        True, description="Send served decisions to the feedback service (`LogDecisions`)")
    decision_log_batch_size: int = Field(
        500, description="Decisions per `LogDecisions` batch")
    decision_log_flush_interval_s: float = Field(
        0.2, description="Longest wait, in seconds, before a partial batch of decisions is sent")
    decision_log_queue_size: int = Field(
        50_000,
        description="Spooled decisions also kept in memory until feedback acknowledges them; "
                    "past it, the spool is read back from disk to send them")
    decision_log_durability: Literal["interval", "durable"] = Field(
        "interval",
        description="Crash guarantee of the decision log (docs/architecture.md §7): `interval` "
                    "writes decisions to the fsync'd spool every "
                    "`LOOPWISE_DECISION_LOG_SPOOL_INTERVAL_MS`, off the request path, so a "
                    "crash loses at most that interval's decisions; `durable` answers only "
                    "once the decision is in the spool (commits shared by concurrent requests), "
                    "so a crash loses nothing a client received")
    decision_log_spool_interval_ms: float = Field(
        5.0, gt=0,
        description="`interval` mode: longest wait, in milliseconds, before a served decision "
                    "is written to the fsync'd spool")
    decision_log_commit_window_ms: float = Field(
        0.0, ge=0,
        description="`durable` mode: milliseconds a spool commit waits after the first "
                    "waiting request, so that more concurrent requests share its fsync; 0: "
                    "commit at once (requests arriving during a commit share the next one; "
                    "as fast or faster in docs/benchmarks.md)")
    decision_log_max_unspooled: int = Field(
        1000, ge=1,
        description="`interval` mode: most served decisions not yet in the spool; past it "
                    "answers wait for the spool (the crash-loss bound in decisions)")
    decision_log_arrival_bound_s: float = Field(
        600.0, gt=0,
        description="Real seconds after a decision by which its record is expected in the "
                    "feedback service (batching, retries while feedback is away, a restarted "
                    "decision process replaying its spool); an outcome whose decision is still "
                    "missing after it counts as an outcome of a lost decision "
                    "(`GetStats.lost_decision_outcomes`); in the shared clock's time it is "
                    "this times `LOOPWISE_CLOCK_SPEED`")
    model_chunk_bytes: int = Field(
        1024 * 1024, description="Chunk size of model artifacts in `DownloadModel`, in bytes")
    # Trainer background loops, in real seconds between looks.
    trainer_rollout_interval_s: float = Field(
        2.0, gt=0,
        description="Trainer: real seconds between two looks at rollouts and their guardrails")
    trainer_schedule_interval_s: float = Field(
        30.0, ge=0,
        description="Trainer: real seconds between two looks at training schedules; 0 turns "
                    "scheduled training off")
    # Client SDK defaults.
    client_deadline_s: float = Field(
        1.0, description="SDK: deadline of one `decide` call, its retries included, in seconds")
    client_retries: int = Field(
        2, description="SDK: most extra attempts after UNAVAILABLE or RESOURCE_EXHAUSTED with retry "
                       "pushback, within the call's deadline (0: no retry)")

    # Security (docs/security.md).
    allow_plaintext: bool = Field(
        False,
        description="Let servers start without TLS and a tokens file, and clients without "
                    "`LOOPWISE_TLS_CA_FILE` call in plaintext (demo, tests, benchmarks on "
                    "loopback only); false: a server without a certificate, a key and a "
                    "tokens file refuses to start")
    tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate of this process: served by servers and sent as client "
                    "certificate; empty: a plaintext server port (only with "
                    "`LOOPWISE_ALLOW_PLAINTEXT`)")
    tls_key_file: Path | None = Field(
        None, description="PEM private key of `LOOPWISE_TLS_CERT_FILE`")
    tls_ca_file: Path | None = Field(
        None,
        description="PEM CA that verifies peers: clients' certificates on servers (mutual TLS), "
                    "servers' certificates on clients; empty on a client: the system roots, "
                    "or plaintext with `LOOPWISE_ALLOW_PLAINTEXT`")
    tls_require_client_cert: bool = Field(
        True,
        description="Servers demand a client certificate signed by `LOOPWISE_TLS_CA_FILE` "
                    "(mutual TLS)")
    tls_client_cert_file: Path | None = Field(
        None,
        description="Client certificate for outgoing calls; empty: `LOOPWISE_TLS_CERT_FILE`")
    tls_client_key_file: Path | None = Field(
        None,
        description="Private key of `LOOPWISE_TLS_CLIENT_CERT_FILE`; empty: "
                    "`LOOPWISE_TLS_KEY_FILE`")
    tls_server_name: str = Field(
        "",
        description="Server name expected in certificates; empty: the host of the address "
                    "called")
    health_port: int = Field(
        0, ge=0, le=65535,
        description="Plaintext port serving only gRPC Health, for probes without certificates; "
                    "0: no such port")
    health_host: str = Field(
        "",
        description="Interface of the health port; empty: the host of the service's address")
    tokens_file: Path | None = Field(
        None,
        description="YAML file of hashed bearer tokens with their scopes per use case, re-read "
                    "when it changes; empty: no token checks (allowed only with "
                    "`LOOPWISE_ALLOW_PLAINTEXT`)")
    tokens_reload_s: float = Field(
        1.0, description="Seconds between checks of the tokens file for changes")
    token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token this process sends on outgoing calls (SDK, CLI, "
                    "service-to-service); empty: none")
    # Input limits, enforced before any work (INVALID_ARGUMENT naming the field).
    max_string_bytes: int = Field(
        8192, description="Longest string in a request, in bytes (UTF-8)")
    max_features: int = Field(
        1000, description="Most features (named features, feature names) in a request")
    max_blueprint_bytes: int = Field(
        256 * 1024, description="Largest blueprint in a request, in bytes")
    # Rate limits (token buckets): RESOURCE_EXHAUSTED with RetryInfo when exceeded.
    rate_limit_client_rps: float = Field(
        0.0,
        description="Calls per second allowed to each client (token name, else peer host; "
                    "service credentials are exempt); 0: no limit")
    rate_limit_client_burst: float = Field(
        0.0,
        description="Bucket size of each client: calls it may make at once before its rate "
                    "applies; 0: the rate")
    rate_limit_use_case_rps: float = Field(
        0.0, description="Calls per second allowed for each use case; 0: no limit")
    rate_limit_use_case_burst: float = Field(
        0.0,
        description="Bucket size of each use case: calls it may take at once before its rate "
                    "applies; 0: the rate")
    # Admission control (docs/architecture.md §6): shed at once, never queue without bound.
    max_concurrent_rpcs: int = Field(
        32, ge=0,
        description="Unary calls one server process works on at once (accepted and not yet "
                    "answered); a call over the bound is answered RESOURCE_EXHAUSTED with retry "
                    "pushback before its request is parsed; Health is never counted nor shed; "
                    "0: no bound")
    max_concurrent_streams: int = Field(
        256, ge=0,
        description="Open streaming calls (DecideStream, WatchDeployments, WatchOperation, "
                    "ReadTrainingData, DownloadModel) one server process keeps, counted apart "
                    "from unary calls; a new stream over the bound is answered "
                    "RESOURCE_EXHAUSTED with retry pushback; 0: no bound")
    max_streams_per_connection: int = Field(
        64, ge=0,
        description="Calls (HTTP/2 streams) one client connection may have open at once on a "
                    "server; grpc's core refuses more at once, before Python sees them "
                    "(REFUSED_STREAM: the caller gets UNAVAILABLE), and tells clients the limit, "
                    "so they hold further calls back; 0: no limit")
    admission_min_deadline_ms: float = Field(
        20.0, ge=0,
        description="A call whose deadline leaves less than this (or less than its method's "
                    "observed service time) when it would start is answered RESOURCE_EXHAUSTED "
                    "with retry pushback instead of being worked on; 0: only the observed "
                    "service time")
    pii_hash_key: SecretStr = Field(
        SecretStr(""),
        description="Key of the keyed hash of `pii: hash` features and unit ids; decision and "
                    "feedback must share it; empty: an unkeyed hash, weaker against guessing")
    retention_sweep_interval_s: float = Field(
        3600.0, gt=0,
        description="Feedback: seconds between sweeps that delete decisions and outcomes past "
                    "their use case's retention")

    # Logs.
    log_level: str = Field(
        "INFO", description="Log level of the services: `DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`")
    log_format: Literal["json", "text"] = Field(
        "json",
        description="Service logs as one JSON object per line (`json`, with `trace_id` and "
                    "`span_id`) or plain text lines (`text`)")

    # Drift monitoring and statistics (feedback).
    drift_interval_s: float = Field(
        10.0, gt=0,
        description="Feedback: seconds between recomputations of live feature and prediction "
                    "drift (PSI) against the serving model's training profile, off the "
                    "request path")
    drift_window_decisions: int = Field(
        20_000, ge=100,
        description="Feedback: about this many recent decisions per use case form the live "
                    "drift window (older counts are halved away)")
    stats_interval_s: float = Field(
        30.0, gt=0,
        description="Feedback: seconds between refreshes of the join-rate, late and orphan "
                    "gauges from the store")

    # Web console (lib/loopwise/console, docs/console.md).
    console_host: str = Field(
        "127.0.0.1",
        description="Console: interface the web console listens on (loopback by default; "
                    "`0.0.0.0` in a pod, behind an ingress that terminates HTTPS)")
    console_port: int = Field(
        8090, ge=1, le=65535, description="Console: HTTP port of the web console")
    console_session_key: SecretStr = Field(
        SecretStr(""),
        description="Console: secret from which the key that encrypts and signs session "
                    "cookies is derived (share it between replicas); empty: a random key per "
                    "process, so sessions end when the console restarts")
    console_secure_cookies: bool = Field(
        False,
        description="Console: send the session cookie only over HTTPS (`Secure`); set it when "
                    "the console is reached through HTTPS")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then ``LOOPWISE_*`` variables, then the local profile of ``make up``."""
        arguments = dict(getattr(init_settings, "init_kwargs", {}))
        return (init_settings, env_settings, dotenv_settings, ProfileSource(settings_cls, arguments),
                file_secret_settings)

    def address_of(self, service: ServiceName) -> str:
        """The ``host:port`` address of a service."""
        return getattr(self, f"{service}_address")

    def store_url(self, service: ServiceName) -> str:
        """The store URL of a service (its own SQLite file by default)."""
        url = getattr(self, f"{service}_store_url")
        return url or f"sqlite:///{self.data_dir / (service + '.db')}"

    def service_dir(self, service: ServiceName) -> Path:
        """A directory for a service's local files (spool, cache), created on demand."""
        path = self.data_dir / service
        path.mkdir(parents=True, exist_ok=True)
        return path


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()


def _default_text(field: FieldInfo) -> str:
    """A field's default as it would be written in an environment variable; secrets empty."""
    if field.annotation is SecretStr:
        return ""
    value = field.get_default(call_default_factory=True)
    if value is None or isinstance(value, SecretStr):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def settings_table() -> str:
    """The Markdown table of every setting: variable, default and meaning (README.md)."""
    prefix = Settings.model_config.get("env_prefix", "")
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = _default_text(field)
        rows.append(f"| `{prefix}{name.upper()}` | {f'`{default}`' if default else ''} | "
                    f"{_cell(field.description or '')} |")
    return "\n".join(rows) + "\n"
