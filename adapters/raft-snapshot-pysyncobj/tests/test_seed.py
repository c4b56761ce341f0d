"""Offline seeding: a new cluster, every node seeded from one archive, starts at its state."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import pytest
from cluster import Cluster, fill, running_cluster, transfer_args, user_state
from raft_snapshot_pysyncobj import UnsafePickleError, seed

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin import ArchiveError


def _archive(cluster: Cluster, path: Path) -> rsp.SnapshotMeta:
    fill(cluster, 30, {"seeded": True})
    with rsp.take(cluster.leader()) as snap:
        snap.save(path)
        return snap.meta


@pytest.mark.parametrize("journal", [False, True], ids=["memory-journal", "file-journal"])
def test_seeded_cluster_starts_at_the_snapshot(cluster: Cluster, tmp_path: Path, journal: bool,
                                               snapshot_tmpdir: Path) -> None:
    meta = _archive(cluster, tmp_path / "s.snap")
    expected = user_state(cluster.leader())
    files = [(tmp_path / f"n{i}.dump", tmp_path / f"n{i}.journal") for i in range(3)]
    for dump, journal_file in files:
        journal_file.write_bytes(b"stale journal")
        (tmp_path / f"{journal_file.name}.meta").write_bytes(b"stale meta")
        assert seed(tmp_path / "s.snap", dump, journal_file=journal_file) == meta
        assert not journal_file.exists() and not (tmp_path / f"{journal_file.name}.meta").exists()

    def options(i: int) -> dict[str, object]:
        opts: dict[str, object] = {"fullDumpFile": str(files[i][0])}
        if journal:
            opts["journalFile"] = str(files[i][1])
        return opts

    with running_cluster(3, node_options=options) as new:
        new.converged()
        assert all(n.raftLastApplied >= meta.index for n in new.running)
        assert new.states() == [expected] * 3
        leader = new.leader()
        leader.transfer(30, *transfer_args(30), sync=True, timeout=10)
        new.follower().put("after", 1, sync=True, timeout=10)
        states = new.states()
        assert states[0]["history"] == list(range(31))
        assert all(s == states[0] for s in states) and states[0]["extra"]["after"] == 1


def test_dump_file_layout(cluster: Cluster, tmp_path: Path, snapshot_tmpdir: Path) -> None:
    meta = _archive(cluster, tmp_path / "s.snap")
    seed(tmp_path / "s.snap", tmp_path / "with.dump")
    seed(tmp_path / "s.snap", tmp_path / "without.dump", snapshot_support=False)
    with gzip.open(tmp_path / "with.dump") as f:
        data, last, prev, members = pickle.load(f)
    assert last == (b"\x01", meta.index, 0) and prev == (b"\x01", meta.index - 1, 0)
    # attributes, counter, dict, and SnapshotSupport with nothing pending
    assert len(data) == 4 and data[-1] == {"_pending": None, "_committed": None}
    assert sorted(m.address for m in members) == sorted(cluster.addresses)
    with gzip.open(tmp_path / "without.dump") as f:
        assert len(pickle.load(f)[0]) == 3


def test_refusals_leave_no_dump(cluster: Cluster, tmp_path: Path, snapshot_tmpdir: Path) -> None:
    meta = _archive(cluster, tmp_path / "s.snap")
    raw = (tmp_path / "s.snap").read_bytes()
    (tmp_path / "damaged.snap").write_bytes(raw[:-20])
    with pytest.raises(ArchiveError):
        seed(tmp_path / "damaged.snap", tmp_path / "a.dump")
    with rsp.Snapshot.create(rsp.SnapshotMeta(index=5, term=1, backend="etcd"), b"{}") as snap:
        snap.save(tmp_path / "etcd.snap")
    with pytest.raises(ArchiveError, match="etcd"):
        seed(tmp_path / "etcd.snap", tmp_path / "a.dump")

    class Evil:
        def __reduce__(self) -> tuple[object, ...]:
            return (print, ("pwned",))

    evil = pickle.dumps({"format": 1, "attributes": {"x": Evil()}, "consumers": []}, protocol=5)
    evil_meta = rsp.SnapshotMeta(index=meta.index, term=1, backend="pysyncobj",
                                 state_format=meta.state_format)
    with rsp.Snapshot.create(evil_meta, evil) as snap:
        snap.save(tmp_path / "evil.snap")
    with pytest.raises(UnsafePickleError):
        seed(tmp_path / "evil.snap", tmp_path / "a.dump")
    assert not (tmp_path / "a.dump").exists()
