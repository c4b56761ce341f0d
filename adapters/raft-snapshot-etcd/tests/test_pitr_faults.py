"""Point-in-time recovery through faults, on real 3-member etcd clusters and moto's S3 server: an
agent killed (SIGKILL) mid-segment, a member restarted while its changes are shipped, a compaction
while no agent ran. What a restore sees: every revision once, each with the events the writer made,
and a gap exactly where etcd compacted the history away, never elsewhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from etcd_clusters import Clusters
from pitr_helpers import Recorder, restart_member, restored_keys, shipped_changes
from raft_snapshot_etcd import EtcdCluster
from test_pitr_load import wait_for

from raft_snapshot_plugin.agent import Agent, build_point, recovery_window
from raft_snapshot_plugin.errors import UnreachablePointError

URL = "s3://pitr/etcd"
_AGENT = """
import json, sys, time
from raft_snapshot_etcd import EtcdCluster
from raft_snapshot_plugin.agent import Agent
agent = Agent(EtcdCluster(sys.argv[1].split(",")), sys.argv[2], storage_options=json.loads(sys.argv[3]),
              stale=True, interval=3600, segment_interval=2.0)
agent.start()
time.sleep(600)
"""


def agent_for(cluster: EtcdCluster, options: dict[str, Any], endpoints: list[str] | None = None
              ) -> Agent:
    return Agent(EtcdCluster(endpoints or list(cluster.endpoints)), URL, storage_options=options,
                 stale=True, interval=3600, segment_interval=2.0)


def shipped_through(agent: Agent, index: int) -> bool:
    return (agent.status().segment_index or 0) >= index


def check_shipped(recorder: Recorder, options: dict[str, Any], first: int, last: int) -> None:
    """Every revision from ``first + 1`` to ``last`` stored once, in order, as it was written."""
    shipped = list(shipped_changes(URL, options))
    assert [r for r, _ in shipped] == list(range(first + 1, last + 1))
    assert all(tuple(events) == recorder.ops[r].events for r, events in shipped)


def check_restores(recorder: Recorder, options: dict[str, Any], targets: list[int],
                   workdir: Path) -> None:
    expected = recorder.states_at(targets)
    for target in targets:
        with build_point(URL, to_index=target, storage_options=options) as point:
            assert restored_keys(point.path, workdir / f"r{target}") == expected[target], target


def test_an_agent_killed_mid_segment_loses_and_repeats_nothing(
    clusters: Clusters, s3: Any, tmp_path: Path,
) -> None:
    cluster = clusters.new("kill")
    options = s3.options()
    recorder = Recorder(cluster, cluster.endpoints[1], 100)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.Popen(
        [sys.executable, "-c", _AGENT, ",".join(cluster.endpoints), URL, json.dumps(options)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        start_new_session=True)
    try:
        wait_for(lambda: recovery_window(URL, options).snapshots, 60, "the first snapshot")
        first = recovery_window(URL, options).snapshots[0].index
        recorder.run(3.2)  # segments cut every 2 s: the kill lands with changes buffered
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(30)
    finally:
        if killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)
            killed.wait(30)
    made = recorder.check_contiguous(first)
    window = recovery_window(URL, options)
    stored = window.reachable[-1][1] if window.reachable else first
    assert stored < made, "the kill must land mid-segment, with written revisions not stored"

    agent = agent_for(cluster, options)
    agent.start()
    try:
        recorder.run(1.5)
        last = recorder.check_contiguous(first)
        wait_for(lambda: shipped_through(agent, last), 60, f"segments through {last}")
    finally:
        agent.stop(60)
    check_shipped(recorder, options, first, last)
    assert recovery_window(URL, options).gaps == ()
    check_restores(recorder, options, [made], tmp_path)  # replayed across the kill


def test_a_member_restarted_while_shipping_loses_and_repeats_nothing(
    clusters: Clusters, s3: Any, tmp_path: Path,
) -> None:
    cluster = clusters.new("restart")
    options = s3.options()
    procs = clusters.running[next(iter(clusters.running))]
    leader = next(i for i, e in enumerate(cluster.endpoints)
                  if EtcdCluster(e).status().leader == EtcdCluster(e).status().header.member_id)
    watched = (leader + 1) % 3  # a follower: the writes through the leader never pause
    order = [cluster.endpoints[watched], *(e for i, e in enumerate(cluster.endpoints)
                                            if i != watched)]
    recorder = Recorder(cluster, cluster.endpoints[leader], 100)
    agent = agent_for(cluster, options, order)
    agent.start()
    try:
        wait_for(lambda: agent.status().stored >= 1, 60, "the first snapshot")
        first = agent.list()[0].index
        writing = _in_thread(recorder.run, 5.0)
        time.sleep(1.5)
        restart_member(procs, watched, down=1.0)  # the member the agent watches and takes from
        writing.join(60)
        assert not writing.is_alive() and not recorder.errors, recorder.errors[:3]
        last = recorder.check_contiguous(first)
        wait_for(lambda: shipped_through(agent, last), 60, f"segments through {last}")
    finally:
        agent.stop(60)
    check_shipped(recorder, options, first, last)
    assert recovery_window(URL, options).gaps == ()
    check_restores(recorder, options, [last], tmp_path)


def test_a_compaction_while_no_agent_ran_is_a_gap_and_only_there(
    clusters: Clusters, s3: Any, tmp_path: Path,
) -> None:
    cluster = clusters.new("compact")
    options = s3.options()
    recorder = Recorder(cluster, cluster.endpoints[0], 50)

    def run_agent(seconds: float) -> int:
        agent = agent_for(cluster, options)
        agent.start()
        try:
            wait_for(lambda: agent.status().stored >= 1, 60, "this agent's first snapshot")
            recorder.run(seconds)
            last = max(recorder.ops)
            wait_for(lambda: shipped_through(agent, last), 60, f"segments through {last}")
        finally:
            agent.stop(60)
        return last

    shipped = run_agent(1.0)
    recorder.run(1.0)  # while no agent runs...
    compacted = max(recorder.ops)
    with cluster.connect() as conn:
        conn.compact(compacted)  # ...etcd forgets the history up to here
    last = run_agent(1.0)
    window = recovery_window(URL, options)
    assert [(g.after_index, g.resumes_at, g.reason) for g in window.gaps] == [
        (shipped, compacted + 1, "compacted")]
    with pytest.raises(UnreachablePointError, match="inside a gap"), \
            build_point(URL, to_index=compacted - 1, storage_options=options):
        pass
    check_restores(recorder, options, [last], tmp_path)  # from the snapshot after the gap


def _in_thread(function: Any, *args: Any) -> Any:
    import threading

    thread = threading.Thread(target=function, args=args, daemon=True)
    thread.start()
    return thread
