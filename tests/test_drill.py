"""Restore drills: ``operations.drill`` through the ``raft_snapshot_drill`` hook, the agent's drills
(status, health, metrics) and their failures, on the reference backend and a local store."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import pytest

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin import hookimpl
from raft_snapshot_plugin.agent import Agent, object_name
from raft_snapshot_plugin.cli import main
from raft_snapshot_plugin.errors import BackendError, DrillError, StateRejectedError, StorageError
from raft_snapshot_plugin.manager import PluginManager, get_plugin_manager
from raft_snapshot_plugin.memory import MEMORY_BACKEND, MEMORY_STATE_FORMAT, MemoryCluster, MemoryPlugin
from raft_snapshot_plugin.operations import drill


@pytest.fixture
def cluster() -> MemoryCluster:
    c = MemoryCluster(3, name="drill")
    for i in range(5):
        c.nodes[0].set(f"k{i}", "v" * i)
    return c


def archive(cluster: MemoryCluster, path: Path, manager: PluginManager) -> Path:
    with rsp.take(cluster.nodes[0], manager=manager) as snap:
        snap.save(path)
    return path


def undecodable(path: Path, index: int) -> Path:
    """A valid archive of the memory backend whose state.bin is not a memory state."""
    meta = rsp.SnapshotMeta(index=index, term=1, backend=MEMORY_BACKEND,
                            state_format=MEMORY_STATE_FORMAT)
    with rsp.Snapshot.create(meta, b"\x80\x04 not json at all") as snap:
        snap.save(path)
    return path


def test_a_drill_restores_into_a_throwaway_instance_and_compares_counts(
    cluster: MemoryCluster, memory_manager: PluginManager, tmp_path: Path,
) -> None:
    report = drill(archive(cluster, tmp_path / "a.snap", memory_manager), manager=memory_manager)
    assert [(s.name, s.count) for s in report.restored] == [("keys", 5)]
    assert report.restored == report.expected and report.meta.index == cluster.nodes[0].applied
    assert json.loads(json.dumps(report.to_dict()))["Restored"][0]["Count"] == 5


def test_an_undecodable_state_fails_the_drill(memory_manager: PluginManager, tmp_path: Path) -> None:
    with pytest.raises(StateRejectedError, match="not a memory state"):
        drill(undecodable(tmp_path / "bad.snap", 9), manager=memory_manager)


class _Diverging(MemoryPlugin):
    """The reference backend, except that its throwaway instance loses a key."""

    name = "diverging"

    @hookimpl
    def raft_snapshot_drill(self, meta: rsp.SnapshotMeta, source: IO[bytes]
                            ) -> Mapping[str, tuple[int, int]]:
        rows = dict(super().raft_snapshot_drill(meta, source))
        count, size = rows["keys"]
        return {"keys": (count - 1, size)}


class _NoDrill(MemoryPlugin):
    name = "nodrill"
    raft_snapshot_drill = None  # type: ignore[assignment]


@pytest.mark.parametrize(("plugin", "error", "match"), [
    (_Diverging(), DrillError, "keys: 5 in the archive, 4 restored"),
    (_NoDrill(), BackendError, "cannot drill"),
])
def test_a_drill_fails_on_another_state_or_without_the_hook(
    cluster: MemoryCluster, memory_manager: PluginManager, tmp_path: Path, plugin: MemoryPlugin,
    error: type[Exception], match: str,
) -> None:
    path = archive(cluster, tmp_path / "a.snap", memory_manager)
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(plugin, name=plugin.name)
    with pytest.raises(error, match=match):
        drill(path, backend=plugin.name, manager=pm)


def test_the_agents_drill_goes_to_the_status_health_and_metrics(
    cluster: MemoryCluster, memory_manager: PluginManager, tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    agent = Agent(cluster.nodes[0], str(store), manager=memory_manager, state_dir=tmp_path / "s")
    with pytest.raises(StorageError, match="nothing to drill"):
        agent.drill()
    assert agent.status().last_drill_ok is False and not agent.status().healthy
    assert agent.run_once() is not None
    result = agent.drill()
    status = agent.status()
    assert status.last_drill_ok is True and status.healthy
    assert status.last_drill_url == result.snapshot.url
    sample = agent.metrics.registry.get_sample_value
    assert sample("raft_snapshot_agent_last_drill_success") == 1
    # a newer object whose state.bin does not decode: the drill fails, health and metric flip
    undecodable(store / object_name(agent.clock() + 60, 99), 99)
    with pytest.raises(StateRejectedError):
        agent.drill()
    status = agent.status()
    assert status.last_drill_ok is False and not status.healthy
    assert "not a memory state" in (status.last_drill_error or "")
    assert sample("raft_snapshot_agent_last_drill_success") == 0
    assert sample("raft_snapshot_agent_healthy") == 0
    saved = json.loads((tmp_path / "s" / "status.json").read_text())
    assert saved["last_drill_ok"] is False and saved["healthy"] is False


def test_cli_drill_of_an_empty_prefix_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["drill", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("raft-snapshot: error:") and "nothing to drill" in err
    assert err.count("\n") == 1


def test_in_the_background_only_the_storing_agent_drills(
    cluster: MemoryCluster, memory_manager: PluginManager, tmp_path: Path,
) -> None:
    """One drill per cluster, by the leader's agent; a follower's agent neither drills nor turns
    unhealthy for lack of a drill."""
    store = str(tmp_path / "store")
    agents = [Agent(node, store, manager=memory_manager, interval=3600, drill_interval=3600,
                    state_dir=tmp_path / f"s{i}") for i, node in enumerate(cluster.nodes)]
    for agent in reversed(agents):  # the followers first: the prefix is still empty for them
        agent.start()
        deadline = time.monotonic() + 20
        while agent.status().next_run is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        agent.stop()
    leader, *followers = agents
    assert leader.status().last_drill_ok is True and leader.status().healthy
    assert all(f.status().last_drill is None and f.status().healthy for f in followers)
