"""Take, restore and inspect through an adapter: the operations a user calls on a node.

Each builds on the lifecycle (:mod:`.snapshot`) and dispatches to the node's adapter through the
plugin manager. One restore at a time per node in a process; a take during a restore waits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

from ._files import remove_quietly, temp_dir, temp_file
from .archive import ArchiveSource
from .errors import (
    BackendError,
    BackendNotFoundError,
    DrillError,
    NotLeaderError,
    SnapshotTimeoutError,
)
from .manager import PluginManager, get_plugin_manager
from .meta import SnapshotMeta
from .restored import RestoreResult
from .seal import SealKey, VerifyKey
from .snapshot import Identities, Snapshot, open_verified

__all__ = ["DrillReport", "Inspection", "Stat", "drill", "inspect", "restore", "take"]


@dataclasses.dataclass(frozen=True)
class Stat:
    """One row of an inspection: a kind of data, how many there are and their size in bytes."""

    name: str
    count: int
    sum: int


@dataclasses.dataclass(frozen=True)
class Inspection:
    """What ``inspect`` found: the metadata and the adapter's breakdown of the state."""

    meta: SnapshotMeta
    stats: tuple[Stat, ...] = ()
    #: how the archive is sealed, in words (``HMAC key 053e…, checked``, ``not sealed``)
    seal: str = "not sealed"
    #: the breakdown by key (``inspect(detail=...)``); None when not asked or the adapter gives none
    keys: tuple[Stat, ...] | None = None

    @property
    def total_size(self) -> int:
        """The sum of the breakdown's sizes (state.bin's size when there is no breakdown)."""
        return sum(s.sum for s in self.stats) if self.stats else self.meta.size

    def to_dict(self) -> dict[str, Any]:
        """Consul's ``snapshot inspect -format=json`` shape, plus ``Sealed`` (in words)."""
        return {
            "Meta": self.meta.to_dict(),
            "Stats": [{"Name": s.name, "Count": s.count, "Sum": s.sum} for s in self.stats],
            "TotalSize": self.total_size,
            "Sealed": self.seal,
            **({} if self.keys is None else {
                "KStats": [{"Name": s.name, "Count": s.count, "Sum": s.sum} for s in self.keys]}),
        }


def take(
    node: object,
    *,
    backend: str | None = None,
    timeout: float | None = None,
    level: int | None = None,
    seal_key: SealKey | None = None,
    leader_only: bool = False,
    wait_for_restore: bool = True,
    manager: PluginManager | None = None,
) -> Snapshot:
    """Take a consistent snapshot of ``node`` through its adapter, into a private temp file.

    :param node: a node object an installed adapter claims (a ``pysyncobj.SyncObj``, ...).
    :param backend: the backend name, if not the one whose adapter claims ``node``.
    :param timeout: seconds the take may last (passed to the adapter); ``None`` for no limit.
    :param level: the compression level (see ``write_archive``).
    :param seal_key: seal the archive with this key (see :mod:`.seal`).
    :param leader_only: refuse unless ``node`` leads its cluster, checked before the take and
        again after it (leadership can move while it runs). An adapter without
        ``raft_snapshot_is_leader`` cannot tell: the take then proceeds, with ``stale=None``.
    :param wait_for_restore: while a restore into ``node`` runs in this process, wait for it (up
        to ``timeout``); ``False`` refuses at once (``SnapshotTimeoutError``), as the endpoint
        does so that ``GET ?stale`` never hangs behind a restore.
    :param manager: the plugin manager to use (default: a fresh :func:`get_plugin_manager`).
    :return: the :class:`Snapshot`; ``stale`` is true when ``node`` was not the leader, ``None``
        when the adapter cannot tell.
    :raises BackendNotFoundError: no adapter claims ``node``.
    :raises NotLeaderError: ``leader_only`` and ``node`` is not (or stopped being) the leader;
        ``.leader`` names the leader when the adapter knows it.
    :raises SnapshotTimeoutError: the take ran out of time.
    :raises BackendError: the adapter failed (its error chained).
    """
    pm = manager if manager is not None else get_plugin_manager()
    name = backend or pm.backend_for(node)
    with _node_lock(node).shared(timeout if wait_for_restore else 0), \
            temp_file(prefix="raft-snapshot-state-") as (
        state, state_path
    ):
        try:
            leader = pm.is_leader(name, node)
            if leader is False and leader_only:
                raise _not_leader(pm, name, node, "this node is not the leader")
            sink = _HashingSink(state)
            meta = pm.take(name, node, cast(IO[bytes], sink), timeout)
            state.flush()
            if leader is not None:  # the state may be the new leader's only if it still leads
                leader = leader and pm.is_leader(name, node) is not False
                if not leader and leader_only:
                    raise _not_leader(pm, name, node, "this node lost the leadership during the take")
            meta = dataclasses.replace(
                meta,
                backend=name,
                backend_version=meta.backend_version or pm.backend_version(name),
            )
            state.seek(0)
            stale = None if leader is None else not leader
            return Snapshot.create(meta, state, level=level, stale=stale, seal_key=seal_key,
                                   state_sha256=sink.sha256())
        finally:
            state.close()
            remove_quietly(state_path)


class _HashingSink:
    """The adapter's sink: hashes what is written through it, so a seal needs no second pass over
    the state. An adapter that does more than write (seek, or hand the file descriptor to a child,
    as PySyncObj's fork does) gets the file itself, and the hash is then left to the writer."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._digest: Any = hashlib.sha256()

    def write(self, data: Any) -> int:
        if self._digest is not None:
            self._digest.update(data)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def __getattr__(self, name: str) -> Any:
        self._digest = None  # anything but write/flush may move bytes past the hash
        return getattr(self._file, name)

    def sha256(self) -> str | None:
        """The hex digest of everything written, or ``None`` when it cannot be vouched for."""
        return None if self._digest is None else str(self._digest.hexdigest())


def _not_leader(pm: PluginManager, backend: str, node: object, why: str) -> NotLeaderError:
    try:
        leader = pm.leader(backend, node)
    except BackendError:
        leader = None  # naming the leader is a courtesy; its failure must not hide the refusal
    where = f"the leader is {leader}" if leader else "no leader is known"
    return NotLeaderError(f"{why} ({where})", leader=leader)


def restore(
    node: object,
    source: ArchiveSource,
    *,
    backend: str | None = None,
    timeout: float | None = None,
    verify_key: VerifyKey | None = None,
    allow_incompatible: bool = False,
    max_state_bytes: int | None = None,
    identity: Identities | None = None,
    manager: PluginManager | None = None,
) -> RestoreResult:
    """Restore an archive into ``node``'s cluster; return what became of it.

    The whole archive is read and checked into a private temp file first: the adapter sees a byte
    only once everything has verified, so a bad archive never reaches the cluster. The cluster
    keeps its own membership.

    :param node: a node object an installed adapter claims.
    :param source: the archive: a path or a binary stream.
    :param backend: the backend name, if not the one whose adapter claims ``node``.
    :param timeout: seconds the restore may last (passed to the adapter).
    :param verify_key: require a seal made with this key; the adapter is then told the archive
        is trusted (a pickle-based state may then hold any class).
    :param allow_incompatible: restore an archive of another backend or of a newer state format
        than the adapter writes, for an operator who knows better.
    :param max_state_bytes: refuse a state longer than this (decompressed), from its tar header,
        before a byte of it is written anywhere.
    :param identity: the archive is age-encrypted: decrypt it with these identities (a file's
        path, or loaded ones) into a private temp file first.
    :param manager: the plugin manager to use (default: a fresh :func:`get_plugin_manager`).
    :return: the archive's metadata (``.meta``) and, when the adapter reports them, the members
        of the cluster and whether each had applied the state when the restore returned
        (``.members``, ``.complete``, ``.lagging``; ``members`` is ``None`` when unknown). A
        lagging member is not an error: the restore is committed.
    :raises ArchiveError: the archive is bad, its seal does not hold, or its state is too long.
    :raises IncompatibleArchiveError: another backend's archive, or a newer state format.
    :raises StateRejectedError: the adapter refused the state's bytes; nothing was applied.
    :raises SnapshotTimeoutError: the restore ran out of time; the old state stays.
    :raises BackendError: the adapter failed (its error chained); the old state stays.
    """
    pm = manager if manager is not None else get_plugin_manager()
    name = backend or pm.backend_for(node)
    check = not allow_incompatible
    with open_verified(source, verify_key=verify_key, prefix="raft-snapshot-restore-",
                       backend=name if check else None,
                       state_format=pm.state_format(name) if check else None,
                       max_state_bytes=max_state_bytes, identity=identity) as verified:
        with _node_lock(node).exclusive(timeout):
            report = pm.restore(name, node, verified.meta, verified.file, timeout,
                                trusted=verified.trusted)
        return RestoreResult.of(verified.meta, report)


def inspect(
    source: ArchiveSource,
    *,
    backend: str | None = None,
    verify_key: VerifyKey | None = None,
    identity: Identities | None = None,
    manager: PluginManager | None = None,
    detail: tuple[int, str] | None = None,
) -> Inspection:
    """Verify an archive and break its state down through the adapter named by its Backend key.

    :param source: the archive: a path or a binary stream.
    :param backend: the adapter to describe the state with, instead of the archive's Backend.
    :param verify_key: require a seal made with this key.
    :param identity: decrypt an age-encrypted archive first (see :func:`restore`).
    :param manager: the plugin manager to use (default: a fresh :func:`get_plugin_manager`).
    :param detail: ``(depth, prefix)``: also break the state down by key
        (``raft_snapshot_describe_keys``), as ``consul snapshot inspect -detail``.
    :return: the metadata and, when an adapter for the backend is installed and describes
        states, its breakdown (and its breakdown by key, when asked and given).
    :raises ArchiveError: the archive is bad.
    :raises BackendNotFoundError: ``backend`` was given and no adapter for it is installed.
    """
    with open_verified(source, verify_key=verify_key, prefix="raft-snapshot-inspect-",
                       identity=identity) as verified:
        meta, sealed = verified.meta, verified.seal_status
        name = backend or meta.backend
        if not name:
            return Inspection(meta, seal=sealed)
        pm = manager if manager is not None else get_plugin_manager()
        if backend is None and name not in {b.name for b in pm.backends() if not b.disabled}:
            return Inspection(meta, seal=sealed)  # the adapter that took it is not installed here
        start = verified.file.tell()
        rows = pm.describe(name, meta, verified.file)
        stats = tuple(Stat(k, v[0], v[1]) for k, v in (rows or {}).items())
        keys = None
        if detail is not None:
            verified.file.seek(start)
            found = pm.describe_keys(name, meta, verified.file, detail[0], detail[1])
            keys = None if found is None else tuple(Stat(k, c, z) for k, (c, z) in found.items())
        return Inspection(meta, stats, seal=sealed, keys=keys)


@dataclasses.dataclass(frozen=True)
class DrillReport:
    """What a restore drill found: the archive's metadata, its breakdown (``expected``), what the
    throwaway instance held (``restored``), and how long the drill took (seconds)."""

    meta: SnapshotMeta
    expected: tuple[Stat, ...]
    restored: tuple[Stat, ...]
    duration: float

    def to_dict(self) -> dict[str, Any]:
        return {"Meta": self.meta.to_dict(), "Duration": self.duration,
                "Expected": [{"Name": s.name, "Count": s.count, "Sum": s.sum} for s in self.expected],
                "Restored": [{"Name": s.name, "Count": s.count, "Sum": s.sum} for s in self.restored]}


def drill(
    source: ArchiveSource,
    *,
    backend: str | None = None,
    timeout: float | None = None,
    verify_key: VerifyKey | None = None,
    identity: Identities | None = None,
    manager: PluginManager | None = None,
) -> DrillReport:
    """Prove that an archive restores: verify it, restore it offline into a throwaway instance of
    its backend (the adapter's ``raft_snapshot_drill``), and compare what that instance holds with
    the archive's breakdown (``raft_snapshot_describe``), count by count.

    :param source: the archive: a path or a binary stream.
    :param backend: the adapter to drill with, instead of the archive's Backend.
    :param timeout: seconds the adapter's drill may last.
    :param verify_key: require a seal made with this key.
    :param identity: decrypt an age-encrypted archive first (see :func:`restore`).
    :param manager: the plugin manager to use (default: a fresh :func:`get_plugin_manager`).
    :raises ArchiveError: the archive is bad.
    :raises StateRejectedError: the adapter cannot load the state's bytes.
    :raises DrillError: the instance holds another state than the archive describes.
    :raises BackendError: no adapter can drill the archive's backend, or the instance failed.
    """
    started = time.monotonic()
    pm = manager if manager is not None else get_plugin_manager()
    with open_verified(source, verify_key=verify_key, prefix="raft-snapshot-drill-",
                       identity=identity) as verified:
        meta = verified.meta
        name = backend or meta.backend
        if not name:
            raise BackendNotFoundError("the archive names no backend (no Backend key): give one")
        work = Path(tempfile.mkdtemp(prefix="raft-snapshot-drill-", dir=temp_dir()))
        try:  # the drill first: its refusal of the bytes says more than describe's failure
            restored = pm.drill(name, meta, verified.file, work, timeout)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        verified.file.seek(0)
        expected = pm.describe(name, meta, verified.file) or {}
    differ = [f"{key}: {expected[key][0]} in the archive, {restored[key][0]} restored"
              for key in expected if key in restored and expected[key][0] != restored[key][0]]
    if differ:
        raise DrillError(f"the {name} instance restored from index {meta.index} holds another "
                         f"state: {'; '.join(differ)}", backend=name)
    return DrillReport(meta, _stats(expected), _stats(restored), time.monotonic() - started)


def _stats(rows: Any) -> tuple[Stat, ...]:
    return tuple(Stat(k, v[0], v[1]) for k, v in rows.items())


# --- one restore at a time per node; takes wait for it --------------------------------------------

class _NodeLock:
    """Shared for takes, exclusive for restores, within this process."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextlib.contextmanager
    def shared(self, timeout: float | None) -> Iterator[None]:
        with self._cond:
            if not self._cond.wait_for(lambda: not self._writer, timeout):
                raise SnapshotTimeoutError("a restore into this node is in progress")
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self, timeout: float | None) -> Iterator[None]:
        with self._cond:
            if self._writer:
                raise BackendError("another restore into this node is in progress")
            self._writer = True
            if not self._cond.wait_for(lambda: self._readers == 0, timeout):
                self._writer = False
                self._cond.notify_all()
                raise SnapshotTimeoutError("a take from this node did not finish in time")
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


_locks: weakref.WeakKeyDictionary[object, _NodeLock] = weakref.WeakKeyDictionary()
_locks_by_id: dict[int, _NodeLock] = {}  # nodes that cannot be weakly referenced or hashed
_locks_guard = threading.Lock()


def _node_lock(node: object) -> _NodeLock:
    with _locks_guard:
        try:
            return _locks.setdefault(node, _NodeLock())
        except TypeError:
            return _locks_by_id.setdefault(id(node), _NodeLock())
