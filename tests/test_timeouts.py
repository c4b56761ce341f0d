"""Storage outages against a real moto S3 server process: killed (connections refused) and
restarted on its port, or SIGSTOPped (connections accepted, never answered) and continued.

While the store is out the cluster keeps committing, the agent's snapshot rounds fail cleanly and
its shipper keeps the changes; once the store is back they are all shipped, each exactly once,
and a restore to any index around the outage gives the state recorded there. Every storage call
is bounded (:mod:`raft_snapshot_plugin.agent.timeouts`): without that, a SIGSTOPped server hung
the agent's uploads forever. The CI variant's outage lasts a few seconds; the ``slow`` one 30 s.
"""

from __future__ import annotations

import io
import itertools
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pitr_recorder import Recorder, built_state, shipped_through, wait_for

from raft_snapshot_plugin.agent import (
    Agent,
    AgentStatus,
    Retention,
    list_segments,
    recovery_window,
)
from raft_snapshot_plugin.agent.metrics import PREFIX
from raft_snapshot_plugin.agent.segments import read_segment
from raft_snapshot_plugin.agent.storage import list_stored, open_store
from raft_snapshot_plugin.archive import read_archive
from raft_snapshot_plugin.errors import StorageError
from raft_snapshot_plugin.manager import PluginManager
from raft_snapshot_plugin.memory import MemoryCluster
from raft_snapshot_plugin.testing import S3Server

T = TypeVar("T")

#: how long the store is out: a few seconds in CI, 30 s under ``tox -e slow``
OUTAGES = [pytest.param(3.0, id="short"),
           pytest.param(30.0, id="30s", marks=pytest.mark.slow)]
#: the storage timeout the tests give the agent: a dead store fails a call within ~3 s
TIMEOUT = 0.5


@pytest.fixture
def server() -> Iterator[S3Server]:
    """A moto server of this test's own (it is killed or stopped), keeping its objects across a
    restart."""
    s3 = S3Server(persist=True)
    try:
        yield s3
    finally:
        s3.stop()


def bare_options(s3: S3Server) -> dict[str, Any]:
    """The server's s3fs options without the tests' usual botocore timeouts: the agent's own
    bounds (``storage_timeout``) are what is tested."""
    return s3.options(config_kwargs={})


def failing(agent: Agent) -> float | None:
    """The agent's ``segment_failing`` gauge."""
    return agent.metrics.registry.get_sample_value(f"{PREFIX}segment_failing")  # type: ignore[no-any-return]


def outage(s3: S3Server, kind: str, seconds: float, failed: Callable[[], bool],
           observe: Callable[[], T]) -> T:
    """Take the store out for ``seconds`` (at least until ``failed()``); what ``observe()``
    says just before the store is back."""
    begun = time.monotonic()
    if kind == "killed":
        s3.kill()
    else:
        s3.pause()
    try:
        wait_for(failed, 60, "a failure during the outage")
        time.sleep(max(0.0, begun + seconds - time.monotonic()))
        return observe()
    finally:
        if kind == "killed":
            s3.start()
        else:
            s3.resume()


@pytest.mark.parametrize("seconds", OUTAGES)
@pytest.mark.parametrize("kind", ["killed", "stopped"])
def test_a_storage_outage_loses_and_repeats_nothing(
    kind: str, seconds: float, server: S3Server, memory_manager: PluginManager,
    private_tmpdir: Path,
) -> None:
    server.create_bucket("outage")
    url, options = "s3://outage/prefix", bare_options(server)
    cluster = MemoryCluster(3, name=f"outage-{kind}")
    recorder = Recorder(cluster)
    agent = Agent(cluster.nodes[0], url, storage_options=options, manager=memory_manager,
                  interval=3600, segment_interval=0.3, retries=1, storage_timeout=TIMEOUT,
                  retention=Retention(keep=2, hourly=0, daily=0))
    agent.start()
    try:
        wait_for(lambda: agent.status().stored >= 1, 30, "the first snapshot")
        wait_for(lambda: agent.status().shipping == "following changes", 30, "the shipper")
        recorder.run(per_second=100, seconds=seconds + 60)
        time.sleep(1.0)
        first_out = cluster.nodes[0].applied + 1
        during, failing_during, last_out = outage(
            server, kind, seconds, lambda: agent.status().last_segment_error is not None,
            lambda: (_a_round_fails(agent, private_tmpdir), failing(agent),
                     cluster.nodes[0].applied))
        assert during.last_segment_error is not None and failing_during == 1
        wait_for(lambda: shipped_through(agent, last_out), 90, "the shipper catching up")
        agent.run_once()  # a snapshot round stores again
        recorder.stop.set()
        recorder.join()
        last = cluster.nodes[0].applied
        wait_for(lambda: shipped_through(agent, last), 60, f"segments through {last}")
        status = agent.status()
        assert status.last_segment_error is None and status.consecutive_failures == 0
        assert failing(agent) == 0
        fs, root = open_store(url, options)
        _each_index_once(fs, root, last)
        _every_snapshot_whole(fs, root)
        window = recovery_window(url, options)
        assert window.gaps == () and len(window.reachable) == 1, window.reachable
        low, high = window.reachable[0]
        assert high == last and low < first_out
        edges = [first_out - 1, first_out, first_out + 1, last_out - 1, last_out, last_out + 1]
        for target in edges + random.Random(17).sample(range(low, last + 1), 8):
            assert built_state(url, memory_manager, options, to_index=target)[1] == \
                recorder.states[target], f"index {target}"
        # another round's retention pass, the store healthy again: still no gap from the oldest
        # kept snapshot on (within ``interval`` nothing is pruned: the agent's protection rule)
        agent.run_once()
        window = recovery_window(url, options)
        assert window.gaps == () and len(window.reachable) == 1, window.reachable
        assert window.reachable[0] == (min(s.index for s in window.snapshots), last)
    finally:
        recorder.stop.set()
        agent.stop(30)
    assert not list(private_tmpdir.iterdir())


def _a_round_fails(agent: Agent, tmpdir: Path) -> AgentStatus:
    """A snapshot round on the dead store fails as a StorageError and leaves no temp file."""
    begun = time.monotonic()
    with pytest.raises(StorageError):
        agent.run_once()
    assert time.monotonic() - begun < 60
    # (the shipper's segment in the making may be there: it is the shipper's, and still in use)
    left = [p for p in tmpdir.iterdir() if not p.name.startswith("raft-snapshot-segment-")]
    assert not left, f"a failed round left {left}"
    return agent.status()


def _each_index_once(fs: Any, root: str, last: int) -> None:
    segments = list_segments(fs, root)
    assert all(b.first == a.last + 1 for a, b in itertools.pairwise(segments)), [
        (s.first, s.last) for s in segments]
    seen = []
    for segment in segments:
        with read_segment(fs, segment) as (found, changes):
            assert found.gaps == ()
            seen += [c.index for c in changes]
    assert seen == list(range(segments[0].first, last + 1))


def _every_snapshot_whole(fs: Any, root: str) -> None:
    """No partial object: every snapshot in the prefix reads back verified, no upload's temp."""
    snapshots = list_stored(fs, root)
    assert snapshots
    for snap in snapshots:
        with fs.open(snap.path, "rb") as source:
            read_archive(source, io.BytesIO())
    assert not [p for p in fs.ls(root) if p.rsplit("/", 1)[-1].startswith(".tmp-")]


@pytest.mark.parametrize("kind", ["killed", "stopped"])
def test_every_storage_call_on_a_dead_store_fails_in_bounded_time(
    kind: str, server: S3Server, tmp_path: Path,
) -> None:
    """Listing, uploading (a small body and one larger than the socket buffers), reading back and
    deleting each fail within the bound on a store that refuses connections or never answers;
    s3fs left alone waits forever on the upload to a stopped server (aiohttp waits for the
    ``100 Continue`` with no timer)."""
    server.create_bucket("dead")
    fs, root = open_store("s3://dead/prefix", bare_options(server), timeout=TIMEOUT)
    small, large = tmp_path / "small", tmp_path / "large"
    small.write_bytes(b"x" * 100)
    large.write_bytes(os.urandom(24 << 20))
    fs.put_file(str(small), f"{root}/kept")
    calls: dict[str, Callable[[], object]] = {"list": lambda: fs.ls(root, refresh=True),
             "upload": lambda: fs.put_file(str(small), f"{root}/new"),
             "large upload": lambda: fs.put_file(str(large), f"{root}/large"),
             "read": lambda: fs.cat_file(f"{root}/kept"),
             "delete": lambda: fs.rm_file(f"{root}/kept")}
    server.kill() if kind == "killed" else server.pause()
    try:
        for name, call in calls.items():
            begun = time.monotonic()
            with pytest.raises(Exception) as failed:
                call()
            took = time.monotonic() - begun
            assert took < 30, f"{name} took {took:.1f} s: {failed.value!r}"
    finally:
        server.start() if kind == "killed" else server.resume()
    # the store is back: the same file system object works again (a stopped server may still
    # carry out the requests its kernel queued, the deletion among them)
    fs.pipe_file(f"{root}/after", b"back")
    assert fs.cat_file(f"{root}/after") == b"back"


def test_a_storage_timeout_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="must be positive"):
        open_store("s3://bucket/prefix", {}, timeout=0)


@pytest.mark.parametrize("compacted", [False, True], ids=["node-keeps-its-log", "log-compacted"])
def test_a_full_buffer_is_read_again_from_the_node_and_is_a_gap_only_if_the_log_lost_it(
    compacted: bool, server: S3Server, memory_manager: PluginManager,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The store is down longer than the buffer lasts (``segment_buffer_bytes``): the shipper
    keeps the segment whose store failed, forgets what follows and stops following. Once the
    store is back it follows again: the node delivers the forgotten changes once more (no gap,
    nothing twice), or, its log compacted meanwhile, the adapter reports them as a gap, which the
    segments record and the window shows."""
    server.create_bucket("full")
    url, options = "s3://full/prefix", bare_options(server)
    cluster = MemoryCluster(3, name=f"full-{compacted}")
    recorder = Recorder(cluster)
    agent = Agent(cluster.nodes[0], url, storage_options=options, manager=memory_manager,
                  interval=3600, segment_interval=0.2, segment_bytes=1000,
                  segment_buffer_bytes=3000, storage_timeout=TIMEOUT)
    agent.start()
    try:
        wait_for(lambda: agent.status().stored >= 1, 30, "the first snapshot")
        wait_for(lambda: agent.status().shipping == "following changes", 30, "the shipper")
        server.kill()
        try:
            recorder.write(20)
            wait_for(lambda: agent.status().last_segment_error is not None, 30, "a failed store")
            recorder.write(300)  # some 25 kB of changes: far more than the buffer holds
            wait_for(lambda: "holding the" in caplog.text, 30, "the shipper holding its buffer")
            if compacted:
                compacted_through = cluster.nodes[0].applied - 10
                cluster.compact(compacted_through)
        finally:
            server.start()
        recorder.write(20)
        last = cluster.nodes[0].applied
        wait_for(lambda: shipped_through(agent, last), 90, f"segments through {last}")
    finally:
        agent.stop(30)
    window = recovery_window(url, options)
    fs, root = open_store(url, options)
    if not compacted:
        assert window.gaps == () and window.reachable[0][1] == last
        _each_index_once(fs, root, last)
        return
    (gap,) = window.gaps
    assert (gap.reason, gap.resumes_at) == ("compacted", compacted_through + 1)
    assert window.reachable[0][1] == gap.after_index  # the snapshot before it reaches the gap
    segments = list_segments(fs, root)
    assert all(b.first == a.last + 1 for a, b in itertools.pairwise(segments))
    low = window.snapshots[0].index
    for target in (low, gap.after_index):
        assert built_state(url, memory_manager, options, to_index=target)[1] == \
            recorder.states[target]
