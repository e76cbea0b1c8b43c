"""Name rules shared by the services: a use case name is checked the same way by the
decision service (blueprints, every RPC naming a use case) and by the trainer
(WatchDeployments filters)."""

from __future__ import annotations

import re

from loopwise.errors import InvalidArgument, quote

USE_CASE_RE = re.compile(r"[a-z][a-z0-9_]{1,62}")
USE_CASE_RULE = "[a-z][a-z0-9_]{1,62}"


def use_case_name_problem(name: str) -> str:
    """Why ``name`` is not a valid use case name, or "" when it is one."""
    if USE_CASE_RE.fullmatch(name):
        return ""
    if not name:
        return f"a use case name is required ({USE_CASE_RULE})"
    return f"{quote(name)} is not a use case name ({USE_CASE_RULE})"


def check_use_case_name(name: str, field: str) -> None:
    """INVALID_ARGUMENT naming ``field`` unless ``name`` is a valid use case name."""
    problem = use_case_name_problem(name)
    if problem:
        raise InvalidArgument(field, problem)
