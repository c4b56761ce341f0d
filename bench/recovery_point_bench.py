"""The recovery point of segment shipping: how long after its commit a change is stored.

    python -m bench.recovery_point_bench --rate 1000 --seconds 30 --segment-interval 2 \\
        --out bench/results/recovery-point.json

A 3-node reference (in-memory) cluster takes ``--rate`` writes a second for ``--seconds`` while
an agent beside its leader snapshots every ``--interval`` seconds and ships segments every
``--segment-interval`` into a local folder. For every change, the delay is the time its segment
was stored (the segment file's modification time: when its upload into the folder finished,
before the agent reads it back to check it) minus the change's commit time; the percentiles of
those delays go to ``--out``. The baseline in the same run is ``--segment-interval`` itself: a
change waits for its segment to be cut, so the p99 cannot be much below it.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench._pitr import arguments, memory_manager, report
from raft_snapshot_plugin.agent import Agent, Retention
from raft_snapshot_plugin.agent.segments import CHANGES_FOLDER, SEGMENT_PATTERN
from raft_snapshot_plugin.memory import MemoryCluster


def measure(rate: float, seconds: float, interval: float, segment_interval: float
            ) -> dict[str, Any]:
    pm = memory_manager()
    cluster = MemoryCluster(3, name="rpo")
    leader = cluster.nodes[0]
    with tempfile.TemporaryDirectory(prefix="rpo-bench-") as folder:
        agent = Agent(leader, folder, manager=pm, interval=interval,
                      segment_interval=segment_interval,
                      retention=Retention(keep=10_000, hourly=0, daily=0))
        agent.start()
        try:
            while not agent.list():
                time.sleep(0.05)
            _write(leader, rate, seconds)
            last = leader.applied
            deadline = time.monotonic() + 120
            while (agent.status().segment_index or 0) < last and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            agent.stop(60)
        stored = {}
        for path in (Path(folder) / CHANGES_FOLDER).iterdir():
            match = SEGMENT_PATTERN.match(path.name)
            if match:
                stored[(int(match["first"]), int(match["last"]))] = os.stat(path).st_mtime
        first_shipped = min(first for first, _ in stored)
        delays = []
        for entry in cluster.log:
            if entry.index < first_shipped:
                continue
            (when,) = [t for (a, b), t in stored.items() if a <= entry.index <= b]
            delays.append(when - entry.time)
    delays.sort()
    cuts = statistics.quantiles(delays, n=100)
    return {"rate": rate, "seconds": seconds, "segment_interval": segment_interval,
            "changes": len(delays), "segments": len(stored),
            "delay_seconds": {"p50": cuts[49], "p90": cuts[89], "p99": cuts[98],
                              "max": delays[-1]},
            "p99_vs_segment_interval": cuts[98] / segment_interval}


def _write(leader: Any, rate: float, seconds: float) -> None:
    stop = time.monotonic() + seconds
    done = 0
    started = time.monotonic()
    while time.monotonic() < stop:
        leader.set(f"key{done % 5000}", f"value {done}")
        done += 1
        ahead = done / rate - (time.monotonic() - started)
        if ahead > 0:
            threading.Event().wait(ahead)


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--segment-interval", type=float, default=2.0)
    args = parser.parse_args(argv)
    result = measure(args.rate, args.seconds, args.interval, args.segment_interval)
    d = result["delay_seconds"]
    report(result, [f"{result['changes']} changes in {result['segments']} segments: "
                    f"commit-to-stored delay p50 {d['p50']:.2f} s, p90 {d['p90']:.2f} s, "
                    f"p99 {d['p99']:.2f} s, max {d['max']:.2f} s "
                    f"({result['p99_vs_segment_interval']:.2f}x the segment interval)"], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
