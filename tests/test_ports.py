"""free_ports: ports no outgoing connection can take between the pick and the bind."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from raft_snapshot_plugin import ports as ports_module
from raft_snapshot_plugin.ports import free_ports


def test_ports_are_distinct_across_calls_and_bindable() -> None:
    first, second = free_ports(20), free_ports(20)
    assert len(set(first + second)) == 40
    for port in first + second:
        with socket.create_server(("127.0.0.1", port)):
            pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's range is Linux's")
def test_ports_lie_below_the_range_outgoing_connections_use() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(port < low for port in free_ports(50))


def test_a_port_something_holds_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.create_server(("127.0.0.1", 0)) as held:
        taken = held.getsockname()[1]
        monkeypatch.setattr(ports_module, "_slice", lambda: range(taken, taken + 1))
        monkeypatch.setattr(ports_module, "_given", set())
        # The only candidate is held, so the kernel picks both.
        ports = free_ports(2)
    assert taken not in ports and len(set(ports)) == 2
