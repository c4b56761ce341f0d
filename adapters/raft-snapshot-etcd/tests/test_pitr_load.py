"""Point-in-time recovery under load: a real 3-member etcd cluster taking writes (puts, deletes,
two-key txns) at a steady rate, an agent snapshotting it and shipping 2 s segments into S3 (moto's
server), and a recorder of every revision it made. Restores to random indexes and times each give
exactly the recorded state; every revision is shipped once; the recovery point (the delay between
a write and the segment holding it being stored) is reported (``pytest -s``).

The long variant (60 s at 200 writes/s, 30 s snapshots, 20 indexes and 5 times) is marked slow
(``tox -e slow``); CI runs a few seconds of it.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from etcd_clusters import Clusters
from pitr_helpers import Recorder, p99, restored_keys, shipped_changes
from raft_snapshot_etcd import EtcdCluster

from raft_snapshot_plugin.agent import Agent, build_point, recovery_window


class StoredAt:
    """Polls the agent's status: when each shipped index was first seen stored."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.seen: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        last = -1
        while not self.stop.wait(0.02):
            index = self.agent.status().segment_index
            if index is not None and index > last:
                self.seen.append((time.time(), index))
                last = index

    def delays(self, recorder: Recorder, after: int) -> list[float]:
        """For every revision after ``after``: stored time minus the time its write was sent
        (an upper bound of the delay since its commit)."""
        self.stop.set()
        self.thread.join(5)
        out, at = [], 0
        for revision in sorted(r for r in recorder.ops if r > after):
            while at < len(self.seen) and self.seen[at][1] < revision:
                at += 1
            assert at < len(self.seen), f"revision {revision} never seen stored"
            out.append(self.seen[at][0] - recorder.ops[revision].sent)
        return out


def wait_for(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.parametrize(("seconds", "rate", "interval", "indexes", "times"), [
    (3, 100, 2.0, 1, 1),
    pytest.param(60, 200, 30.0, 20, 5, marks=pytest.mark.slow),
])
def test_restores_to_random_points_give_the_recorded_state(
    clusters: Clusters, s3: Any, tmp_path: Path, seconds: int, rate: int, interval: float,
    indexes: int, times: int,
) -> None:
    cluster = clusters.new("load")
    url, options = "s3://pitr/etcd", s3.options()
    # stale: snapshots and segments from the first member, leader or not (the indexes are
    # revisions, the same on every member)
    agent = Agent(EtcdCluster(cluster.endpoints), url, storage_options=options, stale=True,
                  interval=interval, segment_interval=2.0)
    recorder = Recorder(cluster, cluster.endpoints[1], rate)
    agent.start()
    try:
        wait_for(lambda: agent.status().stored >= 1, 60, "the first snapshot")
        first = agent.list()[0].index
        stored_at = StoredAt(agent)
        achieved = recorder.run(seconds)
        last = recorder.check_contiguous(first)
        wait_for(lambda: (agent.status().segment_index or 0) >= last, 60, f"segments to {last}")
        delays = stored_at.delays(recorder, first)
    finally:
        agent.stop(60)
    print(f"\n{achieved:.0f} revisions/s for {seconds} s ({last - first} revisions); recovery "
          f"point p99 {p99(delays):.2f} s, max {max(delays):.2f} s (write sent -> segment stored)")
    assert achieved >= 0.8 * rate, f"the writers reached {achieved:.0f}/s, not {rate}/s"

    shipped = list(shipped_changes(url, options))
    assert [r for r, _ in shipped] == list(range(first + 1, last + 1))  # each once, in order
    assert all(tuple(events) == recorder.ops[r].events for r, events in shipped)
    window = recovery_window(url, options)
    assert window.gaps == () and window.reachable == ((first, last),)

    rng = random.Random(seconds)
    targets = rng.sample(range(first + 1, last + 1), indexes)
    expected = recorder.states_at(targets)
    for target in targets:
        with build_point(url, to_index=target, storage_options=options) as point:
            assert point.meta.index == target
            assert restored_keys(point.path, tmp_path / f"i{target}") == expected[target], target

    stamps = sorted(recorder.ops[r].sent for r in range(first + 1, last + 1))
    for when in (rng.uniform(stamps[0], stamps[-1]) for _ in range(times)):
        with build_point(url, to_time=when, storage_options=options) as point:
            index = point.target
            # the change restored to was sent by then, and the next one acknowledged about then
            # (its stamp is when the agent's watch received it)
            assert index == first or recorder.ops[index].sent <= when
            assert index == last or when < recorder.ops[index + 1].acked + 5.0
            state = recorder.states_at([index])[index]
            assert restored_keys(point.path, tmp_path / f"t{index}") == state, when
