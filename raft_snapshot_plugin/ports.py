"""Free TCP ports on 127.0.0.1 for the local clusters of demos, drills and tests.

A port the kernel picks with ``bind(("127.0.0.1", 0))`` comes from the range it also gives
outgoing connections their local ports from. Between the pick and the bind, any process's
connection (a cluster's nodes reconnecting, an HTTP client) can take it, and the bind then fails.
So ports are drawn from below that range, where no outgoing connection lands, and never twice
in one process. Concurrent processes (pytest-xdist workers, started one after the other) draw
from different slices of it, chosen by their pid, so they rarely pick a port another is about to
bind; a port something already holds is skipped.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from pathlib import Path

__all__ = ["free_ports"]

_LOWEST = 10_000
_SLICES = 8
_LOCAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")

_lock = threading.Lock()
_given: set[int] = set()


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 now, none handed out before by this process.

    Free when asked: bind them soon. Where the kernel's range for outgoing connections is not
    known (not Linux), or the ports below it run out, the kernel picks.
    """
    with _lock:
        candidates = [p for p in _slice() if p not in _given]
        random.shuffle(candidates)
        chosen = _bindable(candidates, count)
        if len(chosen) < count:
            chosen += _kernel_picks(count - len(chosen))
        _given.update(chosen)
        return chosen


def _slice() -> range:
    """This process's share of the ports below the kernel's range for outgoing connections."""
    try:
        low = int(_LOCAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return range(0)
    width = (low - _LOWEST) // _SLICES
    if width < 64:
        return range(0)
    start = _LOWEST + width * (os.getpid() % _SLICES)
    return range(start, start + width)


def _bindable(candidates: list[int], count: int) -> list[int]:
    chosen: list[int] = []
    for port in candidates:
        if len(chosen) == count:
            break
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.append(port)
    return chosen


def _kernel_picks(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
