"""The reference backend: a replicated log in one process that shows the adapter contract end to end.

:class:`MemoryCluster` is a small Raft model: index, term, members, leadership, followers that can
stop and catch up, no networking. :class:`MemoryPlugin` implements every hook for it, the way an
adapter for a real backend would; it is not an entry point, so nothing installs it by accident:
register it yourself (the conformance kit's ``snapshot_manager`` does)::

    from raft_snapshot_plugin.manager import get_plugin_manager
    from raft_snapshot_plugin.memory import MEMORY_BACKEND, MemoryCluster, MemoryPlugin

    pm = get_plugin_manager()
    pm.register(MemoryPlugin(), name=MEMORY_BACKEND)
    cluster = MemoryCluster(3)
    cluster.nodes[0].set("k", "v")
    with rsp.take(cluster.nodes[0], manager=pm) as snap: ...

It imports without pytest; it is a model of a Raft backend, not a substitute for one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

from .changes import Change, Gap
from .errors import StateRejectedError
from .hookspecs import hookimpl
from .meta import Server, SnapshotMeta
from .restored import MemberApplied, RestoreReport

__all__ = [
    "MEMORY_BACKEND",
    "MEMORY_STATE_FORMAT",
    "MemoryCluster",
    "MemoryNode",
    "MemoryPlugin",
    "apply_command",
    "decode_command",
    "decode_memory_state",
    "encode_command",
    "encode_memory_state",
]

MEMORY_BACKEND = "memory"
MEMORY_STATE_FORMAT = "memory-json/1"


@dataclasses.dataclass(frozen=True)
class _Entry:
    index: int
    term: int
    command: tuple[Any, ...]
    time: float  #: when the entry was committed, Unix seconds


class MemoryCluster:
    """A Raft cluster in one process: one log, a leader, nodes that apply it in order.

    The state machine is a key/value store (``str -> str``). Writes go through the leader, get the
    next index in the current term and are applied at once by every running node; a stopped node
    applies what it missed when it starts again. ``elect`` changes the leader and the term.
    ``compact(through)`` forgets the changes up to an index, as a real log's compaction does:
    :meth:`changes` then reports them as a :class:`~raft_snapshot_plugin.changes.Gap`.
    """

    def __init__(self, size: int = 3, *, name: str = "mem",
                 journal: str | os.PathLike[str] | None = None) -> None:
        self.lock = threading.RLock()
        self.committed = threading.Condition(self.lock)  # notified on every append
        self.term = 1
        self.compacted = 0  #: changes up to this index can no longer be delivered
        self.log: list[_Entry] = []
        self.nodes = [MemoryNode(self, f"{name}-node{i}", f"memory://{name}/{i}") for i in range(size)]
        self.leader: MemoryNode | None = self.nodes[0]
        # ``journal``: the log on disk, one JSON line per entry, as a real node keeps its log; a
        # cluster made with an existing journal starts from what it holds (a node restart)
        self._journal = (None if journal is None
                         else open(journal, "a+", encoding="utf-8"))  # noqa: SIM115 (the cluster's life)
        if self._journal is not None:
            self._journal.seek(0)
            for line in self._journal.read().splitlines():
                index, term, when, command = json.loads(line)
                self.log.append(_Entry(index, term, tuple(command), when))
                self.term = term
            for node in self.nodes:
                node.catch_up()
        if not self.log:
            self._append(("noop",))

    def _append(self, command: tuple[Any, ...]) -> int:
        with self.lock:
            if self.leader is None or not self.leader.running:
                raise RuntimeError("the cluster has no leader")
            entry = _Entry(len(self.log) + 1, self.term, command, time.time())
            if self._journal is not None:
                self._journal.write(json.dumps([entry.index, entry.term, entry.time, command]) + "\n")
                self._journal.flush()
            self.log.append(entry)
            for node in self.nodes:
                if node.running:
                    node.catch_up()
            self.committed.notify_all()
            return entry.index

    def _longer_than(self, index: int) -> bool:
        return len(self.log) > index

    def compact(self, through: int) -> None:
        """Forget the changes up to ``through`` (the state machines keep what they applied)."""
        with self.lock:
            self.compacted = max(self.compacted, min(through, len(self.log)))

    def changes(self, after_index: int, timeout: float | None) -> Iterator[Change | Gap]:
        """The committed changes after ``after_index``, then those committed while we wait, until
        none comes within ``timeout`` seconds. Compacted ones are one :class:`Gap`."""
        cursor = after_index
        while True:
            with self.lock:
                if cursor < self.compacted:
                    gap: Gap | None = Gap(cursor, self.compacted + 1, "compacted")
                    cursor = self.compacted
                else:
                    gap = None
                if gap is None and not self.committed.wait_for(
                        functools.partial(self._longer_than, cursor), timeout):
                    return
                batch = [] if gap else self.log[cursor:]
            if gap is not None:
                yield gap
                continue
            for entry in batch:
                yield Change(entry.index, entry.term, entry.time, encode_command(entry.command))
            cursor = batch[-1].index

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
                self.data = apply_command(self.data, entry.command)
                self.applied = entry.index

    def snapshot(self) -> tuple[int, int, bytes]:
        """(index, term, state bytes) at this node's last applied entry, read atomically."""
        with self.cluster.lock:
            term = self.cluster.entry(self.applied).term if self.applied else 0
            return self.applied, term, encode_memory_state(self.data)


def apply_command(data: dict[str, str], command: Iterable[Any]) -> dict[str, str]:
    """Apply one log command to a state (in place, except ``replace``); return the state."""
    kind, *args = command
    if kind == "set":
        data[args[0]] = args[1]
    elif kind == "delete":
        data.pop(args[0], None)
    elif kind == "replace":
        data = dict(args[0])
    return data


def encode_command(command: tuple[Any, ...]) -> bytes:
    """A log command as a change's bytes: a compact JSON array."""
    return json.dumps(command, separators=(",", ":"), ensure_ascii=False).encode()


def decode_command(raw: bytes) -> list[Any]:
    """A change's bytes as a log command.

    :raises StateRejectedError: the bytes are not a memory command.
    """
    try:
        command = json.loads(raw)
    except ValueError as exc:
        raise StateRejectedError(f"not a memory change: {exc}") from exc
    shapes = {"noop": (), "set": (str, str), "delete": (str,), "replace": (dict,)}
    if (not isinstance(command, list) or not command or command[0] not in shapes
            or len(command) != 1 + len(shapes[command[0]])
            or not all(isinstance(a, t) for a, t in zip(command[1:], shapes[command[0]],
                                                        strict=True))):
        raise StateRejectedError(f"not a memory change: {raw[:80]!r}")
    return command


def encode_memory_state(data: Mapping[str, str]) -> bytes:
    """The reference state format: compact JSON, keys sorted (the shape of Consul's test vectors)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def decode_memory_state(raw: bytes) -> dict[str, str]:
    """Parse a reference state.

    :raises StateRejectedError: the bytes are not a memory state (another backend's, or garbage).
    """
    try:
        data = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
        raise StateRejectedError(f"not a memory state: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise StateRejectedError("not a memory state: want a JSON object of strings")
    return data


class MemoryPlugin:
    """The reference backend's hook implementations, registered as ``memory``.

    Hooks run only for the backend they are registered under, so none checks its ``backend``.
    """

    name = MEMORY_BACKEND

    @hookimpl
    def raft_snapshot_backend(self, node: object) -> str | None:
        return self.name if isinstance(node, MemoryNode) else None

    @hookimpl
    def raft_snapshot_take(self, node: MemoryNode, sink: IO[bytes]) -> SnapshotMeta:
        index, term, raw = node.snapshot()
        sink.write(raw)
        return SnapshotMeta(index=index, term=term, servers=node.cluster.servers,
                            configuration_index=1, state_format=MEMORY_STATE_FORMAT)

    @hookimpl
    def raft_snapshot_restore(
        self, node: MemoryNode, meta: SnapshotMeta, source: IO[bytes]
    ) -> RestoreReport:
        if meta.state_format not in ("", MEMORY_STATE_FORMAT):
            raise StateRejectedError(f"unknown state format {meta.state_format!r}")
        index = node.replace(decode_memory_state(source.read()))
        # every running node applied the entry as it was appended; a stopped one has not (yet)
        with node.cluster.lock:
            members = tuple(MemberApplied(n.address, n.applied, n.applied >= index)
                            for n in node.cluster.nodes)
        return RestoreReport(members, index=index, waited=0.0)

    @hookimpl
    def raft_snapshot_is_leader(self, node: MemoryNode) -> bool:
        return node.is_leader

    @hookimpl
    def raft_snapshot_leader(self, node: MemoryNode) -> str | None:
        leader = node.cluster.leader
        return leader.address if leader is not None else None

    @hookimpl
    def raft_snapshot_state_format(self) -> str:
        return MEMORY_STATE_FORMAT

    @hookimpl
    def raft_snapshot_describe(self, source: IO[bytes]) -> Mapping[str, tuple[int, int]]:
        return _breakdown(decode_memory_state(source.read()))

    @hookimpl
    def raft_snapshot_describe_keys(self, source: IO[bytes], depth: int,
                                    prefix: str) -> Mapping[str, tuple[int, int]]:
        rows: dict[str, tuple[int, int]] = {}
        for key, value in decode_memory_state(source.read()).items():
            if key.startswith(prefix):
                name = "/".join(key.split("/")[:depth])
                count, size = rows.get(name, (0, 0))
                rows[name] = (count + 1, size + len(key) + len(value))
        return dict(sorted(rows.items()))

    @hookimpl
    def raft_snapshot_changes(self, node: MemoryNode, after_index: int,
                              timeout: float | None) -> Iterator[Change | Gap] | None:
        return node.cluster.changes(after_index, timeout) if node.running else None

    @hookimpl
    def raft_snapshot_replay(self, meta: SnapshotMeta, state: IO[bytes], changes: Iterable[Change],
                             sink: IO[bytes], until_index: int) -> SnapshotMeta:
        # the detached copy: the snapshot's state as a plain dict, each change applied as a node
        # of the cluster applies its log entry
        data, term, last = decode_memory_state(state.read()), meta.term, meta.index
        for change in changes:
            if change.index != last + 1:
                raise ValueError(f"change {change.index} follows {last}: changes must be contiguous")
            data = apply_command(data, decode_command(change.data))
            term, last = change.term, change.index
        if last != until_index:
            raise ValueError(f"the changes end at {last}, not {until_index}")
        sink.write(encode_memory_state(data))
        return SnapshotMeta(index=until_index, term=term, servers=meta.servers,
                            configuration_index=meta.configuration_index,
                            state_format=MEMORY_STATE_FORMAT)

    @hookimpl
    def raft_snapshot_drill(self, meta: SnapshotMeta, source: IO[bytes]) -> Mapping[str, tuple[int, int]]:
        # the throwaway instance: a one-node cluster of its own, restored through the log as a
        # live restore would be, and read back from its applied state
        node = MemoryCluster(1, name="drill").nodes[0]
        self.raft_snapshot_restore(node, meta, source)  # its report: the one node, applied
        return _breakdown(node.data)


def _breakdown(data: Mapping[str, str]) -> dict[str, tuple[int, int]]:
    return {"keys": (len(data), sum(len(k) + len(v) for k, v in data.items()))}
