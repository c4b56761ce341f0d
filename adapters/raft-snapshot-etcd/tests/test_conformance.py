"""The conformance kit against real 3-member etcd clusters on 127.0.0.1 (offline restore), the
point-in-time checks included (``raft_snapshot_changes``, ``raft_snapshot_replay``)."""

from __future__ import annotations

from collections.abc import Callable
from itertools import count

import pytest
from etcd_clusters import KNOWN, Clusters
from raft_snapshot_etcd import EtcdCluster

from raft_snapshot_plugin.testing import ConformanceTests

_written = count()


@pytest.fixture(scope="module")
def written_cluster(session_clusters: Clusters) -> EtcdCluster:
    """A cluster of this module's own, holding :data:`KNOWN`: the kit writes to it and compacts
    it, which the quiet ``known_cluster`` other tests count on must never see."""
    cluster = session_clusters.new("kit")
    for key, value in KNOWN.items():
        cluster.put(key, value)
    return cluster


class TestConformance(ConformanceTests):
    backend = "etcd"
    restore_is_offline = True

    @pytest.fixture
    def snapshot_node(self, written_cluster: EtcdCluster) -> EtcdCluster:
        return written_cluster

    @pytest.fixture
    def snapshot_write(self) -> Callable[[EtcdCluster, int], None]:
        def write(node: EtcdCluster, number: int) -> None:
            for _ in range(number):
                i = next(_written)
                node.put(f"kit/{i % 4}", f"write {i}")  # overwrites too, not only new keys

        return write

    @pytest.fixture
    def snapshot_compact(self) -> Callable[[EtcdCluster], int]:
        def compact(node: EtcdCluster) -> int:
            revision = node.put("kit/compacted", "here")
            with node.connect() as conn:
                conn.compact(revision)
            return revision

        return compact
