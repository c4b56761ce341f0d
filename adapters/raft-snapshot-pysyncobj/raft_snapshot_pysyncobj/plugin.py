"""The hook implementations, registered as backend ``pysyncobj`` by the entry point."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO

from pysyncobj import SyncObj

from raft_snapshot_plugin import SnapshotMeta, hookimpl

from . import _node
from .restore import restore_state
from .state import STATE_FORMAT, describe_state
from .take import take_state

BACKEND = _node.BACKEND


@hookimpl
def raft_snapshot_backend(node: object) -> str | None:
    return BACKEND if isinstance(node, SyncObj) else None


@hookimpl
def raft_snapshot_take(
    backend: str, node: SyncObj, sink: IO[bytes], timeout: float | None
) -> SnapshotMeta | None:
    if backend != BACKEND:
        return None
    return take_state(node, sink, timeout)


@hookimpl
def raft_snapshot_restore(
    backend: str, node: SyncObj, meta: SnapshotMeta, source: IO[bytes], timeout: float | None,
    trusted: bool,
) -> bool | None:
    if backend != BACKEND:
        return None
    restore_state(node, meta, source, timeout, trusted=trusted)
    return True


@hookimpl
def raft_snapshot_state_format(backend: str) -> str | None:
    return STATE_FORMAT if backend == BACKEND else None


@hookimpl
def raft_snapshot_is_leader(backend: str, node: SyncObj) -> bool | None:
    return _node.is_leader(node) if backend == BACKEND else None


@hookimpl
def raft_snapshot_describe(backend: str, source: IO[bytes]) -> Mapping[str, tuple[int, int]] | None:
    return describe_state(source) if backend == BACKEND else None


@hookimpl
def raft_snapshot_leader(backend: str, node: SyncObj) -> str | None:
    return _node.leader_address(node) if backend == BACKEND else None
