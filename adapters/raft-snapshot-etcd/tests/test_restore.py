"""Offline restore into new 3-member clusters, and starting them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from etcd_clusters import FAST, KNOWN, Clusters
from raft_snapshot_etcd import EtcdCluster, NewCluster, restore_data_dirs, start_members
from test_plugin import Writer

import raft_snapshot_plugin as rsp


def test_restore_into_a_new_cluster_after_a_take_under_writes(
    clusters: Clusters, tmp_path: Path
) -> None:
    """The issue's flow: write keys, take under writes, restore into 3 new members, read back."""
    source = clusters.new("src")
    for key, value in KNOWN.items():
        source.put(key, value)
    writer = Writer(source)
    writer.start()
    try:
        while len(writer.acked) < 30:
            writer.done.wait(0.01)
        before = dict(writer.acked)
        with rsp.take(source) as snap:
            snap.save(tmp_path / "src.snap")
    finally:
        acked = writer.stop()

    target = clusters.plan("dst")
    plan = restore_data_dirs(tmp_path / "src.snap", target.members, data_root=target.data_root,
                             cluster_token=target.cluster_token, extra_args=FAST)
    assert [launch.data_dir.name for launch in plan.launches] == ["dst-0", "dst-1", "dst-2"]
    assert all("--data-dir" in launch.command for launch in plan.launches)
    assert plan.shell().count("\n") == 2
    restored = clusters.start(target)

    assert restored.items("known/") == {k.encode(): v.encode() for k, v in KNOWN.items()}
    written = restored.items("w/")
    assert before.items() <= written.items() <= acked.items()
    # a new cluster (new IDs), the revision kept; it takes writes
    assert restored.status().header.cluster_id != source.status().header.cluster_id
    revision = restored.put("after", "restore")
    assert revision == len(KNOWN) + len(written) + 2
    for endpoint in restored.endpoints:
        assert EtcdCluster(endpoint).items("after") == {b"after": b"restore"}


def test_restore_through_the_core_api(known_cluster: EtcdCluster, tmp_path: Path,
                                      clusters: Clusters) -> None:
    with rsp.take(known_cluster) as snap:
        snap.save(tmp_path / "k.snap")
    target = clusters.plan("api")
    result = rsp.restore(target, tmp_path / "k.snap")
    assert result.meta == rsp.verify(tmp_path / "k.snap")
    # offline: no member runs yet to say it applied the state; the core invents none
    assert result.members is None and result.complete is None
    assert sorted(target.existing_data_dirs()) == ["api-0", "api-1", "api-2"]
    restored = clusters.start(target)
    assert restored.items() == known_cluster.items()
    # once started, each member says which raft index it has applied, named as a take names it
    report = clusters.running[target].members_applied()
    with rsp.take(restored) as snap:
        servers = sorted(s.address for s in snap.meta.servers)
    assert sorted(m.member for m in report.members) == servers
    assert all(m.applied and m.index is not None and m.index > 0 for m in report.members)
    assert report.index is None


def test_a_stopped_member_is_reported_as_not_applied(tmp_path: Path, clusters: Clusters) -> None:
    target = clusters.plan("lag")
    clusters.start(target)
    procs = clusters.running[target]
    procs.processes[2].terminate()
    procs.processes[2].wait(10)
    report = procs.members_applied(timeout=1.0)
    assert [m.applied for m in report.members] == [True, True, False]
    assert report.members[2] == rsp.MemberApplied(target.members[2].peer_url, None, False)
    assert report.waited is not None and report.waited >= 1.0


def test_existing_data_dirs_are_never_overwritten(known_cluster: EtcdCluster, tmp_path: Path,
                                                  clusters: Clusters) -> None:
    with rsp.take(known_cluster) as snap:
        snap.save(tmp_path / "k.snap")
    target = clusters.plan("again")
    rsp.restore(target, tmp_path / "k.snap")
    marker = target.data_root / "again-1" / "member"
    with pytest.raises(rsp.BackendError, match="data dirs exist already") as info:
        rsp.restore(target, tmp_path / "k.snap")
    assert isinstance(info.value.__cause__, FileExistsError)
    assert marker.is_dir()


def test_failed_tool_leaves_nothing(known_cluster: EtcdCluster, tmp_path: Path) -> None:
    """A member whose restore fails (a bad peer URL) leaves no data dir of any member."""
    with rsp.take(known_cluster) as snap:
        snap.save(tmp_path / "k.snap")
    target = NewCluster.on_loopback(3, tmp_path / "bad")
    members = list(target.members)
    members[2] = dataclasses.replace(members[2], peer_url="not a url")
    with pytest.raises(RuntimeError, match="snapshot restore failed"):
        restore_data_dirs(tmp_path / "k.snap", members, data_root=target.data_root,
                          cluster_token="t")
    assert list(target.data_root.iterdir()) == []


def test_bad_archive_never_reaches_etcdctl(tmp_path: Path) -> None:
    (tmp_path / "bad.snap").write_bytes(b"\x1f\x8b not an archive")
    target = NewCluster.on_loopback(3, tmp_path / "t")
    with pytest.raises(rsp.ArchiveError):
        restore_data_dirs(tmp_path / "bad.snap", target.members, data_root=target.data_root,
                          cluster_token="t")
    assert not target.data_root.exists()


def test_start_members_reports_a_member_that_exits(tmp_path: Path, etcd_installed: None) -> None:
    planned = NewCluster.on_loopback(1, tmp_path / "x", extra_args=("--no-such-flag",))
    with pytest.raises(RuntimeError, match="exited"):
        start_members(planned.plan(), wait=10)
    assert "no-such-flag" in planned.plan().launches[0].log_file.read_text()


def test_stop_is_prompt(clusters: Clusters) -> None:
    import time

    planned = clusters.plan("stop")
    procs = start_members(planned.plan())
    started = time.monotonic()
    procs.stop()
    assert time.monotonic() - started < 3
    assert all(p.returncode is not None for p in procs.processes)
