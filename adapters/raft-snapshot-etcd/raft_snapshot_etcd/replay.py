"""Takes at an exact revision, and replay: a snapshot's state and the changes after it, applied in a
throwaway one-member etcd, written out as a snapshot at the target revision.

**The index is etcd's revision.** A snapshot's index is the store revision its database holds
(:func:`take_snapshot`), the changes' indexes are revisions too (:mod:`.changes`), and replay's
result is at ``until_index``. The numbering survives the throwaway member: ``etcdutl snapshot
restore`` keeps the store's revision (only the raft index starts again), and each change is
applied as one ``Txn`` holding its revision's events, which makes exactly one revision there as it
did in the source cluster; every ``Txn``'s answered revision is checked against the change's index,
so a replay that drifts (a lease expiring in the throwaway member, which deletes keys in a
revision of its own) fails instead of writing a state at the wrong index.

What a replay keeps: every key's value, exactly. A put's lease is kept when the lease is in the
throwaway member (granted before the snapshot, not expired); a lease granted after the snapshot is
not in the changes (etcd's watch carries keys, not lease grants), so such a key is written without
it. Snapshots of a cluster with auth enabled are not replayed (the throwaway member would refuse
the writes). Create/mod revisions and versions of keys are etcd's own in the throwaway member.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from raft_snapshot_plugin.toolkit import (
    Change,
    Server,
    SnapshotMeta,
    StateRejectedError,
    Suffrage,
    temp_dir,
)

from .changes import decode_events
from .cluster import NewCluster
from .restore import BACKEND, STATE_FORMAT_PREFIX, restore_state, start_members
from .tools import snapshot_status

if TYPE_CHECKING:
    from ._client import Connection

__all__ = ["replay_state", "server_of", "take_snapshot"]

#: seconds a replay may take to start its member (and a take to stream) without a caller's limit
DEFAULT_WAIT = 120.0
#: seconds one change's ``Txn`` may take in the throwaway member
_APPLY_TIMEOUT = 30.0


def take_snapshot(conn: Connection, sink: IO[bytes], timeout: float | None) -> SnapshotMeta:
    """Stream ``conn``'s member's database into ``sink``; the metadata, ``index`` the exact
    revision the database holds.

    The revision before and after the stream bound it; when writes raced the take they differ,
    and the database's own revision is read from a private copy (``etcdutl snapshot status``).
    """
    before = conn.status(timeout)
    folder = tempfile.mkdtemp(prefix="raft-snapshot-etcd-take-", dir=temp_dir())
    try:
        copy = Path(folder) / "snapshot.db"
        with open(copy, "wb") as kept:
            conn.snapshot(_Tee(sink, kept), timeout)
        after = conn.status(timeout)
        members = conn.members(timeout)
        revision = int(before.header.revision)
        if int(after.header.revision) != revision:
            revision = snapshot_status(copy, timeout=timeout).revision
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return SnapshotMeta(
        index=revision, term=int(after.raftTerm), servers=tuple(server_of(m) for m in members),
        state_format=STATE_FORMAT_PREFIX + ".".join(after.version.split(".")[:2]),
    )


class _Tee:
    """A sink that writes every chunk to two files."""

    def __init__(self, first: IO[bytes], second: IO[bytes]) -> None:
        self.first, self.second = first, second

    def write(self, data: bytes) -> int:
        self.second.write(data)
        return self.first.write(data)


def replay_state(meta: SnapshotMeta, state: IO[bytes], changes: Iterable[Change],
                 sink: IO[bytes], until_index: int) -> SnapshotMeta:
    """Restore ``state`` into a throwaway member in a private folder, apply ``changes`` (revisions
    ``meta.index + 1`` to ``until_index``), take its snapshot into ``sink``, stop it, remove it.

    :raises StateRejectedError: a change is not this adapter's encoding, or the snapshot's own
        revision is not its index (an archive taken before indexes were revisions).
    :raises RuntimeError: the member failed, or a change made another revision than its index.
    """
    folder = Path(tempfile.mkdtemp(prefix="raft-snapshot-etcd-replay-", dir=temp_dir()))
    try:
        new = NewCluster.on_loopback(1, folder / "etcd", name="replay",
                                     extra_args=("--log-level=warn",))
        plan = restore_state(new, meta, state, timeout=DEFAULT_WAIT)
        with start_members(plan, wait=DEFAULT_WAIT) as members, \
                members.cluster.connect() as conn:
            revision = int(conn.status(DEFAULT_WAIT).header.revision)
            if revision != meta.index:
                raise StateRejectedError(
                    f"the snapshot holds revision {revision}, not its index {meta.index}: an "
                    "archive whose index is etcd's raft index (raft-snapshot-etcd before 0.2) "
                    "cannot be replayed", backend=BACKEND)
            term = _apply(conn, changes, meta, until_index)
            taken = take_snapshot(conn, sink, DEFAULT_WAIT)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if taken.index != until_index:
        raise RuntimeError(f"the replayed member holds revision {taken.index}, not {until_index}")
    return SnapshotMeta(index=until_index, term=term, servers=meta.servers,
                        configuration_index=meta.configuration_index,
                        state_format=taken.state_format)


def _apply(conn: Connection, changes: Iterable[Change], meta: SnapshotMeta,
           until_index: int) -> int:
    """Apply each change as one ``Txn``; the last one's term."""
    from aetcd.rpc import rpc_pb2

    leases: dict[int, bool] = {}
    cursor, term = meta.index, meta.term
    for change in changes:
        if change.index != cursor + 1:
            raise ValueError(f"change {change.index} follows {cursor}: changes must be contiguous")
        if change.index > until_index:
            break
        events = decode_events(change.data)
        if not events:
            raise StateRejectedError(f"etcd change {change.index} holds no event",
                                     backend=BACKEND)
        ops = [_op(rpc_pb2, e, _lease(conn, e.lease, leases)) for e in events]
        made = conn.txn(ops, _APPLY_TIMEOUT)
        if made != change.index:
            raise RuntimeError(f"change {change.index} made revision {made} in the replay "
                               "member (a lease of the snapshot expired there?)")
        cursor, term = change.index, change.term
    if cursor != until_index:
        raise ValueError(f"the changes end at {cursor}, not {until_index}")
    return term


def _op(rpc: Any, event: Any, lease: int) -> Any:
    if event.is_put:
        return rpc.RequestOp(request_put=rpc.PutRequest(key=event.key, value=event.value,
                                                        lease=lease))
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=event.key))


def _lease(conn: Connection, lease: int, known: dict[int, bool]) -> int:
    """``lease`` if the throwaway member has it, else 0 (the key is written without it)."""
    if not lease:
        return 0
    if lease not in known:
        known[lease] = conn.lease_exists(lease, _APPLY_TIMEOUT)
    return lease if known[lease] else 0


def server_of(member: Any) -> Server:
    """A member as a Raft server: id = its name (its hex ID before it has one), address = its
    first peer URL (its first client URL if it has no peer URL)."""
    address = (list(member.peerURLs) or list(member.clientURLs) or [""])[0]
    return Server(
        id=member.name or f"{member.ID:x}",
        address=address,
        suffrage=Suffrage.NONVOTER if member.isLearner else Suffrage.VOTER,
    )

