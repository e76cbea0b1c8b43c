"""Blueprint numbers addressed by path: ``policy.epsilon``, ``policy.action_costs[buy]``,
``value_model.weights[revenue]``.

A path is dot-separated field names of nested messages ending in a double field, or in
a ``map<string, double>`` field with the key in brackets. Paths are resolved against the
message's descriptor, so a number added to the blueprint later is addressable without a
change here. Used by experiment arms (``ExperimentArm.parameters``, applied by the
decision service) and by online tuning (the evaluator's ``StartTuning``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf import descriptor, message

from loopwise.errors import InvalidArgument, quote

_PATH = re.compile(r"^([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*)(?:\[([^\[\]]{1,128})\])?$")
MAX_PATH_LENGTH = 256


@dataclass(frozen=True)
class ParameterPath:
    """A parsed path: the field names from the root and, for a map, the key."""

    fields: tuple[str, ...]
    key: str | None = None

    def __str__(self) -> str:
        text = ".".join(self.fields)
        return f"{text}[{self.key}]" if self.key is not None else text


def parse(path: str, root: descriptor.Descriptor, field_name: str) -> ParameterPath:
    """Parse ``path`` and check it names a number of ``root`` messages; INVALID_ARGUMENT
    naming ``field_name`` otherwise."""
    if not path:
        raise InvalidArgument(field_name, "required: a parameter path such as 'policy.epsilon'")
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidArgument(field_name, f"{quote(path)} is longer than {MAX_PATH_LENGTH} characters")
    match = _PATH.match(path)
    if match is None:
        raise InvalidArgument(field_name, f"{quote(path)} is not a path like 'policy.epsilon' or "
                              "'policy.action_costs[<action>]'")
    names = tuple(match.group(1).split("."))
    key = match.group(2)
    current = root
    for i, name in enumerate(names):
        fd = current.fields_by_name.get(name)
        if fd is None:
            where = ".".join(names[:i]) or root.name
            raise InvalidArgument(field_name, f"{quote(path)}: {where} has no field {quote(name)}")
        last = i == len(names) - 1
        is_map = fd.message_type is not None and fd.message_type.GetOptions().map_entry
        if not last:
            if fd.type != fd.TYPE_MESSAGE or is_map or _repeated(fd):
                raise InvalidArgument(field_name, f"{quote(path)}: {name!r} is not a nested message")
            current = fd.message_type
            continue
        if is_map:
            value_fd = fd.message_type.fields_by_name["value"]
            key_fd = fd.message_type.fields_by_name["key"]
            if key_fd.type != key_fd.TYPE_STRING or value_fd.type != value_fd.TYPE_DOUBLE:
                raise InvalidArgument(field_name, f"{quote(path)}: {name!r} is not a map of numbers by name")
            if key is None:
                raise InvalidArgument(field_name, f"{quote(path)}: {name!r} is a map; name an entry as "
                                      f"{name}[<key>]")
        else:
            if key is not None:
                raise InvalidArgument(field_name, f"{quote(path)}: {name!r} is not a map")
            if fd.type not in (fd.TYPE_DOUBLE, fd.TYPE_FLOAT) or _repeated(fd):
                raise InvalidArgument(field_name, f"{quote(path)}: {name!r} is not a number")
    return ParameterPath(names, key)


def _repeated(fd: descriptor.FieldDescriptor) -> bool:
    is_repeated = getattr(fd, "is_repeated", None)
    if is_repeated is not None:
        return bool(is_repeated() if callable(is_repeated) else is_repeated)
    return fd.label == fd.LABEL_REPEATED


def get(msg: message.Message, path: ParameterPath) -> float:
    """The value at ``path`` (0 for an unset field or map entry)."""
    current = msg
    for name in path.fields[:-1]:
        current = getattr(current, name)
    leaf = getattr(current, path.fields[-1])
    if path.key is not None:
        return float(leaf.get(path.key, 0.0))
    return float(leaf)


def set_value(msg: message.Message, path: ParameterPath, value: float) -> None:
    """Set the number at ``path`` in ``msg`` (in place)."""
    current = msg
    for name in path.fields[:-1]:
        current = getattr(current, name)
    if path.key is not None:
        getattr(current, path.fields[-1])[path.key] = float(value)
    else:
        setattr(current, path.fields[-1], float(value))


def with_values(msg: message.Message, values: dict[ParameterPath, float]) -> message.Message:
    """A copy of ``msg`` with every path set to its value."""
    out = type(msg)()
    out.CopyFrom(msg)
    for path, value in values.items():
        set_value(out, path, value)
    return out
