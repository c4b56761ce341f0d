"""What the point-in-time tests share: a recorder of the state at every index while writes run,
an agent that ships a cluster's changes until they are stored, and a state built from a prefix."""

from __future__ import annotations

import io
import random
import threading
import time
from typing import Any

from raft_snapshot_plugin.agent import Agent, build_point
from raft_snapshot_plugin.archive import read_archive
from raft_snapshot_plugin.manager import PluginManager
from raft_snapshot_plugin.memory import MemoryCluster, MemoryNode, decode_memory_state


class Recorder:
    """Writes through the leader on a thread and records the state after every index."""

    def __init__(self, cluster: MemoryCluster, seed: int = 7) -> None:
        self.cluster = cluster
        self.leader = cluster.nodes[0]
        with cluster.lock:  # the state before the writes start
            self.states = {self.leader.applied: dict(self.leader.data)}
        self.random = random.Random(seed)
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def write(self, count: int) -> None:
        for _ in range(count):
            key = f"k{self.random.randrange(40)}"
            with self.cluster.lock:  # the state right after the entry, before anyone else writes
                leader = self.cluster.leader
                assert leader is not None
                if self.random.random() < 0.1:
                    index = leader.delete(key)
                else:
                    index = leader.set(key, f"v{self.random.randrange(10**6)}")
                self.states[index] = dict(leader.data)

    def elect(self, node: MemoryNode) -> None:
        """A new leader (and term): its no-op entry is an index too."""
        with self.cluster.lock:
            self.cluster.elect(node)
            self.states[len(self.cluster.log)] = dict(node.data)

    def run(self, per_second: float, seconds: float) -> None:
        def loop() -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not self.stop.is_set():
                self.write(1)
                time.sleep(1 / per_second)

        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(60)

    def state_at_time(self, when: float) -> tuple[int, dict[str, str]]:
        with self.cluster.lock:
            index = max(e.index for e in self.cluster.log if e.time <= when)
        return index, self.states[index]


def built_state(url: str, manager: PluginManager, options: dict[str, Any], **target: Any
                ) -> tuple[int, dict[str, str]]:
    with build_point(url, storage_options=options, manager=manager, **target) as point:
        sink = io.BytesIO()
        meta = read_archive(point.path, sink)
        assert meta.index == point.target
        return point.target, decode_memory_state(sink.getvalue())


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def shipped_through(agent: Agent, index: int) -> bool:
    reached = agent.status().segment_index
    return reached is not None and reached >= index


def ship(recorder: Recorder, url: str, manager: PluginManager, batches: list[int],
         **options: Any) -> Agent:
    """Run an agent beside the recorder's leader: once its first snapshot is stored, write each
    batch of changes and wait until the segments reach it; stop the agent and return it."""
    cluster = recorder.cluster
    agent = Agent(cluster.nodes[0], url, manager=manager, **{"interval": 3600,
                                                             "segment_interval": 0.2, **options})
    agent.start()
    try:
        wait_for(lambda: agent.status().stored >= 1, 30, "the first snapshot")
        for count in batches:
            recorder.write(count)
            wait_for(lambda: shipped_through(agent, cluster.nodes[0].applied), 30, "segments")
    finally:
        agent.stop(30)
    return agent
