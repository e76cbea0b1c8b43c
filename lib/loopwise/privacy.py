"""Personal data rules of a blueprint, applied to decision records before they are
logged (and so before anything is spooled or stored).

A feature marked ``pii: hash`` is stored as a keyed pseudonym: HMAC-SHA256 (key: the
``pii_hash_key`` setting) of the use case and the value, reduced to an integer below
2**24 so that it is exact in the float32 feature blob. Equal values keep equal
pseudonyms (grouping and drift still work); the value cannot be read back without the
key. ``pii: drop`` stores the feature as missing (NaN). The unit id follows
``unit_id_pii``: hashed to ``h:<hex>``, or dropped (empty).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from loopwise.common.v1 import blueprint_pb2 as bp
from loopwise.feedback.v1 import feedback_service_pb2 as fpb

_F32 = np.dtype("<f4")
HASHED_PREFIX = "h:"


def _digest(key: bytes, use_case: str, value: bytes) -> bytes:
    return hmac.new(key, use_case.encode() + b"\x00" + value, hashlib.sha256).digest()


def hash_unit_id(key: str, use_case: str, unit_id: str) -> str:
    """The stored form of a hashed unit id (deterministic for a key and use case)."""
    if not unit_id:
        return ""
    return HASHED_PREFIX + _digest(key.encode(), use_case, unit_id.encode()).hex()[:40]


def feature_pseudonym(key: str, use_case: str, value: float) -> float:
    """A stable pseudonym in [0, 2**24) for one feature value (NaN stays NaN)."""
    if np.isnan(value):
        return float("nan")
    raw = np.float32(value).tobytes()
    return float(int.from_bytes(_digest(key.encode(), use_case, raw)[:3], "big"))


@dataclass(frozen=True)
class PiiRules:
    """The rules of one blueprint version, ready to apply to records."""

    use_case: str
    hashed: tuple[int, ...]
    dropped: tuple[int, ...]
    unit_id: int  # a bp.PiiRule value

    @classmethod
    def of(cls, blueprint: bp.Blueprint) -> PiiRules:
        """The rules declared by ``blueprint``."""
        hashed = tuple(i for i, f in enumerate(blueprint.features) if f.pii == bp.PII_RULE_HASH)
        dropped = tuple(i for i, f in enumerate(blueprint.features) if f.pii == bp.PII_RULE_DROP)
        return cls(blueprint.use_case, hashed, dropped, blueprint.unit_id_pii)

    @property
    def empty(self) -> bool:
        """True when nothing needs to change."""
        return not self.hashed and not self.dropped and self.unit_id == bp.PII_RULE_UNSPECIFIED

    def apply(self, records: Sequence[fpb.DecisionRecord], key: str) -> None:
        """Rewrite ``records`` in place: features and unit ids as the rules say."""
        if self.empty:
            return
        for record in records:
            if self.hashed or self.dropped:
                row = np.frombuffer(record.features, _F32).copy()
                for i in self.dropped:
                    if i < row.size:
                        row[i] = np.nan
                for i in self.hashed:
                    if i < row.size:
                        row[i] = feature_pseudonym(key, self.use_case, float(row[i]))
                record.features = row.tobytes()
            if self.unit_id == bp.PII_RULE_HASH:
                record.unit_id = hash_unit_id(key, self.use_case, record.unit_id)
            elif self.unit_id == bp.PII_RULE_DROP:
                record.unit_id = ""


def stored_unit_ids(key: str, use_case: str, unit_id: str) -> list[str]:
    """Every form under which a unit's decisions may be stored: as is, and hashed
    (a blueprint's rule may have changed between versions)."""
    return [unit_id, hash_unit_id(key, use_case, unit_id)]
