"""raft-snapshot-plugin: Consul-style disaster-recovery snapshots for any Python Raft framework.

>>> import raft_snapshot_plugin as rsp
>>> with rsp.take(node) as snap:          # doctest: +SKIP
...     snap.save("backup.snap")
>>> rsp.verify("backup.snap")             # doctest: +SKIP
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import archive
from .errors import (
    ArchiveError,
    BackendError,
    BackendNotFoundError,
    IntegrityError,
    NotLeaderError,
    PluginConflictError,
    RaftSnapshotError,
    SnapshotTimeoutError,
    StateRejectedError,
)
from .hookspecs import hookimpl
from .meta import Server, SnapshotMeta, Suffrage
from .operations import Inspection, inspect, restore, take
from .restored import MemberApplied, RestoreReport, RestoreResult
from .snapshot import Snapshot, verify

try:
    __version__ = version("raft-snapshot-plugin")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "ArchiveError",
    "BackendError",
    "BackendNotFoundError",
    "Inspection",
    "IntegrityError",
    "MemberApplied",
    "NotLeaderError",
    "PluginConflictError",
    "RaftSnapshotError",
    "RestoreReport",
    "RestoreResult",
    "Server",
    "Snapshot",
    "SnapshotMeta",
    "SnapshotTimeoutError",
    "StateRejectedError",
    "Suffrage",
    "archive",
    "hookimpl",
    "inspect",
    "restore",
    "take",
    "verify",
]
