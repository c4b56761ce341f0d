"""A node and its agent in one process, for the point-in-time tests that kill it.

Run as ``python pitr_app.py --journal FILE --store URL --seconds S``: a 3-node ``MemoryCluster``
whose log lives in FILE (one JSON line per entry, written before the entry is applied: a node's
log on disk; started again with the same FILE, the cluster resumes from it, as a restarted node
does), a writer committing ``--rate`` changes a second, and an ``Agent`` (the reference backend
registered) taking a snapshot every ``--interval`` seconds and shipping segments every
``--segment-interval``. Every 0.1 s it prints ``{"index": N, "segment_index": M}``; after
``--seconds`` it stops writing, waits until the segments reach the last index, stops the agent and
prints ``{"done": N}``. ``--hang-at-upload K``: the K-th segment is uploaded, then its check never
runs (the app prints ``{"uploaded": PATH}`` and its shipper waits there, to be killed).
``--partial-grace``: the agent's ``partial_grace``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import threading
import time
from typing import Any

from raft_snapshot_plugin.agent import Agent, Retention, shipping
from raft_snapshot_plugin.manager import get_plugin_manager
from raft_snapshot_plugin.memory import MEMORY_BACKEND, MemoryCluster, MemoryPlugin


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--journal", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--segment-interval", type=float, default=1.0)
    parser.add_argument("--hang-at-upload", type=int)
    parser.add_argument("--partial-grace", type=float, default=3600.0)
    args = parser.parse_args()
    if args.hang_at_upload:
        _hang_at_upload(args.hang_at_upload)
    manager = get_plugin_manager(load_entrypoints=False)
    manager.register(MemoryPlugin(), name=MEMORY_BACKEND)
    cluster = MemoryCluster(3, name="app", journal=args.journal)
    leader = cluster.nodes[0]
    agent = Agent(leader, args.store, manager=manager, interval=args.interval,
                  segment_interval=args.segment_interval,
                  retention=Retention(keep=100, hourly=0, daily=0),
                  partial_grace=args.partial_grace)
    stop = threading.Event()

    def write() -> None:
        rng = random.Random(len(cluster.log))
        while not stop.is_set():
            key = f"k{rng.randrange(30)}"
            if rng.random() < 0.1:
                leader.delete(key)
            else:
                leader.set(key, f"v{rng.randrange(10**6)}")
            time.sleep(1 / args.rate)

    agent.start()
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        report(leader.applied, agent.status().segment_index)
        time.sleep(0.1)
    stop.set()
    writer.join(30)
    last = leader.applied
    deadline = time.monotonic() + 60
    while (agent.status().segment_index or 0) < last and time.monotonic() < deadline:
        time.sleep(0.1)
    agent.stop(30)
    print(json.dumps({"done": last, "segment_index": agent.status().segment_index}), flush=True)
    return 0


def _hang_at_upload(count: int) -> None:
    """The ``count``-th segment's check never runs: the upload is done, the shipper waits."""
    from raft_snapshot_plugin.agent.objects import check_stored as real_check
    uploads = itertools.count(1)

    def check(fs: Any, remote: str, size: int, sha256: str, url: str) -> None:
        if next(uploads) == count:
            print(json.dumps({"uploaded": remote}), flush=True)
            threading.Event().wait()
        real_check(fs, remote, size, sha256, url)

    vars(shipping)["check_stored"] = check  # the name the shipper calls


def report(index: int, segment_index: int | None) -> None:
    print(json.dumps({"index": index, "segment_index": segment_index}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
