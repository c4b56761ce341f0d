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
``snapshot_manager`` (a fresh plugin manager: the installed adapters plus the reference backend)
and ``snapshot_tmpdir`` (a private temp folder that must be empty at the end) come with the kit.

The offline-restore flavour, for a backend that cannot restore a running cluster (etcd): set
``restore_is_offline = True``; ``snapshot_fresh_node`` is then a node object describing a cluster
that does not run yet, which the adapter's restore builds (data dirs, files) without starting it.
``snapshot_read_state`` must answer for that node before the restore too (for example: "not
started" and which of its files exist), so the kit still sees that a refused archive changed
nothing. After a successful restore the kit calls the ``snapshot_start_restored`` fixture
(``node -> None``: start the restored members; the conftest stops them at teardown) before it
reads the restored state. The fixture's default does nothing, and adapters that restore live
never need it.

The reference backend, :class:`MemoryCluster`, is a small replicated-log state machine: index, term,
members, leadership, followers that can stop and catch up, and no networking. It is registered only
by this kit (backend name ``memory``); it is a model of a Raft backend, not a substitute for one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import stat
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, ClassVar

import pytest

from .archive import read_archive
from .errors import ArchiveError, BackendError, BackendNotFoundError, IncompatibleArchiveError
from .hookspecs import hookimpl
from .manager import PluginManager, get_plugin_manager
from .meta import Server, SnapshotMeta
from .operations import inspect, restore, take
from .snapshot import Snapshot, verify

__all__ = [
    "MEMORY_BACKEND",
    "ConformanceTests",
    "MemoryCluster",
    "MemoryNode",
    "MemoryPlugin",
    "snapshot_manager",
    "snapshot_start_restored",
    "snapshot_tmpdir",
]

MEMORY_BACKEND = "memory"
MEMORY_STATE_FORMAT = "memory-json/1"


# ==================================================================================================
# The reference backend
# ==================================================================================================

@dataclasses.dataclass(frozen=True)
class _Entry:
    index: int
    term: int
    command: tuple[Any, ...]


class MemoryCluster:
    """A Raft cluster in one process: one log, a leader, nodes that apply it in order.

    The state machine is a key/value store (``str -> str``). Writes go through the leader, get the
    next index in the current term and are applied at once by every running node; a stopped node
    applies what it missed when it starts again. ``elect`` changes the leader and the term.
    """

    def __init__(self, size: int = 3, *, name: str = "mem") -> None:
        self.lock = threading.RLock()
        self.term = 1
        self.log: list[_Entry] = []
        self.nodes = [MemoryNode(self, f"{name}-node{i}", f"memory://{name}/{i}") for i in range(size)]
        self.leader: MemoryNode | None = self.nodes[0]
        self._append(("noop",))

    def _append(self, command: tuple[Any, ...]) -> int:
        with self.lock:
            if self.leader is None or not self.leader.running:
                raise RuntimeError("the cluster has no leader")
            entry = _Entry(len(self.log) + 1, self.term, command)
            self.log.append(entry)
            for node in self.nodes:
                if node.running:
                    node.catch_up()
            return entry.index

    def elect(self, node: MemoryNode) -> None:
        """Make ``node`` the leader in a new term."""
        with self.lock:
            self.term += 1
            self.leader = node
            self._append(("noop",))

    def entry(self, index: int) -> _Entry:
        return self.log[index - 1]

    @property
    def servers(self) -> tuple[Server, ...]:
        return tuple(Server(id=n.id, address=n.address) for n in self.nodes)


class MemoryNode:
    """One node of a :class:`MemoryCluster`: the object adapters' hooks receive."""

    def __init__(self, cluster: MemoryCluster, node_id: str, address: str) -> None:
        self.cluster = cluster
        self.id = node_id
        self.address = address
        self.running = True
        self.applied = 0
        self.data: dict[str, str] = {}

    def set(self, key: str, value: str) -> int:
        """Replicate ``key = value``; return the entry's index."""
        return self.cluster._append(("set", key, value))

    def delete(self, key: str) -> int:
        return self.cluster._append(("delete", key))

    def replace(self, data: Mapping[str, str]) -> int:
        """Replace the whole state, atomically on every node, through the log."""
        return self.cluster._append(("replace", dict(data)))

    @property
    def is_leader(self) -> bool:
        return self.cluster.leader is self

    def stop(self) -> None:
        self.running = False

    def start(self) -> None:
        with self.cluster.lock:
            self.running = True
            self.catch_up()

    def catch_up(self) -> None:
        with self.cluster.lock:
            for entry in self.cluster.log[self.applied:]:
                kind = entry.command[0]
                if kind == "set":
                    self.data[entry.command[1]] = entry.command[2]
                elif kind == "delete":
                    self.data.pop(entry.command[1], None)
                elif kind == "replace":
                    self.data = dict(entry.command[1])
                self.applied = entry.index

    def snapshot(self) -> tuple[int, int, bytes]:
        """(index, term, state bytes) at this node's last applied entry, read atomically."""
        with self.cluster.lock:
            term = self.cluster.entry(self.applied).term if self.applied else 0
            return self.applied, term, encode_memory_state(self.data)


def encode_memory_state(data: Mapping[str, str]) -> bytes:
    """The reference state format: compact JSON, keys sorted (the shape of Consul's test vectors)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def decode_memory_state(raw: bytes) -> dict[str, str]:
    """Parse a reference state; raise ``ValueError`` if it is not one."""
    data = json.loads(raw)
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError("a memory state is a JSON object of strings")
    return data


class MemoryPlugin:
    """The reference backend's hook implementations (registered as ``memory`` by the kit)."""

    name = MEMORY_BACKEND

    @hookimpl
    def raft_snapshot_backend(self, node: object) -> str | None:
        return self.name if isinstance(node, MemoryNode) else None

    @hookimpl
    def raft_snapshot_take(
        self, backend: str, node: MemoryNode, sink: IO[bytes]
    ) -> SnapshotMeta | None:
        if backend != self.name:
            return None
        index, term, raw = node.snapshot()
        sink.write(raw)
        return SnapshotMeta(index=index, term=term, servers=node.cluster.servers,
                            configuration_index=1, state_format=MEMORY_STATE_FORMAT)

    @hookimpl
    def raft_snapshot_restore(
        self, backend: str, node: MemoryNode, meta: SnapshotMeta, source: IO[bytes]
    ) -> bool | None:
        if backend != self.name:
            return None
        if meta.state_format not in ("", MEMORY_STATE_FORMAT):
            raise ValueError(f"unknown state format {meta.state_format!r}")
        node.replace(decode_memory_state(source.read()))
        return True

    @hookimpl
    def raft_snapshot_is_leader(self, backend: str, node: MemoryNode) -> bool | None:
        return node.is_leader if backend == self.name else None

    @hookimpl
    def raft_snapshot_leader(self, backend: str, node: MemoryNode) -> str | None:
        if backend != self.name:
            return None
        leader = node.cluster.leader
        return leader.address if leader is not None else None

    @hookimpl
    def raft_snapshot_state_format(self, backend: str) -> str | None:
        return MEMORY_STATE_FORMAT if backend == self.name else None

    @hookimpl
    def raft_snapshot_describe(
        self, backend: str, source: IO[bytes]
    ) -> Mapping[str, tuple[int, int]] | None:
        if backend != self.name:
            return None
        data = decode_memory_state(source.read())
        return {"keys": (len(data), sum(len(k) + len(v) for k, v in data.items()))}


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


@pytest.fixture
def snapshot_start_restored() -> Callable[[Any], None]:
    """``node -> None``: start a cluster an offline restore built (``restore_is_offline``).

    The default does nothing; an adapter with the offline-restore flavour overrides it in its
    conftest (and stops what it started when the test ends).
    """
    return lambda node: None


class ConformanceTests:
    """Subclass in an adapter's tests and set ``backend``; the fixtures come from the conftest."""

    #: The backend name the adapter registers (its entry-point name).
    backend: ClassVar[str]
    #: Set False for an adapter that cannot restore (the restore tests are then skipped).
    supports_restore: ClassVar[bool] = True
    #: Set True for an adapter that restores offline into a cluster that does not run yet: after a
    #: successful restore the kit calls ``snapshot_start_restored(node)`` before reading its state.
    restore_is_offline: ClassVar[bool] = False

    # --- helpers ----------------------------------------------------------------------------------

    def _restore_or_skip(self) -> None:
        if not self.supports_restore:
            pytest.skip(f"the {self.backend} adapter does not restore")

    # --- discovery and leadership -----------------------------------------------------------------

    def test_backend_claims_node(self, snapshot_manager: PluginManager, snapshot_node: Any) -> None:
        assert snapshot_manager.backend_for(snapshot_node) == self.backend

    def test_backend_claims_nothing_else(self, snapshot_manager: PluginManager) -> None:
        with pytest.raises(BackendNotFoundError):
            snapshot_manager.backend_for(object())

    def test_is_leader_answers(self, snapshot_manager: PluginManager, snapshot_node: Any) -> None:
        assert isinstance(snapshot_manager.is_leader(self.backend, snapshot_node), bool)

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
            assert snap.stale is not snapshot_manager.is_leader(self.backend, snapshot_node)

    def test_take_is_repeatable(
        self, snapshot_manager: PluginManager, snapshot_node: Any, snapshot_tmpdir: Path
    ) -> None:
        """Two takes of a quiet cluster hold the same state at the same index."""
        first = _state_digest(snapshot_node, snapshot_manager)
        second = _state_digest(snapshot_node, snapshot_manager)
        assert first == second

    def test_take_stays_out_of_memory_and_temp(
        self, snapshot_manager: PluginManager, snapshot_node: Any, snapshot_tmpdir: Path
    ) -> None:
        snap = take(snapshot_node, manager=snapshot_manager)
        assert Path(snap.path).parent == snapshot_tmpdir
        assert stat.S_IMODE(os.stat(snap.path).st_mode) == 0o600
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
        assert found.stats, "raft_snapshot_describe gave no breakdown"
        for row in found.stats:
            assert isinstance(row.name, str) and row.count >= 0 and row.sum >= 0

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
        meta = restore(snapshot_fresh_node, tmp_path / "s.snap", manager=snapshot_manager)
        assert meta == verify(tmp_path / "s.snap")
        if self.restore_is_offline:
            snapshot_start_restored(snapshot_fresh_node)
        assert snapshot_read_state(snapshot_fresh_node) == expected

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
        """An archive that verifies but whose state.bin the adapter cannot decode."""
        self._restore_or_skip()
        with take(snapshot_node, manager=snapshot_manager) as snap:
            meta = snap.meta
        before = snapshot_read_state(snapshot_fresh_node)
        garbage = b"\x80\x05not a state" + bytes(range(256)) * 64
        bogus = dataclasses.replace(meta, id="", peers=b"")
        with Snapshot.create(bogus, garbage) as snap:
            snap.save(tmp_path / "garbage.snap")
        with pytest.raises(BackendError) as info:
            restore(snapshot_fresh_node, tmp_path / "garbage.snap", manager=snapshot_manager)
        assert info.value.backend == self.backend
        assert info.value.__cause__ is not None, "the adapter's own error must be chained"
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
