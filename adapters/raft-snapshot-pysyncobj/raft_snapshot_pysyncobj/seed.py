"""Offline seeding: a PySyncObj full-dump file from a verified archive, for a new cluster.

PySyncObj loads ``fullDumpFile`` at start: ``gzip(pickle((data, lastEntry, prevEntry, cluster)))``
where ``data`` is the attributes dict (no consumers) or ``[attributes, consumer1, ...]``, the
entries are ``(command, index, term)`` and ``cluster`` is read only with
``dynamicMembershipChange``. Seed every node of the new cluster from the same archive (one node
alone diverges); the entries carry term 0 (a higher term is not adopted by the loader and would
make terms go backwards), and the node's journal and its ``.meta`` are removed when given (an old
journal that begins with the same entries would be replayed over the seeded state).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import pickle
from collections.abc import Iterable
from typing import Any

from pysyncobj.node import TCPNode

from raft_snapshot_plugin.toolkit import ArchiveSource, SnapshotMeta, VerifyKey, atomic_output, open_verified

from ._node import BACKEND
from .state import STATE_FORMAT, load_state
from .support import SnapshotSupport

__all__ = ["seed"]

_NO_OP = b"\x01"  # PySyncObj's no-op command


def seed(
    source: ArchiveSource,
    full_dump_file: str | os.PathLike[str],
    *,
    journal_file: str | os.PathLike[str] | None = None,
    snapshot_support: bool = True,
    members: Iterable[str] | None = None,
    trusted_classes: Iterable[type] = (),
    allow_unsafe_pickle: bool = False,
    verify_key: VerifyKey | None = None,
) -> SnapshotMeta:
    """Write ``full_dump_file`` so that a new node started with it holds the archive's state.

    :param source: the archive (a path or a binary stream); verified whole before anything.
    :param full_dump_file: the node's ``fullDumpFile``; written atomically.
    :param journal_file: the node's ``journalFile``: it and its ``.meta`` are removed.
    :param snapshot_support: the new node's consumers end with ``SnapshotSupport()`` (as they
        should); its slot is written empty.
    :param members: addresses for the dump's cluster record, read by PySyncObj only with
        ``dynamicMembershipChange`` (default: the archive's servers).
    :param trusted_classes: classes besides plain data the state may contain.
    :param allow_unsafe_pickle: load any pickle (only for archives you trust).
    :param verify_key: require the archive to be sealed with this key; a sealed archive's
        pickle then loads without restriction.
    :return: the archive's metadata. The node starts at index ``max(meta.index, 2)``.
    :raises ArchiveError: a bad archive, or a state that would run code.
    :raises IncompatibleArchiveError: another backend's archive, or a newer state format.
    """
    with open_verified(source, verify_key=verify_key, prefix="raft-snapshot-seed-",
                       backend=BACKEND, state_format=STATE_FORMAT) as verified:
        meta = verified.meta
        attributes, consumers = load_state(
            verified.file, trusted_classes=trusted_classes,
            allow_unsafe_pickle=allow_unsafe_pickle or verified.trusted, size=meta.size)
    slots: list[dict[str, Any]] = [fields for _, fields in consumers]
    if snapshot_support:
        slots.append(SnapshotSupport()._serialize())  # its replicated fields, nothing pending
    data: Any = [attributes, *slots] if slots else attributes
    index = max(meta.index, 2)
    addresses = list(members) if members is not None else [s.address for s in meta.servers]
    dump = (data, (_NO_OP, index, 0), (_NO_OP, index - 1, 0), {TCPNode(a) for a in addresses})
    if journal_file is not None:
        for name in (os.fspath(journal_file), os.fspath(journal_file) + ".meta"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(name)
    with atomic_output(full_dump_file) as out, gzip.GzipFile(fileobj=out, mode="wb",
                                                             compresslevel=1, mtime=0) as gz:
        pickle.dump(dump, gz, protocol=5)
    return meta
