"""The adapter author's toolkit: everything an adapter needs from the core, under public names.

An adapter imports from here (and from ``raft_snapshot_plugin``), never from a private module; the
lint environment's import contracts hold the in-tree adapters to that, and a stranger's adapter
written against these names keeps working when the core's insides move.

- :func:`open_verified`: read and check a whole archive into a private temp file and get its
  state (Consul's ``Read``), for an offline restore or a tool of the adapter's own. The core's
  restore and inspect use it too; hooks get their ``source`` from it. Given the backend and its
  state format it refuses another backend's archive, or a newer format, as the core's restore does
  (:func:`check_compatible` on its own).
- :func:`temp_file`, :func:`atomic_output`, :func:`remove_quietly`, :func:`temp_dir`: private temp
  files (0600, in ``RAFT_SNAPSHOT_TMPDIR``, removed on error) and atomic writes of final files.
  A temp file stays locked as this process's (so no other process's sweep takes it, even after
  you close it and reopen it by path) until you remove it with :func:`remove_quietly`.
  A tool that locks the files it reads (etcd's bbolt does) waits on that lock: give such a tool
  a copy in a folder of your own (``tempfile.mkdtemp(dir=temp_dir())``) instead.
- :data:`CHUNK_SIZE`: the block size the core streams in; use it when copying a state.
- :func:`check_seal`: whether an archive's seal holds under a key, for an adapter whose nodes
  decide for themselves whether to trust a state (as PySyncObj's do before loading a pickle).
- :class:`RestoreReport` and :class:`MemberApplied`: what ``raft_snapshot_restore`` returns, each
  member of the cluster and whether it applied the restored state.
- :class:`Change` and :class:`Gap`: what ``raft_snapshot_changes`` yields (and
  ``raft_snapshot_replay`` receives), for point-in-time recovery.
- the errors a hook raises: :class:`StateRejectedError` (these bytes are not mine, or not safe to
  load), :class:`SnapshotTimeoutError` (or the built-in ``TimeoutError``), :class:`BackendError`.
"""

from __future__ import annotations

from ._files import atomic_output, remove_quietly, temp_dir, temp_file
from .archive import CHUNK as CHUNK_SIZE
from .archive import ArchiveSource
from .changes import Change, Gap
from .errors import (
    ArchiveError,
    BackendError,
    IncompatibleArchiveError,
    IntegrityError,
    RaftSnapshotError,
    SnapshotTimeoutError,
    StateRejectedError,
)
from .hookspecs import hookimpl
from .meta import Server, SnapshotMeta, Suffrage
from .restored import MemberApplied, RestoreReport
from .seal import VerifyKey, check_seal
from .snapshot import VerifiedState, check_compatible, open_verified

__all__ = [
    "CHUNK_SIZE",
    "ArchiveError",
    "ArchiveSource",
    "BackendError",
    "Change",
    "Gap",
    "IncompatibleArchiveError",
    "IntegrityError",
    "MemberApplied",
    "RaftSnapshotError",
    "RestoreReport",
    "Server",
    "SnapshotMeta",
    "SnapshotTimeoutError",
    "StateRejectedError",
    "Suffrage",
    "VerifiedState",
    "VerifyKey",
    "atomic_output",
    "check_compatible",
    "check_seal",
    "hookimpl",
    "open_verified",
    "remove_quietly",
    "temp_dir",
    "temp_file",
]
