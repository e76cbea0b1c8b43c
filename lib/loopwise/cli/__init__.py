"""The ``loopwise`` command line: run the services, manage use cases, models and
deployments, follow jobs, read logged data, analyse effects.

One module per area (``services``, ``use_cases``, ``models``, ``data``, ``analysis``),
each adding its commands to the one Typer app of :mod:`loopwise.cli.common`, which also
holds the global options (addresses, token, TLS), the SDK client every command calls
through, JSON output and the error messages. Run it as ``loopwise`` or
``python -m loopwise.cli``.
"""

from __future__ import annotations

import importlib

from loopwise.cli.common import app

# Each area adds its commands; --help lists them in this order.
for _area in ("services", "use_cases", "data", "models", "analysis"):
    importlib.import_module(f"loopwise.cli.{_area}")

from loopwise.cli.use_cases import blueprint_yaml, load_blueprint  # noqa: E402 - after the order above

__all__ = ["app", "blueprint_yaml", "load_blueprint", "main"]


def main() -> None:
    """Entry point of the ``loopwise`` console script."""
    app()
