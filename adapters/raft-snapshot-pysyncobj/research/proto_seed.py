"""Prototype: write a PySyncObj ``fullDumpFile`` that seeds a brand-new node (0.3.10 .. 0.3.17).

Format (identical in the four versions; Serializer.serialize / SyncObj.__tryLogCompaction):
    gzip( pickle( (data, lastEntry, prevEntry, cluster) ) )
      data      : dict (no consumers) or [selfDict, consumer1._serialize(), ...]
      lastEntry : (command: bytes, idx, term) of the last applied entry  -> raftLastApplied = idx
      prevEntry : (command: bytes, idx - 1, term) the entry before it
      cluster   : set of Node (otherNodes | {selfNode}); only read with dynamicMembershipChange=True
PySyncObj writes pickle protocol 2 into gzip level 9; its loader is ``pickle.load`` on a
GzipFile (with a pure-Python retry), so any protocol the interpreter reads (5 here) and any
gzip level work.

Loading (``__loadDumpFile(clearJournal=False)``, on the first tick once the transport is ready):
the user attributes are set with ``__dict__[k] = v``, each consumer gets ``_deserialize``;
unless the journal already starts with exactly ``[prevEntry, lastEntry]`` it is cleared and
those two entries are added; ``raftLastApplied = lastEntry.idx``. Neither the commit index nor
the current term is taken from the dump. Hence: term 0 in both entries (a new cluster elects at
term 1, so its entries' terms never go backwards), and remove an old journal + ``.meta`` (they
carry raftCommitIndex, and on 0.3.17 currentTerm/votedFor).
"""
from __future__ import annotations

import gzip
import os
import pickle
from typing import Any, Iterable

from pysyncobj.node import Node, TCPNode

NO_OP = b"\x01"  # _bchr(_COMMAND_TYPE.NO_OP)


def dump_tuple(data: Any, index: int, members: Iterable[str | Node], term: int = 0) -> tuple[Any, ...]:
    if index < 2:
        raise ValueError("index must be >= 2 (the dump holds entries index-1 and index)")
    cluster = {m if isinstance(m, Node) else TCPNode(m) for m in members}
    # Node objects, not strings: __loadDumpFile filters `node != selfNode`, and a str never
    # compares equal to a Node, so a str self address would become one of the node's peers.
    return (data, (NO_OP, index, term), (NO_OP, index - 1, term), cluster)


def write_full_dump(
    path: str,
    data: Any,
    index: int,
    members: Iterable[str | Node],
    *,
    term: int = 0,
    protocol: int = 5,
    compresslevel: int = 1,
) -> None:
    tmp = path + ".seed.tmp"
    with open(tmp, "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=compresslevel) as g:
            pickle.dump(dump_tuple(data, index, members, term), g, protocol=protocol)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def seed(
    state: bytes,
    full_dump_file: str,
    index: int,
    members: Iterable[str | Node],
    *,
    journal_file: str | None = None,
) -> None:
    """Seed one node of a new cluster (call it for every node, with the same arguments
    except the file names) from ``state`` as returned by proto_take.capture."""
    data = pickle.loads(state)
    if journal_file is not None:
        for p in (journal_file, journal_file + ".meta"):
            try:
                os.remove(p)
            except FileNotFoundError:
                pass
    write_full_dump(full_dump_file, data, index, members)


def read_full_dump(path: str) -> tuple[Any, ...]:
    with open(path, "rb") as f, gzip.GzipFile(fileobj=f, mode="rb") as g:
        return pickle.load(g)  # type: ignore[no-any-return]
