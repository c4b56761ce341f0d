"""Fixtures for the PySyncObj adapter's tests, and the conformance kit's."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cluster import Bank, Cluster, running_cluster, transfer_args, user_state


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with running_cluster(3) as c:
        yield c


@pytest.fixture
def other_cluster() -> Iterator[Cluster]:
    with running_cluster(3) as c:
        yield c


@pytest.fixture
def snapshot_node(cluster: Cluster) -> Bank:
    leader = cluster.leader()
    for seq in range(20):
        leader.transfer(seq, *transfer_args(seq), sync=True, timeout=10)
    leader.put("note", {"text": "known state", "tags": {"a", "b"}}, sync=True, timeout=10)
    cluster.converged()
    return leader


@pytest.fixture
def snapshot_fresh_node(other_cluster: Cluster) -> Bank:
    other_cluster.leader().put("note", "the old state", sync=True, timeout=10)
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


pytest_plugins = ["raft_snapshot_plugin.testing"]

__all__ = ["user_state"]
