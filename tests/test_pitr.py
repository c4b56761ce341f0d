"""Point-in-time recovery with the reference backend: the agent ships the committed changes as
segments beside its snapshots, and a restore to any index or time the prefix reaches gives exactly
the state the cluster had there.

Real parts throughout: a folder and moto's S3 server through fsspec, the agent's own threads, a
recorder of the state at every index taken while the writes run. Faults are real too: the
backend's log really compacted (a gap), the agent's process really killed; the storage outages
(moto's server killed, or stopped) are in ``test_timeouts.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from pitr_recorder import Recorder, built_state, ship, shipped_through, wait_for

from raft_snapshot_plugin.agent import (
    Agent,
    Retention,
    list_segments,
    recovery_window,
    restore_point,
)
from raft_snapshot_plugin.errors import UnreachablePointError
from raft_snapshot_plugin.manager import PluginManager
from raft_snapshot_plugin.memory import (
    MemoryCluster,
    apply_command,
)
from raft_snapshot_plugin.testing import S3Server

_buckets = itertools.count()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(url, storage_options)``: a local folder, or a fresh bucket on moto's S3 server."""
    if request.param == "local":
        yield f"file://{tmp_path / 'store'}", {}
        return
    s3: S3Server = request.getfixturevalue("s3")
    bucket = f"pitr-{next(_buckets)}"
    s3.create_bucket(bucket)
    yield f"s3://{bucket}/prefix", s3.options()


def test_restores_to_random_indexes_and_times_give_the_recorded_state(
    store: tuple[str, dict[str, Any]], memory_manager: PluginManager, tmp_path: Path,
) -> None:
    url, options = store
    cluster = MemoryCluster(3, name="pitr")
    recorder = Recorder(cluster)
    agent = Agent(cluster.nodes[0], url, storage_options=options, manager=memory_manager,
                  interval=1.0, segment_interval=0.3, retention=Retention(keep=3, hourly=0,
                                                                          daily=0))
    agent.start()
    try:
        recorder.run(per_second=150, seconds=3.0)
        recorder.join()
        last = cluster.nodes[0].applied
        wait_for(lambda: shipped_through(agent, last), 30, f"segments through {last}")
    finally:
        agent.stop(30)
    window = recovery_window(url, options)
    assert window.gaps == ()
    assert len(window.reachable) == 1 and window.reachable[0][1] == last
    first = window.reachable[0][0]
    assert first == min(s.index for s in window.snapshots)
    # retention kept only what the kept snapshots need: nothing wholly before the oldest one
    assert all(seg.last > first for seg, _ in window.segments)
    rng = random.Random(11)
    for target in rng.sample(range(first, last + 1), 20):
        index, state = built_state(url, memory_manager, options, to_index=target)
        assert state == recorder.states[target], f"index {target}"
    times = [e.time for e in cluster.log if e.index > first]
    for when in rng.sample(times, 5):
        expected_index, expected = recorder.state_at_time(when)
        index, state = built_state(url, memory_manager, options, to_time=when)
        assert (index, state) == (expected_index, expected)
    # and into a live cluster, like any archive
    target = rng.randrange(first + 1, last)
    fresh = MemoryCluster(3, name="fresh")
    point = restore_point(fresh.nodes[0], url, to_index=target, storage_options=options,
                          manager=memory_manager)
    assert point.target == target and point.replayed == target - point.base.index
    assert all(n.data == recorder.states[target] for n in fresh.nodes)


def test_targets_outside_the_window_are_refused_naming_the_nearest_points(
    tmp_path: Path, memory_manager: PluginManager,
) -> None:
    url = str(tmp_path / "store")
    cluster = MemoryCluster(3, name="edges")
    recorder = Recorder(cluster)
    recorder.write(30)
    agent = ship(recorder, url, memory_manager, [40])
    first, last = agent.list()[0].index, cluster.nodes[0].applied
    with pytest.raises(UnreachablePointError, match="past the last change shipped") as past:
        built_state(url, memory_manager, {}, to_index=last + 5)
    assert (past.value.before, past.value.after, past.value.target) == (last, None, last + 5)
    with pytest.raises(UnreachablePointError, match="before the oldest stored snapshot") as early:
        built_state(url, memory_manager, {}, to_index=first - 3)
    assert (early.value.before, early.value.after) == (None, first)
    with pytest.raises(UnreachablePointError, match="past the last change shipped"):
        built_state(url, memory_manager, {}, to_time=time.time() + 60)
    assert built_state(url, memory_manager, {}, to_index=first)[1] == recorder.states[first]
    assert built_state(url, memory_manager, {}, to_index=last)[1] == recorder.states[last]


def test_a_compacted_log_is_a_recorded_gap_and_targets_inside_it_are_refused(
    tmp_path: Path, memory_manager: PluginManager,
) -> None:
    """The agent is down while the backend compacts its log past what was shipped: the next
    agent records the gap (never skips it), and a restore into it is refused, naming the points
    either side that can be restored."""
    url = str(tmp_path / "store")
    cluster = MemoryCluster(3, name="gap")
    recorder = Recorder(cluster)
    recorder.write(20)

    ship(recorder, url, memory_manager, [25])
    shipped = cluster.nodes[0].applied
    recorder.write(30)                    # while no agent runs...
    cluster.compact(shipped + 20)         # ...the log forgets most of it
    second_snapshot_before = cluster.nodes[0].applied
    ship(recorder, url, memory_manager, [25])
    window = recovery_window(url)
    assert [(g.after_index, g.resumes_at, g.reason) for g in window.gaps] == [
        (shipped, shipped + 21, "compacted")]
    assert window.reachable == ((window.snapshots[0].index, shipped),
                                (second_snapshot_before, cluster.nodes[0].applied))
    with pytest.raises(UnreachablePointError, match=r"inside a gap .*compacted") as inside:
        built_state(url, memory_manager, {}, to_index=shipped + 5)
    assert (inside.value.before, inside.value.after) == (shipped, second_snapshot_before)
    # delivered after the gap, but no snapshot on this side of it reaches them
    with pytest.raises(UnreachablePointError, match="no stored snapshot reaches it"):
        built_state(url, memory_manager, {}, to_index=shipped + 25)
    for target in (shipped, second_snapshot_before, cluster.nodes[0].applied):
        assert built_state(url, memory_manager, {}, to_index=target)[1] == recorder.states[target]


def test_a_failover_and_a_node_restart_during_shipping_lose_and_repeat_nothing(
    tmp_path: Path, memory_manager: PluginManager,
) -> None:
    """An agent beside each of two nodes on one prefix: the leader's ships; leadership moves and
    the old leader stops and starts again while writes go on. The new leader's agent ships from
    where the stored segments end: no gap, and every index restores to its recorded state."""
    url = str(tmp_path / "store")
    cluster = MemoryCluster(3, name="failover")
    recorder = Recorder(cluster)
    first, second = cluster.nodes[0], cluster.nodes[1]
    agents = [Agent(node, url, manager=memory_manager, interval=3600, segment_interval=0.3)
              for node in (first, second)]
    for agent in agents:
        agent.start()
    try:
        wait_for(lambda: agents[0].status().stored >= 1, 30, "the leader's first snapshot")
        recorder.write(100)
        time.sleep(0.5)
        recorder.write(50)  # some of these wait in the old leader's buffer when it steps down
        recorder.elect(second)
        first.stop()
        recorder.write(100)
        first.start()
        recorder.write(50)
        last = cluster.nodes[0].applied
        wait_for(lambda: shipped_through(agents[1], last), 30, f"segments through {last}")
        assert agents[0].status().shipping is not None
        assert "not the leader" in str(agents[0].status().shipping)
    finally:
        for agent in agents:
            agent.stop(30)
    window = recovery_window(url)
    assert window.gaps == () and len(window.reachable) == 1 and window.reachable[0][1] == last
    low = window.reachable[0][0]
    for target in random.Random(9).sample(range(low, last + 1), 20):
        assert built_state(url, memory_manager, {}, to_index=target)[1] == recorder.states[target]


def test_segment_options_are_checked_at_start(tmp_path: Path, memory_manager: PluginManager
                                              ) -> None:
    node = MemoryCluster(1).nodes[0]
    bads: list[tuple[dict[str, Any], str]] = [
        ({"segment_interval": 0}, "segment_interval must be positive"),
        ({"segment_bytes": 0}, "segment_bytes must be a whole number"),
        ({"segment_bytes": 1000, "segment_buffer_bytes": 1999},
         "segment_buffer_bytes must be at least twice segment_bytes")]
    for bad, message in bads:
        with pytest.raises(ValueError, match=message):
            Agent(node, str(tmp_path), manager=memory_manager, **bad)


def test_segment_bytes_cuts_segments_and_status_says_where_they_reach(
    tmp_path: Path, memory_manager: PluginManager,
) -> None:
    url = str(tmp_path / "store")
    cluster = MemoryCluster(3, name="bytes")
    recorder = Recorder(cluster)
    agent = Agent(cluster.nodes[0], url, manager=memory_manager, interval=3600,
                  segment_interval=60, segment_bytes=2000, state_dir=tmp_path / "state")
    agent.start()
    try:
        wait_for(lambda: agent.list(), 30, "the first snapshot")
        recorder.write(200)
        last = cluster.nodes[0].applied
        wait_for(lambda: shipped_through(agent, last - 60), 30, "segments cut by size")
    finally:
        agent.stop(30)  # stopping stores what is buffered
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["segment_index"] == last and status["shipping"] == "following changes"
    segments = list_segments(*fsspec.core.url_to_fs(url))
    assert len(segments) >= 5 and status["segments_stored"] == len(segments)
    assert all(s.size is not None and s.size < 4000 for s in segments)


APP = Path(__file__).resolve().parent / "apps" / "pitr_app.py"


def journal_states(journal: Path) -> tuple[dict[int, dict[str, str]], list[float]]:
    """The state at every index, replayed from a node's journal (its log on disk)."""
    states: dict[int, dict[str, str]] = {}
    data: dict[str, str] = {}
    times = []
    for line in journal.read_text().splitlines():
        index, _term, when, command = json.loads(line)
        data = apply_command(dict(data), command)
        states[index] = data
        times.append(when)
    return states, times


def run_app(journal: Path, url: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.Popen([sys.executable, str(APP), "--journal", str(journal), "--store", url,
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def test_an_agent_killed_mid_segment_and_its_node_restarted_lose_and_repeat_nothing(
    tmp_path: Path, memory_manager: PluginManager,
) -> None:
    """SIGKILL the process of a node and its agent while a segment is being filled (changes
    committed, not shipped yet); start the node again from its log on disk with a new agent: the
    new agent ships from where the stored segments end, so the changes the killed one held are
    shipped once, and every index restores to the state the journal says."""
    journal, url = tmp_path / "node.journal", str(tmp_path / "store")
    with run_app(journal, url, "--seconds", "60", "--segment-interval", "1.5") as first:
        _kill_mid_segment(first)
    fs, root = fsspec.core.url_to_fs(url)
    stored_before = max(s.last for s in list_segments(fs, root))
    killed_at = len(journal.read_text().splitlines())
    assert killed_at > stored_before, "the kill must leave committed changes unshipped"
    with run_app(journal, url, "--seconds", "2", "--segment-interval", "0.5") as second:
        out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    done = json.loads(out.splitlines()[-1])
    assert done["segment_index"] == done["done"]
    segments = list_segments(fs, root)
    assert all(b.first == a.last + 1 for a, b in itertools.pairwise(segments)), segments
    window = recovery_window(url)
    assert window.gaps == () and len(window.reachable) == 1
    low, high = window.reachable[0]
    assert high == done["done"] and low <= stored_before
    states, _ = journal_states(journal)
    rng = random.Random(5)
    targets = rng.sample(range(stored_before + 1, killed_at + 1), 5) + rng.sample(
        range(low, high + 1), 10)
    for target in targets:
        assert built_state(url, memory_manager, {}, to_index=target)[1] == states[target], target


def test_a_segment_uploaded_but_never_checked_and_a_killed_upload_are_resumed_after(
    tmp_path: Path, memory_manager: PluginManager,
) -> None:
    """SIGKILL the node's process after a segment's upload and before its read-back check, with
    a killed upload's ``.tmp-`` object beside it: the next agent (a fresh shipper) takes the
    landed segment as stored and resumes after it, never overlapping it; the partial upload is
    never listed as a segment and retention removes it; every index restores as recorded."""
    journal, url = tmp_path / "node.journal", str(tmp_path / "store")
    with run_app(journal, url, "--seconds", "60", "--segment-interval", "0.3",
                 "--hang-at-upload", "3") as first:
        try:
            assert first.stdout is not None
            uploaded = next(json.loads(line)["uploaded"] for line in first.stdout
                            if '"uploaded"' in line)
            time.sleep(0.5)  # more changes committed, never shipped by this agent
        finally:
            first.kill()
            first.wait(30)
    fs, root = fsspec.core.url_to_fs(url)
    (landed,) = [s for s in list_segments(fs, root) if uploaded.endswith(s.name)]
    assert landed.last == max(s.last for s in list_segments(fs, root))
    landed_bytes = fs.cat_file(landed.path)
    partial = (f"{root}/changes/.tmp-00112233aabbccdd-"
               f"{landed.last + 1:020d}-{landed.last + 40:020d}.seg")
    fs.pipe_file(partial, landed_bytes[: len(landed_bytes) // 2])
    killed_at = len(journal.read_text().splitlines())
    with run_app(journal, url, "--seconds", "2.5", "--segment-interval", "0.3",
                 "--partial-grace", "0") as second:
        out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    done = json.loads(out.splitlines()[-1])
    segments = list_segments(fs, root)
    assert fs.cat_file(landed.path) == landed_bytes  # kept as it landed, not stored again
    assert all(b.first == a.last + 1 for a, b in itertools.pairwise(segments)), segments
    assert not fs.exists(partial), "retention leaves a killed upload's partial object"
    window = recovery_window(url)
    assert window.gaps == () and window.reachable[0][1] == done["done"]
    states, _ = journal_states(journal)
    low = window.reachable[0][0]
    for target in {landed.first, landed.last, landed.last + 1, killed_at, low, done["done"]}:
        assert built_state(url, memory_manager, {}, to_index=target)[1] == states[target], target


def _kill_mid_segment(app: subprocess.Popen[str]) -> None:
    """SIGKILL ``app`` once its segments are well on and 20 changes wait in the next one."""
    try:
        assert app.stdout is not None
        for line in app.stdout:
            seen = json.loads(line)
            shipped = seen["segment_index"]
            if shipped is not None and shipped > 50 and seen["index"] > shipped + 20:
                break
        else:
            pytest.fail(f"the app ended early: {app.stderr.read() if app.stderr else ''}")
        app.send_signal(signal.SIGKILL)
        app.wait(30)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait(30)


def test_an_agent_through_an_endpoint_says_it_ships_no_changes(tmp_path: Path) -> None:
    agent = Agent(None, str(tmp_path / "store"), addr="http://127.0.0.1:9", token="t",
                  interval=3600, retries=1, timeout=1)
    agent.start()
    try:
        shipping = agent.status().shipping
    finally:
        agent.stop(30)
    assert shipping is not None and shipping.startswith("not shipping changes: the agent takes "
                                                        "snapshots through addr")
    assert not (tmp_path / "store" / "changes").exists()


def test_a_segment_that_landed_but_failed_its_check_is_stored_again_not_overlapped(
    tmp_path: Path, memory_manager: PluginManager, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store goes away between an upload and its read-back (what the outage above hits by
    chance): the object is there, the round failed. The retry stores exactly that range again,
    so the next segment starts after it: no overlap, no gap."""
    from raft_snapshot_plugin.agent import shipping
    from raft_snapshot_plugin.agent.objects import check_stored as real_check
    from raft_snapshot_plugin.errors import StorageError

    failed: list[str] = []

    def check_once(fs: Any, remote: str, size: int, sha256: str, url: str) -> None:
        real_check(fs, remote, size, sha256, url)
        if not failed:
            failed.append(remote)
            raise StorageError("could not be read back (the store went away)", url=url)

    monkeypatch.setattr(shipping, "check_stored", check_once)
    url = str(tmp_path / "store")
    cluster = MemoryCluster(3, name="landed")
    recorder = Recorder(cluster)
    agent = Agent(cluster.nodes[0], url, manager=memory_manager, interval=3600,
                  segment_interval=0.2)
    agent.start()
    try:
        wait_for(lambda: agent.status().stored >= 1, 30, "the first snapshot")
        recorder.write(30)
        wait_for(lambda: bool(failed), 30, "the failed check")
        recorder.write(30)
        last = cluster.nodes[0].applied
        wait_for(lambda: shipped_through(agent, last), 30, f"segments through {last}")
    finally:
        agent.stop(30)
    segments = list_segments(*fsspec.core.url_to_fs(url))
    assert failed[0].endswith(segments[0].name)
    assert all(b.first == a.last + 1 for a, b in itertools.pairwise(segments)), [
        (s.first, s.last) for s in segments]
    assert built_state(url, memory_manager, {}, to_index=last)[1] == recorder.states[last]
