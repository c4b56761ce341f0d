"""``raft-snapshot demo``: the whole product on one machine, in well under a minute.

It starts a real 3-node PySyncObj cluster on free 127.0.0.1 ports, writes to it, serves the
snapshot endpoint on every node, saves a snapshot through the leader's endpoint, verifies and
inspects it, restores it through the endpoint into a second, fresh 3-node cluster, checks every
node's state, prints a short report and stops everything it started.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, replicated

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin.client import Client
from raft_snapshot_plugin.endpoint import serve
from raft_snapshot_plugin.ports import free_ports

from .support import SnapshotSupport

__all__ = ["DemoStore", "demo_cluster", "run_demo"]

_WAIT = 20.0


class DemoStore(SyncObj):  # type: ignore[misc]
    """A replicated key/value store: the application a user would write."""

    def __init__(self, address: str, partners: list[str], password: str, **conf: Any) -> None:
        # The deployment rule: a password (only members join and append) and private addresses
        # (loopback here). Without a password any process reaching the port could join.
        options = {"dynamicMembershipChange": False, "connectionTimeout": 5.0, **conf}
        super().__init__(address, partners, conf=SyncObjConf(password=password, **options),
                         consumers=[SnapshotSupport()])
        # After SyncObj's __init__ (what it sets is left out of dumps), and without overwriting
        # what a fullDumpFile loaded on the tick thread in the meantime.
        self.data: dict[str, str] = self.__dict__.setdefault("data", {})

    @replicated  # type: ignore[untyped-decorator]
    def put_many(self, items: dict[str, str]) -> int:
        self.data.update(items)
        return len(self.data)


@contextlib.contextmanager
def _cluster(size: int = 3) -> Iterator[list[DemoStore]]:
    addresses = [f"127.0.0.1:{p}" for p in free_ports(size)]
    password = secrets.token_hex(16)  # one secret per cluster, shared by its members
    nodes: list[DemoStore] = []
    try:
        for address in addresses:
            nodes.append(DemoStore(address, [a for a in addresses if a != address], password))
        yield nodes
    finally:
        for node in nodes:
            thread = node._SyncObj__thread
            node.destroy()
            if thread is not None:
                thread.join(_WAIT)


def _leader(nodes: list[DemoStore]) -> DemoStore:
    deadline = time.monotonic() + _WAIT
    while time.monotonic() < deadline:
        for node in nodes:
            if node._isLeader():
                return node
        time.sleep(0.02)
    raise TimeoutError("no leader was elected")


def _converged(nodes: list[DemoStore], expected: dict[str, str]) -> bool:
    deadline = time.monotonic() + _WAIT
    while time.monotonic() < deadline:
        if all(node.data == expected for node in nodes):
            return True
        time.sleep(0.02)
    return False


@contextlib.contextmanager
def demo_cluster() -> Iterator[tuple[list[str], str, str]]:
    """A 3-node cluster holding a few keys, every node serving the endpoint with one random
    token, for ``raft-snapshot demo --keep-running``: yields (the endpoint URLs, the leader's
    first; the token; a description); everything is stopped when the block ends."""
    token = secrets.token_urlsafe(18)
    with _cluster() as nodes, contextlib.ExitStack() as servers:
        leader = _leader(nodes)
        leader.put_many({f"{('users', 'orders')[i % 2]}/{i:03d}": f"value {i}" for i in range(20)},
                        sync=True, timeout=_WAIT)
        urls = {node.selfNode.address: servers.enter_context(serve(node, token=token)).url
                for node in nodes}
        first = leader.selfNode.address
        yield ([urls[first], *(url for address, url in urls.items() if address != first)], token,
               f"a 3-node PySyncObj cluster (Raft {', '.join(urls)})")


def run_demo(echo: Callable[[str], Any] = print, *, keys: int = 5000) -> bool:
    """Run the demo; return whether every check passed."""
    started = time.monotonic()
    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="raft-snapshot-demo-") as folder, \
            _cluster() as source, contextlib.ExitStack() as servers:
        archive = Path(folder) / "demo.snap"
        leader = _leader(source)
        echo(f"source cluster: {', '.join(n.selfNode.address for n in source)}; "
             f"leader {leader.selfNode.address}")
        for batch in range(0, keys, 500):
            leader.put_many({f"key{i:05d}": f"value {i} " * 4 for i in range(batch, batch + 500)},
                            sync=True, timeout=_WAIT)
        expected = dict(leader.data)
        echo(f"wrote {len(expected)} keys through the leader")
        endpoints = {n.selfNode.address: servers.enter_context(serve(n, token=token))
                     for n in source}
        url = endpoints[leader.selfNode.address].url
        t0 = time.monotonic()
        meta = Client(url, token).save(archive)
        echo(f"saved {archive.name} through {url}/v1/snapshot: index {meta.index}, term "
             f"{meta.term}, {archive.stat().st_size} bytes ({time.monotonic() - t0:.2f} s)")
        verified = rsp.verify(archive)
        echo(f"verified: SHA-256 sums match, ID {verified.id}, state {verified.size} bytes")
        for row in rsp.inspect(archive).stats:
            echo(f"inspect: {row.name}: {row.count} items, {row.sum} bytes")
        with _cluster() as target:
            target_leader = _leader(target)
            target_leader.put_many({"stale": "state of the fresh cluster"}, sync=True,
                                   timeout=_WAIT)
            with serve(target_leader, token=token) as endpoint:
                t0 = time.monotonic()
                result = Client(endpoint.url, token).restore(archive)
                echo(f"restored into a fresh cluster through {endpoint.url}/v1/snapshot "
                     f"({time.monotonic() - t0:.2f} s), committed at index {result.index}")
            for line in result.lines():
                echo(f"restore: {line}")
            ok = _converged(target, expected) and bool(result.complete)
            echo(f"every node of the fresh cluster holds the {len(expected)} keys: "
                 f"{'yes' if ok else 'NO'}")
    echo(f"demo {'passed' if ok else 'FAILED'} in {time.monotonic() - started:.1f} s; "
         "everything it started is stopped")
    return ok
