"""Fixtures for the PySyncObj adapter's tests, and the conformance kit's."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from cluster import WAIT, Bank, Cluster, fill, put_note, running_cluster, user_state
from raft_snapshot_pysyncobj._node import log_start
from raft_snapshot_pysyncobj.support import find_support

if TYPE_CHECKING:
    from raft_snapshot_plugin.testing import S3Server


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with running_cluster(3) as c:
        yield c


@pytest.fixture
def other_cluster() -> Iterator[Cluster]:
    with running_cluster(3) as c:
        yield c


@pytest.fixture(scope="module")
def s3(snapshot_s3: S3Server) -> S3Server:
    """The kit's moto S3 server (one per test module)."""
    return snapshot_s3


@pytest.fixture
def snapshot_node(cluster: Cluster) -> Bank:
    fill(cluster, 20, {"text": "known state", "tags": {"a", "b"}})
    return cluster.leader()


@pytest.fixture
def snapshot_fresh_node(other_cluster: Cluster) -> Bank:
    put_note(other_cluster, "the old state")
    other_cluster.converged()
    return other_cluster.follower()


@pytest.fixture
def snapshot_read_state(cluster: Cluster, other_cluster: Cluster) -> Callable[[Any], Any]:
    """The states of every node of the node's cluster, once they have converged."""

    def read(node: Bank) -> Any:
        owner = cluster if node in cluster.running else other_cluster
        states = owner.states()
        assert all(s == states[0] for s in states), "the nodes disagree"
        return states[0]

    return read


@pytest.fixture
def snapshot_write(cluster: Cluster) -> Callable[[Any, int], None]:
    """Commit ``count`` transfers through the node's cluster (the node leads)."""

    def write(node: Bank, count: int) -> None:
        fill(cluster, count, start=len(node.history))

    return write


@pytest.fixture
def snapshot_compact(cluster: Cluster) -> Callable[[Any], int]:
    """Shrink the node's capture buffer to its last entry and compact its journal: what it applied
    before is then held by neither. Returns the last index compacted away."""

    def compact(node: Bank) -> int:
        support = find_support(node)
        assert support is not None
        support.capture.max_bytes = 1
        applied = node.raftLastApplied
        for seq in range(3):
            node.put("compacted", seq, sync=True, timeout=10)
        node.forceLogCompaction()
        deadline = time.monotonic() + WAIT
        while log_start(node) <= applied:
            assert time.monotonic() < deadline, "the journal was not compacted"
            node.forceLogCompaction()
            time.sleep(0.05)
        cluster.converged()
        return log_start(node) - 1

    return compact


pytest_plugins = ["raft_snapshot_plugin.testing"]

__all__ = ["user_state"]
