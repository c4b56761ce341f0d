"""raft-snapshot-etcd: Consul-style snapshots of etcd clusters.

Install it beside raft-snapshot-plugin and an :class:`EtcdCluster` (a running cluster's endpoints,
TLS files and credentials) becomes a node that ``raft_snapshot_plugin.take`` snapshots through
etcd's maintenance API: state.bin is etcd's own snapshot stream. etcd restores offline only:
:func:`restore_data_dirs` (or ``raft_snapshot_plugin.restore`` into a :class:`NewCluster`) builds a
new cluster's data dirs from a verified archive and :func:`start_members` starts them.
"""

from __future__ import annotations

from .cluster import EtcdCluster, EtcdMember, MemberLaunch, NewCluster, RestorePlan
from .errors import EtcdRpcError
from .plugin import LiveRestoreRefusedError
from .restore import BACKEND, STATE_FORMAT_PREFIX, EtcdProcesses, restore_data_dirs, start_members
from .tools import SnapshotStatus, snapshot_status

__all__ = [
    "BACKEND",
    "STATE_FORMAT_PREFIX",
    "EtcdCluster",
    "EtcdMember",
    "EtcdProcesses",
    "EtcdRpcError",
    "LiveRestoreRefusedError",
    "MemberLaunch",
    "NewCluster",
    "RestorePlan",
    "SnapshotStatus",
    "restore_data_dirs",
    "snapshot_status",
    "start_members",
]
