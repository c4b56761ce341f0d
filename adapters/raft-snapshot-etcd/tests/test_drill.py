"""Restore drills of etcd snapshots: ``restore_data_dirs``' path into one started member under the
drill's private folder (``raft_snapshot_drill``), through ``operations.drill`` and the agent."""

from __future__ import annotations

from pathlib import Path

import pytest
from etcd_clusters import KNOWN
from raft_snapshot_etcd import EtcdCluster

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin.agent import Agent, object_name
from raft_snapshot_plugin.errors import StateRejectedError
from raft_snapshot_plugin.operations import drill


def test_a_snapshot_of_a_real_cluster_restores_in_a_drill(known_cluster: EtcdCluster,
                                                          tmp_path: Path) -> None:
    with rsp.take(known_cluster) as snap:
        snap.save(tmp_path / "etcd.snap")
    report = drill(tmp_path / "etcd.snap", timeout=120)
    expected = {s.name: s.count for s in report.expected}
    restored = {s.name: s.count for s in report.restored}
    assert restored["revision"] == expected["revision"] > 0
    assert restored["keys (live)"] == len(KNOWN)


def test_the_agents_drill_of_a_bad_state_fails_and_flips_health(known_cluster: EtcdCluster,
                                                                tmp_path: Path) -> None:
    store = tmp_path / "store"
    agent = Agent(known_cluster, str(store), stale=True, backoff=0.0, drill_timeout=120.0)
    assert agent.run_once() is not None
    assert agent.drill().report.meta.backend == "etcd"
    assert agent.status().healthy
    meta = rsp.SnapshotMeta(index=10**6, term=1, backend="etcd", state_format="etcd-snapshot/3.5")
    with rsp.Snapshot.create(meta, b"not a bolt database, no trailing hash") as bad:
        bad.save(store / object_name(agent.clock() + 60, meta.index))
    with pytest.raises(StateRejectedError):
        agent.drill()
    assert agent.status().last_drill_ok is False and not agent.status().healthy
