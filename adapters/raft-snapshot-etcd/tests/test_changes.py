"""The changes hook's encoding and edges, and replay's refusals, on real clusters: one change per
revision (a two-key txn and a range delete are one each), a bounded idle wait, foreign bytes and
an index that is not the snapshot's revision refused with no temp file left."""

from __future__ import annotations

import dataclasses
import io
import time
from pathlib import Path

import pytest
from aetcd.rpc import rpc_pb2 as pb
from etcd_clusters import Clusters
from raft_snapshot_etcd import EtcdCluster, NewCluster, start_members
from raft_snapshot_etcd.changes import CHANGE_FORMAT, Event, decode_events, encode_events

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin.changes import Change
from raft_snapshot_plugin.errors import StateRejectedError
from raft_snapshot_plugin.manager import get_plugin_manager
from raft_snapshot_plugin.testing import _state_bytes


def test_events_round_trip_and_foreign_bytes_are_refused() -> None:
    events = [Event(True, b"a", b"1", 7), Event(False, b"b"), Event(True, b"c", b"", 0)]
    data = encode_events(events)
    assert data.startswith(CHANGE_FORMAT.encode()) and decode_events(data) == events
    assert decode_events(encode_events([])) == []
    for bad in (b"", b"etcd-events/2\n", data[:-1], data + b"P", b"x" + data):
        with pytest.raises(StateRejectedError):
            decode_events(bad)


def test_each_revision_is_one_change_with_its_events(clusters: Clusters) -> None:
    cluster = clusters.new("events")
    start = cluster.put("a", "1")
    cluster.put("b", "2")
    with cluster.connect() as conn:
        conn.txn([pb.RequestOp(request_put=pb.PutRequest(key=b"c", value=b"3")),
                  pb.RequestOp(request_put=pb.PutRequest(key=b"a", value=b"4"))])
        conn.kv.DeleteRange(pb.DeleteRangeRequest(key=b"a", range_end=b"c"))  # a and b at once
    found = list(get_plugin_manager().changes("etcd", cluster, start, 1.0) or [])
    assert all(isinstance(c, Change) for c in found)
    assert [(c.index, decode_events(c.data)) for c in found if isinstance(c, Change)] == [
        (start + 1, [Event(True, b"b", b"2")]),
        (start + 2, [Event(True, b"c", b"3"), Event(True, b"a", b"4")]),
        (start + 3, [Event(False, b"a"), Event(False, b"b")]),
    ]


def test_following_a_quiet_cluster_ends_after_the_wait(known_cluster: EtcdCluster) -> None:
    revision = int(known_cluster.status().header.revision)
    started = time.monotonic()
    items = get_plugin_manager().changes("etcd", known_cluster, revision, 0.5)
    assert items is not None and list(items) == []
    assert time.monotonic() - started < 10


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("RAFT_SNAPSHOT_TMPDIR", str(folder))
    return folder


def test_replay_refuses_foreign_changes_and_a_raft_index(
    known_cluster: EtcdCluster, private_tmp: Path,
) -> None:
    pm = get_plugin_manager()
    with rsp.take(known_cluster) as snap:
        meta, state = snap.meta, _state_bytes(snap)
    foreign = [Change(meta.index + 1, meta.term, time.time(), b'{"op": "set"}')]
    with pytest.raises(StateRejectedError, match="etcd-events/1"):
        pm.replay("etcd", meta, io.BytesIO(state), foreign, io.BytesIO(), meta.index + 1)
    # an archive from before indexes were revisions: its index is the raft index
    raft_indexed = dataclasses.replace(meta, index=meta.index + 40)
    with pytest.raises(StateRejectedError, match="not its index"):
        pm.replay("etcd", raft_indexed, io.BytesIO(state), [], io.BytesIO(), meta.index + 41)
    assert list(private_tmp.iterdir()) == [], "a replay left files behind"


def test_replay_keeps_a_lease_the_snapshot_holds_and_drops_a_later_one(
    clusters: Clusters, tmp_path: Path,
) -> None:
    cluster = clusters.new("leases")
    pm = get_plugin_manager()
    with cluster.connect() as conn:
        early = conn.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=600)).ID
        conn.kv.Put(pb.PutRequest(key=b"a", value=b"1", lease=early))
        with rsp.take(cluster) as snap:
            meta, state = snap.meta, _state_bytes(snap)
        late = conn.lease.LeaseGrant(pb.LeaseGrantRequest(TTL=600)).ID
        conn.kv.Put(pb.PutRequest(key=b"b", value=b"2", lease=early))
        last = int(conn.kv.Put(pb.PutRequest(key=b"c", value=b"3", lease=late)).header.revision)
    found = [c for c in pm.changes("etcd", cluster, meta.index, 1.0) or []
             if isinstance(c, Change)]
    assert [c.index for c in found] == [meta.index + 1, last]
    assert [e.lease for c in found for e in decode_events(c.data)] == [early, late]
    sink = io.BytesIO()
    replayed = pm.replay("etcd", meta, io.BytesIO(state), found, sink, last)
    built = dataclasses.replace(replayed, backend="etcd")
    with rsp.Snapshot.create(built, sink.getvalue()) as snap:
        snap.save(tmp_path / "replayed.snap")
    new = NewCluster.on_loopback(1, tmp_path / "check", name="check",
                                 extra_args=("--log-level=warn",))
    rsp.restore(new, tmp_path / "replayed.snap")
    with start_members(new.plan()), new.cluster().connect() as conn:
        kvs = conn.kv.Range(pb.RangeRequest(key=b"\0", range_end=b"\0")).kvs
        assert {kv.key: (kv.value, kv.lease) for kv in kvs} == {
            b"a": (b"1", early), b"b": (b"2", early), b"c": (b"3", 0)}
        assert int(conn.status().header.revision) == last
