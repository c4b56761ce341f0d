"""The conformance kit: a pytest plugin that proves an adapter right, and the reference backend.

An adapter's ``conftest.py`` enables the kit and provides three fixtures::

    pytest_plugins = ["raft_snapshot_plugin.testing"]

    @pytest.fixture
    def snapshot_node():         # a node whose cluster holds a known state (and is quiet)
        ...
    @pytest.fixture
    def snapshot_fresh_node():   # a node of another cluster, to restore into
        ...
    @pytest.fixture
    def snapshot_read_state():   # node -> a comparable value of its cluster's state
        return lambda node: ...

and one test module subclasses :class:`ConformanceTests`::

    class TestConformance(ConformanceTests):
        backend = "mybackend"

It then runs the round-trip, lifecycle, damaged-archive-never-applied, temp-file and metadata tests.

An adapter that implements the point-in-time hooks (``raft_snapshot_changes``,
``raft_snapshot_replay``) also provides ``snapshot_write`` (``(node, count) -> None``: commit
``count`` changes through the node's cluster and return once they are applied) and, when its
backend can compact its log on demand, ``snapshot_compact`` (``node -> int``: compact, return the
last index compacted away). The kit then checks that changes come contiguous and in order, that
what cannot be delivered is reported as a ``Gap`` (never skipped), and that replaying a snapshot
with the changes after it gives the state a snapshot taken at that index holds. Without
``snapshot_write`` those checks skip, saying so.
``snapshot_manager`` (a fresh plugin manager: the installed adapters plus the reference backend)
and ``snapshot_tmpdir`` (a private temp folder that must be empty at the end) come with the kit,
and so does ``snapshot_s3``: moto's standalone S3 server (``moto[server]``, in the ``test`` extra)
in its own process on 127.0.0.1, one per test module, for tests of agents that store in S3
(``server.options()`` are the agent's ``storage_options``; :class:`S3Server` is also a context
manager, for a server per test).

A README walkthrough is tested as written with :func:`readme_blocks` (its ``bash`` blocks marked
``<!-- recovery: NAME -->``) and :func:`run_walkthrough` (one shell, ``raft-snapshot`` and
``python`` meaning the interpreter under test, whatever it started stopped after).

The offline-restore flavour, for a backend that cannot restore a running cluster (etcd): set
``restore_is_offline = True``; ``snapshot_fresh_node`` is then a node object describing a cluster
that does not run yet, which the adapter's restore builds (data dirs, files) without starting it.
``snapshot_read_state`` must answer for that node before the restore too (for example: "not
started" and which of its files exist), so the kit still sees that a refused archive changed
nothing. After a successful restore the kit calls the ``snapshot_start_restored`` fixture
(``node -> None``: start the restored members; the conftest stops them at teardown) before it
reads the restored state. The fixture's default does nothing, and adapters that restore live
never need it.

The reference backend (:mod:`raft_snapshot_plugin.memory`, importable without pytest) is registered
by ``snapshot_manager`` beside the installed adapters, so every run also proves that an adapter
claims only its own nodes and answers only its own backend's calls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ._pitr_kit import ChangesConformance, snapshot_compact, snapshot_write
from ._s3_server import S3Server
from ._walkthrough import readme_blocks, run_walkthrough
from .archive import read_archive
from .errors import (
    ArchiveError,
    BackendNotFoundError,
    IncompatibleArchiveError,
    NotLeaderError,
    StateRejectedError,
)
from .hookspecs import REQUIRED
from .manager import PluginManager, get_plugin_manager
from .memory import (
    MEMORY_BACKEND,
    MemoryCluster,
    MemoryNode,
    MemoryPlugin,
    decode_memory_state,
    encode_memory_state,
)
from .meta import SnapshotMeta
from .operations import inspect, restore, take
from .restored import RestoreResult
from .snapshot import Snapshot, verify

__all__ = [
    "MEMORY_BACKEND",  # the reference backend's names, kept here for the kit's users
    "ConformanceTests",
    "MemoryCluster",
    "MemoryNode",
    "MemoryPlugin",
    "S3Server",
    "decode_memory_state",
    "encode_memory_state",
    "readme_blocks",
    "run_walkthrough",
    "snapshot_compact",
    "snapshot_manager",
    "snapshot_s3",
    "snapshot_start_restored",
    "snapshot_tmpdir",
    "snapshot_write",
]


# ==================================================================================================
# The pytest plugin
# ==================================================================================================

@pytest.fixture
def snapshot_manager() -> PluginManager:
    """A fresh plugin manager: the installed adapters, plus the reference backend."""
    pm = get_plugin_manager()
    pm.register(MemoryPlugin(), name=MEMORY_BACKEND)
    return pm


@pytest.fixture
def snapshot_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point ``RAFT_SNAPSHOT_TMPDIR`` at a private folder that must be empty at the end."""
    folder = tmp_path / "snapshot-tmp"
    folder.mkdir()
    monkeypatch.setenv("RAFT_SNAPSHOT_TMPDIR", str(folder))
    yield folder
    left = sorted(p.name for p in folder.iterdir())
    assert not left, f"temp files outlived the test: {left}"


@pytest.fixture(scope="module")
def snapshot_s3() -> Iterator[S3Server]:
    """moto's standalone S3 server in its own process on 127.0.0.1, one per test module."""
    pytest.importorskip("moto.server", reason="snapshot_s3 needs moto[server] (the test extra)")
    with S3Server() as server:
        yield server


@pytest.fixture
def snapshot_start_restored() -> Callable[[Any], None]:
    """``node -> None``: start a cluster an offline restore built (``restore_is_offline``).

    The default does nothing; an adapter with the offline-restore flavour overrides it in its
    conftest (and stops what it started when the test ends).
    """
    return lambda node: None


class ConformanceTests(ChangesConformance):
    """Subclass in an adapter's tests and set ``backend`` (and, where they apply,
    ``supports_restore`` and ``restore_is_offline``: see :class:`ChangesConformance`, whose
    point-in-time checks it inherits); the fixtures come from the conftest."""

    # --- discovery and leadership -----------------------------------------------------------------

    def test_required_hooks_implemented(self, snapshot_manager: PluginManager) -> None:
        info = {b.name: b for b in snapshot_manager.backends()}[self.backend]
        assert info.usable, f"missing required hooks: {info.missing}"
        assert set(REQUIRED) <= set(info.hooks)

    def test_backend_claims_node(self, snapshot_manager: PluginManager, snapshot_node: Any) -> None:
        """Exactly one adapter claims the node (a second claim would raise), under its name."""
        assert snapshot_manager.backend_for(snapshot_node) == self.backend

    def test_backend_claims_nothing_else(self, snapshot_manager: PluginManager) -> None:
        with pytest.raises(BackendNotFoundError):
            snapshot_manager.backend_for(object())
        # The reference backend's node is not this adapter's either: only memory claims it.
        assert snapshot_manager.backend_for(MemoryCluster(1).nodes[0]) == MEMORY_BACKEND

    def test_leadership_decides_leader_only_takes(
        self, snapshot_manager: PluginManager, snapshot_node: Any, snapshot_tmpdir: Path
    ) -> None:
        """``is_leader`` is what a leader-only take goes by: it succeeds exactly on the leader,
        and elsewhere names the leader if the adapter knows it (``raft_snapshot_leader``)."""
        leads = snapshot_manager.is_leader(self.backend, snapshot_node)
        if leads is None:
            assert "raft_snapshot_is_leader" not in snapshot_manager.hooks_of(self.backend)
            with take(snapshot_node, leader_only=True, manager=snapshot_manager) as snap:
                assert snap.stale is None
            return
        if leads:
            with take(snapshot_node, leader_only=True, manager=snapshot_manager) as snap:
                assert snap.stale is False
            return
        with pytest.raises(NotLeaderError) as info:
            take(snapshot_node, leader_only=True, manager=snapshot_manager).close()
        assert info.value.leader == snapshot_manager.leader(self.backend, snapshot_node)
        with take(snapshot_node, manager=snapshot_manager) as snap:
            assert snap.stale is True

    # --- take -------------------------------------------------------------------------------------

    def test_take_metadata(
        self, snapshot_manager: PluginManager, snapshot_node: Any, snapshot_tmpdir: Path
    ) -> None:
        with take(snapshot_node, manager=snapshot_manager) as snap:
            meta = verify(snap)
            assert meta == snap.meta
            assert meta.backend == self.backend
            assert meta.state_format, "the adapter must name its state format"
            assert meta.index >= 1
            assert meta.servers and all(s.address for s in meta.servers)
            assert re.fullmatch(rf"{meta.term}-{meta.index}-\d+", meta.id)
            leads = snapshot_manager.is_leader(self.backend, snapshot_node)
            assert snap.stale is (None if leads is None else not leads)
            leader = snapshot_manager.leader(self.backend, snapshot_node)
            if leader is not None:  # the leader it names is a member of the configuration
                assert leader in {s.address for s in meta.servers}

    def test_take_is_repeatable(
        self, snapshot_manager: PluginManager, snapshot_node: Any, snapshot_tmpdir: Path
    ) -> None:
        """Two takes of a quiet cluster hold the same state at the same index."""
        first = _state_digest(snapshot_node, snapshot_manager)
        second = _state_digest(snapshot_node, snapshot_manager)
        assert first == second

    def test_take_lives_in_one_private_temp_file(
        self, snapshot_manager: PluginManager, snapshot_node: Any, snapshot_tmpdir: Path
    ) -> None:
        """The archive is the one 0600 file in the temp folder (the state's own temp file is gone),
        what the snapshot reads is that file byte for byte, and closing removes it."""
        snap = take(snapshot_node, manager=snapshot_manager)
        assert [p.name for p in snapshot_tmpdir.iterdir()] == [Path(snap.path).name]
        assert stat.S_IMODE(os.stat(snap.path).st_mode) == 0o600
        assert snap.read() == Path(snap.path).read_bytes()
        assert snap.size == os.path.getsize(snap.path)
        snap.close()
        snap.close()
        assert list(snapshot_tmpdir.iterdir()) == []

    def test_save_is_atomic_and_whole(
        self, snapshot_manager: PluginManager, snapshot_node: Any, snapshot_tmpdir: Path,
        tmp_path: Path,
    ) -> None:
        with take(snapshot_node, manager=snapshot_manager) as snap:
            snap.read(100)
            target = tmp_path / "saved.snap"
            snap.save(target)
            assert stat.S_IMODE(target.stat().st_mode) == 0o600
            assert verify(target) == snap.meta
            assert sorted(p.name for p in tmp_path.iterdir() if p.name != snapshot_tmpdir.name) == [
                "saved.snap"
            ]

    def test_inspect_describes_state(
        self, snapshot_manager: PluginManager, snapshot_node: Any, snapshot_tmpdir: Path,
        tmp_path: Path,
    ) -> None:
        with take(snapshot_node, manager=snapshot_manager) as snap:
            snap.save(tmp_path / "s.snap")
        found = inspect(tmp_path / "s.snap", manager=snapshot_manager)
        assert found.meta.backend == self.backend
        if "raft_snapshot_describe" not in snapshot_manager.hooks_of(self.backend):
            assert found.stats == ()  # optional: no breakdown, and no error
            return
        assert found.stats, "raft_snapshot_describe gave no breakdown"
        names = [row.name for row in found.stats]
        assert len(set(names)) == len(names) and all(names)
        assert all(row.count >= 0 and row.sum >= 0 for row in found.stats)
        # snapshot_node holds a known, non-empty state: the breakdown must count some of it
        assert any(row.count > 0 for row in found.stats), found.stats
        # describing is a pure function of the archive
        assert inspect(tmp_path / "s.snap", manager=snapshot_manager) == found

    # --- restore ----------------------------------------------------------------------------------

    def test_round_trip(
        self, snapshot_manager: PluginManager, snapshot_node: Any, snapshot_fresh_node: Any,
        snapshot_read_state: Callable[[Any], Any], snapshot_tmpdir: Path, tmp_path: Path,
        snapshot_start_restored: Callable[[Any], None],
    ) -> None:
        self._restore_or_skip()
        expected = snapshot_read_state(snapshot_node)
        with take(snapshot_node, manager=snapshot_manager) as snap:
            snap.save(tmp_path / "s.snap")
        assert snapshot_read_state(snapshot_fresh_node) != expected, "pick a fresh node that differs"
        result = restore(snapshot_fresh_node, tmp_path / "s.snap", manager=snapshot_manager)
        assert result.meta == verify(tmp_path / "s.snap")
        if self.restore_is_offline:
            snapshot_start_restored(snapshot_fresh_node)
        assert snapshot_read_state(snapshot_fresh_node) == expected
        if result.members is not None:
            with take(snapshot_fresh_node, manager=snapshot_manager) as snap:
                _check_report(result, snap.meta)

    def test_damaged_archive_never_applied(
        self, snapshot_manager: PluginManager, snapshot_node: Any, snapshot_fresh_node: Any,
        snapshot_read_state: Callable[[Any], Any], snapshot_tmpdir: Path, tmp_path: Path,
    ) -> None:
        self._restore_or_skip()
        with take(snapshot_node, manager=snapshot_manager) as snap:
            snap.save(tmp_path / "s.snap")
        raw = (tmp_path / "s.snap").read_bytes()
        before = snapshot_read_state(snapshot_fresh_node)
        damaged = {
            "truncated": raw[: len(raw) // 2],
            "byte flipped": raw[: len(raw) // 2] + bytes([raw[len(raw) // 2] ^ 0x55])
            + raw[len(raw) // 2 + 1:],
            "trailing garbage": raw + b"garbage",
        }
        for label, data in damaged.items():
            (tmp_path / "bad.snap").write_bytes(data)
            with pytest.raises(ArchiveError):
                restore(snapshot_fresh_node, tmp_path / "bad.snap", manager=snapshot_manager)
            assert snapshot_read_state(snapshot_fresh_node) == before, f"{label} archive applied"

    def test_undecodable_state_never_applied(
        self, snapshot_manager: PluginManager, snapshot_node: Any, snapshot_fresh_node: Any,
        snapshot_read_state: Callable[[Any], Any], snapshot_tmpdir: Path, tmp_path: Path,
    ) -> None:
        """An archive that verifies but whose state.bin the adapter cannot decode is refused
        (``StateRejectedError``: a refusal, not a failure of the node) and changes nothing."""
        self._restore_or_skip()
        with take(snapshot_node, manager=snapshot_manager) as snap:
            meta = snap.meta
        before = snapshot_read_state(snapshot_fresh_node)
        garbage = b"\x80\x05not a state" + bytes(range(256)) * 64
        bogus = dataclasses.replace(meta, id="", peers=b"")
        with Snapshot.create(bogus, garbage) as snap:
            snap.save(tmp_path / "garbage.snap")
        with pytest.raises(StateRejectedError) as info:
            restore(snapshot_fresh_node, tmp_path / "garbage.snap", manager=snapshot_manager)
        assert info.value.backend == self.backend
        assert snapshot_read_state(snapshot_fresh_node) == before

    def test_other_backend_refused(
        self, snapshot_manager: PluginManager, snapshot_node: Any, snapshot_fresh_node: Any,
        snapshot_read_state: Callable[[Any], Any], snapshot_tmpdir: Path, tmp_path: Path,
    ) -> None:
        self._restore_or_skip()
        before = snapshot_read_state(snapshot_fresh_node)
        with take(snapshot_node, manager=snapshot_manager) as snap, contextlib.ExitStack():
            state = _state_bytes(snap)
            other = dataclasses.replace(snap.meta, backend=f"not-{self.backend}", id="", peers=b"")
        with Snapshot.create(other, state) as snap:
            snap.save(tmp_path / "other.snap")
        with pytest.raises(ArchiveError) as info:
            restore(snapshot_fresh_node, tmp_path / "other.snap", manager=snapshot_manager)
        assert info.value.member == "meta.json"
        assert snapshot_read_state(snapshot_fresh_node) == before

    def test_newer_state_format_refused(
        self, snapshot_manager: PluginManager, snapshot_node: Any, snapshot_fresh_node: Any,
        snapshot_read_state: Callable[[Any], Any], snapshot_tmpdir: Path, tmp_path: Path,
    ) -> None:
        """An archive a newer adapter wrote is refused before the adapter sees it."""
        self._restore_or_skip()
        current = snapshot_manager.state_format(self.backend)
        if current is None:
            pytest.skip("the adapter does not name its state format (raft_snapshot_state_format)")
        family, _, version = current.rpartition("/")
        head, _, last = version.rpartition(".")
        if not last.isdigit():
            pytest.skip(f"state format {current!r} has no numeric version to bump")
        bumped = f"{head}.{int(last) + 1}" if head else str(int(last) + 1)
        before = snapshot_read_state(snapshot_fresh_node)
        with take(snapshot_node, manager=snapshot_manager) as snap:
            assert snap.meta.state_format == current
            state = _state_bytes(snap)
            newer = dataclasses.replace(snap.meta, state_format=f"{family}/{bumped}",
                                        id="", peers=b"")
        with Snapshot.create(newer, state) as snap:
            snap.save(tmp_path / "newer.snap")
        with pytest.raises(IncompatibleArchiveError, match="newer"):
            restore(snapshot_fresh_node, tmp_path / "newer.snap", manager=snapshot_manager)
        assert snapshot_read_state(snapshot_fresh_node) == before

    def test_restore_leaves_no_temp_files(
        self, snapshot_manager: PluginManager, snapshot_node: Any, snapshot_fresh_node: Any,
        snapshot_tmpdir: Path, tmp_path: Path,
    ) -> None:
        self._restore_or_skip()
        with take(snapshot_node, manager=snapshot_manager) as snap:
            snap.save(tmp_path / "s.snap")
        restore(snapshot_fresh_node, tmp_path / "s.snap", manager=snapshot_manager)
        assert list(snapshot_tmpdir.iterdir()) == []
        (tmp_path / "bad.snap").write_bytes((tmp_path / "s.snap").read_bytes()[:-9])
        with pytest.raises(ArchiveError):
            restore(snapshot_fresh_node, tmp_path / "bad.snap", manager=snapshot_manager)
        assert list(snapshot_tmpdir.iterdir()) == []


def _check_report(result: RestoreResult, after: SnapshotMeta) -> None:
    """The members a restore reported are the cluster's, each once (``RestoreResult`` checks that,
    and that none applied it before the restore's index), and on a quiet cluster each applied it;
    ``after`` is a take once the restore returned."""
    assert result.members is not None
    named = sorted(m.member for m in result.members)
    servers = sorted(s.address for s in after.servers)
    assert named == servers, (
        f"the restore reported members {named}, but the cluster's configuration is {servers} "
        "(name each member by its Raft address, as a take's Server.address does)")
    assert result.complete, (
        f"on a quiet cluster every member applies the restore, but these did not: "
        f"{[m.member for m in result.lagging]}")
    if result.index is not None:
        assert after.index >= result.index, (
            f"a take after the restore is at index {after.index}, before the restore's own "
            f"index {result.index}")


def _state_bytes(snap: Snapshot) -> bytes:
    sink = _Collect()
    snap.seek(0)
    read_archive(snap, sink)
    return bytes(sink.data)


def _state_digest(node: Any, pm: PluginManager) -> tuple[int, int, str]:
    with take(node, manager=pm) as snap:
        return snap.meta.index, snap.meta.term, hashlib.sha256(_state_bytes(snap)).hexdigest()


class _Collect:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, chunk: bytes) -> int:
        self.data += chunk
        return len(chunk)
