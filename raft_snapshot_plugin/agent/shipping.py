"""The segment shipper: follows a node's committed changes and stores them as segments.

It runs on a thread of its own beside the agent's rounds. It resumes after the last segment stored
under the prefix (or, before the first one, after the newest snapshot), follows the node through
the adapter's ``raft_snapshot_changes``, and cuts a segment when the oldest buffered change is
``segment_interval`` seconds old or the buffer holds ``segment_bytes``. Indexes are never skipped
silently: a :class:`~..changes.Gap` from the adapter is recorded in the segment, and so is any index
the adapter jumps over. A failed store keeps the changes buffered and is retried with backoff; a
killed agent loses only its buffer, which the next one ships again from the node's log.

The buffer is bounded (``max_buffer`` bytes): when a long outage of the store fills it, the
shipper keeps the range whose store failed, forgets the changes after it and stops following
until that range is stored; then it follows again from there, so the node delivers the forgotten
changes once more. Only a node that can no longer deliver them (its log compacted meanwhile)
makes them a gap, which its adapter reports and the segment records.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import encryption
from .._files import remove_quietly, temp_file
from ..changes import Change, Gap
from ..errors import RaftSnapshotError
from ..manager import PluginManager, get_plugin_manager
from ..seal import SealKey
from .bookkeeping import Bookkeeper
from .objects import check_stored, put_whole, sha256_of_file
from .segments import CHANGES_FOLDER, list_segments, segment_name, write_segment
from .storage import describe, list_stored, storage_errors

__all__ = ["Shipper"]

log = logging.getLogger("raft_snapshot_plugin.agent")

#: bytes a change costs in the buffer besides its data (its record header)
_RECORD_OVERHEAD = 28
_MAX_RETRY = 30.0


class Shipper:
    """Ships one node's changes into ``<url>/changes/`` until ``stop`` is set (see the module)."""

    def __init__(self, node: object, *, store: tuple[Any, str], url: str, books: Bookkeeper,
                 stop: threading.Event, interval: float, max_bytes: int, max_buffer: int,
                 stale: bool,
                 manager: PluginManager | None, backend: str | None, seal_key: SealKey | None,
                 recipients: Sequence[encryption.AgeRecipient],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.fs, self.root = store
        self.url = url
        self.books = books
        self.stop = stop
        self.interval = interval
        self.max_bytes = max_bytes
        self.max_buffer = max_buffer
        self.stale = stale
        self.seal_key = seal_key
        self.recipients = list(recipients)
        self.clock = clock
        self._pm = manager
        self._backend = backend
        self._cursor: int | None = None   # the last index taken into the buffer (or stored)
        self._stored_through = 0          # the last index stored in a segment
        self._buffer: list[Change | Gap] = []
        self._bytes = 0
        self._since: float | None = None  # when the oldest buffered item arrived
        self._retry_at = 0.0
        self._retry_delay = 1.0
        self._retry_count = 0             # the items of the range whose store failed, if one did
        self._held = False                # the buffer overflowed: following waits for the store

    # --- the thread ---------------------------------------------------------------------------

    def run(self) -> None:
        """Follow and ship until ``stop`` is set; then store what is buffered, once."""
        poll = min(0.5, self.interval / 4)
        while not self.stop.is_set():
            try:
                waited = self._step(poll)
            except RaftSnapshotError as exc:
                log.warning("shipping changes failed: %s", exc)
                self.books.segment_failed(describe(exc))
                waited = False
            except Exception as exc:  # a bug here must not end shipping: start again from storage
                log.exception("shipping changes failed unexpectedly")
                self.books.segment_failed(describe(exc))
                self._drop("following changes again after an unexpected error")
                waited = False
            if not waited and self.stop.wait(poll):
                break
        if self._buffer:
            self._flush(force=True)

    def _step(self, poll: float) -> bool:
        """One pass: follow the node for up to ``poll`` seconds of quiet, cutting segments as they
        fill or age. Whether it waited (the hook's own wait) rather than returned at once."""
        pm = self._pm if self._pm is not None else get_plugin_manager()
        self._pm = pm
        name = self._backend or pm.backend_for(self.node)
        self._backend = name
        if not self._leads(pm, name):
            return False
        if self._cursor is None and not self._resume():
            return False
        assert self._cursor is not None
        if self._held:
            if self._due():
                self._flush()
            if self._buffer:
                return False
            self._held = False
        items = pm.changes(name, self.node, self._cursor, poll)
        if items is None:
            self._drop(f"not shipping changes: the {name} adapter cannot follow this node now")
            return False
        self._shipping("following changes")
        checked = self.clock()
        with contextlib.closing(items):
            for item in items:
                self._take(item)
                if self._due():
                    self._flush()
                if self.stop.is_set() or self._held:
                    break
                if self.clock() - checked > poll:  # a busy cluster never lets the hook end
                    if not self._leads(pm, name):
                        return False
                    checked = self.clock()
        if self._due():
            self._flush()
        return True

    def _leads(self, pm: PluginManager, name: str) -> bool:
        """Whether this agent ships (its node leads, or ``stale``); if not, stop following."""
        if self.stale or pm.is_leader(name, self.node) is not False:
            return True
        self._drop("not shipping changes: this node is not the leader (its agent ships)")
        return False

    def _resume(self) -> bool:
        """Start after the last stored segment, or the newest snapshot; whether one was found."""
        with storage_errors(f"listing {self.url}", self.url):
            segments = list_segments(self.fs, self.root)
            snapshots = [] if segments else list_stored(self.fs, self.root)
        if segments:
            start = max(s.last for s in segments)
        elif snapshots:
            start = snapshots[-1].index
        else:
            self._shipping("waiting for the first snapshot before shipping changes")
            return False
        self._cursor = self._stored_through = start
        log.info("shipping changes after index %d into %s/%s", start, self.url, CHANGES_FOLDER)
        return True

    def _drop(self, why: str) -> None:
        """Stop following (leadership moved, the node cannot follow): forget the buffer, which the
        agent that ships next delivers again from the node's log, and resume from storage."""
        self._cursor, self._buffer, self._bytes, self._since = None, [], 0, None
        self._retry_count, self._held = 0, False
        self._shipping(why)

    def _shipping(self, what: str) -> None:
        if self.books.status.shipping != what:
            self.books.update(shipping=what)

    # --- the buffer ---------------------------------------------------------------------------

    def _take(self, item: Change | Gap) -> None:
        assert self._cursor is not None
        expected = self._cursor + 1
        if isinstance(item, Change):
            if item.index < expected:
                return  # delivered again (a re-subscription overlapping): we have it
            skipped = self._cursor
            self._cursor = item.index  # before adding: a full buffer moves it back (_hold)
            if item.index > expected:
                self._add(Gap(skipped, item.index, "the adapter skipped these indexes"), 0)
            self._add(item, _cost(item))
            return
        if item.resumes_at <= expected:
            return
        after, self._cursor = self._cursor, item.resumes_at - 1
        self._add(Gap(after, item.resumes_at, item.reason), 0)

    def _add(self, item: Change | Gap, size: int) -> None:
        if not self._buffer:
            self._since = self.clock()
        self._buffer.append(item)
        self._bytes += size
        if self._bytes > self.max_buffer and self._retry_count:
            self._hold()

    def _hold(self) -> None:
        """The store has been failing and the buffer is full: keep the range that failed (its
        retry must store exactly that range), forget the rest and follow again after it once
        the store takes it; the node delivers the forgotten changes again then."""
        kept = self._buffer[:self._retry_count]
        log.warning("the store has failed for a while and %d bytes of changes wait: holding the "
                    "%d item(s) of the failed segment, reading the %d after it again from the "
                    "node once the store is back", self._bytes, len(kept),
                    len(self._buffer) - len(kept))
        self._buffer, self._bytes = kept, sum(_cost(i) for i in kept)
        last = kept[-1]
        self._cursor = last.index if isinstance(last, Change) else last.last_missing
        self._held = True

    def _due(self) -> bool:
        if not self._buffer or self.clock() < self._retry_at:
            return False
        assert self._since is not None
        return self._bytes >= self.max_bytes or self.clock() - self._since >= self.interval

    def _flush(self, *, force: bool = False) -> None:
        """Store the buffer as segments of at most ``max_bytes`` (one change more, when a single
        change is larger); on failure keep the rest buffered and retry after a backoff."""
        while self._buffer:
            # a retry stores exactly the range that failed: an upload that landed although its
            # check failed (the store went away meanwhile) is then overwritten, not overlapped
            count, size = 0, 0
            while count < len(self._buffer) and (
                    count < self._retry_count if self._retry_count
                    else count == 0 or size < self.max_bytes):
                size += _cost(self._buffer[count])
                count += 1
            try:
                self._store(self._buffer[:count])
            except RaftSnapshotError as exc:
                self._retry_count = count
                self._retry_at = self.clock() + self._retry_delay
                self._retry_delay = min(self._retry_delay * 2, _MAX_RETRY)
                log.warning("storing a segment failed (changes kept, retry in %.0f s): %s",
                            self._retry_at - self.clock(), exc)
                self.books.segment_failed(describe(exc))
                if force:
                    log.error("stopping with %d change(s) not stored; the next agent ships them "
                              "from the node's log", len(self._buffer))
                return
            del self._buffer[:count]
            self._bytes -= size
            self._retry_delay, self._retry_count = 1.0, 0
        self._since = None

    def _store(self, items: Sequence[Change | Gap]) -> None:
        changes = [i for i in items if isinstance(i, Change)]
        gaps = [i for i in items if isinstance(i, Gap)]
        first = self._stored_through + 1
        assert self._backend is not None
        with temp_file(prefix="raft-snapshot-segment-") as (file, path), \
                storage_errors(f"storing a segment into {self.url}", self.url):
            try:
                meta = write_segment(file, self._backend, first, changes, gaps,
                                     seal_key=self.seal_key)
                file.close()
                stored = self._encrypted(path)
                name = segment_name(first, meta.index, encrypted=bool(self.recipients))
                folder = f"{self.root}/{CHANGES_FOLDER}"
                size, digest = os.path.getsize(stored), sha256_of_file(stored)
                final = put_whole(self.fs, folder, stored, name)
                check_stored(self.fs, final, size, digest, self.url)
            finally:
                file.close()
                remove_quietly(path)
                remove_quietly(path + ".age")
        self._stored_through = meta.index
        self.books.segment_stored(meta.index)
        log.info("stored segment %s (%d change(s), %d gap(s))", name, len(changes), len(gaps))

    def _encrypted(self, path: str) -> str:
        if not self.recipients:
            return path
        with open(path, "rb") as plain, open(path + ".age", "xb") as out:
            encryption.encrypt(plain, out, self.recipients)
        return path + ".age"


def _cost(item: Change | Gap) -> int:
    """What an item adds to a segment's size, as the buffer counts it."""
    return len(item.data) + _RECORD_OVERHEAD if isinstance(item, Change) else 0
