"""Schema migrations of the services' stores, run on their own: ``loopwise migrate`` or
``python -m loopwise.store.migrate [service ...]`` (the Helm chart's pre-install and
pre-upgrade Job). Each service's Cassandra store gets the CQL files of
``lib/loopwise/store/cql/<service>/`` it has not applied yet; the services, started with
``LOOPWISE_STORE_MIGRATE_ON_START=false``, then only check that the schema is there.
SQLite stores need nothing: a service applies its SQLite schema when it opens the file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from loopwise.settings import SERVICES, Settings
from loopwise.store.cassandra import CassandraConnection, CassandraUrl
from loopwise.store.cassandra_support import CQL_DIR


def migrate(settings: Settings, services: Sequence[str] = SERVICES) -> dict[str, list[str] | None]:
    """Apply the pending migrations of each service's store; returns, per service, the
    versions applied now (empty when it was up to date), or None for a SQLite store."""
    applied: dict[str, list[str] | None] = {}
    for service in services:
        if service not in SERVICES:
            raise ValueError(f"service must be one of {', '.join(SERVICES)}, not {service!r}")
        url = settings.store_url(service)  # type: ignore[arg-type]
        if not url.startswith("cassandra://"):
            applied[service] = None
            continue
        conn = CassandraConnection(CassandraUrl.parse(url))
        try:
            applied[service] = conn.apply_migrations(service, CQL_DIR / service)
        finally:
            conn.close()
    return applied


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m loopwise.store.migrate``: one JSON line per service."""
    parser = argparse.ArgumentParser(prog="python -m loopwise.store.migrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("services", nargs="*", metavar="service",
                        help=f"services whose stores to migrate (default: all of {', '.join(SERVICES)})")
    args = parser.parse_args(argv)
    unknown = [s for s in args.services if s not in SERVICES]
    if unknown:
        parser.error(f"service must be one of {', '.join(SERVICES)}, not {', '.join(unknown)}")
    for service, versions in migrate(Settings(), args.services or SERVICES).items():
        print(json.dumps({"service": service, "store": "sqlite" if versions is None else "cassandra",
                          "applied": versions or []}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
