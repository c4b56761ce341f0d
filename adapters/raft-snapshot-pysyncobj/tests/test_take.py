"""Takes from live clusters: consistent under writes, from the leader and from followers."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest
from cluster import Cluster, Writer, check_consistent, running_cluster, user_state
from pysyncobj.batteries import ReplCounter, ReplDict
from raft_snapshot_pysyncobj import STATE_FORMAT, SnapshotSupport
from raft_snapshot_pysyncobj.state import load_state

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin.archive import read_archive
from raft_snapshot_plugin.manager import get_plugin_manager


def _state_of(snap: rsp.Snapshot) -> dict[str, object]:
    state = io.BytesIO()
    snap.seek(0)
    read_archive(snap, state)
    state.seek(0)
    attributes, _ = load_state(state)
    return attributes


@pytest.mark.parametrize("fork", [True, False], ids=["fork", "tick-thread"])
def test_snapshots_under_writes_are_consistent(fork: bool, snapshot_tmpdir: Path) -> None:
    with running_cluster(3, consumers=lambda: [ReplCounter(), SnapshotSupport(fork=fork)]) as cluster:
        taken = {"leader": 0, "follower": 0}
        with Writer(cluster) as writer:
            deadline = time.monotonic() + 20
            while len(writer.acked) < 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            acked_at_start = len(writer.acked)
            takes_started = time.monotonic()
            round_ = -1
            while round_ < 11 or time.monotonic() - takes_started < 3.0:  # 12 takes, 3 s at least
                round_ += 1
                on_leader = round_ % 2 == 0
                leader = cluster.leader()
                node = leader if on_leader else next(n for n in cluster.running if n is not leader)
                acked_before = list(writer.acked)
                with rsp.take(node, timeout=20) as snap:
                    attributes = _state_of(snap)
                    history = check_consistent(attributes, writer.uncertain)
                    assert snap.meta.state_format == STATE_FORMAT
                    assert snap.meta.index >= len(history)
                    assert snap.stale is not on_leader
                    if on_leader:  # every write acknowledged before the call is in it
                        assert set(acked_before) <= set(history)
                    taken["leader" if on_leader else "follower"] += 1
                time.sleep(0.05)
            assert len(writer.acked) > acked_at_start + 5, "the writes did not keep flowing"
        assert taken["leader"] >= 6 and taken["follower"] >= 6


def test_meta_names_the_entry_and_the_members(cluster: Cluster, snapshot_tmpdir: Path) -> None:
    leader = cluster.leader()
    leader.transfer(0, "acct0", "acct1", 5, sync=True, timeout=10)
    cluster.converged()
    with rsp.take(leader) as snap:
        meta = snap.meta
    assert meta.index == leader.raftLastApplied
    assert meta.term == leader.raftCurrentTerm
    assert sorted(s.address for s in meta.servers) == sorted(cluster.addresses)
    assert meta.peer_addresses == tuple(sorted(cluster.addresses))
    assert meta.backend == "pysyncobj" and meta.backend_version


def test_follower_snapshot_equals_leader_snapshot_at_same_index(
    cluster: Cluster, snapshot_tmpdir: Path
) -> None:
    leader = cluster.leader()
    for seq in range(10):
        leader.transfer(seq, "acct1", "acct2", 1, sync=True, timeout=10)
    cluster.converged()
    with rsp.take(leader) as a, rsp.take(cluster.follower()) as b:
        assert a.meta.index == b.meta.index
        assert _state_of(a) == _state_of(b)
        assert not a.stale and b.stale


def test_node_without_consumers(snapshot_tmpdir: Path) -> None:
    with running_cluster(3, consumers=lambda: []) as cluster:
        leader = cluster.leader()
        leader.put("plain", [1, 2, 3], sync=True, timeout=10)
        cluster.converged()
        with rsp.take(leader) as snap:
            assert _state_of(snap)["plain"] == [1, 2, 3]


def test_consumers_are_captured_and_described(cluster: Cluster, tmp_path: Path,
                                              snapshot_tmpdir: Path) -> None:
    leader = cluster.leader()
    counter = next(c for c in leader._SyncObj__consumers if isinstance(c, ReplCounter))
    kv = next(c for c in leader._SyncObj__consumers if isinstance(c, ReplDict))
    counter.add(41, sync=True, timeout=10)
    for i in range(25):
        kv.set(f"key{i}", "x" * i, sync=True, timeout=10)
    with rsp.take(leader) as snap:
        snap.save(tmp_path / "s.snap")
        state = io.BytesIO()
        read_archive(tmp_path / "s.snap", state)
        state.seek(0)
        _, consumers = load_state(state)
    assert [name.rsplit(".", 1)[-1] for name, _ in consumers] == ["ReplCounter", "ReplDict"]
    stats = {s.name: (s.count, s.sum) for s in rsp.inspect(tmp_path / "s.snap").stats}
    assert stats["accounts"][0] == 10 and stats["history"][0] == 0
    assert stats["ReplDict[1]._ReplDict__data"][0] == 25
    assert stats["ReplCounter[0]._ReplCounter__counter"][0] == 1
    assert "SnapshotSupport" not in " ".join(stats)
    assert user_state(leader)["kv"] == {f"key{i}": "x" * i for i in range(25)}


def test_is_leader_and_take_timeout(cluster: Cluster, snapshot_tmpdir: Path) -> None:
    pm = get_plugin_manager()
    leader = cluster.leader()
    assert pm.is_leader("pysyncobj", leader) is True
    assert pm.is_leader("pysyncobj", cluster.follower()) is False
    assert pm.leader("pysyncobj", cluster.follower()) == leader.selfNode.address
    release, hanging = threading.Event(), threading.Event()

    def hang() -> None:
        hanging.set()
        release.wait(10)

    leader.addOnTickCallback(hang)  # a tick that hangs, holding PySyncObj's callback lock
    try:
        assert hanging.wait(10)
        started = time.monotonic()
        with pytest.raises(rsp.errors.SnapshotTimeoutError):
            rsp.take(leader, timeout=0.5)
        assert time.monotonic() - started < 5  # not the 10 s the tick hangs
    finally:
        release.set()
    assert list(snapshot_tmpdir.iterdir()) == []


@pytest.mark.parametrize("shared", [True, False], ids=["memo", "no-memo"])
@pytest.mark.parametrize("fork", [True, False], ids=["fork", "tick-thread"])
def test_shared_references(fork: bool, shared: bool, snapshot_tmpdir: Path) -> None:
    support = lambda: [SnapshotSupport(fork=fork, shared_references=shared)]  # noqa: E731
    with running_cluster(3, consumers=support) as cluster:
        leader = cluster.leader()
        one_list = [1, 2]
        leader.put("pair", [one_list, one_list], sync=True, timeout=10)
        leader.put("rows", {f"k{i}": (i, f"v{i}") for i in range(2000)}, sync=True, timeout=10)
        with rsp.take(leader) as snap:
            attributes = _state_of(snap)
        assert attributes["rows"] == {f"k{i}": (i, f"v{i}") for i in range(2000)}
        assert attributes["pair"] == [[1, 2], [1, 2]]
        # the memo keeps one list reached twice as one list; without it, two copies
        assert (attributes["pair"][0] is attributes["pair"][1]) is shared

        cycle: list[object] = []
        cycle.append(cycle)
        leader.put("cycle", cycle, sync=True, timeout=10)
        if shared:
            with rsp.take(leader) as snap:
                loop = _state_of(snap)["cycle"]
                assert isinstance(loop, list) and loop[0] is loop
        else:
            with pytest.raises(rsp.errors.BackendError, match="shared_references"):
                rsp.take(leader)
    assert list(snapshot_tmpdir.iterdir()) == []
