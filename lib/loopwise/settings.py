"""Settings from ``LOOPWISE_*`` environment variables, with laptop defaults.

One mechanism for every service, the simulator and the CLI: a pydantic-settings
class. ``LOOPWISE_FEEDBACK_ADDRESS=10.0.0.5:50052`` sets ``feedback_address``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
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

    # Where each service listens and where the others reach it.
    decision_address: str = "127.0.0.1:50051"
    feedback_address: str = "127.0.0.1:50052"
    trainer_address: str = "127.0.0.1:50053"
    evaluator_address: str = "127.0.0.1:50054"

    # Local state: SQLite files, spools, model cache, reports, pids and logs.
    data_dir: Path = Path("var")
    # Store URL per service; empty means ``sqlite:///<data_dir>/<service>.db``.
    decision_store_url: str = ""
    feedback_store_url: str = ""
    trainer_store_url: str = ""
    evaluator_store_url: str = ""

    # Shared clock (DESIGN §11): now = anchor + speed × (real − anchor), in seconds.
    clock_anchor: float = 0.0
    clock_speed: float = 1.0
    # Seed for exploration and splits; services derive their own streams from it.
    seed: int = 0

    # Server behaviour.
    grace_period_s: float = Field(5.0, description="SIGTERM: time for unary calls to finish")
    max_message_bytes: int = 16 * 1024 * 1024
    max_batch_rows: int = 100_000
    max_candidates: int = 1000
    max_workers_processes: int = 1
    # Decision service worker processes sharing its port with SO_REUSEPORT (1: one process).
    decision_workers: int = Field(1, ge=1, le=64)
    # Prometheus text endpoint, base port: decision = port, feedback = port + 1, trainer
    # = port + 2, evaluator = port + 3 (DESIGN §11 uses 9464); 0 turns metrics HTTP off.
    metrics_port: int = Field(0, ge=0, le=65535)
    # Interface of the metrics endpoint (0.0.0.0 in a pod, so Prometheus can scrape it).
    metrics_host: str = "127.0.0.1"

    # Decision logging to the feedback service.
    decision_log_enabled: bool = True
    decision_log_batch_size: int = 500
    decision_log_flush_interval_s: float = 0.2
    decision_log_queue_size: int = 50_000
    # Model artifacts: chunk size for DownloadModel.
    model_chunk_bytes: int = 1024 * 1024
    # Trainer background loops, real seconds between looks: rollout guardrails and
    # training schedules (0 turns the schedule loop off).
    trainer_rollout_interval_s: float = Field(2.0, gt=0)
    trainer_schedule_interval_s: float = Field(30.0, ge=0)
    # Client SDK defaults.
    client_deadline_s: float = 1.0
    client_retries: int = 2

    # Security (docs/security.md). Servers refuse to start without TLS and a tokens
    # file unless plaintext is explicitly allowed (demo, tests, benchmarks on loopback).
    allow_plaintext: bool = False
    # This process's certificate and key (served, and sent as client certificate).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # CA that verifies peers: clients' certificates on servers (mTLS), servers' on clients.
    tls_ca_file: Path | None = None
    # Servers demand a client certificate signed by tls_ca_file (mutual TLS).
    tls_require_client_cert: bool = True
    # Client certificate for outgoing calls when it differs from tls_cert_file.
    tls_client_cert_file: Path | None = None
    tls_client_key_file: Path | None = None
    # Expected server name in certificates when it differs from the address host.
    tls_server_name: str = ""
    # Plaintext port serving only Health, for probes without certificates (0: off).
    health_port: int = Field(0, ge=0, le=65535)
    # Interface of the health port; empty: the service address's host.
    health_host: str = ""
    # Hashed bearer tokens with scopes per use case (YAML), re-read when it changes.
    tokens_file: Path | None = None
    tokens_reload_s: float = 1.0
    # This process's own bearer token for outgoing calls (SDK, CLI, service-to-service).
    token: SecretStr = SecretStr("")
    # Input limits, enforced before any work (INVALID_ARGUMENT naming the field).
    max_string_bytes: int = 8192
    max_features: int = 1000
    max_blueprint_bytes: int = 256 * 1024
    # Rate limits in calls per second with a burst (0: off); RESOURCE_EXHAUSTED + RetryInfo.
    rate_limit_client_rps: float = 0.0
    rate_limit_client_burst: float = 0.0
    rate_limit_use_case_rps: float = 0.0
    rate_limit_use_case_burst: float = 0.0
    # Key of the keyed hash for `pii: hash` features and unit ids (decision and feedback
    # must share it; empty: an unkeyed hash, weaker against guessing).
    pii_hash_key: SecretStr = SecretStr("")
    # Feedback: how often decisions and outcomes past their use case's retention go.
    retention_sweep_interval_s: float = Field(3600.0, gt=0)

    log_level: str = "INFO"
    # Service logs: one JSON object per line ("json") or plain text lines ("text").
    log_format: Literal["json", "text"] = "json"

    # Drift monitoring (feedback): live feature and prediction distributions against
    # the serving model's training profile, recomputed every interval off the request
    # path from the decisions logged since; the live window keeps about this many
    # decisions per use case (older counts are halved away).
    drift_interval_s: float = Field(10.0, gt=0)
    drift_window_decisions: int = Field(20_000, ge=100)
    # Feedback's join/late/orphan gauges are refreshed from the store this often.
    stats_interval_s: float = Field(30.0, gt=0)

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
