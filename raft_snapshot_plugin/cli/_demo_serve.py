"""``raft-snapshot demo --keep-running``: a cluster to try the command line against.

Three nodes, each serving the snapshot endpoint on 127.0.0.1 with one random token, until Ctrl-C
or SIGTERM, which stop everything. The cluster is an adapter's when one offers it under the
entry-point group :data:`DEMO_CLUSTER_GROUP` (the PySyncObj adapter does: three real nodes), else
the in-memory reference cluster (:mod:`raft_snapshot_plugin.memory`). Its first line on stdout
is the ``export`` line to paste.

An adapter's entry point is a context manager factory: entered, it has started its nodes and
their endpoints and yields ``(endpoint URLs, the leader's first; the token; a description)``;
left, it has stopped all of them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any

import click

from ..manager import DISABLE_ENV, get_plugin_manager
from ..memory import MEMORY_BACKEND, MemoryCluster, MemoryPlugin

#: The entry-point group of the adapters' demo clusters: ``name = "module:factory"``.
DEMO_CLUSTER_GROUP = "raft_snapshot.demo_cluster"
#: Keys the demo's leader writes at start, under two prefixes (for ``inspect --detail``).
DEMO_KEYS = 20

DemoCluster = Callable[[], contextlib.AbstractContextManager[tuple[list[str], str, str]]]


def offered_clusters() -> dict[str, Any]:
    """The adapters' demo clusters by backend name, those switched off left out."""
    blocked = {name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",")}
    return {ep.name: ep for ep in entry_points(group=DEMO_CLUSTER_GROUP) if ep.name not in blocked}


def keep_running(backend: str | None) -> int:
    """Serve the demo cluster until SIGINT or SIGTERM; return the exit status (0).

    :param backend: whose cluster (``memory``, or an adapter offering one); ``None``: PySyncObj's
        when offered, else the in-memory one.
    """
    try:
        from .. import endpoint  # noqa: F401  (the 'server' extra: checked before anything starts)
    except ImportError as exc:
        raise click.ClickException("the demo's endpoints need the 'server' extra: pip install "
                                   "'.[server]' in raft-snapshot-plugin's folder") from exc
    offered = offered_clusters()
    name = backend or ("pysyncobj" if "pysyncobj" in offered else MEMORY_BACKEND)
    if name == MEMORY_BACKEND:
        factory: DemoCluster = memory_cluster
    elif name in offered:
        factory = offered[name].load()
    else:
        choices = ", ".join(sorted({MEMORY_BACKEND, *offered}))
        raise click.BadParameter(f"no demo cluster for {name!r} (offered: {choices})",
                                 param_hint="'--backend'")
    with factory() as (urls, token, what):
        _explain(urls, token, what)
        _wait_for_a_signal()
    click.echo("raft-snapshot demo: stopped", err=True)
    return 0


@contextlib.contextmanager
def memory_cluster() -> Iterator[tuple[list[str], str, str]]:
    """The in-memory reference cluster, three nodes serving the endpoint."""
    from ..endpoint import serve

    manager = get_plugin_manager(load_entrypoints=False)
    manager.register(MemoryPlugin(), name=MEMORY_BACKEND)
    cluster = MemoryCluster(3, name="demo")
    for i in range(DEMO_KEYS):
        cluster.nodes[0].set(f"{('users', 'orders')[i % 2]}/{i:03d}", f"value {i}")
    token = secrets.token_urlsafe(18)
    with contextlib.ExitStack() as servers:
        urls = [servers.enter_context(serve(node, token=token, manager=manager)).url
                for node in cluster.nodes]
        yield urls, token, "a 3-node in-memory cluster"


def _explain(urls: list[str], token: str, what: str) -> None:
    click.echo(f"export RAFT_SNAPSHOT_ADDR={urls[0]} RAFT_SNAPSHOT_TOKEN={token}")
    click.echo(f"# {what}: leader {urls[0]}, followers {' and '.join(urls[1:])}; Ctrl-C stops "
               "it. Try:")
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
