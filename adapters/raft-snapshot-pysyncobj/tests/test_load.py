"""Load: a 3-node PySyncObj cluster taking writes at a steady rate while a snapshot is taken every
second. Every snapshot is consistent, no acknowledged write is lost, writes keep flowing; the
acknowledgement latency is reported against the same cluster's baseline (``pytest -s``).

Writes are asynchronous (callbacks, many in flight): a synchronous PySyncObj write waits for a
commit, about one ``appendEntriesPeriod``, which caps one writer far below the rate.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from cluster import Bank, Cluster, PacedLoad, check_consistent, running_cluster, transfer_args
from procs.control import archive_attributes
from raft_snapshot_pysyncobj import SnapshotSupport

import raft_snapshot_plugin as rsp


class Load(PacedLoad):
    """Submits transfers at ``rate`` per second through the leader; records every outcome."""

    def __init__(self, cluster: Cluster, rate: int) -> None:
        super().__init__(cluster, rate)
        self.sent: dict[int, float] = {}
        self.acked: dict[int, float] = {}  # seq -> latency in seconds
        self.ack_times: list[float] = []
        self.failed: set[int] = set()

    def submit(self, leader: Bank, seq: int) -> None:
        with self.lock:
            self.sent[seq] = time.monotonic()
        leader.transfer(seq, *transfer_args(seq), callback=self._callback(seq))

    def _callback(self, seq: int) -> Any:
        def done(result: Any, error: int) -> None:
            now = time.monotonic()
            with self.lock:
                if error == 0 and result == seq:
                    self.acked[seq] = now - self.sent[seq]
                    self.ack_times.append(now)
                else:
                    self.failed.add(seq)
        return done

    def phase(self) -> tuple[int, int]:
        with self.lock:
            return self.next, len(self.ack_times)

    def settle(self, seconds: float = 20.0) -> set[int]:
        """Wait for every outcome; what never answered is uncertain."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.acked) + len(self.failed) >= self.next:
                    break
            time.sleep(0.05)
        with self.lock:
            return set(range(self.next)) - set(self.acked)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")


@pytest.mark.parametrize(("seconds", "rate"), [(6, 200), pytest.param(60, 1000, marks=pytest.mark.slow)])
def test_writes_under_a_snapshot_every_second(seconds: int, rate: int, snapshot_tmpdir: Path,
                                              tmp_path: Path) -> None:
    with running_cluster(3, consumers=lambda: [SnapshotSupport()]) as cluster:
        load = Load(cluster, rate)
        load.thread.start()
        try:
            baseline_start = load.phase()
            time.sleep(seconds / 2)  # the baseline: the same cluster, the same rate, no snapshots
            baseline_end = load.phase()
            snapshots, take_seconds = 0, []
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                tick = time.monotonic()
                with load.lock:
                    acked_before = set(load.acked)
                with rsp.take(cluster.leader(), timeout=10) as snap:
                    snap.save(tmp_path / "s.snap")
                take_seconds.append(time.monotonic() - tick)
                failed_now = load.failed | set(range(load.next, load.next + 10 * rate))
                history = check_consistent(archive_attributes(tmp_path / "s.snap"), failed_now)
                assert acked_before <= set(history), "an acknowledged write is not in the snapshot"
                snapshots += 1
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
            loaded_end = load.phase()
        finally:
            load.stop.set()
            load.thread.join(10)
        uncertain = load.settle()
        states = cluster.states()
    final = set(states[0]["history"])
    assert all(s == states[0] for s in states)
    check_consistent(states[0], uncertain)
    lost = set(load.acked) - final
    with load.lock:
        times = sorted(load.ack_times)
        base = [load.acked[s] for s in range(baseline_start[0], baseline_end[0]) if s in load.acked]
        under = [load.acked[s] for s in range(baseline_end[0], loaded_end[0]) if s in load.acked]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    figures = {
        "seconds": seconds, "rate": rate, "snapshots": snapshots,
        "writes_submitted": load.next, "writes_acked": len(load.acked),
        "writes_failed": len(load.failed), "lost_writes": len(lost),
        "acked_per_s_under_snapshots": round(len(under) / seconds),
        "p99_ms_baseline": round(_p99(base) * 1000, 1),
        "p99_ms_under_snapshots": round(_p99(under) * 1000, 1),
        "max_ms_under_snapshots": round(max(under, default=0) * 1000, 1),
        "longest_ack_gap_ms": round(max(gaps, default=0) * 1000, 1),
        "take_and_save_ms_p50": round(sorted(take_seconds)[len(take_seconds) // 2] * 1000, 1),
    }
    print(f"\nload: {figures}")
    assert not lost
    assert snapshots >= seconds - 1
    assert len(under) >= 0.8 * rate * seconds, "the writes did not keep flowing"
    assert max(gaps) < 2.0, "writes stalled"
