"""Fixtures for the etcd adapter's tests, and the conformance kit's (offline-restore flavour).

Every cluster is real: 3 etcd members on 127.0.0.1, free ports, data dirs under pytest's tmp path,
stopped at teardown (SIGTERM, then SIGKILL by PID). Without the etcd binaries the tests skip with
the reason; with ``RAFT_SNAPSHOT_REQUIRE_ETCD=1`` (tox's etcd envs set it) they fail instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from etcd_clusters import KNOWN, Clusters, require_etcd
from raft_snapshot_etcd import EtcdCluster, NewCluster

if TYPE_CHECKING:
    from raft_snapshot_plugin.testing import S3Server

pytest_plugins = ["raft_snapshot_plugin.testing"]


@pytest.fixture(scope="session")
def etcd_installed() -> None:
    require_etcd()


@pytest.fixture
def clusters(etcd_installed: None, tmp_path: Path) -> Iterator[Clusters]:
    c = Clusters(tmp_path)
    try:
        yield c
    finally:
        c.stop_all()


@pytest.fixture(scope="session")
def session_clusters(etcd_installed: None, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[Clusters]:
    c = Clusters(tmp_path_factory.mktemp("etcd"))
    try:
        yield c
    finally:
        c.stop_all()


@pytest.fixture(scope="session")
def known_cluster(session_clusters: Clusters) -> EtcdCluster:
    """A quiet cluster holding :data:`KNOWN`; nobody writes to it after this fixture."""
    cluster = session_clusters.new("known")
    for key, value in KNOWN.items():
        cluster.put(key, value)
    return cluster


@pytest.fixture
def s3() -> Iterator[S3Server]:
    """moto's S3 server, one per test (the tests store under fixed prefixes), with a bucket
    ``pitr``."""
    from raft_snapshot_plugin.testing import S3Server  # here: the kit loads as a plugin first

    with S3Server() as server:
        server.create_bucket("pitr")
        yield server


# --- the conformance kit's fixtures ------------------------------------------------------------------

@pytest.fixture
def snapshot_node(known_cluster: EtcdCluster) -> EtcdCluster:
    return known_cluster


@pytest.fixture
def snapshot_fresh_node(clusters: Clusters) -> NewCluster:
    """A planned cluster: the restore builds its data dirs, ``snapshot_start_restored`` starts it."""
    return clusters.plan("fresh")


@pytest.fixture
def snapshot_start_restored(clusters: Clusters) -> Callable[[Any], None]:
    def start(node: NewCluster) -> None:
        clusters.start(node)

    return start


@pytest.fixture
def snapshot_read_state(clusters: Clusters) -> Callable[[Any], Any]:
    """A running cluster's keys and values; for a planned one, which data dirs exist."""

    def read(node: EtcdCluster | NewCluster) -> Any:
        if isinstance(node, NewCluster):
            if node not in clusters.running:
                return ("not started", tuple(node.existing_data_dirs()))
            node = node.cluster()
        return node.items()

    return read
