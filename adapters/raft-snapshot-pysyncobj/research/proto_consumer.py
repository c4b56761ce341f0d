"""Prototype: a SyncObjConsumer with @replicated methods that streams a state through the log
and swaps it in on commit, on every node, in log order (0.3.10 .. 0.3.17).

Facts it relies on (same source in all four versions):
* ``@replicated`` works on SyncObjConsumer subclasses: the wrapper looks up
  ``self._syncObj._methodToID[(id(self), name_vN)]`` and calls ``self._syncObj._applyCommand``.
  ``consumer._syncObj`` is set in SyncObj.__init__ (None before, and after ``_destroy``).
* Method IDs are positions in ``sorted((ver, 0 | consumerNum+1, methodName, obj))``: put this
  consumer LAST in ``consumers=[...]`` so the IDs of existing methods (ver 0) do not move.
* ``node._SyncObj__consumers`` is the consumer list; ``consumer._serialize()`` returns
  ``__dict__`` minus the keys present when SyncObjConsumer.__init__ ran.
* The command is ``b'\\x00' + pysyncobj.pickle.dumps((funcID, args[, kwargs]))`` with pickle
  protocol 2, where ``bytes`` cost up to 2 bytes per byte (>= 0x80 becomes UTF-8 in a latin-1
  string): size chunks by the pickled length, not the raw length.
"""
from __future__ import annotations

import hashlib
from typing import Any

import pysyncobj.pickle as pso_pickle
from pysyncobj import SyncObj, SyncObjConsumer, replicated


def command_size(funcID: int, *args: Any) -> int:
    """Bytes of the log entry's command for a replicated call with positional args."""
    return 1 + len(pso_pickle.dumps((funcID, args)))


def apply_data(node: SyncObj, data: Any, skip: SyncObjConsumer | None = None) -> None:
    """Replace the node's user state with ``data`` (PySyncObj dump layout), on the tick thread.

    Unlike __loadDumpFile (which only assigns), attributes absent from ``data`` are removed so
    the result equals the source exactly. ``skip`` (the restoring consumer itself) is left alone.
    """
    consumers = node._SyncObj__consumers  # type: ignore[attr-defined]
    excluded: set[str] = node._SyncObj__properies  # type: ignore[attr-defined]
    if consumers:
        self_data, cons_data = data[0], data[1:]
    else:
        self_data, cons_data = data, []
    for k in [k for k in node.__dict__ if k not in excluded and k not in self_data]:
        del node.__dict__[k]
    node.__dict__.update(self_data)
    user_consumers = [c for c in consumers if c is not skip]
    for c, d in zip(user_consumers, cons_data):
        c_excluded = c._SyncObjConsumer__properies
        for k in [k for k in c.__dict__ if k not in c_excluded and k not in d]:
            del c.__dict__[k]
        c._deserialize(d)


class SnapshotSupport(SyncObjConsumer):
    """begin -> chunk* -> commit. The pending buffer is part of this consumer's ``_serialize()``
    so that a node which installs a PySyncObj dump in the middle of a restore still has the
    earlier chunks (otherwise it would reject the commit the others accept and diverge); it is
    never part of the user's state."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[str, Any] | None = None
        self.restores_done = 0

    @replicated
    def begin(self, rid: str, size: int, sha256: str) -> bool:
        self.pending = {"rid": rid, "size": size, "sha256": sha256, "parts": [], "got": 0}
        return True

    @replicated
    def chunk(self, rid: str, seq: int, data: bytes) -> bool:
        p = self.pending
        if p is None or p["rid"] != rid or seq != len(p["parts"]):
            return False
        p["parts"].append(data)
        p["got"] += len(data)
        return True

    @replicated
    def commit(self, rid: str) -> bool:
        p, self.pending = self.pending, None
        if p is None or p["rid"] != rid:
            return False
        blob = b"".join(p["parts"])
        if len(blob) != p["size"] or hashlib.sha256(blob).hexdigest() != p["sha256"]:
            return False
        import pickle

        apply_data(self._syncObj, pickle.loads(blob), skip=self)
        self.restores_done += 1
        return True

    @replicated
    def abort(self, rid: str) -> bool:
        if self.pending is not None and self.pending["rid"] == rid:
            self.pending = None
            return True
        return False
