"""Point-in-time recovery under faults, on real PySyncObj clusters on 127.0.0.1 (issue 24).

- The leader's process, which runs the shipping agent, is killed (SIGKILL) in the middle of a
  segment, and restarted from its journal; a follower is restarted too; writes go on throughout.
  The changes restored show no index lost or twice: the window has no gap, every rebuilt state's
  history is a prefix of the next, and the last is the cluster's state.
- A capture buffer that overflowed is served from the node's journal: no gap.
- Once neither holds them (the buffer overflowed and the journal was compacted while no agent
  shipped), the missing indexes are a recorded gap: a restore inside it is refused, naming the
  nearest reachable points; after it, restores are exact again.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import WAIT, Cluster, running_cluster
from pitr_load import LedgerBank
from procs.control import archive_attributes, proc_cluster
from pysyncobj import SyncObjConsumer
from pysyncobj.batteries import ReplCounter, ReplDict
from raft_snapshot_pysyncobj import SnapshotSupport
from raft_snapshot_pysyncobj._node import log_start

from raft_snapshot_plugin.agent import Agent, Retention, build_point, recovery_window
from raft_snapshot_plugin.errors import UnreachablePointError


def _history_at(url: str, index: int) -> list[int]:
    with build_point(url, to_index=index) as point:
        assert point.meta.index == index
        history: list[int] = archive_attributes(point.path)["history"]
        return history


def _wait_shipped(proc_of: Any, index: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = proc_of().ok("agent_status")
        if (status["segment_index"] or 0) >= index:
            return
        assert time.monotonic() < deadline, f"the segments did not reach {index}: {status}"
        time.sleep(0.2)


def test_agent_killed_mid_segment_and_nodes_restarted(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    with proc_cluster(tmp_path / "nodes", journal=True) as cluster:
        leader = cluster.leader()  # elected first: an agent's first round stores only on it
        for proc in cluster.running:
            proc.ok("agent_start", url=url, interval=5.0, segment_interval=2.0)
        writer = next(p for p in cluster.running if p is not leader)
        writer.ok("writer_start", first=0)
        time.sleep(3.0)
        _wait_shipped(lambda: cluster.leader(), 1)
        time.sleep(1.0)  # one second into a two-second segment
        killed = cluster.index(leader)
        cluster.kill(killed)  # SIGKILL: its agent's buffered changes are gone with it
        time.sleep(3.0)
        cluster.start(killed)  # back from its journal and dump, during shipping
        time.sleep(2.0)
        other = next(i for i, p in enumerate(cluster.procs)
                     if p is not None and p is not writer and i != killed)
        cluster.node(other).stop()  # a follower restarted (its agent stops with it)
        cluster.start(other)
        for proc in [cluster.node(killed), cluster.node(other)]:
            proc.ok("agent_start", url=url, interval=5.0, segment_interval=2.0)
        time.sleep(3.0)
        acked = writer.ok("writer_stop")["acked"]
        states = cluster.states(at_least=1)
        final, applied = states[0]["state"]["history"], states[0]["applied"]
        assert all(s["state"]["history"] == final for s in states)
        _wait_shipped(lambda: cluster.leader(), applied)
    assert set(acked) <= set(final) and len(final) == len(set(final))
    window = recovery_window(url)
    assert window.gaps == (), f"gaps where nothing was lost: {window.gaps}"
    first = min(s.index for s in window.snapshots)
    rng = random.Random(24)
    previous: list[int] = []
    for index in [*sorted(rng.sample(range(first + 1, applied), 6)), applied]:
        history = _history_at(url, index)
        assert history[:len(previous)] == previous, f"index {index} rewrote the past"
        assert len(history) == len(set(history)), f"a change applied twice by {index}"
        previous = history
    assert previous == final


def _small_buffer_consumers() -> list[SyncObjConsumer]:
    return [ReplCounter(), ReplDict(), SnapshotSupport(change_buffer_bytes=1)]


@contextlib.contextmanager
def _agent(node: Any, url: str) -> Iterator[Agent]:
    agent = Agent(node, url, interval=3600.0, segment_interval=0.5, timeout=WAIT, backoff=0.2,
                  retention=Retention(keep=1000, hourly=0, daily=0))
    agent.start()
    try:
        yield agent
    finally:
        agent.stop(30)


def _moves(node: LedgerBank, first: int, count: int) -> None:
    from cluster import transfer_args

    for seq in range(first, first + count):
        node.move(seq, *transfer_args(seq), sync=True, timeout=WAIT)


def _shipped(agent: Agent, index: int) -> None:
    deadline = time.monotonic() + WAIT
    while (agent.status().segment_index or 0) < index:
        assert time.monotonic() < deadline, f"not shipped up to {index}: {agent.status()}"
        time.sleep(0.05)


@pytest.fixture
def small_buffer_cluster() -> Iterator[Cluster]:
    with running_cluster(3, node_class=LedgerBank, consumers=_small_buffer_consumers) as c:
        yield c


def test_an_overflowed_buffer_is_served_from_the_journal_and_a_real_gap_is_reported(
        small_buffer_cluster: Cluster, tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    leader = small_buffer_cluster.leader()
    assert isinstance(leader, LedgerBank)
    with _agent(leader, url) as agent:
        while not agent.list():
            time.sleep(0.05)
        _moves(leader, 0, 30)  # the buffer keeps one entry: the rest comes from the journal
        _shipped(agent, leader.raftLastApplied)
    assert recovery_window(url).gaps == ()
    for index in range(min(s.index for s in recovery_window(url).snapshots) + 1,
                       leader.raftLastApplied + 1, 7):
        assert archive_history(url, index) == leader.recorder.state_at(index)["history"]

    shipped = leader.raftLastApplied
    _moves(leader, 30, 30)  # no agent ships these, and the journal is then compacted past them
    applied = leader.raftLastApplied
    leader.forceLogCompaction()
    deadline = time.monotonic() + WAIT
    while log_start(leader) < applied - 1:
        assert time.monotonic() < deadline, "the journal was not compacted"
        leader.forceLogCompaction()
        time.sleep(0.05)
    with _agent(leader, url) as agent:  # its first round stores a snapshot after the gap
        _moves(leader, 60, 5)
        _shipped(agent, leader.raftLastApplied)
    window = recovery_window(url)
    assert len(window.gaps) == 1
    gap = window.gaps[0]
    assert gap.after_index == shipped and gap.resumes_at >= applied - 1
    with pytest.raises(UnreachablePointError), build_point(url, to_index=shipped + 2):
        pass
    end = leader.raftLastApplied
    assert archive_history(url, end) == leader.recorder.state_at(end)["history"]


def archive_history(url: str, index: int) -> list[int]:
    return _history_at(url, index)
