"""Hypothesis strategies for protobuf requests: random messages built from a message
descriptor (with the values that tend to break parsers and validators), mutations of
their wire bytes, and raw bytes."""

from __future__ import annotations

from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message
from hypothesis import strategies as st

F = FieldDescriptor
INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1), F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1), F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1), F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1), F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1), F.TYPE_FIXED64: (0, 2**64 - 1),
}
# Names that exist in a fuzz stack (so some requests get past "not found").
WORDS = ["", "fuzz_case", "checkout_upsell", "x", "country", "a" * 300, "../etc/passwd", "\x00",
         "Ünïcødé ✓", "0191e0b0-0000-7000-8000-000000000000", "not-a-uuid", "*", " "]


def _text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(WORDS), st.text(max_size=24))


def _int(field: FieldDescriptor) -> st.SearchStrategy[int]:
    low, high = INT_RANGES[field.type]
    return st.one_of(st.sampled_from([0, 1, -1 if low < 0 else 2, low, high]),
                     st.integers(min_value=max(low, -10**6), max_value=min(high, 10**6)))


def _scalar(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == F.TYPE_MESSAGE:
        return messages(field.message_type, depth + 1)
    if kind == F.TYPE_STRING:
        return _text()
    if kind == F.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        width = 32 if kind == F.TYPE_FLOAT else 64
        return st.floats(width=width, allow_nan=True, allow_infinity=True)
    if kind == F.TYPE_ENUM:
        values = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(values), st.integers(min_value=-5, max_value=99))
    return _int(field)


@st.composite
def _message(draw: st.DrawFn, descriptor: Descriptor, depth: int) -> Message:
    message = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if depth > 2 and field.type == F.TYPE_MESSAGE:
            continue
        if field.is_repeated and field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            entries = draw(st.dictionaries(_scalar(key_field, depth), _scalar(value_field, depth), max_size=3))
            target = getattr(message, field.name)
            for key, value in entries.items():
                if value_field.type == F.TYPE_MESSAGE:
                    target[key].CopyFrom(value)
                else:
                    target[key] = value
        elif field.is_repeated:
            values = draw(st.lists(_scalar(field, depth), max_size=3))
            target = getattr(message, field.name)
            if field.type == F.TYPE_MESSAGE:
                for value in values:
                    target.add().CopyFrom(value)
            else:
                target.extend(values)
        elif field.type == F.TYPE_MESSAGE:
            getattr(message, field.name).CopyFrom(draw(_scalar(field, depth)))
        else:
            setattr(message, field.name, draw(_scalar(field, depth)))
    return message


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Random messages of one type (nested messages up to three levels)."""
    return _message(descriptor, depth)


@st.composite
def mutated(draw: st.DrawFn, descriptor: Descriptor) -> bytes:
    """The wire bytes of a random message with bytes flipped, cut or inserted."""
    data = bytearray(draw(messages(descriptor)).SerializeToString())
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip" and data:
            i = draw(st.integers(min_value=0, max_value=len(data) - 1))
            data[i] ^= draw(st.integers(min_value=1, max_value=255))
        elif op == "cut" and data:
            data = data[:draw(st.integers(min_value=0, max_value=len(data) - 1))]
        else:
            i = draw(st.integers(min_value=0, max_value=len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def raw_bytes() -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, mostly not a valid message."""
    return st.binary(max_size=128)


def parses_as(descriptor: Descriptor, data: bytes) -> bool:
    """True when ``data`` decodes as a message of ``descriptor``."""
    try:
        message_factory.GetMessageClass(descriptor).FromString(data)
    except (DecodeError, RuntimeError, ValueError):
        return False
    return True
