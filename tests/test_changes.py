"""The point-in-time hooks at the manager's edge (typed calls, errors mapped once), the change
types, and the agent's configuration keys for shipping."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raft_snapshot_plugin.agent import load_config
from raft_snapshot_plugin.changes import Change, Gap
from raft_snapshot_plugin.errors import BackendError, SnapshotTimeoutError, StateRejectedError
from raft_snapshot_plugin.hookspecs import hookimpl
from raft_snapshot_plugin.manager import PluginManager, get_plugin_manager
from raft_snapshot_plugin.memory import MEMORY_BACKEND, MemoryCluster, MemoryPlugin
from raft_snapshot_plugin.meta import SnapshotMeta


def manager_with(plugin: object) -> PluginManager:
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(plugin, name=MEMORY_BACKEND)
    return pm


def test_the_reference_backend_reports_both_hooks(memory_manager: PluginManager) -> None:
    (info,) = memory_manager.backends()
    assert {"raft_snapshot_changes", "raft_snapshot_replay"} <= set(info.hooks)
    assert info.usable


def test_changes_follow_commits_and_end_after_the_quiet_timeout(
    memory_manager: PluginManager,
) -> None:
    cluster = MemoryCluster(3)
    node = cluster.nodes[0]
    node.set("a", "1")
    found = memory_manager.changes(MEMORY_BACKEND, node, 1, 5.0)
    assert found is not None
    first = next(found)
    assert isinstance(first, Change) and first.index == 2 and first.data == b'["set","a","1"]'
    # the iterator waits for the next commit (made on another thread meanwhile)...
    writer = threading.Timer(0.2, lambda: node.set("b", "2"))
    writer.start()
    second = next(found)
    writer.join(10)
    assert isinstance(second, Change) and second.index == 3
    # ...and ends once none comes within the timeout
    quiet = memory_manager.changes(MEMORY_BACKEND, node, 3, 0.1)
    assert quiet is not None and list(quiet) == []
    node.stop()
    assert memory_manager.changes(MEMORY_BACKEND, node, 3, 0.1) is None


class _Misbehaving(MemoryPlugin):
    def __init__(self, how: str) -> None:
        self.how = how

    @hookimpl
    def raft_snapshot_changes(self, node: object, after_index: int, timeout: float | None
                              ) -> Iterator[Any]:  # wrong items, on purpose
        yield Change(after_index + 1, 1, 1.0, b"[]")
        if self.how == "type":
            yield {"index": after_index + 2}
        elif self.how == "timeout":
            raise TimeoutError("the watch timed out")
        else:
            raise ConnectionError("the node went away")

    @hookimpl
    def raft_snapshot_replay(self, meta: SnapshotMeta, state: object, changes: object,
                             sink: object, until_index: int) -> SnapshotMeta:
        if self.how == "type":
            raise StateRejectedError("not my bytes")
        return SnapshotMeta(index=until_index - 1, term=1)


@pytest.mark.parametrize(("how", "error", "match"), [
    ("type", BackendError, "yielded dict from raft_snapshot_changes, not Change or Gap"),
    ("timeout", SnapshotTimeoutError, "timed out in raft_snapshot_changes"),
    ("broken", BackendError, "failed in raft_snapshot_changes: ConnectionError"),
])
def test_a_misbehaving_changes_hook_is_mapped_at_the_edge(how: str, error: type[Exception],
                                                          match: str) -> None:
    pm = manager_with(_Misbehaving(how))
    found = pm.changes(MEMORY_BACKEND, MemoryCluster(1).nodes[0], 0, 0.1)
    assert found is not None
    assert isinstance(next(found), Change)
    with pytest.raises(error, match=match) as info:
        next(found)
    assert getattr(info.value, "backend", MEMORY_BACKEND) == MEMORY_BACKEND


def test_replay_answers_are_checked_and_a_missing_hook_says_cannot_replay() -> None:
    meta = SnapshotMeta(index=1, term=1)
    pm = manager_with(_Misbehaving("index"))
    with pytest.raises(BackendError, match="replayed to index 4, not 5"):
        pm.replay(MEMORY_BACKEND, meta, io.BytesIO(b"{}"), [], io.BytesIO(), 5)
    with pytest.raises(StateRejectedError, match="not my bytes"):
        manager_with(_Misbehaving("type")).replay(MEMORY_BACKEND, meta, io.BytesIO(b"{}"), [],
                                                  io.BytesIO(), 5)

    class Plain:
        @hookimpl
        def raft_snapshot_backend(self, node: object) -> None:
            return None

    with pytest.raises(BackendError, match="cannot replay changes"):
        manager_with(Plain()).replay(MEMORY_BACKEND, meta, io.BytesIO(b"{}"), [], io.BytesIO(), 5)


def test_the_reference_replay_refuses_a_hole_in_the_changes(memory_manager: PluginManager) -> None:
    meta = SnapshotMeta(index=1, term=1, state_format="memory-json/1")
    changes = [Change(2, 1, 1.0, b'["set","a","1"]'), Change(4, 1, 1.0, b'["noop"]')]
    with pytest.raises(BackendError, match="change 4 follows 2"):
        memory_manager.replay(MEMORY_BACKEND, meta, io.BytesIO(b"{}"), changes, io.BytesIO(), 4)
    with pytest.raises(StateRejectedError, match="not a memory change"):
        memory_manager.replay(MEMORY_BACKEND, meta, io.BytesIO(b"{}"),
                              [Change(2, 1, 1.0, b'["drop","table"]')], io.BytesIO(), 2)


def test_a_gap_must_miss_something() -> None:
    assert Gap(3, 5, "compacted").covers(4) and not Gap(3, 5, "x").covers(5)
    with pytest.raises(ValueError, match="misses no index"):
        Gap(3, 4, "nothing")


@pytest.mark.parametrize(("line", "error"), [
    ("segment_interval = 0", "[agent] segment_interval must be > 0, not 0"),
    ("segment_bytes = 0", "[agent] segment_bytes must be >= 1, not 0"),
    ('segment_bytes = "1M"', "[agent] segment_bytes has the wrong type"),
])
def test_segment_keys_are_checked_in_one_line(tmp_path: Path, line: str, error: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'[agent]\n{line}\n[storage]\nurl = "{tmp_path}"\n')
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ") and error in str(info.value)
    assert "\n" not in str(info.value)


def test_segment_keys_reach_the_config(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'[agent]\nsegment_interval = 2.5\nsegment_bytes = 4096\n'
                    f'[storage]\nurl = "{tmp_path}"\n')
    config = load_config(path)
    assert (config.segment_interval, config.segment_bytes) == (2.5, 4096)
