"""One clock for every service and the simulator, and UUIDv7 decision ids.

``now = anchor + speed × (real − anchor)`` (docs/architecture.md §11): with ``speed > 1`` reward
windows close in seconds in the demo and in tests; in production ``speed = 1``.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import uuid_utils

from loopwise.settings import Settings

# Ids older than this, or more than a day in the future, are not plausible decisions.
_PLAUSIBLE_START_MS = 1_577_836_800_000  # 2020-01-01
_DAY_MS = 86_400_000
# A UUIDv7 in canonical form (lower case, hyphenated, RFC 4122 variant): what ids made
# here look like, read without building a uuid.UUID.
_CANONICAL_UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
# Any number of them, one after another.
_CANONICAL_UUID7_RUN = re.compile(f"(?:{_CANONICAL_UUID7.pattern})*")
# Offsets of the 12 hex digits of a canonical UUIDv7's millisecond timestamp.
_TIME_DIGITS = np.r_[0:8, 9:13]


@dataclass(frozen=True)
class Clock:
    """The shared, possibly sped-up, wall clock."""

    anchor: float = 0.0
    speed: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Clock:
        """The clock configured by ``LOOPWISE_CLOCK_ANCHOR`` and ``LOOPWISE_CLOCK_SPEED``."""
        return cls(settings.clock_anchor, settings.clock_speed)

    def now(self) -> float:
        """Seconds since the epoch, on the shared clock."""
        real = time.time()
        if self.speed == 1.0:
            return real
        return self.anchor + self.speed * (real - self.anchor)

    def now_ms(self) -> int:
        """Milliseconds since the epoch, on the shared clock."""
        return int(self.now() * 1000)

    def now_datetime(self) -> datetime:
        """The shared clock's now as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now(), tz=UTC)

    def new_id(self) -> str:
        """A UUIDv7 whose timestamp is now on this clock."""
        if self.speed == 1.0:
            return str(uuid_utils.uuid7())
        return uuid7_at(self.now())

    def new_id_ms(self) -> tuple[str, int]:
        """:meth:`new_id` and its millisecond timestamp."""
        if self.speed == 1.0:
            made = uuid_utils.uuid7()
            return str(made), made.timestamp
        made_id = uuid7_at(self.now())
        return made_id, int(made_id[:8] + made_id[9:13], 16)

    def new_ids(self, n: int) -> list[str]:
        """``n`` UUIDv7s whose timestamp is now on this clock, in ascending order (one
        run, see :func:`uuid7_run`: a batch's ids at a fraction of :meth:`new_id`'s cost
        each)."""
        return uuid7_run(int(self.now() * 1000), n)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def uuid7_at(when: datetime | float | int) -> str:
    """A UUIDv7 whose timestamp is ``when``: an aware datetime, a naive one (taken as
    UTC) or seconds since the epoch. The rest of the id is random, so ids made for the
    same millisecond differ. This is the id of a decision made at that time, e.g. one
    made elsewhere and imported with ``LogDecisions`` (its timestamp is its decision
    time)."""
    if isinstance(when, datetime):
        aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
        nanoseconds = (aware - _EPOCH) // timedelta(microseconds=1) * 1000
    elif isinstance(when, int | float) and not isinstance(when, bool):
        nanoseconds = int(round(float(when) * 1e9))
    else:
        raise TypeError(f"expected a datetime or epoch seconds, not {when!r}")
    if nanoseconds < 0:
        raise ValueError(f"{when!r} is before 1970: a UUIDv7 cannot hold it")
    return str(uuid_utils.uuid7(nanoseconds=nanoseconds))


def uuid7_run(time_ms: int, n: int) -> list[str]:
    """``n`` distinct UUIDv7s in canonical form with the millisecond timestamp
    ``time_ms``, ascending. They share a random 12-bit ``rand_a``; ``rand_b`` counts up
    from a random 61-bit start (RFC 9562 §6.2's monotonic random), so 73 random bits
    tell one run from another. Built as one array of characters, not one UUID object
    per id."""
    if n <= 0:
        return []
    if not 0 <= time_ms < 1 << 48:
        raise ValueError(f"{time_ms} ms does not fit a UUIDv7's 48-bit timestamp")
    seed = int.from_bytes(os.urandom(10), "big")
    rand_a, start = seed >> 68, seed & ((1 << 61) - 1)
    high = f"{time_ms:012x}{0x7000 | rand_a:04x}"
    low = (np.uint64(0x8000000000000000) | (np.uint64(start) + np.arange(n, dtype=np.uint64))).astype(">u8")
    digits = np.frombuffer(low.tobytes().hex().encode("ascii"), dtype=np.uint8).reshape(n, 16)
    chars = np.empty((n, 37), dtype=np.uint8)
    chars[:, :19] = np.frombuffer(f"{high[:8]}-{high[8:12]}-{high[12:]}-".encode("ascii"), dtype=np.uint8)
    chars[:, 19:23] = digits[:, :4]
    chars[:, 23] = ord("-")
    chars[:, 24:36] = digits[:, 4:]
    chars[:, 36] = ord(" ")
    return chars.tobytes().decode("ascii").split()


def uuid7_time_ms(value: str) -> int | None:
    """The millisecond timestamp of a UUIDv7 string, or None if it is not a UUIDv7."""
    if _CANONICAL_UUID7.fullmatch(value) if isinstance(value, str) else False:
        return int(value[:8] + value[9:13], 16)
    try:
        parsed = uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None
    if parsed.version != 7:
        return None
    return parsed.int >> 80


def plausible_decision_time_ms(value: str, now_ms: int) -> int | None:
    """The id's timestamp if it is a UUIDv7 in a plausible range (2020 .. now + 1 day)."""
    ms = uuid7_time_ms(value)
    if ms is None or ms < _PLAUSIBLE_START_MS or ms > now_ms + _DAY_MS:
        return None
    return ms


def plausible_decision_key(value: str, now_ms: int) -> tuple[str, int] | None:
    """A decision id's canonical form and timestamp, if it is a UUIDv7 in a plausible
    range (:func:`plausible_decision_time_ms`); None otherwise. An id already in
    canonical form (every id made here) is matched once and returned as it is."""
    if _CANONICAL_UUID7.fullmatch(value):
        ms = int(value[:8] + value[9:13], 16)
        return (value, ms) if _PLAUSIBLE_START_MS <= ms <= now_ms + _DAY_MS else None
    ms = plausible_decision_time_ms(value, now_ms)
    return None if ms is None else (canonical_uuid(value), ms)


def plausible_decision_keys(values: list[str], now_ms: int) -> tuple[list[str], list[int]]:
    """:func:`plausible_decision_key` of many ids at once: their canonical forms and
    timestamps, 0 for an id that is not plausible (the id then as given). When every
    id is already canonical (ids made here), they are matched and read together."""
    joined = "".join(values)
    # Every id 36 characters long (the shortest is, and they add up to 36 each), and
    # together a run of canonical ids: then each one is.
    if values and min(map(len, values)) == 36 and len(joined) == 36 * len(values) \
            and _CANONICAL_UUID7_RUN.fullmatch(joined):
        chars = np.frombuffer(joined.encode("ascii"), np.uint8).reshape(len(values), 36)[:, _TIME_DIGITS]
        digits = np.where(chars <= ord("9"), chars - ord("0"), chars - (ord("a") - 10)).astype(np.int64)
        ms = digits @ (np.int64(16) ** np.arange(11, -1, -1, dtype=np.int64))
        ms[(ms < _PLAUSIBLE_START_MS) | (ms > now_ms + _DAY_MS)] = 0
        return values, ms.tolist()
    keys = [plausible_decision_key(value, now_ms) for value in values]
    return ([value if key is None else key[0] for value, key in zip(values, keys, strict=True)],
            [0 if key is None else key[1] for key in keys])


def canonical_uuid(value: str) -> str:
    """The canonical (lower-case, hyphenated) form of a UUID string (ValueError if it is
    not one); a canonical UUIDv7 is returned as it is."""
    if _CANONICAL_UUID7.fullmatch(value):
        return value
    return str(uuid.UUID(value))
