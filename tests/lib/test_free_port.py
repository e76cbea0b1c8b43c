"""Ports handed to test servers stay clear of the kernel's ephemeral range."""

from __future__ import annotations

import socket

from loopwise.launcher import _ephemeral_port_range, free_port


def test_ports_are_outside_the_ephemeral_range_unique_and_bindable() -> None:
    low, high = _ephemeral_port_range()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(not low <= port <= high for port in ports), [p for p in ports if low <= p <= high]
    for port in ports[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_port_zero_binds_never_land_on_a_handed_out_port() -> None:
    handed_out = {free_port() for _ in range(50)}
    kernel_chosen = []
    sockets = []
    try:
        for _ in range(200):
            sock = socket.socket()
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
            kernel_chosen.append(sock.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
    assert handed_out.isdisjoint(kernel_chosen)
