"""The committed entries a node applies, kept for point-in-time recovery (``raft_snapshot_changes``).

:class:`Capture` wraps the node's entry-applying step (PySyncObj's ``__doApplyCommand``, the same
private name from 0.3.10 to 0.3.17, see :mod:`._node`): each entry applied without an exception is
recorded on the tick thread with its index, term, the time it was applied and its raw bytes, in a
buffer bounded by bytes (oldest first out). :meth:`Capture.follow` delivers them to the agent's
shipper as :class:`~raft_snapshot_plugin.changes.Change` items (their bytes: :mod:`.entries`).

What the buffer lacks (it overflowed, or the node started after those entries) is read from the
node's own journal while the journal still holds it: the entries since PySyncObj's last log
compaction, and after a restart with a journal file, the entries the node applies again (those are
recorded as it applies them, with that time). What neither has is a
:class:`~raft_snapshot_plugin.changes.Gap`: the node restarted from a dump, installed its leader's
dump, or compacted its log past them. Nothing is skipped silently.
"""

from __future__ import annotations

import bisect
import functools
import logging
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from typing import Any

from pysyncobj import SyncObj

from raft_snapshot_plugin.toolkit import Change, Gap

from . import _node
from .entries import EntryNames

__all__ = ["DEFAULT_BUFFER_BYTES", "Capture"]

log = logging.getLogger(__name__)

#: The capture buffer's default bound (``SnapshotSupport(change_buffer_bytes=...)``).
DEFAULT_BUFFER_BYTES = 32 << 20
#: What one buffered entry costs besides its bytes (tuple, ints, float).
_ENTRY_OVERHEAD = 120
#: The most entries one look into the journal copies, on the tick thread.
_JOURNAL_BATCH = 5000
#: The most apply times of evicted entries kept (for entries later read from the journal).
_MAX_TIMES = 1 << 20

_Entry = tuple[int, int, float, bytes]  # index, term, time applied, raw entry bytes


class Capture:
    """The entries ``node`` applies, from the moment :meth:`attach` wraps its applying step."""

    def __init__(self, max_bytes: int = DEFAULT_BUFFER_BYTES) -> None:
        self.max_bytes = max_bytes
        self._cond = threading.Condition()
        self._items: list[_Entry] = []
        self._head = 0           # items before it are evicted
        self._bytes = 0
        self._applied = 0        # the last index recorded
        self._times = array("d")  # apply times of evicted entries, from _times_first on
        self._times_first = 0
        self._started = time.time()
        self._node: SyncObj | None = None
        self._names: EntryNames | None = None
        self.evicted = 0         # how many entries the bound pushed out

    def attach(self, node: SyncObj) -> None:
        """Wrap ``node``'s applying step (called as the node's constructor hands it to its
        consumers, before it applies anything)."""
        if self._node is node:
            return
        self._node = node
        apply: Callable[[bytes], Any] = node._SyncObj__doApplyCommand

        def applying(command: bytes) -> Any:
            result = apply(command)  # an exception: not applied, PySyncObj applies it again
            self._record(node, command)
            return result

        # An instance attribute named before SyncObj.__init__ lists its own: never in a dump.
        node.__dict__["_SyncObj__doApplyCommand"] = applying

    def _record(self, node: SyncObj, command: bytes) -> None:
        index = node.raftLastApplied + 1  # PySyncObj counts the entry after applying it
        try:
            term = _node.log_term(node, index)
        except Exception:  # pragma: no cover - the journal always holds the entry being applied
            term = 0
        entry = (index, term, time.time(), bytes(command))
        with self._cond:
            self._items.append(entry)
            self._bytes += len(command) + _ENTRY_OVERHEAD
            self._applied = index
            if self._bytes > self.max_bytes:
                self._evict()
            self._cond.notify_all()

    def _evict(self) -> None:
        while self._bytes > self.max_bytes // 2 and self._head < len(self._items) - 1:
            index, _, when, command = self._items[self._head]
            self._bytes -= len(command) + _ENTRY_OVERHEAD
            self._head += 1
            self.evicted += 1
            if index != self._times_first + len(self._times):
                self._times, self._times_first = array("d"), index
            self._times.append(when)
        if len(self._times) > _MAX_TIMES:
            drop = len(self._times) - _MAX_TIMES // 2
            del self._times[:drop]
            self._times_first += drop
        if self._head > len(self._items) // 2:
            del self._items[:self._head]
            self._head = 0

    # --- delivery (the agent's thread) -----------------------------------------------------------

    def follow(self, after_index: int, timeout: float | None) -> Iterator[Change | Gap]:
        """The applied entries after ``after_index``, in index order (see the module); once all
        applied so far are delivered, wait up to ``timeout`` seconds for the next one, then end."""
        node = self._node
        if node is None:
            raise RuntimeError("the capture is not attached to a node")
        names = self._names = self._names or EntryNames(node)
        cursor = after_index
        while True:
            batch = self._next_batch(cursor, timeout)
            if batch is None:
                return
            for index, term, when, command in batch:
                if index <= cursor:
                    continue  # applied again (a journal replayed): delivered already
                if index > cursor + 1:
                    for item in self._fill(node, names, cursor, index):
                        yield item
                        cursor = item.index if isinstance(item, Change) else item.resumes_at - 1
                yield Change(index, term, when, names.encode(command))
                cursor = index

    def _next_batch(self, cursor: int, timeout: float | None) -> list[_Entry] | None:
        """The buffered entries after ``cursor`` (and a marker entry where the buffer starts later
        than ``cursor + 1``); ``None`` when none came within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._applied <= cursor:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left if left is None else min(left, 1.0))
            start = bisect.bisect_right(self._items, cursor, lo=self._head, key=lambda e: e[0])
            return self._items[start:start + _JOURNAL_BATCH]

    def _fill(self, node: SyncObj, names: EntryNames, cursor: int, until: int
              ) -> Iterator[Change | Gap]:
        """Indexes ``cursor + 1`` to ``until - 1``, which the buffer lacks: from the journal while
        it holds them, else a gap up to ``until``."""
        while cursor + 1 < until:
            entries = _node.run_on_tick(
                node, functools.partial(_journal_slice, node, cursor + 1, until - 1), 30.0)
            if not entries or entries[0][1] != cursor + 1:
                resumes = entries[0][1] if entries else until
                why = ("not held by this node (its log was compacted, or it started from a dump "
                       "or took its leader's) and not in its capture buffer")
                yield Gap(cursor, resumes, why)
                cursor = resumes - 1
                continue
            for command, index, term in entries:
                yield Change(index, term, self._time_of(index, until), names.encode(command))
                cursor = index

    def _time_of(self, index: int, later: int) -> float:
        """When an entry read from the journal was applied: its recorded time, if kept; else no
        later than the next one recorded (or, before anything was recorded, the start)."""
        with self._cond:
            position = index - self._times_first
            if 0 <= position < len(self._times):
                return self._times[position]
            if index < (self._items[self._head][0] if self._head < len(self._items) else 0):
                upper = bisect.bisect_left(self._items, later, lo=self._head, key=lambda e: e[0])
                if upper < len(self._items):
                    return self._items[upper][2]
        return self._started


def _journal_slice(node: SyncObj, first: int, last: int) -> list[tuple[bytes, int, int]]:
    """The journal's applied entries ``first``..``last`` it holds (at most a batch), from the
    first it holds at or after ``first``: call on the tick thread."""
    journal = node._SyncObj__raftLog
    start = int(journal[0][1])
    last = min(last, int(node.raftLastApplied))
    begin = max(first, start) - start
    end = min(last - start + 1, begin + _JOURNAL_BATCH, len(journal))
    return [(bytes(e[0]), int(e[1]), int(e[2])) for e in journal[begin:end]] if begin < end else []
