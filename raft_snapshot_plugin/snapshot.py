"""The snapshot lifecycle, after Consul's ``snapshot.go``: New, Index, Read, Close; Verify.

A :class:`Snapshot` is a finished archive in a private temp file: a readable binary file object and
a context manager. Closing it removes the temp file. Nothing here holds a state in memory whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import threading
import weakref
from collections.abc import Iterator
from typing import IO, Any

from ._files import atomic_output, remove_quietly, temp_file
from .archive import (
    CHUNK,
    ArchiveSource,
    StateSource,
    read_archive,
    read_archive_contents,
    write_archive,
)
from .errors import BackendError, IncompatibleArchiveError, SnapshotTimeoutError
from .manager import PluginManager, get_plugin_manager
from .meta import SnapshotMeta
from .seal import SealKey, VerifyKey

__all__ = ["Inspection", "Snapshot", "Stat", "inspect", "restore", "take", "verify"]


class Snapshot(io.RawIOBase):
    """A finished archive in a private temp file (mode 0600), readable from its first byte.

    Build one with :meth:`Snapshot.create` or :func:`raft_snapshot_plugin.take`. Use it as a
    context manager, or call :meth:`close`, which removes the temp file and is safe to call twice.
    """

    def __init__(self, file: IO[bytes], path: str, meta: SnapshotMeta, *, stale: bool = False):
        """Adopt ``file`` (open, positioned anywhere) at ``path``; the snapshot now owns both."""
        super().__init__()
        self._file = file
        self._path = path
        self._meta = meta
        self._stale = stale
        file.seek(0)

    @classmethod
    def create(
        cls,
        meta: SnapshotMeta,
        state: StateSource,
        *,
        level: int | None = None,
        stale: bool = False,
        seal_key: SealKey | None = None,
    ) -> Snapshot:
        """Write an archive of ``state`` into a private temp file, without any adapter.

        :param meta: the metadata; size, id and peers are filled in (see ``write_archive``).
        :param state: bytes, a path or a binary stream holding state.bin's content.
        :param level: the compression level (see ``write_archive``).
        :param stale: record that the state was not read on the leader.
        :param seal_key: seal the archive with this key (see :mod:`.seal`).
        """
        with temp_file() as (file, path):
            written = write_archive(file, meta, state, level=level, seal=seal_key)
            file.flush()
        return cls(file, path, written, stale=stale)

    @property
    def meta(self) -> SnapshotMeta:
        """The metadata as written into the archive's meta.json."""
        return self._meta

    @property
    def index(self) -> int:
        """The Raft index the snapshot was taken at (0 for a snapshot of nothing)."""
        return self._meta.index

    @property
    def stale(self) -> bool:
        """True when the state was read on a node that was not the leader."""
        return self._stale

    @property
    def path(self) -> str:
        """Where the temp file lives while the snapshot is open."""
        return self._path

    @property
    def size(self) -> int:
        """The archive's length in bytes."""
        return os.fstat(self._file.fileno()).st_size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        return self._file.readinto(buffer)  # type: ignore[attr-defined, no-any-return]

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the whole archive to ``path`` atomically (mode 0600), whatever the read position.

        A partial file beside the target is fsynced and renamed into place; on any failure nothing
        appears at ``path``.
        """
        if self.closed:
            raise ValueError("I/O operation on a closed snapshot")
        with open(self._path, "rb") as source, atomic_output(path) as target:
            shutil.copyfileobj(source, target, CHUNK)

    def close(self) -> None:
        """Close and remove the temp file; safe to call more than once."""
        if not self.closed:
            try:
                self._file.close()
            finally:
                remove_quietly(self._path)
        super().close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self._path
        return f"<Snapshot index={self.index} term={self._meta.term} {state}>"


def verify(source: ArchiveSource, *, verify_key: VerifyKey | None = None) -> SnapshotMeta:
    """Read and check a whole archive, keeping nothing; return its metadata.

    :param source: a path or a binary stream (read from where it stands, not closed).
    :param verify_key: require a seal made with this key (see :mod:`.seal`).
    :raises ArchiveError: the archive is malformed or refused (``.member`` says where).
    :raises IntegrityError: a checksum, length or seal does not match, or the seal is missing.
    """
    return read_archive(source, None, verify_key=verify_key)


# ==================================================================================================
# Through an adapter: take, restore, inspect
# ==================================================================================================

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

    @property
    def total_size(self) -> int:
        """The sum of the breakdown's sizes (state.bin's size when there is no breakdown)."""
        return sum(s.sum for s in self.stats) if self.stats else self.meta.size

    def to_dict(self) -> dict[str, Any]:
        """Consul's ``snapshot inspect -format=json`` shape."""
        return {
            "Meta": self.meta.to_dict(),
            "Stats": [{"Name": s.name, "Count": s.count, "Sum": s.sum} for s in self.stats],
            "TotalSize": self.total_size,
        }


def take(
    node: object,
    *,
    backend: str | None = None,
    timeout: float | None = None,
    level: int | None = None,
    seal_key: SealKey | None = None,
    manager: PluginManager | None = None,
) -> Snapshot:
    """Take a consistent snapshot of ``node`` through its adapter, into a private temp file.

    :param node: a node object an installed adapter claims (a ``pysyncobj.SyncObj``, ...).
    :param backend: the backend name, if not the one whose adapter claims ``node``.
    :param timeout: seconds the take may last (passed to the adapter); ``None`` for no limit.
    :param level: the compression level (see ``write_archive``).
    :param seal_key: seal the archive with this key (see :mod:`.seal`).
    :param manager: the plugin manager to use (default: a fresh :func:`get_plugin_manager`).
    :return: the :class:`Snapshot`; ``stale`` is true when ``node`` was not the leader.
    :raises BackendNotFoundError: no adapter claims ``node``.
    :raises BackendError: the adapter failed (its error chained).
    """
    pm = manager if manager is not None else get_plugin_manager()
    name = backend or pm.backend_for(node)
    with _node_lock(node).shared(timeout), temp_file(prefix="raft-snapshot-state-") as (
        state, state_path
    ):
        try:
            leader = pm.is_leader(name, node)
            meta = pm.take(name, node, state, timeout)
            state.flush()
            meta = dataclasses.replace(
                meta,
                backend=name,
                backend_version=meta.backend_version or pm.backend_version(name),
            )
            state.seek(0)
            return Snapshot.create(meta, state, level=level, stale=not leader, seal_key=seal_key)
        finally:
            state.close()
            remove_quietly(state_path)


def restore(
    node: object,
    source: ArchiveSource,
    *,
    backend: str | None = None,
    timeout: float | None = None,
    verify_key: VerifyKey | None = None,
    allow_incompatible: bool = False,
    manager: PluginManager | None = None,
) -> SnapshotMeta:
    """Restore an archive into ``node``'s cluster; return the archive's metadata.

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
    :param manager: the plugin manager to use (default: a fresh :func:`get_plugin_manager`).
    :raises ArchiveError: the archive is bad or its seal does not hold.
    :raises IncompatibleArchiveError: another backend's archive, or a newer state format.
    :raises BackendError: the adapter failed (its error chained); the old state stays.
    """
    pm = manager if manager is not None else get_plugin_manager()
    name = backend or pm.backend_for(node)
    with temp_file(prefix="raft-snapshot-restore-") as (state, state_path):
        try:
            contents = read_archive_contents(source, state, verify_key=verify_key)
            meta = contents.meta
            if not allow_incompatible:
                _check_compatible(meta, name, pm.state_format(name))
            state.flush()
            state.seek(0)
            with _node_lock(node).exclusive(timeout):
                pm.restore(name, node, meta, state, timeout, trusted=contents.trusted)
            return meta
        finally:
            state.close()
            remove_quietly(state_path)


def _check_compatible(meta: SnapshotMeta, backend: str, current: str | None) -> None:
    """Refuse another backend's archive, or a state format newer than the adapter's own."""
    if meta.backend and meta.backend != backend:
        raise IncompatibleArchiveError(
            "meta.json", f"taken by backend {meta.backend!r}; this node's backend is {backend!r}")
    if not (meta.state_format and current):
        return
    family, _, version = meta.state_format.rpartition("/")
    own_family, _, own_version = current.rpartition("/")
    if family != own_family:
        raise IncompatibleArchiveError(
            "meta.json", f"state format {meta.state_format!r} is not the adapter's {current!r}")
    theirs, ours = _version(version), _version(own_version)
    if theirs is not None and ours is not None and theirs > ours:
        raise IncompatibleArchiveError(
            "meta.json", f"state format {meta.state_format!r} is newer than the adapter's "
                         f"{current!r}: upgrade the adapter (or allow_incompatible=True)")


def _version(text: str) -> tuple[int, ...] | None:
    """``"2"`` -> (2,), ``"3.4"`` -> (3, 4); ``None`` when it is not dotted numbers."""
    parts = text.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else None


def inspect(
    source: ArchiveSource,
    *,
    backend: str | None = None,
    verify_key: VerifyKey | None = None,
    manager: PluginManager | None = None,
) -> Inspection:
    """Verify an archive and break its state down through the adapter named by its Backend key.

    :param source: the archive: a path or a binary stream.
    :param backend: the adapter to describe the state with, instead of the archive's Backend.
    :param verify_key: require a seal made with this key.
    :param manager: the plugin manager to use (default: a fresh :func:`get_plugin_manager`).
    :return: the metadata and, when an adapter for the backend is installed, its breakdown.
    :raises ArchiveError: the archive is bad.
    :raises BackendNotFoundError: ``backend`` was given and no adapter for it is installed.
    """
    with temp_file(prefix="raft-snapshot-inspect-") as (state, state_path):
        try:
            meta = read_archive(source, state, verify_key=verify_key)
            name = backend or meta.backend
            if not name:
                return Inspection(meta)
            pm = manager if manager is not None else get_plugin_manager()
            if backend is None and name not in {b.name for b in pm.backends() if not b.disabled}:
                return Inspection(meta)  # the adapter that took it is not installed here
            state.flush()
            state.seek(0)
            rows = pm.describe(name, meta, state)
            return Inspection(meta, tuple(Stat(k, v[0], v[1]) for k, v in rows.items()))
        finally:
            state.close()
            remove_quietly(state_path)


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
