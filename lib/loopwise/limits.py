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
from dataclasses import field as dataclass_field
from typing import Any

from google.protobuf import duration_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from loopwise.errors import InvalidArgument, ResourceExhausted, quote
from loopwise.settings import Settings

# Repeated fields whose length is a number of features (not rows).
FEATURE_FIELDS = frozenset({"features", "feature_names"})
CANDIDATE_FIELDS = frozenset({"candidates"})
BLUEPRINT_FIELDS = frozenset({"blueprint"})
# Scalar fields that announce a number of rows (DecideBatch ``rows``).
ROW_COUNT_FIELDS = frozenset({"rows", "batch_rows"})


TIMESTAMP, DURATION = "google.protobuf.Timestamp", "google.protobuf.Duration"
TIME_TYPES = frozenset({TIMESTAMP, DURATION})
# The ranges protobuf's well-known types accept (0001-01-01 .. 9999-12-31; ±10,000 years).
TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)
_DURATION_SECONDS = 315_576_000_000


def _time_problem(type_name: str, seconds: int, nanos: int) -> str:
    """Why a Timestamp or Duration value is invalid, or "" when it is valid."""
    if type_name == TIMESTAMP:
        if not TIMESTAMP_SECONDS[0] <= seconds <= TIMESTAMP_SECONDS[1]:
            return f"timestamp seconds {seconds} out of range (years 1 to 9999)"
        if not 0 <= nanos <= 999_999_999:
            return f"timestamp nanos {nanos} out of range [0, 999999999]"
        return ""
    if abs(seconds) > _DURATION_SECONDS:
        return f"duration seconds {seconds} out of range (±{_DURATION_SECONDS})"
    if abs(nanos) > 999_999_999 or (seconds and nanos and (seconds < 0) != (nanos < 0)):
        return f"duration nanos {nanos} out of range or of another sign than seconds"
    return ""


@dataclass
class InputLimits:
    """The content limits of one server (from settings)."""

    max_string_bytes: int
    max_batch_rows: int
    max_features: int
    max_candidates: int
    max_blueprint_bytes: int
    _plans: dict[str, dict[str, tuple[str, int, str, Any]]] = dataclass_field(default_factory=dict, repr=False)
    _small_plans: dict[str, list[tuple[str, str, int, str, Any]]] = dataclass_field(default_factory=dict,
                                                                                    repr=False)
    _times: dict[str, bool] = dataclass_field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> InputLimits:
        """The limits configured by ``settings``."""
        return cls(settings.max_string_bytes, settings.max_batch_rows, settings.max_features,
                   settings.max_candidates, settings.max_blueprint_bytes)

    @property
    def small_bytes(self) -> int:
        """A message this small cannot break a string, repeated-field or blueprint
        limit (every repeated entry takes at least one byte on the wire: a packed
        varint), so only its row counts need a look: the hot path (a Decide of a few
        hundred bytes) stays a ByteSize() call."""
        return min(self.max_string_bytes, self.max_features, self.max_candidates,
                   self.max_batch_rows, self.max_blueprint_bytes)

    def check(self, message: Message) -> None:
        """Raise InvalidArgument naming the first field of ``message`` over a limit."""
        violations: list[tuple[str, str]] = []
        if message.ByteSize() <= self.small_bytes and not self._has_time(message.DESCRIPTOR):
            for name, (kind, limit, _, _) in self._plan(message.DESCRIPTOR).items():
                if kind == "rows" and getattr(message, name) > limit:
                    violations.append((name, f"{getattr(message, name)} rows exceed the limit of {limit}"))
        else:
            self._walk(message, "", violations)
        if violations:
            field, description = violations[0]
            raise InvalidArgument(field, description, violations[1:])

    def _has_time(self, descriptor: Descriptor, seen: frozenset[str] = frozenset()) -> bool:
        """True when messages of this type can hold a Timestamp or Duration (whose
        ranges are checked: out-of-range values make protobuf raise later)."""
        cached = self._times.get(descriptor.full_name)
        if cached is not None:
            return cached
        found = False
        for field in descriptor.fields:
            sub = field.message_type
            if sub is None or sub.full_name in seen:
                continue
            if sub.full_name in TIME_TYPES or self._has_time(sub, seen | {descriptor.full_name}):
                found = True
                break
        self._times[descriptor.full_name] = found
        return found

    def _plan(self, descriptor: Descriptor) -> dict[str, tuple[str, int, str, Any]]:
        """Per field name of a message type: (kind, limit, unit, sub-field), computed
        once per type (descriptor options are slow to read per call)."""
        plan = self._plans.get(descriptor.full_name)
        if plan is not None:
            return plan
        plan = {}
        for field in descriptor.fields:
            is_message = field.type == FieldDescriptor.TYPE_MESSAGE
            if field.is_repeated:
                if field.name in FEATURE_FIELDS:
                    limit, unit = self.max_features, "features"
                elif field.name in CANDIDATE_FIELDS:
                    limit, unit = self.max_candidates, "candidates"
                else:
                    limit, unit = self.max_batch_rows, "entries"
                if is_message and field.message_type.GetOptions().map_entry:
                    value_field = field.message_type.fields_by_name["value"]
                    plan[field.name] = ("map", limit, unit, value_field)
                else:
                    plan[field.name] = ("repeated", limit, unit, field)
            elif is_message and field.message_type.full_name in TIME_TYPES:
                plan[field.name] = ("time", 0, field.message_type.full_name, field)
            elif is_message and field.name in BLUEPRINT_FIELDS:
                plan[field.name] = ("blueprint", self.max_blueprint_bytes, "bytes", field)
            elif is_message or field.type == FieldDescriptor.TYPE_STRING:
                plan[field.name] = ("one", 0, "", field)
            elif field.name in ROW_COUNT_FIELDS:
                plan[field.name] = ("rows", self.max_batch_rows, "rows", field)
        self._plans[descriptor.full_name] = plan
        return plan

    def _walk(self, message: Message, prefix: str, out: list[tuple[str, str]]) -> None:
        plan = self._plan(message.DESCRIPTOR)
        for field, value in message.ListFields():
            step = plan.get(field.name)
            if step is None:
                continue
            kind, limit, unit, sub = step
            path = prefix + field.name
            if kind == "one":
                self._check_value(sub, value, path, out)
            elif kind == "time":
                problem = _time_problem(unit, value.seconds, value.nanos)
                if problem:
                    out.append((path, problem))
            elif kind == "rows":
                if value > limit:
                    out.append((path, f"{value} rows exceed the limit of {limit}"))
            elif kind == "blueprint":
                size = value.ByteSize()
                if size > limit:
                    out.append((path, f"blueprint of {size} bytes exceeds the limit of {limit} bytes"))
                else:
                    self._walk(value, path + ".", out)
            elif len(value) > limit:
                out.append((path, f"{len(value)} {unit} exceed the limit of {limit}"))
            elif kind == "map":
                for key in value:
                    label = f"{path}[{key!s:.40}]"
                    self._check_string(key, label, out) if isinstance(key, str) else None
                    self._check_value(sub, value[key], label, out)
            elif sub.type == FieldDescriptor.TYPE_MESSAGE:
                # An entry too small to break a size limit needs only its time and row
                # count fields looked at (a LogOutcomes of 1,000 outcomes: 1,000 HasField).
                small_plan = self._small_plan(sub.message_type)
                small = self.small_bytes
                for index, item in enumerate(value):
                    if item.ByteSize() > small:
                        self._walk(item, f"{path}[{index}].", out)
                    elif small_plan:
                        found = len(out)
                        self._walk_small(item, "", out, small_plan)
                        if len(out) > found:  # the entry's path is built only when it broke a limit
                            out[found:] = [(f"{path}[{index}].{at}", problem) for at, problem in out[found:]]
            elif sub.type == FieldDescriptor.TYPE_STRING:
                # Only a string longer than a quarter of the limit in characters can be
                # over it in bytes: look at each one only when the longest is.
                if value and max(map(len, value)) > self.max_string_bytes // 4:
                    for index, item in enumerate(value):
                        self._check_string(item, f"{path}[{index}]", out)

    def _small_plan(self, descriptor: Descriptor) -> list[tuple[str, str, int, str, Any]]:
        """The fields that a message of this type too small to break a size limit can
        still break a limit in: times, row counts, and messages holding either."""
        cached = self._small_plans.get(descriptor.full_name)
        if cached is not None:
            return cached
        self._small_plans[descriptor.full_name] = []  # a recursive type sees itself as safe meanwhile
        plan = []
        for name, (kind, limit, unit, sub) in self._plan(descriptor).items():
            if kind in ("time", "rows"):
                plan.append((name, kind, limit, unit, sub))
            elif kind in ("one", "blueprint", "repeated", "map") and sub.type == FieldDescriptor.TYPE_MESSAGE \
                    and self._small_plan(sub.message_type):
                plan.append((name, kind, limit, unit, sub))
        self._small_plans[descriptor.full_name] = plan
        return plan

    def _walk_small(self, message: Message, prefix: str, out: list[tuple[str, str]],
                    plan: list[tuple[str, str, int, str, Any]] | None = None) -> None:
        """:meth:`_walk` of a message of at most ``small_bytes``: its time and row count
        fields only (nothing in it can break a string, repeated-field or size limit).
        ``plan``: the message type's :meth:`_small_plan`, when the caller has it."""
        for name, kind, limit, unit, _ in plan if plan is not None else self._small_plan(message.DESCRIPTOR):
            path = prefix + name
            if kind == "time":
                if message.HasField(name):
                    value = getattr(message, name)
                    problem = _time_problem(unit, value.seconds, value.nanos)
                    if problem:
                        out.append((path, problem))
            elif kind == "rows":
                if getattr(message, name) > limit:
                    out.append((path, f"{getattr(message, name)} rows exceed the limit of {limit}"))
            elif kind in ("one", "blueprint"):
                if message.HasField(name):
                    self._walk_small(getattr(message, name), path + ".", out)
            elif kind == "map":
                for key, item in getattr(message, name).items():
                    self._walk_small(item, f"{path}[{key!s:.40}].", out)
            else:
                for index, item in enumerate(getattr(message, name)):
                    self._walk_small(item, f"{path}[{index}].", out)

    def _check_value(self, field: FieldDescriptor, value: Any, path: str,
                     out: list[tuple[str, str]]) -> None:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            self._walk(value, path + ".", out)
        elif field.type == FieldDescriptor.TYPE_STRING:
            self._check_string(value, path, out)

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

    @property
    def enabled(self) -> bool:
        """True when any rate limit is on."""
        return self.by_client is not None or self.by_use_case is not None

    def check(self, client: str, use_cases: set[str]) -> None:
        """Raise RateLimited when ``client`` or one of ``use_cases`` is over its rate."""
        if self.by_client is not None:
            wait = self.by_client.take(client)
            if wait > 0:
                raise RateLimited(f"client {quote(client)} is over its rate limit of "
                                  f"{self.by_client.rate:g} calls/s; retry in {wait:.3f}s", wait)
        if self.by_use_case is not None:
            for use_case in sorted(use_cases):
                wait = self.by_use_case.take(use_case)
                if wait > 0:
                    raise RateLimited(f"use case {quote(use_case)} is over its rate limit of "
                                      f"{self.by_use_case.rate:g} calls/s; retry in {wait:.3f}s",
                                      wait)
