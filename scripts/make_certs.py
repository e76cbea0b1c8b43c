"""Create a development CA and certificates for mutual TLS (``make certs``).

Writes ``ca.crt``/``ca.key`` and, for each of the four services and for a ``client``,
``<name>.crt``/``<name>.key`` into ``--out`` (see :mod:`loopwise.pki`)::

    python scripts/make_certs.py --out var/certs --namespace loopwise
"""

from __future__ import annotations

import argparse
from pathlib import Path

from loopwise.pki import NAMES, make_certs

__all__ = ["NAMES", "make_certs"]


def main() -> None:
    """Command line: ``python scripts/make_certs.py --out var/certs``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("var/certs"))
    parser.add_argument("--namespace", default="loopwise")
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args()
    out = make_certs(args.out, namespace=args.namespace, days=args.days)
    print(f"development CA and certificates for {', '.join(NAMES)} in {out}")


if __name__ == "__main__":
    main()
