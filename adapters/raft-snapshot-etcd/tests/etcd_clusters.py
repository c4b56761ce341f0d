"""Real etcd clusters for the tests: the binaries check and a starter that stops what it started."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from raft_snapshot_etcd import EtcdCluster, EtcdProcesses, NewCluster, start_members

REQUIRE_ENV = "RAFT_SNAPSHOT_REQUIRE_ETCD"
#: Faster elections than etcd's defaults (100 ms / 1000 ms), still safe on a busy 2-core machine.
FAST = ("--heartbeat-interval=50", "--election-timeout=600", "--log-level=warn")
#: The known state of the conformance kit's source cluster.
KNOWN = {f"known/{i:03d}": f"value {i}" for i in range(40)}


def missing_etcd_binaries() -> list[str]:
    """The etcd programs the tests need that are not on PATH."""
    missing = [name for name in ("etcd",) if shutil.which(name) is None]
    if shutil.which("etcdutl") is None and shutil.which("etcdctl") is None:
        missing.append("etcdctl (or etcdutl)")
    return missing


def require_etcd() -> None:
    """Skip (or fail, when ``RAFT_SNAPSHOT_REQUIRE_ETCD`` is set) without the etcd binaries."""
    missing = missing_etcd_binaries()
    if not missing:
        return
    reason = (f"etcd binaries not found on PATH: {', '.join(missing)} "
              "(Debian: apt-get install etcd-server etcd-client)")
    if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
        pytest.fail(f"{reason}; {REQUIRE_ENV} is set, so this is a failure, not a skip")
    pytest.skip(reason)


class Clusters:
    """Starts clusters for one scope and stops every one of them at its end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: dict[NewCluster, EtcdProcesses] = {}
        self._count = 0

    def plan(self, name: str = "c") -> NewCluster:
        self._count += 1
        return NewCluster.on_loopback(3, self.root / f"{name}{self._count}", name=name,
                                      extra_args=FAST)

    def start(self, new: NewCluster) -> EtcdCluster:
        self.running[new] = start_members(new.plan())
        return new.cluster()

    def new(self, name: str = "c") -> EtcdCluster:
        return self.start(self.plan(name))

    def stop_all(self) -> None:
        for procs in self.running.values():
            procs.stop()
        self.running.clear()
