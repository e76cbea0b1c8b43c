"""Blueprints for people: YAML text, field paths, and readable differences."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

import yaml
from google.protobuf import json_format

from loopwise.common.v1 import blueprint_pb2 as bp


def blueprint_dict(blueprint: bp.Blueprint) -> dict[str, Any]:
    """A blueprint as plain data with the proto field names."""
    return json_format.MessageToDict(blueprint, preserving_proto_field_name=True)


def blueprint_yaml(blueprint: bp.Blueprint) -> str:
    """A blueprint as YAML (the form ``loopwise apply -f`` reads)."""
    return yaml.safe_dump(blueprint_dict(blueprint), sort_keys=False, allow_unicode=True)


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Leaf values by path (``policy.epsilon``, ``features[2].name``); a list of scalars
    is one leaf (``features[0].vocabulary: [north, south]``)."""
    out: dict[str, str] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(value, list) and any(isinstance(item, dict | list) for item in value):
        for index, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{index}]"))
    elif isinstance(value, list):
        out[prefix] = "[" + ", ".join(_scalar(item) for item in value) + "]"
    else:
        out[prefix] = _scalar(value)
    return out


@dataclass(frozen=True)
class Change:
    """One field that differs between two blueprint versions ("" where unset)."""

    path: str
    old: str
    new: str

    @property
    def kind(self) -> str:
        """added, removed or changed."""
        if not self.old:
            return "added"
        if not self.new:
            return "removed"
        return "changed"


def changes(old: bp.Blueprint, new: bp.Blueprint) -> list[Change]:
    """The fields that differ, in the newer blueprint's order, then removed ones."""
    before, after = flatten(blueprint_dict(old)), flatten(blueprint_dict(new))
    keys = list(after) + [k for k in before if k not in after]
    return [Change(k, before.get(k, ""), after.get(k, "")) for k in keys
            if before.get(k, "") != after.get(k, "")]


@dataclass(frozen=True)
class DiffLine:
    """One line of a unified diff with its kind: add, remove, hunk or same."""

    kind: str
    text: str


def unified(old: bp.Blueprint, new: bp.Blueprint, old_name: str, new_name: str) -> list[DiffLine]:
    """A unified diff of the two blueprints' YAML."""
    lines = difflib.unified_diff(blueprint_yaml(old).splitlines(), blueprint_yaml(new).splitlines(),
                                 old_name, new_name, lineterm="", n=3)
    out = []
    for line in lines:
        if line.startswith(("---", "+++")):
            out.append(DiffLine("file", line))
        elif line.startswith("@@"):
            out.append(DiffLine("hunk", line))
        elif line.startswith("+"):
            out.append(DiffLine("add", line))
        elif line.startswith("-"):
            out.append(DiffLine("remove", line))
        else:
            out.append(DiffLine("same", line))
    return out
