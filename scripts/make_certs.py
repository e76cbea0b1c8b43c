"""Create a development CA and certificates for mutual TLS (``make certs``).

Writes ``ca.crt``/``ca.key`` and, for each of the four services and for a ``client``,
``<name>.crt``/``<name>.key`` into ``--out`` (see :mod:`loopwise.pki`). For a Helm
release, ``--fullname`` is the release's full name (``loopwise`` for a release named
``loopwise``): each certificate then also names the Service ``<fullname>-<name>`` (and
``.<namespace>``, ``.<namespace>.svc``) that the chart's pods dial::

    python scripts/make_certs.py --out var/certs --namespace loopwise --fullname loopwise
"""

from __future__ import annotations

import argparse
from pathlib import Path

from loopwise.pki import NAMES, make_certs

__all__ = ["NAMES", "make_certs"]


def main() -> None:
    """Command line: ``python scripts/make_certs.py --out var/certs [--fullname NAME]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("var/certs"))
    parser.add_argument("--namespace", default="loopwise")
    parser.add_argument("--fullname", default="",
                        help="full name of the Helm release (the prefix of its Services, "
                             "<fullname>-<service>); each certificate also names its Service")
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args()
    try:  # a bad --fullname is refused before anything is written
        out = make_certs(args.out, namespace=args.namespace, days=args.days,
                         fullname=args.fullname)
    except ValueError as exc:
        parser.error(str(exc))
    names = f" (and {args.fullname}-<name>)" if args.fullname else ""
    print(f"development CA and certificates for {', '.join(NAMES)}{names} in {out}")


if __name__ == "__main__":
    main()
