"""The hook implementations, registered as backend ``etcd`` by the entry point.

The core calls these only for nodes this module claimed, so none checks its ``backend``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO

from raft_snapshot_plugin.toolkit import (
    CHUNK_SIZE,
    Change,
    Gap,
    SnapshotMeta,
    hookimpl,
    temp_dir,
)

from .changes import follow_changes
from .cluster import EtcdCluster, NewCluster
from .connect import cluster_from_url
from .drill import drill_state
from .replay import replay_state, server_of, take_snapshot
from .restore import BACKEND, restore_state
from .tools import snapshot_status

__all__ = ["BACKEND", "LiveRestoreRefusedError"]


class LiveRestoreRefusedError(RuntimeError):
    """etcd cannot replace a running cluster's state: a restore builds a new cluster offline."""


@hookimpl
def raft_snapshot_backend(node: object) -> str | None:
    return BACKEND if isinstance(node, (EtcdCluster, NewCluster)) else None


@hookimpl
def raft_snapshot_take(
    node: EtcdCluster | NewCluster, sink: IO[bytes], timeout: float | None
) -> SnapshotMeta:
    # index = the store revision the streamed database holds (see .replay): the index space of
    # the changes the watch delivers, so that snapshots and shipped segments line up
    with _running(node, "take a snapshot of").connect() as conn:
        return take_snapshot(conn, sink, timeout)


@hookimpl
def raft_snapshot_restore(
    node: EtcdCluster | NewCluster, meta: SnapshotMeta, source: IO[bytes], timeout: float | None,
) -> bool:
    if isinstance(node, EtcdCluster):
        raise LiveRestoreRefusedError(
            f"etcd cannot restore a running cluster in place ({node!r}): build a new cluster "
            "offline instead, with raft_snapshot_etcd.restore_data_dirs(archive, members, "
            "data_root=..., cluster_token=...) or raft_snapshot_plugin.restore("
            "raft_snapshot_etcd.NewCluster(...), archive), then start it with "
            "raft_snapshot_etcd.start_members(plan) or the plan's command lines"
        )
    restore_state(node, meta, source, timeout=timeout)
    # Offline: the data dirs hold the state, and no member runs yet to say it applied it. True
    # reports the members as unknown; start_members(plan).members_applied() asks them once started.
    return True


@hookimpl
def raft_snapshot_is_leader(node: EtcdCluster | NewCluster) -> bool:
    with _running(node, "ask the leader of").connect() as conn:
        status = conn.status()
    return bool(status.leader) and status.leader == status.header.member_id


@hookimpl
def raft_snapshot_leader(node: EtcdCluster | NewCluster) -> str | None:
    with _running(node, "ask the leader of").connect() as conn:
        leader = conn.status().leader
        for member in conn.members():
            if leader and leader == member.ID:
                return server_of(member).address
    return None


@hookimpl
def raft_snapshot_describe(source: IO[bytes]) -> Mapping[str, tuple[int, int]]:
    # A folder of its own, not a locked temp file: etcd's tools lock the db file they read
    # (bbolt's flock), and would wait forever on the lock a temp file's owner holds.
    folder = tempfile.mkdtemp(prefix="raft-snapshot-etcd-describe-", dir=temp_dir())
    try:
        path = os.path.join(folder, "snapshot.db")
        with open(path, "wb") as file:
            while chunk := source.read(CHUNK_SIZE):
                file.write(chunk)
        status = snapshot_status(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "keys (etcd totalKey)": (status.total_key, status.total_size),
        "revision": (status.revision, 0),
    }


@hookimpl
def raft_snapshot_connect(url: str) -> EtcdCluster:
    return cluster_from_url(url)


@hookimpl
def raft_snapshot_offline_command() -> object:
    from .cli import restore_offline_command  # click's command, loaded only when asked for

    return restore_offline_command


@hookimpl
def raft_snapshot_changes(
    node: EtcdCluster | NewCluster, after_index: int, timeout: float | None,
) -> Iterator[Change | Gap] | None:
    if isinstance(node, NewCluster):
        return None  # a planned cluster runs nothing to follow
    return follow_changes(node, after_index, timeout)


@hookimpl
def raft_snapshot_replay(
    meta: SnapshotMeta, state: IO[bytes], changes: Iterable[Change], sink: IO[bytes],
    until_index: int,
) -> SnapshotMeta:
    return replay_state(meta, state, changes, sink, until_index)


@hookimpl
def raft_snapshot_drill(
    meta: SnapshotMeta, source: IO[bytes], workdir: Path, timeout: float | None,
) -> Mapping[str, tuple[int, int]]:
    return drill_state(meta, source, workdir, timeout)


def _running(node: EtcdCluster | NewCluster, what: str) -> EtcdCluster:
    if isinstance(node, NewCluster):
        raise TypeError(
            f"cannot {what} a planned cluster (raft_snapshot_etcd.NewCluster) that does not run: "
            "use its .cluster() once its members are started"
        )
    return node
