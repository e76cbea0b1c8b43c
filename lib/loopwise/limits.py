"""Input limits and rate limits, checked before a request reaches a servicer.

Limits are generic over the request message, so every RPC of every service gets them
without code of its own: string lengths, the length of repeated fields (rows of a
batch, features, candidates), the ``rows`` count of a packed batch and the size of a
blueprint. Message size itself is enforced by gRPC (``max_message_bytes``) with
RESOURCE_EXHAUSTED. A request over a content limit fails with INVALID_ARGUMENT and a
field violation naming the field and the limit; a caller over its rate fails with
RESOURCE_EXHAUSTED and a ``google.rpc.RetryInfo`` telling when to retry.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import duration_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from loopwise.errors import InvalidArgument, ResourceExhausted
from loopwise.settings import Settings

# Repeated fields whose length is a number of features (not rows).
FEATURE_FIELDS = frozenset({"features", "feature_names"})
CANDIDATE_FIELDS = frozenset({"candidates"})
BLUEPRINT_FIELDS = frozenset({"blueprint"})
# Scalar fields that announce a number of rows (DecideBatch ``rows``).
ROW_COUNT_FIELDS = frozenset({"rows", "batch_rows"})


@dataclass(frozen=True)
class InputLimits:
    """The content limits of one server (from settings)."""

    max_string_bytes: int
    max_batch_rows: int
    max_features: int
    max_candidates: int
    max_blueprint_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> InputLimits:
        """The limits configured by ``settings``."""
        return cls(settings.max_string_bytes, settings.max_batch_rows, settings.max_features,
                   settings.max_candidates, settings.max_blueprint_bytes)

    def check(self, message: Message) -> None:
        """Raise InvalidArgument naming the first field of ``message`` over a limit."""
        violations: list[tuple[str, str]] = []
        self._walk(message, "", violations)
        if violations:
            field, description = violations[0]
            raise InvalidArgument(field, description, violations[1:])

    def _repeated_limit(self, name: str) -> tuple[int, str]:
        if name in FEATURE_FIELDS:
            return self.max_features, "features"
        if name in CANDIDATE_FIELDS:
            return self.max_candidates, "candidates"
        return self.max_batch_rows, "entries"

    def _walk(self, message: Message, prefix: str, out: list[tuple[str, str]]) -> None:
        for field, value in message.ListFields():
            path = prefix + field.name
            if field.name in BLUEPRINT_FIELDS and field.type == FieldDescriptor.TYPE_MESSAGE:
                size = value.ByteSize()
                if size > self.max_blueprint_bytes:
                    out.append((path, f"blueprint of {size} bytes exceeds the limit of "
                                      f"{self.max_blueprint_bytes} bytes"))
                    continue
            if field.is_repeated:
                limit, what = self._repeated_limit(field.name)
                if len(value) > limit:
                    out.append((path, f"{len(value)} {what} exceed the limit of {limit}"))
                    continue
                self._walk_values(field, value, path, out)
            else:
                self._check_value(field, value, path, out)

    def _walk_values(self, field: FieldDescriptor, values: Any, path: str,
                     out: list[tuple[str, str]]) -> None:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key in values:
                self._check_string(str(key), f"{path}[{key!s:.40}]", out)
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    self._walk(values[key], f"{path}[{key!s:.40}].", out)
                else:
                    self._check_value(value_field, values[key], f"{path}[{key!s:.40}]", out)
            return
        for index, item in enumerate(values):
            self._check_value(field, item, f"{path}[{index}]", out)

    def _check_value(self, field: FieldDescriptor, value: Any, path: str,
                     out: list[tuple[str, str]]) -> None:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            self._walk(value, path + ".", out)
        elif field.type == FieldDescriptor.TYPE_STRING:
            self._check_string(value, path, out)
        elif field.name in ROW_COUNT_FIELDS and isinstance(value, int) and value > self.max_batch_rows:
            out.append((path, f"{value} rows exceed the limit of {self.max_batch_rows}"))

    def _check_string(self, value: str, path: str, out: list[tuple[str, str]]) -> None:
        # Characters bound the bytes from below and by 4× from above: count bytes only
        # when it can matter.
        if len(value) > self.max_string_bytes // 4 and len(value.encode()) > self.max_string_bytes:
            out.append((path, f"string of {len(value.encode())} bytes exceeds the limit of "
                              f"{self.max_string_bytes} bytes"))


class RateLimited(ResourceExhausted):
    """A caller went over its rate; carries a RetryInfo with the delay to wait."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def details(self) -> list[Any]:
        seconds = max(0.0, self.retry_after_s)
        nanos = int(round((seconds - math.floor(seconds)) * 1e9))
        delay = duration_pb2.Duration(seconds=int(math.floor(seconds)), nanos=min(nanos, 999_999_999))
        return [error_details_pb2.RetryInfo(retry_delay=delay)]


class TokenBuckets:
    """Token buckets by key (a client, a use case), at most ``max_keys`` remembered.

    ``rate`` tokens per second refill up to ``burst``; a call takes one token. Keys
    not seen for a while are evicted (least recently used first), so a flood of new
    client names cannot grow memory without bound.
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 10_000,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.max_keys = max_keys
        self._now = now
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 when allowed, else the seconds to wait."""
        now = self._now()
        level, last = self._buckets.pop(key, (self.burst, now))
        level = min(self.burst, level + (now - last) * self.rate)
        if level >= 1.0:
            self._buckets[key] = (level - 1.0, now)
            wait = 0.0
        else:
            self._buckets[key] = (level, now)
            wait = (1.0 - level) / self.rate
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


class RateLimits:
    """Per-client and per-use-case rate limits of one server (off when a rate is 0)."""

    def __init__(self, settings: Settings, now: Callable[[], float] = time.monotonic) -> None:
        self.by_client = self._buckets(settings.rate_limit_client_rps,
                                       settings.rate_limit_client_burst, now)
        self.by_use_case = self._buckets(settings.rate_limit_use_case_rps,
                                         settings.rate_limit_use_case_burst, now)

    @staticmethod
    def _buckets(rate: float, burst: float, now: Callable[[], float]) -> TokenBuckets | None:
        return TokenBuckets(rate, burst or rate, now=now) if rate > 0 else None

    def check(self, client: str, use_cases: set[str]) -> None:
        """Raise RateLimited when ``client`` or one of ``use_cases`` is over its rate."""
        if self.by_client is not None:
            wait = self.by_client.take(client)
            if wait > 0:
                raise RateLimited(f"client {client!r} is over its rate limit of "
                                  f"{self.by_client.rate:g} calls/s; retry in {wait:.3f}s", wait)
        if self.by_use_case is not None:
            for use_case in sorted(use_cases):
                wait = self.by_use_case.take(use_case)
                if wait > 0:
                    raise RateLimited(f"use case {use_case!r} is over its rate limit of "
                                      f"{self.by_use_case.rate:g} calls/s; retry in {wait:.3f}s",
                                      wait)
