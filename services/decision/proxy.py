"""A servicer proxy: some RPC methods replaced by wrappers, everything else (other
methods, attributes, assignments) delegated to the servicer it stands for. The
decision log's answer gate and the decision counting both wrap Decide and DecideBatch
this way, one around the other (DecideStream does both for each answer it writes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# The unary RPCs that decide.
UNARY_DECIDING = ("Decide", "DecideBatch")


class ServicerProxy:
    """Stands for ``servicer`` with the methods in ``overrides`` replaced."""

    def __init__(self, servicer: Any, overrides: dict[str, Callable[..., Any]]) -> None:
        object.__setattr__(self, "_target", servicer)
        for name, method in overrides.items():
            object.__setattr__(self, name, method)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)
