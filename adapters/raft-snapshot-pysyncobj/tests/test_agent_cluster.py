"""The snapshot agent on real 3-node PySyncObj clusters on 127.0.0.1.

Agents on every node store once per round (the leader's); after the leader is destroyed another
agent stores; an unchanged state is not stored twice; a simulated week of hourly rounds keeps
exactly the retention set; a snapshot stored in S3 (moto's standalone server, ``python -m
moto.server`` from ``moto[server]``, its own process) restores into a fresh cluster through the
``raft-snapshot restore s3://.../latest`` command line.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import WAIT, Cluster, running_cluster, user_state

from raft_snapshot_plugin.agent import Agent, Retention, list_snapshots
from raft_snapshot_plugin.endpoint import serve

T0 = 1_700_000_000.0
TOKEN = "cluster-agent-token"



class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def stored(url: str) -> list[str]:
    return [s.name for s in list_snapshots(url)]


def test_one_store_per_round_failover_and_no_duplicate(cluster: Cluster, tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    clock = Clock()
    agents = {id(n): Agent(n, url, clock=clock, state_dir=tmp_path / f"state{i}", backoff=0.0,
                           timeout=WAIT)
              for i, n in enumerate(cluster.running)}

    def round_(expect_index: int | None) -> list[str]:
        clock.now += 3600
        results = [agents[id(n)].run_once() for n in cluster.running]
        urls = [r for r in results if r is not None]
        if expect_index is not None:
            assert len(urls) == 1, results
            assert re.search(rf"-{expect_index}-[0-9a-f]{{6}}\.snap$", urls[0]), urls[0]
        return urls

    for value in ("one", "two"):
        leader = cluster.leader()
        leader.put("note", value, sync=True, timeout=WAIT)
        cluster.converged()
        assert len(round_(leader.raftLastApplied)) == 1
    assert round_(None) == []  # nothing changed: nobody stores

    cluster.stop_node(cluster.nodes.index(cluster.leader()))  # the leader dies
    new_leader = cluster.leader()
    new_leader.put("note", "three", sync=True, timeout=WAIT)
    cluster.converged()
    urls = round_(new_leader.raftLastApplied)
    assert len(urls) == 1
    assert round_(None) == []
    assert len(stored(url)) == 3


def _expected(times: list[float], now: float, retention: Retention) -> set[str]:
    """The retention set, computed from calendar hours and days."""
    def when(t: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(t, dt.timezone.utc)

    def stamp(t: float) -> str:
        return when(t).strftime("%Y%m%dT%H%M%SZ")

    kept = {stamp(t) for t in sorted(times)[-max(retention.keep, 1):]}
    this_hour = when(now).replace(minute=0, second=0, microsecond=0)
    for count, unit, first in ((retention.hourly, dt.timedelta(hours=1), this_hour),
                               (retention.daily, dt.timedelta(days=1), this_hour.replace(hour=0))):
        for k in range(count):
            start = first - k * unit
            inside = [t for t in times if start <= when(t) < start + unit]
            if inside:
                kept.add(stamp(max(inside)))
    return kept


@pytest.fixture
def fast_cluster() -> Iterator[Cluster]:
    """A cluster ticking every 5 ms, so a week of rounds takes seconds, not half a minute."""
    with running_cluster(3, autoTickPeriod=0.005, appendEntriesPeriod=0.005) as c:
        yield c


def test_a_simulated_week_of_hourly_rounds(fast_cluster: Cluster) -> None:
    url = "memory://pysyncobj-agent-week/store"
    clock = Clock()
    retention = Retention(keep=5, hourly=24, daily=7)
    leader = fast_cluster.leader()
    agent = Agent(leader, url, clock=clock, retention=retention, timeout=WAIT)
    times = []
    try:
        for hour in range(24 * 7 + 12):
            clock.now = T0 + hour * 3600 + (hour * 104729) % 3000
            if hour % 6 != 5:
                leader.put("tick", hour, sync=True, timeout=WAIT)
                assert agent.run_once() is not None
                times.append(clock.now)
            else:
                assert agent.run_once() is None  # unchanged
        names = {n.split("-")[0] for n in stored(url)}
        assert names == _expected(times, clock.now, retention)
    finally:
        import fsspec

        fsspec.filesystem("memory").rm(url, recursive=True)


def test_restore_from_s3_into_a_fresh_cluster_through_the_cli(
    s3: Any, cluster: Cluster, other_cluster: Cluster
) -> None:
    s3.create_bucket("backups")
    source = cluster.leader()
    for i in range(50):
        source.put(f"k{i}", {"value": i, "text": "x" * i}, sync=True, timeout=WAIT)
    cluster.converged()
    expected = user_state(source)
    with serve(source, token=TOKEN) as endpoint:
        agent = Agent(None, "s3://backups/prod", addr=endpoint.url, token=TOKEN,
                      storage_options=s3.options(), backoff=0.0)
        url = agent.run_once()
    assert url is not None and url.startswith("s3://backups/prod/")

    target = other_cluster.leader()
    target.put("note", "the fresh cluster's own state", sync=True, timeout=WAIT)
    with serve(target, token=TOKEN) as endpoint:
        env = {**os.environ, **s3.env()}
        done = subprocess.run(
            [sys.executable, "-m", "raft_snapshot_plugin", "restore", "s3://backups/prod/latest",
             "--addr", endpoint.url, "--token", TOKEN],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )
    assert done.returncode == 0, done.stderr
    assert url in done.stdout
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        states = other_cluster.states()
        if all(s == expected for s in states):
            break
        time.sleep(0.05)
    assert all(s == expected for s in other_cluster.states())


def _scrape(url: str) -> dict[str, float]:
    """The agent's /metrics over real HTTP, as ``{series: value}``."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_move_while_the_agent_runs_against_a_cluster(cluster: Cluster, tmp_path: Path
                                                             ) -> None:
    leader = cluster.leader()
    agent = Agent(leader, str(tmp_path / "store"), interval=0.3, timeout=WAIT, backoff=0.0,
                  state_dir=tmp_path / "state", metrics_address="127.0.0.1:0",
                  drill_interval=3600.0, drill_timeout=120.0)
    stored = 'raft_snapshot_agent_rounds_total{result="stored"}'
    agent.start()
    try:
        assert agent.metrics_url is not None
        deadline = time.monotonic() + WAIT
        while _scrape(agent.metrics_url).get(stored, 0) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        first = _scrape(agent.metrics_url)
        leader.put("note", "changed", sync=True, timeout=WAIT)
        while _scrape(agent.metrics_url).get(stored, 0) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        while _scrape(agent.metrics_url).get("raft_snapshot_agent_last_drill_success", 0) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        second = _scrape(agent.metrics_url)
    finally:
        agent.stop()
    assert second["raft_snapshot_agent_last_success_timestamp_seconds"] > first[
        "raft_snapshot_agent_last_success_timestamp_seconds"]
    assert second["raft_snapshot_agent_snapshots_in_storage"] == 2
    assert second["raft_snapshot_agent_total_snapshot_size_bytes"] > 0
    assert second["raft_snapshot_agent_snapshot_size_bytes"] > 0
    assert second["raft_snapshot_agent_healthy"] == 1
    assert second["raft_snapshot_agent_consecutive_failures"] == 0
    assert second['raft_snapshot_agent_rounds_total{result="skipped"}'] >= first[
        'raft_snapshot_agent_rounds_total{result="skipped"}']
    assert agent.metrics_url is None  # the listener stopped with the agent
