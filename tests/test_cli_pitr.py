"""``raft-snapshot restore PREFIX --to-index/--to-time`` and ``agent list``/``agent window`` as real
processes: a prefix the agent filled from one memory cluster, restored into another cluster's
endpoint (``tests/apps/memory_app.py``). The CLI finds the reference backend through an entry point
(``tests/data/memory-entry-point``), as it finds any installed adapter."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import test_cli_remote
from pitr_recorder import Recorder, ship
from test_cli_remote import TOKEN, App, one_error_line

from raft_snapshot_plugin.manager import PluginManager
from raft_snapshot_plugin.memory import MemoryCluster

#: the endpoint app fixture of the remote CLI tests (pytest finds a fixture by this name)
start_app = test_cli_remote.start_app
ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "tests" / "data" / "memory-entry-point"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFT_SNAPSHOT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), str(ENTRY)])
    return subprocess.run([sys.executable, "-m", "raft_snapshot_plugin", *args],
                          capture_output=True, text=True, timeout=120, env=env, check=False)


def filled_prefix(store: Path, manager: PluginManager) -> tuple[Recorder, MemoryCluster]:
    cluster = MemoryCluster(3, name="source")
    recorder = Recorder(cluster)
    recorder.write(20)
    ship(recorder, str(store), manager, [60, 60])
    return recorder, cluster


def test_restore_to_an_index_and_a_time_through_the_endpoint(
    start_app: Callable[..., App], tmp_path: Path, memory_manager: PluginManager,
) -> None:
    app = start_app()
    recorder, cluster = filled_prefix(tmp_path / "store", memory_manager)
    target = 21 + 45
    done = cli("restore", str(tmp_path / "store"), "--to-index", str(target),
               "--addr", app.leader, "--token", TOKEN)
    assert done.returncode == 0, done.stderr
    assert f"Restored index {target} " in done.stdout and "45 change(s) after it" in done.stdout
    assert app.data() == [recorder.states[target]] * 3
    when = cluster.log[100].time + 0.000002  # just after the entry at index 101 (microseconds)
    moment = datetime.datetime.fromtimestamp(when, datetime.timezone.utc)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    expected_index, expected = recorder.state_at_time(moment.timestamp())
    assert expected_index >= 101
    done = cli("restore", str(tmp_path / "store"), "--to-time", stamp,
               "--addr", app.leader, "--token", TOKEN)
    assert done.returncode == 0, done.stderr
    assert f"Restored index {expected_index} " in done.stdout
    assert app.data() == [expected] * 3


def test_an_unreachable_point_is_one_line_naming_the_nearest(
    start_app: Callable[..., App], tmp_path: Path, memory_manager: PluginManager,
) -> None:
    app = start_app()
    before = app.data()
    _, cluster = filled_prefix(tmp_path / "store", memory_manager)
    last = cluster.nodes[0].applied
    line = one_error_line(cli("restore", str(tmp_path / "store"), "--to-index", str(last + 10),
                              "--addr", app.leader, "--token", TOKEN))
    assert f"index {last + 10} cannot be restored: it is past the last change shipped" in line
    assert f"the nearest reachable indexes are {last} before it" in line
    line = one_error_line(cli("restore", str(tmp_path / "store"), "--to-index", "5",
                              "--addr", app.leader, "--token", TOKEN))
    assert "before the oldest stored snapshot" in line and "21 after it" in line
    assert app.data() == before  # nothing was applied
    usage = cli("restore", str(tmp_path / "store"), "--to-time", "yesterday",
                "--addr", app.leader, "--token", TOKEN)
    assert usage.returncode == 2 and "--to-time: 'yesterday' is not an ISO 8601 time" in usage.stderr


def test_agent_list_and_window_show_the_recoverable_window(
    tmp_path: Path, memory_manager: PluginManager,
) -> None:
    _, cluster = filled_prefix(tmp_path / "store", memory_manager)
    config = tmp_path / "agent.toml"
    config.write_text(f'[storage]\nurl = "{tmp_path / "store"}"\n')
    last = cluster.nodes[0].applied
    listed = cli("agent", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert f"recoverable: index 21 to {last} (last change committed " in listed.stdout
    window = cli("agent", "window", "--config", str(config), "--format", "json")
    assert window.returncode == 0, window.stderr
    doc = json.loads(window.stdout)
    assert doc["reachable"] == [[21, last]] and doc["gaps"] == []
    assert doc["last_time"] == cluster.log[-1].time


def test_backends_reports_the_point_in_time_hooks() -> None:
    done = cli("backends", "--format", "json")
    assert done.returncode == 0, done.stderr
    (memory,) = [b for b in json.loads(done.stdout) if b["name"] == "memory"]
    assert {"raft_snapshot_changes", "raft_snapshot_replay"} <= set(memory["hooks"])
    assert memory["usable"] and memory["distribution"] == "raft-snapshot-memory-entry"
