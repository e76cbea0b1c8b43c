"""Bearer tokens with scopes per use case, kept hashed in a mounted file.

The tokens file (``LOOPWISE_TOKENS_FILE``, YAML) lists one entry per token; only the
sha256 of the secret is stored, so the file (a Kubernetes Secret) never holds a
usable credential::

    tokens:
      - name: checkout-team
        sha256: 5f1c…            # sha256 hex of the secret the team sends
        scopes:
          checkout_upsell: [decide, log_outcomes, report]
      - name: decision-service   # a service's own credential
        service: true            # not rate limited
        scopes:
          "*": [decide, train]

Scopes are ``decide``, ``log_outcomes``, ``train``, ``report`` and ``admin`` (admin
implies every other scope); ``"*"`` grants scopes on every use case. The file is
re-read when its modification time or size changes. Secrets are never logged: only
token names appear in logs and errors.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from loopwise.errors import LoopwiseError, quote

log = logging.getLogger("loopwise.auth")

SCOPES = ("decide", "log_outcomes", "train", "report", "admin")
ALL_USE_CASES = "*"
TOKEN_PREFIX = "lw_"


class Unauthenticated(LoopwiseError):
    """No credential, or one that matches no token."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(LoopwiseError):
    """A valid token without the scope the call needs on its use case."""

    code = grpc.StatusCode.PERMISSION_DENIED


def hash_token(secret: str) -> str:
    """The sha256 hex digest under which a token is stored."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(name: str, scopes: Mapping[str, Iterable[str]], service: bool = False
              ) -> tuple[str, dict[str, Any]]:
    """A fresh secret and the tokens-file entry that grants it ``scopes``."""
    if not name:
        raise ValueError("a token needs a name")
    clean: dict[str, list[str]] = {}
    for use_case, granted in scopes.items():
        granted = sorted(set(granted))
        unknown = [s for s in granted if s not in SCOPES]
        if unknown:
            raise ValueError(f"unknown scope(s) {unknown}; use {', '.join(SCOPES)}")
        clean[use_case] = granted
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    entry: dict[str, Any] = {"name": name, "sha256": hash_token(secret), "scopes": clean}
    if service:
        entry["service"] = True
    return secret, entry


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name, its scopes by use case, service or not."""

    name: str
    scopes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    service: bool = False

    def allows(self, scope: str, use_case: str) -> bool:
        """True when the principal holds ``scope`` (or admin) on ``use_case``."""
        for key in (use_case, ALL_USE_CASES):
            granted = self.scopes.get(key, frozenset())
            if scope in granted or "admin" in granted:
                return True
        return False


ANONYMOUS = Principal("anonymous")


def _parse(document: Any, source: str) -> dict[str, Principal]:
    if not isinstance(document, dict) or not isinstance(document.get("tokens", []), list):
        raise ValueError(f"{source}: expected a mapping with a 'tokens' list")
    out: dict[str, Principal] = {}
    for index, entry in enumerate(document.get("tokens") or []):
        where = f"{source}: tokens[{index}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping")
        digest = str(entry.get("sha256", "")).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{where}: sha256 must be 64 hex digits")
        scopes: dict[str, frozenset[str]] = {}
        for use_case, granted in (entry.get("scopes") or {}).items():
            granted = list(granted or [])
            unknown = [s for s in granted if s not in SCOPES]
            if unknown:
                raise ValueError(f"{where}: unknown scope(s) {unknown}")
            scopes[str(use_case)] = frozenset(granted)
        out[digest] = Principal(str(entry.get("name") or f"token-{index}"), scopes,
                                bool(entry.get("service", False)))
    return out


class TokenStore:
    """The tokens file, re-read when it changes (checked at most every ``reload_s``).

    A file that fails to parse keeps the last good tokens in force (and logs why), so
    a bad edit of the mounted Secret cannot lock every caller out or let anyone in.
    """

    def __init__(self, path: Path, reload_s: float = 1.0) -> None:
        self.path = Path(path)
        self.reload_s = reload_s
        self._lock = threading.Lock()
        self._by_hash: dict[str, Principal] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._load(force=True)

    def _load(self, force: bool = False) -> None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            if force:
                raise
            log.warning("tokens file %s is gone; keeping %d tokens", self.path, len(self._by_hash))
            return
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if stamp == self._stamp and not force:
            return
        try:
            tokens = _parse(yaml.safe_load(self.path.read_text()) or {}, str(self.path))
        except (ValueError, yaml.YAMLError) as error:
            if force:
                raise
            log.error("tokens file %s not reloaded: %s", self.path, error)
            return
        self._by_hash, self._stamp = tokens, stamp
        log.info("tokens file %s loaded: %d tokens", self.path, len(tokens))

    def lookup(self, secret: str) -> Principal | None:
        """The principal of a secret, or None when no token matches."""
        now = time.monotonic()
        if now - self._checked >= self.reload_s:
            with self._lock:
                self._checked = now
                self._load()
        # Only the digest of the secret is ever compared or kept.
        return self._by_hash.get(hash_token(secret))


# Required scope(s) per RPC (method name without the service); any one suffices.
# An RPC that is not listed needs ``admin``: new RPCs are closed until classified.
METHOD_SCOPES: dict[str, tuple[str, ...]] = {
    # decision
    "Decide": ("decide",), "DecideBatch": ("decide",), "DecideStream": ("decide",),
    "GetUseCase": ("decide", "log_outcomes", "train", "report"),
    "ListUseCases": ("decide", "log_outcomes", "train", "report"),
    "ListUseCaseChanges": ("report",),
    "ApplyUseCase": ("admin",), "RollbackUseCase": ("admin",), "SetKillSwitch": ("admin",),
    "ArchiveUseCase": ("admin",),
    # feedback
    "LogDecisions": ("decide",), "LogOutcomes": ("log_outcomes",),
    "ReadTrainingData": ("train", "report"), "GetDecision": ("report",),
    "GetStats": ("report", "train"), "DeleteUnitData": ("admin",),
    # trainer
    "StartTraining": ("train",), "ListModels": ("train", "report", "decide"),
    "GetModel": ("train", "report", "decide"), "DownloadModel": ("decide", "train", "report"),
    "RegisterModel": ("train",), "SetDeployment": ("train",), "Rollback": ("train",),
    "WatchDeployments": ("decide", "train"), "ListDeploymentAudit": ("train", "report"),
    "GetRollout": ("train", "report"),
    # trainer and evaluator operations
    "GetOperation": ("train", "report"), "ListOperations": ("train", "report"),
    "CancelOperation": ("train", "report"), "WatchOperation": ("train", "report"),
    # evaluator
    "EstimateEffects": ("report",), "GetReport": ("report",), "ListReports": ("report",),
    "PredictEffects": ("report",), "EvaluatePolicy": ("report",),
    "SuggestParameters": ("report",), "GetScorecard": ("report",),
    # StartTuning applies blueprint versions (through the decision service), as ApplyUseCase does.
    "StartTuning": ("admin",),
}

# Services that never need a token (Kubernetes probes, tooling discovery).
OPEN_SERVICES = frozenset({
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
})


def split_method(full_method: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` → (``pkg.Service``, ``Method``)."""
    _, service, method = (full_method.split("/") + ["", ""])[:3]
    return service, method


def request_use_cases(request: Message) -> set[str]:
    """The use cases a request acts on: its ``use_case`` field, its ``use_cases`` list
    (``WatchDeployments``), those of its records (``LogDecisions``, ``LogOutcomes``) and
    of its blueprint (``ApplyUseCase``)."""
    found: set[str] = set()
    for fd, value in request.ListFields():
        if fd.name == "use_case" and fd.type == FieldDescriptor.TYPE_STRING:
            found.add(value)
        elif fd.name == "use_cases" and fd.type == FieldDescriptor.TYPE_STRING and fd.is_repeated:
            found.update(value)  # e.g. WatchDeployments: scoped to the use cases it names
        elif fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.fields_by_name.get(
                "use_case") is not None:
            items = value if fd.is_repeated else [value]
            if fd.message_type.GetOptions().map_entry:
                continue
            for item in items:
                name = getattr(item, "use_case", "")
                if isinstance(name, str):
                    found.add(name)
    return found


def authorize(principal: Principal, method: str, use_cases: set[str]) -> None:
    """Raise PermissionDenied unless ``principal`` may call ``method`` on ``use_cases``.

    A request that names no use case (listings, operations by id alone) needs the scope on
    every use case (``"*"``), so one team's token cannot enumerate another's data.
    """
    needed = METHOD_SCOPES.get(method, ("admin",))
    targets = use_cases or {ALL_USE_CASES}
    for use_case in sorted(targets):
        if not any(principal.allows(scope, use_case) for scope in needed):
            on = "all use cases" if use_case == ALL_USE_CASES else f"use case {quote(use_case)}"
            raise PermissionDenied(f"token {principal.name!r} lacks scope "
                                   f"{' or '.join(needed)} on {on} for {method}")


def bearer_secret(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The secret of the ``authorization: Bearer …`` metadata entry, if any."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, secret = text.strip().partition(" ")
            if scheme.lower() == "bearer" and secret.strip():
                return secret.strip()
            return ""
    return None


def caller_authorization(metadata: Iterable[tuple[str, Any]] | None) -> tuple[tuple[str, str], ...]:
    """The call's ``authorization`` entry as outgoing metadata (empty when it has none),
    for a job that acts on the caller's behalf with the caller's rights, e.g. online
    tuning applying blueprint versions; kept in memory only."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            return (("authorization", value.decode() if isinstance(value, bytes) else str(value)),)
    return ()


def authenticate(store: TokenStore, metadata: Iterable[tuple[str, Any]] | None) -> Principal:
    """The principal of a call's metadata, or Unauthenticated."""
    secret = bearer_secret(metadata)
    if secret is None:
        raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
    if not secret:
        raise Unauthenticated("malformed authorization metadata: expected 'Bearer <token>'")
    principal = store.lookup(secret)
    if principal is None:
        raise Unauthenticated("unknown or revoked token")
    return principal
