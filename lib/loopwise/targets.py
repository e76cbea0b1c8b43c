"""Where a channel connects, and how it spreads calls (docs/operations.md, "Client
targets").

A service address given to the SDK or to another service can be:

- ``host:port``: one name; every address it resolves to is used, round robin (a
  Kubernetes ClusterIP Service resolves to one virtual address);
- ``dns:///host:port``: the same, explicitly; with a headless Service
  (``dns:///<fullname>-decision-headless.<namespace>.svc:50051``) the name resolves to
  every ready pod, is re-resolved when a connection closes, and calls go round robin
  over the pods;
- several addresses, as a list or comma-separated (``10.0.0.5:50051,10.0.0.6:50051``):
  one channel over all of them, round robin. Host names in a list are resolved once,
  when the channel is made; with TLS every server of a list must present a
  certificate for the first entry's host (or for ``LOOPWISE_TLS_SERVER_NAME``);
- any other gRPC target with its scheme (``ipv4:``, ``ipv6:``, ``unix:`` …), used as is
  (round robin for ``ipv4:`` and ``ipv6:``).

Servers close connections after ``LOOPWISE_MAX_CONNECTION_AGE_S`` (the decision
service), so long-lived clients re-resolve and reach replicas added since; both ends
send keepalive pings (``LOOPWISE_KEEPALIVE_TIME_S``) so that a dead peer is noticed.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Sequence
from typing import Any

from loopwise.settings import Settings

# The gRPC service config that spreads calls over every address of a target.
ROUND_ROBIN = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
_SCHEMES_SPREAD = ("dns:", "ipv4:", "ipv6:")
_SCHEMES = (*_SCHEMES_SPREAD, "unix:", "unix-abstract:", "vsock:", "xds:", "google-c2p:")

Address = str | Sequence[str]


def split_addresses(address: Address) -> list[str]:
    """The entries of an address: a list as given, a string split at commas (a
    target with its scheme, such as ``ipv4:a:1,b:2``, is one entry)."""
    if isinstance(address, str) and address.strip().startswith(_SCHEMES):
        return [address.strip()]
    parts = [address] if isinstance(address, str) else list(address)
    out = [p.strip() for part in parts for p in part.split(",")]
    out = [p for p in out if p]
    if not out:
        raise ValueError("no address given")
    return out


def _host_port(entry: str) -> tuple[str, int]:
    host, sep, port = entry.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{entry!r} is not host:port")
    return host.strip("[]"), int(port)


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    literal = _literal(host)
    if literal is not None:
        return [literal]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def _static_target(entries: list[str]) -> str:
    """An ``ipv4:`` (or ``ipv6:``) target listing every entry's address."""
    resolved = []
    for entry in entries:
        host, port = _host_port(entry)
        addresses = _resolve(host, port)
        if not addresses:
            raise ValueError(f"{host!r} resolves to no address")
        resolved.append((addresses, port, entry))
    for version, scheme in ((4, "ipv4:"), (6, "ipv6:")):
        picked = []
        for addresses, port, _ in resolved:
            of_version = [a for a in addresses if a.version == version]
            if not of_version:
                break
            a = of_version[0]
            picked.append(f"{a}:{port}" if version == 4 else f"[{a}]:{port}")
        else:
            return scheme + ",".join(picked)
    raise ValueError(f"the addresses {entries} mix IPv4 and IPv6 hosts; give one family, or one "
                     "dns:///host:port name that resolves to all of them")


def channel_target(settings: Settings, address: Address) -> tuple[str, list[tuple[str, Any]]]:
    """The gRPC target of ``address`` and the channel options it needs: round robin
    over its addresses, client keepalive and, for a list, the authority (its first
    host) that TLS verifies."""
    entries = split_addresses(address)
    options: list[tuple[str, Any]] = keepalive_options(settings)
    if len(entries) > 1:
        target = _static_target(entries)
        options.append(("grpc.default_authority", entries[0]))
    else:
        target = entries[0]
    if target.startswith(_SCHEMES_SPREAD) or _plain(target):
        options.append(("grpc.service_config", ROUND_ROBIN))
    return target, options


def _plain(target: str) -> bool:
    """``host:port`` without a scheme (gRPC resolves it by DNS)."""
    if target.startswith(_SCHEMES):
        return False
    try:
        _host_port(target)
    except ValueError:
        return False
    return True


def keepalive_options(settings: Settings) -> list[tuple[str, Any]]:
    """Keepalive of a client channel, matching what servers allow (loopwise.server)."""
    return [
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
