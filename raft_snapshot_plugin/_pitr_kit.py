"""The conformance kit's checks of the point-in-time hooks (``raft_snapshot_changes``,
``raft_snapshot_replay``): a mixin of :class:`~raft_snapshot_plugin.testing.ConformanceTests`,
with the two fixtures those checks use. See :mod:`raft_snapshot_plugin.testing`."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from .archive import read_archive
from .changes import Change, Gap
from .manager import PluginManager
from .operations import restore, take
from .snapshot import Snapshot

__all__ = ["ChangesConformance", "snapshot_compact", "snapshot_write"]


@pytest.fixture
def snapshot_write() -> Callable[[Any, int], None] | None:
    """``(node, count) -> None``: commit ``count`` changes through ``node``'s cluster. The default
    is ``None``: an adapter with ``raft_snapshot_changes`` overrides it so the kit can check it."""
    return None


@pytest.fixture
def snapshot_compact() -> Callable[[Any], int] | None:
    """``node -> int``: compact the cluster's log, returning the last index compacted away. The
    default is ``None``: the kit then checks gaps only as far as the backend shows them itself."""
    return None


class ChangesConformance:
    """The point-in-time checks; they skip for an adapter without the hooks. The base of
    :class:`~raft_snapshot_plugin.testing.ConformanceTests`, and where the settings live."""

    #: The backend name the adapter registers (its entry-point name).
    backend: ClassVar[str]
    #: Set False for an adapter that cannot restore (the restore tests are then skipped).
    supports_restore: ClassVar[bool] = True
    #: Set True for an adapter that restores offline into a cluster that does not run yet: after a
    #: successful restore the kit calls ``snapshot_start_restored(node)`` before reading its state.
    restore_is_offline: ClassVar[bool] = False

    def _restore_or_skip(self) -> None:
        if not self.supports_restore:
            pytest.skip(f"the {self.backend} adapter does not restore")

    # --- point-in-time recovery (the optional changes and replay hooks) ------------------------

    def _changes_or_skip(self, pm: PluginManager, write: Any, *hooks: str) -> None:
        missing = [h for h in hooks if h not in pm.hooks_of(self.backend)]
        if missing:
            pytest.skip(f"the {self.backend} adapter does not implement {', '.join(missing)}")
        if write is None:
            pytest.skip("provide the snapshot_write fixture to check the changes hooks")

    def test_changes_are_contiguous_and_ordered(
        self, snapshot_manager: PluginManager, snapshot_node: Any, snapshot_tmpdir: Path,
        snapshot_write: Callable[[Any, int], None] | None,
    ) -> None:
        """The changes after a snapshot's index: every index once, in order, terms never going
        back, each with a finite commit time, up to a snapshot taken after them."""
        self._changes_or_skip(snapshot_manager, snapshot_write, "raft_snapshot_changes")
        assert snapshot_write is not None
        start = _state_digest(snapshot_node, snapshot_manager)[0]
        snapshot_write(snapshot_node, 5)
        end = _state_digest(snapshot_node, snapshot_manager)[0]
        assert end >= start + 5, "five writes must advance the index by five or more"
        items = _follow(snapshot_manager, self.backend, snapshot_node, start, end)
        assert all(isinstance(i, Change) for i in items), f"a gap right after a take: {items}"
        changes = [i for i in items if isinstance(i, Change)]
        assert [c.index for c in changes] == list(range(start + 1, start + 1 + len(changes)))
        assert all(a.term <= b.term for a, b in itertools.pairwise(changes))
        assert all(math.isfinite(c.time) and c.time > 0 for c in changes)

    def test_changes_report_what_cannot_be_delivered(
        self, snapshot_manager: PluginManager, snapshot_node: Any, snapshot_tmpdir: Path,
        snapshot_write: Callable[[Any, int], None] | None,
        snapshot_compact: Callable[[Any], int] | None,
    ) -> None:
        """From index 0 the first item covers index 1 (a change, or a gap after 0), and what the
        node no longer has is a ``Gap``: never a jump over indexes. After a compaction the gap
        must be there."""
        self._changes_or_skip(snapshot_manager, snapshot_write, "raft_snapshot_changes")
        compacted = snapshot_compact(snapshot_node) if snapshot_compact is not None else None
        end = _state_digest(snapshot_node, snapshot_manager)[0]
        items = _follow(snapshot_manager, self.backend, snapshot_node, 0, end)
        _assert_contiguous(items, 0)
        if compacted is not None:
            assert isinstance(items[0], Gap) and items[0].resumes_at > compacted, (
                f"changes up to {compacted} were compacted: want a Gap first, got {items[0]}")

    def test_replay_equals_a_take_at_that_index(
        self, snapshot_manager: PluginManager, snapshot_node: Any, snapshot_fresh_node: Any,
        snapshot_read_state: Callable[[Any], Any], snapshot_tmpdir: Path, tmp_path: Path,
        snapshot_start_restored: Callable[[Any], None],
        snapshot_write: Callable[[Any, int], None] | None,
    ) -> None:
        """A snapshot's state and the changes after it, replayed offline to a later snapshot's
        index, restore to the state that later snapshot holds."""
        self._restore_or_skip()
        self._changes_or_skip(snapshot_manager, snapshot_write, "raft_snapshot_changes",
                              "raft_snapshot_replay")
        assert snapshot_write is not None
        with take(snapshot_node, manager=snapshot_manager) as snap:
            base, base_state = snap.meta, _state_bytes(snap)
        snapshot_write(snapshot_node, 7)
        with take(snapshot_node, manager=snapshot_manager) as snap:
            later = snap.meta
        expected = snapshot_read_state(snapshot_node)
        items = _follow(snapshot_manager, self.backend, snapshot_node, base.index, later.index)
        changes = [i for i in items if isinstance(i, Change) and i.index <= later.index]
        sink = io.BytesIO()
        replayed = snapshot_manager.replay(self.backend, base, io.BytesIO(base_state), changes,
                                           sink, later.index)
        assert (replayed.index, replayed.term) == (later.index, later.term)
        built = dataclasses.replace(replayed, backend=self.backend, id="", peers=b"")
        with Snapshot.create(built, sink.getvalue()) as snap:
            snap.save(tmp_path / "replayed.snap")
        restore(snapshot_fresh_node, tmp_path / "replayed.snap", manager=snapshot_manager)
        if self.restore_is_offline:
            snapshot_start_restored(snapshot_fresh_node)
        assert snapshot_read_state(snapshot_fresh_node) == expected


def _follow(pm: PluginManager, backend: str, node: Any, after: int, until: int
            ) -> list[Change | Gap]:
    """The items after ``after`` until one reaches ``until`` (bounded: 20 calls of 2 s each)."""
    items: list[Change | Gap] = []
    cursor = after
    for _ in range(20):
        found = pm.changes(backend, node, cursor, 2.0)
        assert found is not None, "raft_snapshot_changes answered None for a running node"
        with contextlib.closing(found):
            for item in found:
                items.append(item)
                cursor = item.index if isinstance(item, Change) else item.resumes_at - 1
                if cursor >= until:
                    return items
    raise AssertionError(f"the changes stopped at {cursor}, before {until}: {items[-3:]}")


def _assert_contiguous(items: list[Change | Gap], after: int) -> None:
    cursor = after
    for item in items:
        if isinstance(item, Change):
            assert item.index == cursor + 1, f"change {item.index} after {cursor}: a jump"
            cursor = item.index
        else:
            assert item.after_index == cursor, f"{item} after {cursor}"
            cursor = item.resumes_at - 1


def _state_digest(node: Any, pm: PluginManager) -> tuple[int, int, str]:
    with take(node, manager=pm) as snap:
        return snap.meta.index, snap.meta.term, hashlib.sha256(_state_bytes(snap)).hexdigest()


def _state_bytes(snap: Snapshot) -> bytes:
    sink = io.BytesIO()
    snap.seek(0)
    read_archive(snap, sink)
    return sink.getvalue()
