"""The agent against its own storage's faults, on a local directory and on moto's S3 server.

A short upload, a killed upload's ``.tmp-`` leftover, the clock stepped back a day, two agents
pruning one prefix at once, and a bucket whose Object Lock refuses deletions: after each, the
stored set and ``latest`` are right. The faults are real (a truncated object really stored, a
leftover really in the prefix, threads really racing, moto's lock really refusing); only the
clock is injected, through the agent's ``clock`` parameter.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin.agent import (
    Agent,
    LockOptions,
    Retention,
    download,
    list_snapshots,
    object_name,
    objects,
)
from raft_snapshot_plugin.agent import prune as prune_module
from raft_snapshot_plugin.agent.storage import list_stored
from raft_snapshot_plugin.errors import StorageError
from raft_snapshot_plugin.manager import PluginManager
from raft_snapshot_plugin.testing import MemoryCluster, S3Server

T0 = 1_700_000_000.0
DAY = 86400.0
_buckets = itertools.count()


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cluster() -> MemoryCluster:
    c = MemoryCluster(3, name="storage")
    c.nodes[0].set("greeting", "hello")
    return c


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(url, storage_options)``: a local folder, or a fresh bucket on moto's S3 server."""
    if request.param == "local":
        yield str(tmp_path / "store"), {}
        return
    s3: S3Server = request.getfixturevalue("s3")
    bucket = f"faults-{next(_buckets)}"
    s3.create_bucket(bucket)
    yield f"s3://{bucket}/prefix", s3.options()


def agent_for(node: object, url: str, options: dict[str, Any], manager: PluginManager,
              **kwargs: Any) -> Agent:
    kwargs.setdefault("clock", Clock())
    kwargs.setdefault("backoff", 0.0)
    return Agent(node, url, storage_options=options, manager=manager, **kwargs)


def names(url: str, options: dict[str, Any]) -> list[str]:
    return [s.name for s in list_snapshots(url, options)]


def latest_index(url: str, options: dict[str, Any], tmp_path: Path) -> int:
    """The index of what ``<prefix>/latest`` downloads, after verifying it."""
    target = tmp_path / "latest.snap"
    with target.open("wb") as sink:
        download(f"{url}/latest", sink, options)
    return rsp.verify(target).index


def all_objects(url: str, options: dict[str, Any]) -> list[str]:
    fs, root = fsspec.core.url_to_fs(url, **options)
    fs.invalidate_cache()
    try:
        return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))
    except FileNotFoundError:
        return []


# --- a short upload --------------------------------------------------------------------------------

def test_a_short_upload_is_deleted_and_the_round_fails(
    store: tuple[str, dict[str, Any]], cluster: MemoryCluster, memory_manager: PluginManager,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, options = store
    clock = Clock()
    agent = agent_for(cluster.nodes[0], url, options, memory_manager, clock=clock, retries=2,
                      state_dir=tmp_path / "state")
    assert agent.run_once() is not None
    good = names(url, options)
    real_upload = objects.upload

    def short_upload(fs: Any, local: str, remote: str, put: dict[str, Any]) -> None:
        truncated = tmp_path / "truncated"
        truncated.write_bytes(Path(local).read_bytes()[:-40])  # a connection cut short
        real_upload(fs, str(truncated), remote, put)

    monkeypatch.setattr(objects, "upload", short_upload)
    cluster.nodes[0].set("greeting", "changed")
    clock.now += 3600
    with pytest.raises(StorageError, match=r"stored with \d+ bytes, not \d+"):
        agent.run_once()
    assert all_objects(url, options) == good  # the short object is gone: never `latest`
    assert agent.status().consecutive_failures == 1
    assert latest_index(url, options, tmp_path) < cluster.nodes[0].applied

    monkeypatch.setattr(objects, "upload", real_upload)
    assert agent.run_once() is not None
    assert latest_index(url, options, tmp_path) == cluster.nodes[0].applied


# --- a killed upload's leftover -------------------------------------------------------------------

def test_leftover_temp_objects_are_removed_after_the_grace_period(
    store: tuple[str, dict[str, Any]], cluster: MemoryCluster, memory_manager: PluginManager,
    tmp_path: Path,
) -> None:
    """What ``put_whole`` leaves when the agent is killed between upload and move: a ``.tmp-``
    object. The store's own modification time counts too, so the clock here is the real one."""
    url, options = store
    clock = Clock(time.time())
    fs, root = fsspec.core.url_to_fs(url, **options)
    old = f".tmp-0123456789abcdef-{object_name(clock.now - 7200, 7)}"
    fs.makedirs(root, exist_ok=True)
    fs.pipe_file(f"{root}/{old}", b"half an upload")
    agent = agent_for(cluster.nodes[0], url, options, memory_manager, clock=clock,
                      partial_grace=600.0)
    assert agent.run_once() is not None
    assert old in all_objects(url, options)  # its object was written just now: it may be live
    clock.now += 700
    young = f".tmp-fedcba9876543210-{object_name(clock.now, 8)}"
    fs.pipe_file(f"{root}/{young}", b"an upload in progress")
    cluster.nodes[0].set("greeting", "changed")
    assert agent.run_once() is not None
    left = all_objects(url, options)
    assert old not in left and young in left
    assert [n for n in left if not n.startswith(".tmp-")] == names(url, options)
    assert len(names(url, options)) == 2


_KILLED_MID_UPLOAD = """
import os, signal, sys
import fsspec
from raft_snapshot_plugin.agent import Agent
from raft_snapshot_plugin.manager import get_plugin_manager
from raft_snapshot_plugin.memory import MEMORY_BACKEND, MemoryCluster, MemoryPlugin

pm = get_plugin_manager(load_entrypoints=False)
pm.register(MemoryPlugin(), name=MEMORY_BACKEND)
node = MemoryCluster(1, name="killed").nodes[0]
node.set("k", "v")
# SIGKILL between the upload of the .tmp- object and its move: what a kill at the worst moment does
type(fsspec.filesystem("file")).mv = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
Agent(node, sys.argv[1], manager=pm).run_once()
"""


def test_an_agent_killed_mid_upload_leaves_what_the_next_rounds_remove(
    cluster: MemoryCluster, memory_manager: PluginManager, tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    done = subprocess.run([sys.executable, "-c", _KILLED_MID_UPLOAD, str(store)],
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr
    (leftover,) = [p.name for p in store.iterdir()]
    assert leftover.startswith(".tmp-") and (store / leftover).stat().st_size > 0
    clock = Clock(time.time())
    agent = Agent(cluster.nodes[0], str(store), manager=memory_manager, clock=clock,
                  partial_grace=600.0)
    assert agent.run_once() is not None
    assert (store / leftover).exists()  # young: it could be another agent's upload in progress
    clock.now += 601
    cluster.nodes[0].set("greeting", "changed")
    assert agent.run_once() is not None
    assert not (store / leftover).exists()
    assert sorted(p.name for p in store.iterdir()) == names(str(store), {})


# --- the clock steps back a day -------------------------------------------------------------------

def test_a_clock_stepped_back_a_day_neither_hides_nor_deletes_the_newest_state(
    store: tuple[str, dict[str, Any]], cluster: MemoryCluster, memory_manager: PluginManager,
    tmp_path: Path,
) -> None:
    url, options = store
    clock = Clock()
    leader = cluster.nodes[0]
    agent = agent_for(leader, url, options, memory_manager, clock=clock,
                      retention=Retention(keep=2, hourly=0, daily=0))
    indexes = []
    for step in (3600.0, 3600.0, -DAY, 3600.0, 3600.0):
        clock.now += step
        indexes.append(leader.set("tick", str(clock.now)))
        assert agent.run_once() is not None
        assert latest_index(url, options, tmp_path) == indexes[-1]
    stored = list_snapshots(url, options)
    assert [s.index for s in stored][-2:] == indexes[-2:]  # the newest states, in order
    assert [s.index for s in stored] == sorted(s.index for s in stored)
    assert indexes[0] not in {s.index for s in stored}  # retention still works
    times = [s.time for s in stored]
    assert times == sorted(set(times))  # names never go back in time within a prefix


# --- two agents on one prefix ---------------------------------------------------------------------

def test_two_agents_pruning_one_prefix_at_once(
    store: tuple[str, dict[str, Any]], cluster: MemoryCluster, memory_manager: PluginManager,
) -> None:
    """Both store and prune in the same second, every round: nothing fails, no name is written
    twice, objects deleted under one agent's pass are skipped, and neither deletes what the
    other stored in the last interval."""
    url, options = store
    clock = Clock()
    agents = [agent_for(node, url, options, memory_manager, clock=clock, stale=True,
                        interval=3600.0, retention=Retention(keep=1, hourly=0, daily=0))
              for node in cluster.nodes[:2]]
    every: list[str] = []
    for round_ in range(8):
        clock.now = T0 + round_ * 3600
        cluster.nodes[0].set("tick", str(round_))
        barrier = threading.Barrier(2)
        results: list[Any] = [None, None]
        threads = [threading.Thread(target=_race, args=(agents[i], barrier, results, i))
                   for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(isinstance(r, Exception) for r in results), results
        urls = [r for r in results if r is not None]
        assert urls, "somebody stores a changed state"
        every += urls
        left = {s.url for s in list_snapshots(url, options)}
        assert set(urls) <= left, "an agent deleted what the other stored this interval"
    assert len(every) == len(set(every))  # unique names: nothing overwritten
    stored = list_snapshots(url, options)
    assert {s.index for s in stored} == {cluster.nodes[0].applied}
    assert all(a.status().healthy for a in agents)


def test_an_object_deleted_between_listing_and_deleting_is_skipped(
    store: tuple[str, dict[str, Any]], cluster: MemoryCluster, memory_manager: PluginManager,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deterministically, what the race above hits by chance: the pass lists an object that
    another agent deletes before this pass gets to it."""
    url, options = store
    clock = Clock()
    agent = agent_for(cluster.nodes[0], url, options, memory_manager, clock=clock,
                      retention=Retention(keep=1, hourly=0, daily=0))
    assert agent.run_once() is not None
    fs, _root = fsspec.core.url_to_fs(url, **options)
    real_list = list_stored

    def listed_then_deleted(fs_: Any, root: str) -> list[Any]:
        found = real_list(fs_, root)
        fs.rm_file(found[0].path)  # the other agent's pass, between our listing and our delete
        fs.invalidate_cache()
        return found

    monkeypatch.setattr(prune_module, "list_stored", listed_then_deleted)
    clock.now += 3600
    cluster.nodes[0].set("greeting", "changed")
    assert agent.run_once() is not None
    monkeypatch.undo()
    assert agent.status().healthy and agent.status().last_retention_error is None
    assert [s.index for s in list_snapshots(url, options)] == [cluster.nodes[0].applied]


def _race(agent: Agent, barrier: threading.Barrier, results: list[Any], i: int) -> None:
    barrier.wait(10)
    try:
        results[i] = agent.run_once()
    except Exception as exc:
        results[i] = exc


# --- Object Lock ----------------------------------------------------------------------------------

def test_object_lock_is_set_on_upload_and_refused_deletions_are_reported(
    s3: S3Server, cluster: MemoryCluster, memory_manager: PluginManager, tmp_path: Path,
) -> None:
    s3.create_bucket("locked", object_lock=True)
    url, options = "s3://locked/prefix", s3.options()
    clock = Clock(time.time())
    leader = cluster.nodes[0]
    agent = agent_for(leader, url, options, memory_manager, clock=clock,
                      object_lock=LockOptions(days=1), retention=Retention(keep=1, hourly=0,
                                                                           daily=0))
    urls: list[str] = []
    for i in range(3):
        clock.now += 3600
        leader.set("k", str(i))
        stored = agent.run_once()
        assert stored is not None
        urls.append(stored)
    fs, _root = fsspec.core.url_to_fs(url, **options)
    head = fs.call_s3("head_object", Bucket="locked", Key=urls[-1].split("/", 3)[3])
    assert head["ObjectLockMode"] == "GOVERNANCE"
    status = agent.status()
    assert status.healthy and status.consecutive_failures == 0
    assert status.retention_refused >= 1
    assert "refused" in (status.last_retention_error or "")
    # the lock kept every snapshot; `latest` is still the newest state
    assert [s.url for s in list_snapshots(url, options)] == urls
    assert latest_index(url, options, tmp_path) == leader.applied
    value = agent.metrics.registry.get_sample_value("raft_snapshot_agent_retention_refused_total")
    assert value is not None and value >= 2


def test_a_locked_local_file_is_reported_not_fatal(
    cluster: MemoryCluster, memory_manager: PluginManager, tmp_path: Path,
) -> None:
    """The local analog of a retention lock: an immutable file (``chattr +i``), which even root
    may not delete."""
    store = tmp_path / "store"
    clock = Clock()
    leader = cluster.nodes[0]
    agent = Agent(leader, str(store), manager=memory_manager, clock=clock,
                  retention=Retention(keep=1, hourly=0, daily=0))
    first = agent.run_once()
    assert first is not None
    locked = store / first.rsplit("/", 1)[1]
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True, check=False).returncode:
        pytest.skip("chattr +i is not available here (needs root and ext4/xfs)")
    try:
        urls = [first]
        for i in range(2):
            clock.now += 3600
            leader.set("k", str(i))
            stored = agent.run_once()
            assert stored is not None
            urls.append(stored)
        status = agent.status()
        assert status.healthy and status.retention_refused == 1
        assert "refused" in (status.last_retention_error or "") and locked.name in (
            status.last_retention_error or "")
        assert [s.url for s in list_snapshots(str(store))] == [urls[0], urls[2]]
        assert latest_index(str(store), {}, tmp_path) == leader.applied
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=False)


def test_object_lock_needs_s3(cluster: MemoryCluster, memory_manager: PluginManager,
                              tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="object_lock_days needs an s3:// URL"):
        Agent(cluster.nodes[0], str(tmp_path), object_lock=LockOptions(days=1),
              manager=memory_manager)
