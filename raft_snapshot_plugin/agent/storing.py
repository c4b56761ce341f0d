"""Storing one verified snapshot into the prefix: skipped when its state is the newest stored one's,
named uniquely with a store time that never goes back, uploaded whole, read back, then pruned."""

from __future__ import annotations

import logging
import os
from typing import Any

from ..archive import read_archive_contents
from ..errors import ArchiveError
from .bookkeeping import Bookkeeper
from .objects import LockOptions, check_stored, put_whole, sha256_of_file
from .prune import prune
from .retention import Retention
from .storage import (
    SkipRoundError,
    StoredSnapshot,
    describe,
    list_stored,
    next_store_time,
    object_name,
    storage_errors,
)

__all__ = ["Storer"]

log = logging.getLogger("raft_snapshot_plugin.agent")


class Storer:
    """The storing half of an agent's round, on its open store."""

    def __init__(self, store: tuple[Any, str], url: str, books: Bookkeeper, *,
                 retention: Retention, interval: float, partial_grace: float, encrypted: bool,
                 object_lock: LockOptions | None) -> None:
        self._fs_root = store
        self.url = url
        self.books = books
        self.retention = retention
        self.interval = interval
        self.partial_grace = partial_grace
        self.encrypted = encrypted
        self.object_lock = object_lock

    def store(self, path: str, index: int, state_sha256: str, now: float, *, stale: bool = False
              ) -> tuple[str, int]:
        """Store ``path`` unless its state is the newest stored one's (``SkipRoundError``); read it
        back; prune. Return the object's URL and size. ``stale``: the snapshot was read on a
        follower, and its name says so.

        :raises StorageError: the store failed, or the object stored does not read back right (it
            is deleted then).
        """
        fs, root = self._fs_root
        with storage_errors(f"storing into {self.url}", self.url):
            existing = list_stored(fs, root)
            if existing and self.hash_of(fs, existing[-1]) == state_sha256:
                raise SkipRoundError(f"the state is unchanged since {existing[-1].url}")
            name = object_name(next_store_time(now, existing), index, encrypted=self.encrypted,
                               stale=stale)
            size, digest = os.path.getsize(path), sha256_of_file(path)
            lock = self.object_lock.put_options(now) if self.object_lock else None
            final = put_whole(fs, root, path, name, lock)
            check_stored(fs, final, size, digest, self.url)
            url = str(fs.unstrip_protocol(final))
            self.books.remember(name, url, state_sha256)
            log.info("stored snapshot at index %d: %s", index, url)
        self.apply_retention(name, now)
        return url, size

    def hash_of(self, fs: Any, snap: StoredSnapshot) -> str | None:
        """The state hash of a stored snapshot: remembered, or read back once from the store."""
        remembered = self.books.remembered(snap.name, snap.url)
        if remembered is not None:
            return remembered
        if snap.name.endswith(".age"):
            return None  # encrypted: only the agent that stored it knows its hash
        try:
            with fs.open(snap.path, "rb") as source:
                digest = read_archive_contents(source, None).state_sha256
        except FileNotFoundError:
            return None  # another agent's retention removed it meanwhile
        except ArchiveError as exc:
            log.warning("the newest stored snapshot %s does not verify: %s", snap.url, exc)
            return None
        self.books.remember(snap.name, snap.url, digest)
        return digest

    def apply_retention(self, newest: str, now: float) -> None:
        """Prune after a store; a failed pass is logged and recorded, never raised (the store
        succeeded, and the next round tries again)."""
        fs, root = self._fs_root
        try:
            report = prune(fs, root, now=now, retention=self.retention, newest=newest,
                           protect=self.interval, partial_grace=self.partial_grace,
                           by_version=self.object_lock is not None)
            left = list_stored(fs, root)
        except Exception as exc:  # the store succeeded; the next round tries again
            log.warning("retention in %s failed: %s", self.url, describe(exc))
            self.books.pruned(None, None, error=describe(exc))
            return
        self.books.pruned(report, left)
