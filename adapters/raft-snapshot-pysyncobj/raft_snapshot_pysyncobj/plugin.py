"""The hook implementations, registered as backend ``pysyncobj`` by the entry point.

The core calls these only for nodes this module claimed, so none checks its ``backend``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO

from pysyncobj import SyncObj

from raft_snapshot_plugin import RestoreReport, SnapshotMeta, hookimpl
from raft_snapshot_plugin.toolkit import Change, Gap

from . import _node
from .drill import drill_state
from .replay import replay_state
from .restore import restore_state
from .state import STATE_FORMAT, describe_keys, describe_state
from .support import find_support
from .take import take_state

BACKEND = _node.BACKEND


@hookimpl
def raft_snapshot_backend(node: object) -> str | None:
    return BACKEND if isinstance(node, SyncObj) else None


@hookimpl
def raft_snapshot_take(node: SyncObj, sink: IO[bytes], timeout: float | None) -> SnapshotMeta:
    return take_state(node, sink, timeout)


@hookimpl
def raft_snapshot_restore(
    node: SyncObj, meta: SnapshotMeta, source: IO[bytes], timeout: float | None, trusted: bool,
) -> RestoreReport:
    return restore_state(node, meta, source, timeout, trusted=trusted)


@hookimpl
def raft_snapshot_state_format() -> str:
    return STATE_FORMAT


@hookimpl
def raft_snapshot_is_leader(node: SyncObj) -> bool:
    return _node.is_leader(node)


@hookimpl
def raft_snapshot_describe(meta: SnapshotMeta, source: IO[bytes]) -> Mapping[str, tuple[int, int]]:
    return describe_state(source, size=meta.size)


@hookimpl
def raft_snapshot_describe_keys(
    meta: SnapshotMeta, source: IO[bytes], depth: int, prefix: str,
) -> Mapping[str, tuple[int, int]]:
    return describe_keys(source, meta.size, depth, prefix)


@hookimpl
def raft_snapshot_leader(node: SyncObj) -> str | None:
    return _node.leader_address(node)


@hookimpl
def raft_snapshot_drill(
    meta: SnapshotMeta, source: IO[bytes], workdir: Path, timeout: float | None,
) -> Mapping[str, tuple[int, int]]:
    return drill_state(meta, source, workdir, timeout)


@hookimpl
def raft_snapshot_offline_command() -> object:
    from .cli import restore_offline_command  # click's command, loaded only when asked for

    return restore_offline_command


@hookimpl
def raft_snapshot_changes(
    node: SyncObj, after_index: int, timeout: float | None,
) -> Iterator[Change | Gap] | None:
    support = find_support(node)
    if support is None:
        return None  # without SnapshotSupport nothing captures what the node applies
    return support.capture.follow(after_index, timeout)


@hookimpl
def raft_snapshot_replay(
    meta: SnapshotMeta, state: IO[bytes], changes: Iterable[Change], sink: IO[bytes],
    until_index: int,
) -> SnapshotMeta:
    return replay_state(meta, state, changes, sink, until_index)
