"""``raft-snapshot demo --serve``: something to try the command line against.

The in-memory reference cluster (:mod:`raft_snapshot_plugin.memory`: three nodes, a leader and two
followers, a few keys), each node serving the snapshot endpoint on 127.0.0.1 with one random token,
until Ctrl-C or SIGTERM. Its first line on stdout is the ``export`` line to paste.
"""

from __future__ import annotations

import secrets
import signal
import sys
import threading
from typing import Any

import click

from ..manager import get_plugin_manager
from ..memory import MEMORY_BACKEND, MemoryCluster, MemoryPlugin

#: Keys the demo's leader writes at start, under two prefixes (for ``inspect --detail``).
DEMO_KEYS = 20


def serve_demo() -> int:
    """Serve the demo cluster until SIGINT or SIGTERM; return the exit status (0)."""
    try:
        from ..endpoint import serve
    except ImportError as exc:
        raise click.ClickException("the demo's endpoints need the 'server' extra: pip install "
                                   "'.[server]' in raft-snapshot-plugin's folder") from exc
    manager = get_plugin_manager(load_entrypoints=False)
    manager.register(MemoryPlugin(), name=MEMORY_BACKEND)
    cluster = MemoryCluster(3, name="demo")
    for i in range(DEMO_KEYS):
        cluster.nodes[0].set(f"{('users', 'orders')[i % 2]}/{i:03d}", f"value {i}")
    token = secrets.token_urlsafe(18)
    servers: list[Any] = []
    try:
        servers += [serve(node, token=token, manager=manager) for node in cluster.nodes]
        _explain([s.url for s in servers], token)
        _wait_for_a_signal()
    finally:
        for server in servers:
            server.close()
    click.echo("raft-snapshot demo: stopped", err=True)
    return 0


def _explain(urls: list[str], token: str) -> None:
    click.echo(f"export RAFT_SNAPSHOT_ADDR={urls[0]} RAFT_SNAPSHOT_TOKEN={token}")
    click.echo(f"# a 3-node in-memory cluster: leader {urls[0]}, followers {urls[1]} and "
               f"{urls[2]}; Ctrl-C stops it. Try:")
    for line in ("raft-snapshot save backup.snap",
                 "raft-snapshot verify backup.snap && raft-snapshot inspect backup.snap",
                 f"raft-snapshot save stale.snap --addr {urls[1]} --stale",
                 "raft-snapshot restore backup.snap"):
        click.echo(f"  {line}")
    sys.stdout.flush()


def _wait_for_a_signal() -> None:
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
