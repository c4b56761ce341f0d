"""The hooks against real clusters: take under writes, inspect, leadership, refusals."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from etcd_clusters import KNOWN, Clusters
from raft_snapshot_etcd import EtcdCluster, NewCluster, snapshot_status

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin.manager import get_plugin_manager
from raft_snapshot_plugin.testing import _state_bytes


class Writer(threading.Thread):
    """Writes ``w/<n>`` keys as fast as the cluster takes them, until stopped."""

    def __init__(self, cluster: EtcdCluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.acked: dict[bytes, bytes] = {}
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.cluster.connect() as conn:
                n = 0
                while not self.done.is_set():
                    key, value = f"w/{n:06d}".encode(), f"value {n}".encode()
                    conn.put(key, value)
                    self.acked[key] = value
                    n += 1
        except BaseException as exc:  # reported by the test
            self.error = exc

    def stop(self) -> dict[bytes, bytes]:
        self.done.set()
        self.join(10)
        assert self.error is None, self.error
        return dict(self.acked)


def test_take_under_writes(clusters: Clusters, tmp_path: Path) -> None:
    cluster = clusters.new("busy")
    writer = Writer(cluster)
    writer.start()
    try:
        while len(writer.acked) < 50:
            writer.done.wait(0.01)
        before = dict(writer.acked)
        with rsp.take(cluster) as snap:
            snap.save(tmp_path / "busy.snap")
            meta = snap.meta
            state = _state_bytes(snap)
    finally:
        acked = writer.stop()
    assert len(acked) > len(before), "the writes did not go on during the take"
    assert meta.backend == "etcd" and meta.state_format == "etcd-snapshot/3.4"
    assert meta.term >= 1
    planned = next(iter(clusters.running))  # etcd lists members by ID: compare as mappings
    assert {s.id: s.address for s in meta.servers} == {m.name: m.peer_url for m in planned.members}
    assert rsp.verify(tmp_path / "busy.snap") == meta
    (tmp_path / "state.db").write_bytes(state)
    status = snapshot_status(tmp_path / "state.db")
    # every write acknowledged before the take is in it; the revision counts the writes in it
    assert len(before) + 1 <= status.revision <= len(acked) + 1
    # the index is the exact revision the database holds (writes raced the take: read from it)
    assert meta.index == status.revision


def test_inspect_shows_revision_keys_and_size(known_cluster: EtcdCluster, tmp_path: Path) -> None:
    with rsp.take(known_cluster) as snap:
        snap.save(tmp_path / "known.snap")
    found = rsp.inspect(tmp_path / "known.snap").to_dict()
    stats = {row["Name"]: (row["Count"], row["Sum"]) for row in found["Stats"]}
    keys, size = stats["keys (etcd totalKey)"]
    assert stats["revision"] == (len(KNOWN) + 1, 0)
    assert keys >= len(KNOWN) and size > 0
    assert size == found["Meta"]["Size"] - 32  # the database; the stream adds its SHA-256


def test_is_leader_and_leader(known_cluster: EtcdCluster) -> None:
    pm = get_plugin_manager()
    answers = [pm.is_leader("etcd", EtcdCluster(ep)) for ep in known_cluster.endpoints]
    assert answers.count(True) == 1
    leader = pm.leader("etcd", known_cluster)
    with rsp.take(known_cluster) as snap:
        servers = snap.meta.servers
    by_name = {s.id: s.address for s in servers}
    assert leader == by_name[f"known-{answers.index(True)}"]  # endpoint i is member known-i
    for ep, leads in zip(known_cluster.endpoints, answers, strict=True):
        with rsp.take(EtcdCluster(ep), manager=pm) as snap:
            assert snap.stale is not leads


def test_live_restore_refused_clearly(known_cluster: EtcdCluster, tmp_path: Path) -> None:
    with rsp.take(known_cluster) as snap:
        snap.save(tmp_path / "s.snap")
    with pytest.raises(rsp.BackendError, match="cannot restore a running cluster in place") as info:
        rsp.restore(known_cluster, tmp_path / "s.snap")
    assert "restore_data_dirs" in str(info.value) and info.value.backend == "etcd"
    assert known_cluster.items("known/") == {k.encode(): v.encode() for k, v in KNOWN.items()}


def test_planned_cluster_cannot_be_snapshotted(tmp_path: Path) -> None:
    planned = NewCluster.on_loopback(3, tmp_path / "planned")
    with pytest.raises(rsp.BackendError, match="planned cluster"):
        rsp.take(planned)


def test_unreachable_cluster_fails_in_time(tmp_path: Path) -> None:
    from raft_snapshot_plugin.ports import free_ports

    with pytest.raises(rsp.BackendError, match=r"UNAVAILABLE|Status"):
        rsp.take(EtcdCluster(f"http://127.0.0.1:{free_ports(1)[0]}", timeout=1.0))
