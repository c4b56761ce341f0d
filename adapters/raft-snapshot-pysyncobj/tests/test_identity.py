"""Identity survives a take and a live restore with the default settings (the memo-free fast path
on): shared references and cycles come back as they were, on every node of the restored cluster,
and a state without any is taken without the memo."""

from __future__ import annotations

import io
import pickletools
from pathlib import Path
from typing import Any

from cluster import Cluster, running_cluster
from pysyncobj import SyncObjConsumer, replicated
from raft_snapshot_pysyncobj import SnapshotSupport

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin.archive import read_archive


class Item:
    """An application object: one reached from two dicts, one pointing to its parent."""

    def __init__(self, name: str, parent: Item | None = None) -> None:
        self.name = name
        self.parent = parent
        self.children: list[Item] = []


class Graph(SyncObjConsumer):  # type: ignore[misc]
    """A consumer whose state is built on every node by one replicated command."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, Any] = {}

    @replicated  # type: ignore[untyped-decorator]
    def build(self, kind: str) -> None:
        # built here, on every node, so that no command's own pickling is involved
        self.rows = {f"k{i}": (i, i / 7, f"v{i}") for i in range(3000)}
        if kind in ("containers", "objects"):
            shared = [1, "shared"]
            self.lists = {"a": shared, "b": shared}
            self.also = shared  # the same list under another field
            loop: list[Any] = []
            loop.append(loop)
            self.loop = loop
            table: dict[str, Any] = {"n": 1}
            table["me"] = table
            self.tables = [table]
            inner: list[Any] = []
            outer = (inner, 2)
            inner.append(outer)
            self.through_tuple = outer
        if kind == "objects":
            root = Item("root")
            child = Item("child", parent=root)
            root.children.append(child)
            self.root = root
            self.by_name = {"child": child}
            self.by_kind = {"leaf": child}


def _consumers() -> list[SyncObjConsumer]:
    return [Graph(), SnapshotSupport(trusted_classes=[Item])]


def _graph(node: Any) -> Graph:
    return next(c for c in node._SyncObj__consumers if isinstance(c, Graph))


def _memo_opcodes(snap: rsp.Snapshot) -> int:
    state = io.BytesIO()
    snap.seek(0)
    read_archive(snap, state)
    return sum(1 for op, _, _ in pickletools.genops(state.getvalue())
               if op.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"))


def _take_and_restore(source: Cluster, target: Cluster, kind: str, path: Path) -> int:
    leader = source.leader()
    _graph(leader).build(kind, sync=True, timeout=10)
    source.converged()
    with rsp.take(leader) as snap:
        memo = _memo_opcodes(snap)
        snap.save(path)
    rsp.restore(target.leader(), path, timeout=60)
    target.converged()
    return memo


def _check_identities(graph: Graph, objects: bool) -> None:
    assert graph.rows == {f"k{i}": (i, i / 7, f"v{i}") for i in range(3000)}
    assert graph.lists["a"] is graph.lists["b"] is graph.also
    assert graph.lists["a"] == [1, "shared"]
    assert graph.loop[0] is graph.loop
    assert graph.tables[0]["me"] is graph.tables[0] and graph.tables[0]["n"] == 1
    assert graph.through_tuple[0][0] is graph.through_tuple
    if objects:
        child = graph.root.children[0]
        assert child.parent is graph.root and child.name == "child"
        assert graph.by_name["child"] is graph.by_kind["leaf"] is child


def test_shared_and_cyclic_references_survive_take_and_restore(
    tmp_path: Path, snapshot_tmpdir: Path,
) -> None:
    with running_cluster(3, consumers=_consumers) as source, \
            running_cluster(3, consumers=_consumers) as target:
        # a tree: the fast path pickles it without the memo, and it restores equal
        assert _take_and_restore(source, target, "tree", tmp_path / "tree.snap") == 0
        assert all(_graph(n).rows == {f"k{i}": (i, i / 7, f"v{i}") for i in range(3000)}
                   for n in target.running)

        # shared lists, cycles through a list, a dict and a tuple: caught by the proof
        assert _take_and_restore(source, target, "containers", tmp_path / "c.snap") > 0
        for node in target.running:
            _check_identities(_graph(node), objects=False)

        # and application objects: one in two dicts, one pointing to its parent
        assert _take_and_restore(source, target, "objects", tmp_path / "o.snap") > 0
        for node in target.running:
            _check_identities(_graph(node), objects=True)
    assert list(snapshot_tmpdir.iterdir()) == []
