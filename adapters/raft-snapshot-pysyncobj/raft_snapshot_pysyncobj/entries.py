"""A PySyncObj change's bytes, as segments store them: who ran it, then the raw log entry.

A raw PySyncObj entry names its method by a number that only the live node can resolve (the
position of the method among all replicated methods of the node and its consumers). A change's
bytes therefore start with one line of JSON naming the owner and the method, then a newline, then
the entry exactly as PySyncObj logged it (its command type byte, then its pickle)::

    {"o":"n","c":"app.KV","m":"set_v0"}\\n<entry>      the node's own replicated method
    {"o":1,"c":"pysyncobj.batteries.ReplDict","m":"set_v0"}\\n<entry>   the application's
                                                        consumer at that position
    {"o":"s","m":"_rsp_commit_v0"}\\n<entry>            SnapshotSupport's own (restores)
    {}\\n<entry>                                         a no-op, membership or version entry

Method names are the attribute names PySyncObj numbers (``name_v<ver>``).
"""

from __future__ import annotations

import json
import pickle
from typing import Any

from pysyncobj import SyncObj

from .appstate import InternalConsumer, consumer_name, user_consumers

__all__ = ["REGULAR", "EntryNames", "split_change"]

#: PySyncObj's command type of an application's command (the entry's first byte).
REGULAR = 0
_OTHER = b"{}\n"


class EntryNames:
    """Turns a node's raw entries into change bytes (on the agent's thread; the method table is
    fixed once the node is built)."""

    def __init__(self, node: SyncObj) -> None:
        self._node = node
        self._headers: dict[int, bytes] = {}

    def encode(self, command: bytes) -> bytes:
        if not command or command[0] != REGULAR:
            return _OTHER + command
        called = pickle.loads(command[1:])
        func_id = called[0] if isinstance(called, tuple) else called
        header = self._headers.get(func_id)
        if header is None:
            header = self._headers[func_id] = self._header(func_id)
        return header + command

    def _header(self, func_id: int) -> bytes:
        method = self._node._idToMethod[func_id]
        owner, name = method.__self__, method.__name__
        if owner is self._node:
            cls = type(owner)
            doc: dict[str, Any] = {"o": "n", "c": f"{cls.__module__}.{cls.__qualname__}",
                                   "m": name}
        elif isinstance(owner, InternalConsumer):
            doc = {"o": "s", "m": name}
        else:
            position = next(i for i, c in enumerate(user_consumers(self._node)) if c is owner)
            doc = {"o": position, "c": consumer_name(owner), "m": name}
        return json.dumps(doc, separators=(",", ":")).encode() + b"\n"


def split_change(data: bytes) -> tuple[dict[str, Any], bytes]:
    """A change's header and raw entry.

    :raises ValueError: the bytes are not a PySyncObj change.
    """
    line, newline, entry = data.partition(b"\n")
    if not newline or not entry:
        raise ValueError("not a PySyncObj change (no header line and entry)")
    header = json.loads(line)
    if not isinstance(header, dict):
        raise ValueError("not a PySyncObj change (its header is not an object)")
    return header, entry
