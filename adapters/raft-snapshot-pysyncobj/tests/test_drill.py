"""Restore drills of snapshots a real 3-node PySyncObj cluster's agent stored: a one-node cluster
seeded from the state in a subprocess restores it (through the agent, ``operations.drill`` and the
``raft-snapshot drill`` command line); an undecodable state.bin fails the drill, flips the agent's
health and its metric."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cluster import WAIT, Cluster, fill
from raft_snapshot_pysyncobj import STATE_FORMAT

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin.agent import Agent, object_name
from raft_snapshot_plugin.errors import StateRejectedError


def _fill(cluster: Cluster) -> None:
    fill(cluster, 40, {"text": "drilled", "tags": {"a", "b"}})


def test_a_stored_snapshot_restores_in_a_drill(cluster: Cluster, tmp_path: Path) -> None:
    _fill(cluster)
    store = tmp_path / "store"
    agent = Agent(cluster.leader(), str(store), timeout=WAIT, backoff=0.0,
                  state_dir=tmp_path / "state", drill_timeout=120.0)
    url = agent.run_once()
    assert url is not None
    result = agent.drill()
    rows = {s.name: s.count for s in result.report.restored}
    assert rows["history"] == 40 and rows["accounts"] == 10
    assert result.report.restored == result.report.expected
    assert result.snapshot.url == url
    status = agent.status()
    assert status.last_drill_ok is True and status.healthy
    assert agent.metrics.registry.get_sample_value("raft_snapshot_agent_last_drill_success") == 1

    done = subprocess.run([sys.executable, "-m", "raft_snapshot_plugin", "drill", str(store)],
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"drill OK: {url}") and "history 40" in done.stdout


def test_an_undecodable_state_fails_the_drill_and_the_agent(cluster: Cluster, tmp_path: Path
                                                            ) -> None:
    _fill(cluster)
    store = tmp_path / "store"
    agent = Agent(cluster.leader(), str(store), timeout=WAIT, backoff=0.0, drill_timeout=120.0)
    assert agent.run_once() is not None
    agent.drill()
    # a valid archive of this backend and format whose state.bin is not a pickle of a state
    meta = rsp.SnapshotMeta(index=cluster.leader().raftLastApplied + 5, term=1,
                            backend="pysyncobj", state_format=STATE_FORMAT)
    with rsp.Snapshot.create(meta, b"\x80\x05 these are not the bytes you are looking for") as snap:
        snap.save(store / object_name(agent.clock() + 60, meta.index))
    with pytest.raises(StateRejectedError):
        agent.drill()
    status = agent.status()
    assert status.last_drill_ok is False and not status.healthy
    assert status.last_drill_url is None and status.last_drill_error
    sample = agent.metrics.registry.get_sample_value
    assert sample("raft_snapshot_agent_last_drill_success") == 0
    assert sample("raft_snapshot_agent_healthy") == 0
    done = subprocess.run([sys.executable, "-m", "raft_snapshot_plugin", "drill", str(store)],
                          capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 1 and done.stderr.startswith("raft-snapshot: error:")
