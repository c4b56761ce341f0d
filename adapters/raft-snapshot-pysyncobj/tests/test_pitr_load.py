"""Point-in-time recovery under load (issue 24): a 3-node PySyncObj cluster on 127.0.0.1 takes
moves at a steady rate while an agent snapshots it and ships its changes as segments into moto's
S3 server; a recorder on the leader notes the index and time of every move as it is applied.
Restores to random indexes and times, rebuilt from S3 through the public API (and one through
the ``raft-snapshot restore PREFIX --to-index`` command line into a fresh cluster), each give
exactly the state the recorder folds for that point. The recovery point (the p99 of the delay
from a change's commit to its segment being stored) is printed (``pytest -s``).

The long variant (60 s at 1000 moves/s, 30 s snapshots, 2 s segments, 20 indexes and 5 times) is
marked slow; CI runs a short one. A third (slow) runs the long one with the S3 server stopped
(SIGSTOP: connections hang, nothing answers) for 30 s in the middle of the load, and restores
besides to 5 indexes applied during the outage: nothing is lost or repeated, and no gap is
recorded (the node still had every change).
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cluster import WAIT, Cluster, default_consumers, running_cluster
from pitr_load import LedgerBank, Load, ShipWatch, percentile
from procs.control import archive_attributes

from raft_snapshot_plugin.agent import Agent, Retention, build_point, recovery_window
from raft_snapshot_plugin.endpoint import serve

TOKEN = "pitr-load-token"
_TESTS = str(Path(__file__).resolve().parent)


def _ledger_cluster() -> Any:
    return running_cluster(3, node_class=LedgerBank)


def _archive_state(path: str | Path) -> dict[str, Any]:
    attributes = archive_attributes(path)
    return {"accounts": attributes["accounts"], "history": attributes["history"]}


def _time_targets(applied: list[tuple[int, int, float]], low: int, high: int, count: int,
                  rng: random.Random) -> list[tuple[float, int]]:
    """``count`` times between two recorded moves applied at least 20 ms apart (so the capture's
    own apply time of each, microseconds after the recorder's, is on the same side), with the
    index of the last move at or before each."""
    pairs = [(a, b) for a, b in itertools.pairwise(applied)
             if low <= a[0] and b[0] <= high and b[2] - a[2] >= 0.02]
    assert len(pairs) >= count, f"only {len(pairs)} quiet moments to restore to"
    return [((a[2] + b[2]) / 2, a[0]) for a, b in rng.sample(pairs, count)]


@pytest.mark.parametrize(("seconds", "rate", "interval", "indexes", "times", "outage"), [
    (8, 200, 4.0, 5, 2, 0),
    pytest.param(60, 1000, 30.0, 20, 5, 0, marks=pytest.mark.slow),
    pytest.param(60, 1000, 30.0, 20, 5, 30, marks=pytest.mark.slow),
])
def test_restores_to_any_index_and_time_give_the_recorded_state(
        s3: Any, seconds: int, rate: int, interval: float, indexes: int, times: int,
        outage: int) -> None:
    bucket = f"pitr{rate}-{outage}"
    s3.create_bucket(bucket)
    url = f"s3://{bucket}/prod"
    options = s3.options()
    with _ledger_cluster() as cluster:
        leader = cluster.leader()
        assert isinstance(leader, LedgerBank)
        agent = Agent(leader, url, storage_options=options, interval=interval,
                      segment_interval=2.0, retention=Retention(keep=1000, hourly=0, daily=0),
                      timeout=WAIT, backoff=0.5, storage_timeout=10.0)
        agent.start()
        try:
            deadline = time.monotonic() + WAIT
            while not agent.list():
                assert time.monotonic() < deadline, "the agent stored no first snapshot"
                time.sleep(0.1)
            with ShipWatch(lambda: agent.status().segment_index) as watch:
                with Load(cluster, rate) as load:
                    outage_window = _load_for(s3, seconds, outage)
                cluster.converged()
                last = leader.raftLastApplied
                deadline = time.monotonic() + 60
                while (agent.status().segment_index or 0) < last:
                    assert time.monotonic() < deadline, f"segments stopped at "\
                        f"{agent.status().segment_index}, before {last}: {agent.status()}"
                    time.sleep(0.1)
        finally:
            agent.stop(60)
        assert cluster.leader() is leader, "the leader changed: the recorder saw another node"
        applied = leader.recorder.snapshot()
        assert len(applied) == load.acked and load.failed == 0, (len(applied), load.acked)
        delays = watch.delays(applied)
        snapshots = agent.list()
        first = min(s.index for s in snapshots)
        print(f"\npitr load: {seconds} s at {rate}/s, S3 stopped for {outage} s, "
              f"{len(applied)} moves, {len(snapshots)} "
              f"snapshot(s); commit-to-stored p50 {percentile(delays, 0.5):.2f} s, p99 "
              f"{percentile(delays, 0.99):.2f} s, max {max(delays):.2f} s")
        assert len(delays) == len(applied)

        rng = random.Random(rate * seconds)
        targets = sorted(rng.sample(range(first + 1, last + 1), indexes))
        if outage:
            during = [i for i, _, at in applied if outage_window[0] <= at <= outage_window[1]]
            assert len(during) > outage * rate // 2, "the load stalled during the outage"
            targets = sorted({*targets, *rng.sample(during, 5)})
            assert agent.status().last_segment_error is None
            assert not recovery_window(url, options).gaps
        for index in targets:
            with build_point(url, to_index=index, storage_options=options) as point:
                assert point.meta.index == index
                assert _archive_state(point.path) == leader.recorder.state_at(index), index
        for when, index in _time_targets(applied, first + 1, last, times, rng):
            with build_point(url, to_time=when, storage_options=options) as point:
                assert point.meta.index >= index
                assert _archive_state(point.path) == leader.recorder.state_at(index), when
        _restore_through_the_cli(s3, url, targets[len(targets) // 2], leader)


def _load_for(s3: Any, seconds: int, outage: int) -> tuple[float, float]:
    """Let the load run ``seconds``, the S3 server stopped for ``outage`` of them in the middle;
    the outage's start and end (Unix time)."""
    time.sleep((seconds - outage) / 2)
    begun = time.time()
    if outage:
        s3.pause()
        try:
            time.sleep(outage)
        finally:
            s3.resume()
    ended = time.time()
    time.sleep((seconds - outage) / 2)
    return begun, ended


def _restore_through_the_cli(s3: Any, url: str, index: int, source: LedgerBank) -> None:
    """``raft-snapshot restore PREFIX --to-index`` into a fresh cluster, through its endpoint."""
    expected = source.recorder.state_at(index)
    with running_cluster(3, node_class=LedgerBank,
                         consumers=lambda: default_consumers()) as fresh:
        target = fresh.leader()
        with serve(target, token=TOKEN) as endpoint:
            env = {**os.environ, **s3.env(),
                   "PYTHONPATH": os.pathsep.join([_TESTS, os.environ.get("PYTHONPATH", "")])}
            done = subprocess.run(
                [sys.executable, "-m", "raft_snapshot_plugin", "restore", url,
                 "--to-index", str(index), "--addr", endpoint.url, "--token", TOKEN],
                env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        assert f"Restored index {index}" in done.stdout
        _wait_states(fresh, expected)


def _wait_states(cluster: Cluster, expected: dict[str, Any]) -> None:
    deadline = time.monotonic() + WAIT
    while True:
        states = [{"accounts": s["accounts"], "history": s["history"]} for s in cluster.states()]
        if all(s == expected for s in states) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert all(s == expected for s in states)
