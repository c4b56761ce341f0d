"""Live restore: all or nothing, on every node, in log order; over both transports.

Tests that restore into ``other_cluster`` run twice: with the bytes sent directly to every member
(``direct``) and with the bytes in the log (``log``).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import logging
import os
import socket
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import (
    Bank,
    Cluster,
    default_consumers,
    fill,
    running_cluster,
    transfer_args,
    user_state,
)
from pysyncobj.batteries import ReplCounter, ReplDict
from raft_snapshot_pysyncobj import SnapshotSupport, _node, chunks
from raft_snapshot_pysyncobj import restore as restore_module
from raft_snapshot_pysyncobj.appstate import capture_state
from raft_snapshot_pysyncobj.serving import Payload, PayloadServer
from raft_snapshot_pysyncobj.state import dump_state, load_state
from raft_snapshot_pysyncobj.support import Transport, find_support

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin import ArchiveError, BackendError
from raft_snapshot_plugin.archive import read_archive
from raft_snapshot_plugin.errors import IncompatibleArchiveError, SnapshotTimeoutError
from raft_snapshot_plugin.ports import free_ports


@pytest.fixture(params=["direct", "log"])
def transport(request: pytest.FixtureRequest) -> Transport:
    value: Transport = request.param
    return value


@pytest.fixture
def other_cluster(transport: Transport) -> Iterator[Cluster]:
    """The restore target, its nodes configured with ``transport``."""
    with running_cluster(3, consumers=lambda: default_consumers(transport)) as c:
        yield c


def _support(node: Bank) -> SnapshotSupport:
    support = find_support(node)
    assert support is not None
    return support


def _save(cluster: Cluster, path: Path) -> rsp.SnapshotMeta:
    with rsp.take(cluster.leader()) as snap:
        snap.save(path)
        return snap.meta


def test_restore_into_a_fresh_running_cluster(cluster: Cluster, other_cluster: Cluster,
                                              tmp_path: Path, snapshot_tmpdir: Path) -> None:
    fill(cluster, 40, "source")
    expected = cluster.states()[0]
    _save(cluster, tmp_path / "s.snap")
    members_before = sorted(other_cluster.addresses)
    result = rsp.restore(other_cluster.follower(), tmp_path / "s.snap", timeout=60)
    assert result.meta == rsp.verify(tmp_path / "s.snap")
    assert other_cluster.states() == [expected] * 3
    # the answer lists every member at the restore's own index: the state is everywhere
    assert result.index is not None and result.complete
    assert [(m.member, m.index, m.applied) for m in result.members or ()] == [
        (address, result.index, True) for address in members_before]
    # the target keeps its own membership, then takes new writes
    with rsp.take(other_cluster.leader()) as snap:
        assert sorted(s.address for s in snap.meta.servers) == members_before
        assert snap.meta.index >= result.index
    other_cluster.leader().transfer(40, *transfer_args(40), sync=True, timeout=10)
    states = other_cluster.states()
    assert states[0]["history"] == list(range(41)) and all(s == states[0] for s in states)


def test_restore_with_a_follower_down_converges_when_it_returns(
    tmp_path: Path, snapshot_tmpdir: Path, transport: Transport
) -> None:
    """With ``direct`` forced, the direct attempt finds the member gone and uses the log. The
    restore is committed by the two running members, and its answer names the stopped one as not
    applied within the wait (``apply_wait``, 3 s here)."""
    def consumers() -> list[Any]:
        return [ReplCounter(), ReplDict(), SnapshotSupport(transport=transport, apply_wait=3.0)]

    with running_cluster(3, consumers=consumers) as cluster:
        fill(cluster, 25, "before")
        _save(cluster, tmp_path / "old.snap")
        old_state = cluster.states()[0]
        leader = cluster.leader()
        for seq in range(25, 40):
            leader.transfer(seq, *transfer_args(seq), sync=True, timeout=10)
        down = next(i for i, n in enumerate(cluster.nodes) if n is not leader)
        cluster.stop_node(down)
        started = time.monotonic()
        result = rsp.restore(cluster.leader(), tmp_path / "old.snap", timeout=60)
        assert cluster.states() == [old_state] * 2
        assert 3.0 <= (result.waited or 0) <= time.monotonic() - started < 30
        assert result.index is not None and result.complete is False
        rows = {m.member: (m.index, m.applied) for m in result.members or ()}
        assert rows == {address: (None, False) if i == down else (result.index, True)
                        for i, address in enumerate(cluster.addresses)}
        assert [m.member for m in result.lagging] == [cluster.addresses[down]]
        assert f"node {cluster.addresses[down]} had not applied within" in "\n".join(
            result.lines())
        cluster.start(down)
        cluster.converged()
        assert cluster.states() == [old_state] * 3
        cluster.leader().transfer(25, *transfer_args(25), sync=True, timeout=10)
        assert cluster.states()[0]["history"] == list(range(26))


def test_bad_archives_change_nothing_anywhere(cluster: Cluster, other_cluster: Cluster,
                                             tmp_path: Path, snapshot_tmpdir: Path) -> None:
    fill(cluster, 10, "source")
    fill(other_cluster, 5, "target")
    before = other_cluster.states()
    meta = _save(cluster, tmp_path / "s.snap")
    raw = (tmp_path / "s.snap").read_bytes()
    (tmp_path / "damaged.snap").write_bytes(raw[:100] + bytes([raw[100] ^ 1]) + raw[101:])
    with pytest.raises(ArchiveError):
        rsp.restore(other_cluster.node(0), tmp_path / "damaged.snap")
    with rsp.Snapshot.create(rsp.SnapshotMeta(index=3, term=1, backend="memory"), b"{}") as snap:
        snap.save(tmp_path / "other.snap")
    with pytest.raises(ArchiveError, match="memory"):
        rsp.restore(other_cluster.node(1), tmp_path / "other.snap")
    newer = rsp.SnapshotMeta(index=meta.index, term=1, backend="pysyncobj",
                             state_format="pysyncobj-pickle5/99")
    with rsp.Snapshot.create(newer, b"\x80\x05N.") as snap:
        snap.save(tmp_path / "newer.snap")
    with pytest.raises(IncompatibleArchiveError, match="newer"):
        rsp.restore(other_cluster.node(2), tmp_path / "newer.snap")
    assert other_cluster.states() == before
    assert not any(_support(n).restore_in_progress for n in other_cluster.running)


def test_consumers_must_match(tmp_path: Path, snapshot_tmpdir: Path) -> None:
    with running_cluster(3, consumers=lambda: [ReplCounter(), SnapshotSupport()]) as source, \
            running_cluster(3, consumers=lambda: [SnapshotSupport()]) as target:
        fill(source, 3, "x")
        _save(source, tmp_path / "s.snap")
        before = target.states()
        with pytest.raises(BackendError, match="consumers"):
            rsp.restore(target.leader(), tmp_path / "s.snap")
        assert target.states() == before


def test_without_snapshot_support_the_error_says_what_to_add(tmp_path: Path,
                                                             snapshot_tmpdir: Path) -> None:
    with running_cluster(3, consumers=lambda: []) as plain:
        fill(plain, 3, "plain")
        _save(plain, tmp_path / "s.snap")
        with pytest.raises(BackendError, match=r"add raft_snapshot_pysyncobj\.SnapshotSupport\(\)"):
            rsp.restore(plain.leader(), tmp_path / "s.snap")


def _dead_address() -> tuple[str, int]:
    """A loopback port nobody listens on any more (as after the restoring process died)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return "127.0.0.1", sock.getsockname()[1]


def _begin_and_abandon(cluster: Cluster, lease: float, transport: Transport) -> str:
    """What a restoring process that dies half-way leaves behind: begin and some chunks, or
    (direct) begin naming a server that is gone."""
    support = find_support(cluster.leader())
    assert support is not None
    payload = base64.b64encode(zlib.compress(b"x" * 100_000)).decode()
    rid = "abandoned"
    source = (*_dead_address(), "token") if transport == "direct" else None
    assert support._rsp_begin(rid, 100_000, hashlib.sha256(b"x" * 100_000).hexdigest(),
                              time.time(), lease, False, source, sync=True, timeout=10) == "ok"
    if source is None:
        for seq in range(2):
            support._rsp_chunk(rid, seq, payload[seq * 100:(seq + 1) * 100], time.time(),
                               sync=True, timeout=10)
    return rid


def test_abandoned_restore_is_invisible_blocks_then_expires(
    cluster: Cluster, other_cluster: Cluster, tmp_path: Path, snapshot_tmpdir: Path,
    transport: Transport,
) -> None:
    fill(cluster, 12, "source")
    expected = cluster.states()[0]
    _save(cluster, tmp_path / "s.snap")
    fill(other_cluster, 4, "target")
    before = other_cluster.states()
    _begin_and_abandon(other_cluster, lease=2.0, transport=transport)
    assert other_cluster.states() == before  # nothing visible
    with rsp.take(other_cluster.leader()) as snap:  # and nothing captured
        assert snap.meta.size < 5000
    with pytest.raises(BackendError, match="another restore"):
        rsp.restore(other_cluster.leader(), tmp_path / "s.snap", timeout=30)
    assert other_cluster.states() == before
    # the lease runs out: the leader expires the restore, every node drops what it held
    _wait_for(lambda: not any(_support(n).restore_in_progress or _support(n)._stages
                              for n in other_cluster.running), timeout=10)
    assert other_cluster.states() == before
    rsp.restore(other_cluster.leader(), tmp_path / "s.snap", timeout=60)
    assert other_cluster.states() == [expected] * 3
    assert not any(_support(n).restore_in_progress for n in other_cluster.running)


def test_expired_restore_is_replaced_before_it_is_expired(
    cluster: Cluster, other_cluster: Cluster, tmp_path: Path, snapshot_tmpdir: Path,
    transport: Transport, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A begin after the lease ran out wins even when the leader has not expired it yet."""
    fill(cluster, 6, "source")
    expected = cluster.states()[0]
    _save(cluster, tmp_path / "s.snap")
    monkeypatch.setattr(SnapshotSupport, "_watch_lease", lambda self, rid: None)  # no expire
    _begin_and_abandon(other_cluster, lease=1.0, transport=transport)
    time.sleep(1.2)
    assert all(_support(n).restore_in_progress for n in other_cluster.running)
    rsp.restore(other_cluster.leader(), tmp_path / "s.snap", timeout=60)
    assert other_cluster.states() == [expected] * 3


def test_abandoned_restore_received_in_dumps_still_expires(
    other_cluster: Cluster, transport: Transport, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every node restarted, one at a time, after the log was compacted past ``begin``: none
    applied it, each had the restore from a PySyncObj dump. The leader still expires it."""
    fill(other_cluster, 4, "target")
    before = other_cluster.states()
    monkeypatch.setattr(SnapshotSupport, "_watch_lease", lambda self, rid: None)
    _begin_and_abandon(other_cluster, lease=1.0, transport=transport)
    other_cluster.converged()  # every node applied begin without a watcher
    monkeypatch.undo()  # only the nodes that load it from a dump may watch it
    begun = other_cluster.leader().raftLastApplied
    for i in range(len(other_cluster.nodes)):
        other_cluster.converged()
        for node in other_cluster.running:
            node.forceLogCompaction()  # keeps the last entry applied and the one before
        _wait_for(lambda: all(_node.log_start(n) >= begun - 1 for n in other_cluster.running),
                  timeout=10)
        other_cluster.stop_node(i)
        other_cluster.start(i)
        other_cluster.converged()
    _wait_for(lambda: not any(_support(n).restore_in_progress for n in other_cluster.running),
              timeout=10)
    assert other_cluster.states() == before


def test_a_live_restore_renews_its_lease(cluster: Cluster, tmp_path: Path, snapshot_tmpdir: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Members slower than the lease: the restoring process renews it, nobody expires it."""
    fill(cluster, 6, "source")
    expected = cluster.states()[0]
    _save(cluster, tmp_path / "s.snap")
    monkeypatch.setattr(restore_module, "LEASE_SECONDS", 1.0)
    with running_cluster(3, consumers=lambda: default_consumers("direct")) as target:
        _slow_member(monkeypatch, target.follower(), 3.5)  # more than three leases
        rsp.restore(target.leader(), tmp_path / "s.snap", timeout=60)
        assert target.states() == [expected] * 3


def test_lost_chunk_results_resume_from_what_the_cluster_holds(
    cluster: Cluster, tmp_path: Path, snapshot_tmpdir: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PySyncObj before 0.3.17 can lose a command's result (its callback is never called) across a
    leader change. A restore without a timeout once waited for a lost window's results for good,
    long after its lease had run out. Here the callbacks of chunks 3 to 40 are dropped (the
    chunks themselves are replicated): the round falls silent, the cluster is asked how many
    chunks it holds, sending resumes from there, and the restore completes."""
    fill(cluster, 5, "source")
    _save(cluster, tmp_path / "small.snap")
    _with_big_attribute(tmp_path / "small.snap", tmp_path / "s.snap", 3_000_000)
    monkeypatch.setattr(chunks, "SILENCE_SECONDS", 1.0)
    chunk = SnapshotSupport.chunk
    dropped: list[int] = []

    def losing_chunk(self: SnapshotSupport, rid: str, seq: int, *args: Any,
                     **replicated_call: Any) -> Any:
        if 3 <= seq <= 40 and seq not in dropped:
            dropped.append(seq)
            replicated_call["callback"] = lambda result, error: None
        return chunk(self, rid, seq, *args, **replicated_call)

    monkeypatch.setattr(SnapshotSupport, "chunk", losing_chunk)
    with running_cluster(3, consumers=lambda: default_consumers("log")) as target:
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger=chunks.__name__):
            rsp.restore(target.leader(), tmp_path / "s.snap")
        took = time.monotonic() - started
        states = target.states()
    assert dropped == list(range(3, 41))
    assert "no result for" in caplog.text and "resuming at chunk" in caplog.text
    assert all(len(s["extra"]["big"]) == 3_000_000 for s in states)
    assert took < 30, took  # the silence bound (1 s here) and a resume, not a wait for good


def _slow_member(monkeypatch: pytest.MonkeyPatch, node: Bank, seconds: float) -> None:
    """``node`` takes ``seconds`` longer to decode a restored state. Patched on the class: an
    attribute of the consumer itself would be part of its state, which PySyncObj pickles."""
    slow = _support(node)
    decode = SnapshotSupport.decode

    def slow_decode(self: SnapshotSupport, *args: Any) -> Any:
        if self is slow:
            time.sleep(seconds)
        return decode(self, *args)

    monkeypatch.setattr(SnapshotSupport, "decode", slow_decode)


def _wait_for(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_timeout_leaves_the_old_state(cluster: Cluster, other_cluster: Cluster, tmp_path: Path,
                                      snapshot_tmpdir: Path, monkeypatch: pytest.MonkeyPatch,
                                      transport: Transport) -> None:
    fill(cluster, 5, "source")
    _save(cluster, tmp_path / "small.snap")
    _with_big_attribute(tmp_path / "small.snap", tmp_path / "s.snap", 3_000_000)
    before = other_cluster.states()
    if transport == "log":
        monkeypatch.setattr(chunks, "WINDOW", 1)  # slow enough to run out of time
    else:  # one member takes 2 s to decode its copy: the others hold theirs, nobody applies
        _slow_member(monkeypatch, other_cluster.follower(), 2.0)
    with pytest.raises(SnapshotTimeoutError):
        rsp.restore(other_cluster.leader(), tmp_path / "s.snap", timeout=1.0)
    time.sleep(2.5)  # the slow member has finished decoding: it still applies nothing
    assert other_cluster.states() == before
    assert not any(_support(n).restore_in_progress for n in other_cluster.running)


def _with_big_attribute(source: Path, target: Path, size: int) -> None:
    """The same archive with an incompressible attribute added (as a big application would)."""
    state = io.BytesIO()
    meta = read_archive(source, state)
    state.seek(0)
    attributes, consumers = load_state(state)
    attributes["big"] = os.urandom(size)
    out = io.BytesIO()
    dump_state(attributes, consumers, out)
    with rsp.Snapshot.create(dataclasses.replace(meta, id="", peers=b""), out.getvalue()) as snap:
        snap.save(target)


def test_chunks_stay_under_the_batch_size(cluster: Cluster) -> None:
    from pysyncobj import pickle as pso_pickle

    node = cluster.leader()
    step = chunks.chunk_chars(node)
    command = 1 + len(pso_pickle.dumps((12, ("f" * 32, 10**6, "A" * step, time.time()))))
    assert command < node.conf.appendEntriesBatchSizeBytes
    assert step > node.conf.appendEntriesBatchSizeBytes // 2


def test_restore_then_user_state_helper(cluster: Cluster) -> None:
    assert user_state(cluster.leader())["accounts"]["acct0"] == 100


def test_large_incompressible_state_restores_everywhere(
    cluster: Cluster, other_cluster: Cluster, tmp_path: Path, snapshot_tmpdir: Path
) -> None:
    fill(cluster, 5, "source")
    _save(cluster, tmp_path / "small.snap")
    _with_big_attribute(tmp_path / "small.snap", tmp_path / "big.snap", 4_000_000)
    started = time.monotonic()
    rsp.restore(other_cluster.node(2), tmp_path / "big.snap", timeout=120)
    elapsed = time.monotonic() - started
    states = other_cluster.states()
    assert all(len(s["extra"]["big"]) == 4_000_000 for s in states)
    assert all(s == states[0] for s in states)
    print(f"4 MB incompressible restore: {elapsed:.2f} s")


def _record_servers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ports the direct restores started from now on serve from."""
    ports: list[int] = []

    class Recording(PayloadServer):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            ports.append(self.address[1])

    monkeypatch.setattr(restore_module, "PayloadServer", Recording)
    return ports


@pytest.mark.parametrize("busy", [0, 1, 2], ids=["all-free", "first-taken", "all-taken"])
def test_direct_ports_where_the_state_is_served(
    cluster: Cluster, tmp_path: Path, snapshot_tmpdir: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, busy: int,
) -> None:
    """SnapshotSupport(direct_ports=...): the first free one serves; none free, the log does."""
    fill(cluster, 6, "source")
    expected = cluster.states()[0]
    _save(cluster, tmp_path / "s.snap")
    allowed = free_ports(2)
    served = _record_servers(monkeypatch)
    with contextlib.ExitStack() as held:
        for port in allowed[:busy]:
            held.enter_context(socket.create_server(("127.0.0.1", port)))
        target = held.enter_context(running_cluster(3, consumers=lambda: [
            ReplCounter(), ReplDict(), SnapshotSupport(transport="direct", direct_ports=allowed),
        ]))
        with caplog.at_level(logging.WARNING, logger=restore_module.__name__):
            rsp.restore(target.leader(), tmp_path / "s.snap", timeout=60)
        assert target.states() == [expected] * 3
    if busy < len(allowed):
        assert served == [allowed[busy]]
        assert "through the log" not in caplog.text
    else:
        assert served == []
        assert "no free port" in caplog.text and "through the log" in caplog.text


@pytest.mark.parametrize("transport", ["direct"], indirect=True)
def test_the_restoring_node_decodes_its_own_copy_from_its_file(
    cluster: Cluster, other_cluster: Cluster, tmp_path: Path, snapshot_tmpdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the other members fetch the state over TCP; the restoring node's verdict and outcome
    come from its own copy, decoded from the file."""
    fill(cluster, 8, "source")
    expected = cluster.states()[0]
    _save(cluster, tmp_path / "s.snap")
    local: list[tuple[str, str]] = []
    fetched: list[str] = []

    class Watching(PayloadServer):
        def record_local(self, member: str, message: str) -> None:
            local.append((member, message))
            super().record_local(member, message)

        def _record(self, verdicts: dict[str, str], member: str, verdict: str) -> None:
            if (member, verdict) not in local:
                fetched.append(member)
            super()._record(verdicts, member, verdict)

    monkeypatch.setattr(restore_module, "PayloadServer", Watching)
    restoring = other_cluster.node(1)
    me = str(restoring.selfNode.id)
    rsp.restore(restoring, tmp_path / "s.snap", timeout=60)
    assert other_cluster.states() == [expected] * 3
    _wait_for(lambda: (me, "applied") in local, timeout=10)
    assert local == [(me, "ok"), (me, "applied")]
    assert sorted(fetched) == sorted(str(n.selfNode.id) for n in other_cluster.running
                                     if n is not restoring)


@pytest.mark.parametrize("ports", [[], [0], [65536], [True], ["7400"]])
def test_direct_ports_must_be_ports(ports: list[Any]) -> None:
    with pytest.raises(ValueError, match="direct_ports must be TCP ports"):
        SnapshotSupport(direct_ports=ports)


@pytest.mark.parametrize("transport", ["direct", "log"], indirect=True)
def test_direct_transfer_keeps_the_bytes_out_of_the_log(
    cluster: Cluster, other_cluster: Cluster, tmp_path: Path, snapshot_tmpdir: Path,
    transport: Transport,
) -> None:
    fill(cluster, 5, "source")
    _save(cluster, tmp_path / "small.snap")
    _with_big_attribute(tmp_path / "small.snap", tmp_path / "big.snap", 2_000_000)
    leader = other_cluster.leader()
    entries_before = leader.raftCommitIndex
    rsp.restore(other_cluster.node(1), tmp_path / "big.snap", timeout=60)
    states = other_cluster.states()
    assert all(len(s["extra"]["big"]) == 2_000_000 for s in states)
    entries = other_cluster.leader().raftCommitIndex - entries_before
    sent = 2_000_000 * 4 // 3 // chunks.chunk_chars(leader)
    if transport == "direct":
        assert entries <= 4  # begin, commit (and a no-op should the leader change)
    else:
        assert entries >= sent + 2


@pytest.mark.parametrize("transport", ["direct"], indirect=True)
def test_direct_transfer_damaged_in_transit_falls_back_to_the_log(
    cluster: Cluster, other_cluster: Cluster, tmp_path: Path, snapshot_tmpdir: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    fill(cluster, 20, "source")
    expected = cluster.states()[0]
    _save(cluster, tmp_path / "s.snap")

    class Damaging(PayloadServer):
        def __init__(self, host: str, payload: Payload, *args: object) -> None:
            raw = payload.read()
            payload.close()
            damaged = raw[:-8] + bytes(b ^ 0xFF for b in raw[-8:])
            super().__init__(host, damaged, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(restore_module, "PayloadServer", Damaging)
    with caplog.at_level(logging.WARNING, logger=restore_module.__name__):
        rsp.restore(other_cluster.leader(), tmp_path / "s.snap", timeout=60)
    assert "through the log" in caplog.text
    assert other_cluster.states() == [expected] * 3


@pytest.mark.parametrize("transport", ["direct"], indirect=True)
def test_node_restarted_after_a_direct_restore_catches_up(
    cluster: Cluster, other_cluster: Cluster, tmp_path: Path, snapshot_tmpdir: Path,
) -> None:
    """The log holds no bytes of a direct restore: a node that restarts empty right after one
    gets the state from the payload server or, once the log is compacted past the commit, from
    the leader's PySyncObj dump."""
    fill(cluster, 30, "source")
    expected = cluster.states()[0]
    _save(cluster, tmp_path / "s.snap")
    rsp.restore(other_cluster.leader(), tmp_path / "s.snap", timeout=60)
    restarted = next(i for i, n in enumerate(other_cluster.nodes) if n is not other_cluster.leader())
    other_cluster.stop_node(restarted)
    other_cluster.start(restarted)
    assert other_cluster.states() == [expected] * 3
    leader = other_cluster.leader()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _node.log_start(leader) < leader.raftLastApplied - 10:
        time.sleep(0.05)
    assert _node.log_start(leader) >= leader.raftLastApplied - 10  # compacted past the commit
    other_cluster.stop_node(restarted)
    other_cluster.start(restarted)  # this time it can only be the dump
    other_cluster.leader().transfer(30, *transfer_args(30), sync=True, timeout=10)
    states = other_cluster.states()
    assert states[0]["history"] == list(range(31)) and all(s == states[0] for s in states)


@pytest.mark.parametrize("transport", ["direct"], indirect=True)
def test_a_node_without_its_copy_stops_at_the_commit_rather_than_diverge(
    other_cluster: Cluster, caplog: pytest.LogCaptureFixture,
) -> None:
    """A commit applied where the payload cannot be fetched (here: on every node) is not skipped:
    the node stays before it, and applies it once the payload can be had."""
    import importlib.metadata

    if tuple(int(p) for p in importlib.metadata.version("pysyncobj").split(".")[:3]) < (0, 3, 14):
        pytest.skip("PySyncObj < 0.3.14 ends the tick thread on an exception while applying")
    fill(other_cluster, 3, "target")
    before = other_cluster.states()
    leader = other_cluster.leader()
    attributes, consumers = _node.run_on_tick(leader, lambda: capture_state(leader), 10)
    attributes.update(accounts={}, note="late")
    state = io.BytesIO()
    dump_state(attributes, consumers, state)
    raw = state.getvalue()
    host, port = _dead_address()
    support = _support(other_cluster.leader())
    rid = "stuck"
    assert support._rsp_begin(rid, len(raw), hashlib.sha256(raw).hexdigest(), time.time(), 30.0,
                              False, (host, port, "tok"), sync=True, timeout=10) == "ok"
    with caplog.at_level(logging.CRITICAL):
        support._rsp_commit(rid, callback=lambda result, error: None)
        time.sleep(1.0)
    stuck = [n.raftLastApplied for n in other_cluster.running]
    holder = max(other_cluster.running, key=lambda n: n.raftCommitIndex)  # knows it committed
    assert holder.raftLastApplied < holder.raftCommitIndex  # and stays before the entry
    assert [user_state(n) for n in other_cluster.running] == before
    assert "stops here rather than diverge" in caplog.text
    server = PayloadServer(host, raw, "tok", rid, set(), [port])  # the payload comes back
    try:
        deadline = time.monotonic() + 20
        while any(user_state(n)["extra"].get("note") != "late" for n in other_cluster.running):
            assert time.monotonic() < deadline, f"still stuck at {stuck}"
            time.sleep(0.05)
    finally:
        server.close()
    assert all(user_state(n)["accounts"] == {} for n in other_cluster.running)


def test_consul_archive_put_to_a_pysyncobj_node_is_a_refusal(
    cluster: Cluster, tmp_path: Path, snapshot_tmpdir: Path
) -> None:
    """A whole, valid Consul archive whose state.bin is not a PySyncObj state: the endpoint
    answers 400 (the bytes are refused; nothing is wrong with the node) and applies nothing."""
    from raft_snapshot_plugin.client import Client
    from raft_snapshot_plugin.endpoint import serve
    from raft_snapshot_plugin.errors import RemoteError

    consul = Path(__file__).resolve().parents[3] / "tests" / "data" / "consul" / "valid_small.snap"
    fill(cluster, 3, "source")
    before = cluster.states()
    with serve(cluster.leader(), token="t" * 16, timeout=30) as server, \
            pytest.raises(RemoteError) as info:
        Client(server.url, "t" * 16).restore(consul)
    assert info.value.status == 400, info.value
    assert "not a PySyncObj state" in str(info.value) and "nothing was applied" in str(info.value)
    assert cluster.states() == before
