"""Faults with nodes as separate processes: leaders killed during takes, restorers killed mid-restore,
restarts from journal and dump, lost quorum.

Each node runs ``procs/node.py`` (a Bank node serving the snapshot endpoint); the tests SIGKILL
whole processes, as a crash would. Figures are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import io
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cluster import check_consistent
from procs.control import TOKEN, ProcCluster, archive_attributes, proc_cluster
from raft_snapshot_pysyncobj.state import dump_state, load_state

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin.archive import read_archive
from raft_snapshot_plugin.client import Client
from raft_snapshot_plugin.errors import RemoteError

_PYSYNCOBJ = tuple(int(p) for p in importlib.metadata.version("pysyncobj").split(".")[:3])
#: Restarting the nodes of a cluster from their file journals: before 0.3.17, PySyncObj's journal
#: does not persist the current term (0.3.17's `.meta` does), and in our runs such a restarted
#: cluster did not commit a new entry within 60 s (seen on 0.3.10, 0.3.12 and 0.3.14). These two
#: tests would measure that, not us; they run on 0.3.17 and later.
needs_journal_recovery = pytest.mark.skipif(
    _PYSYNCOBJ < (0, 3, 17),
    reason="before 0.3.17 a PySyncObj cluster restarted from file journals did not commit again "
           "within 60 s (its journal does not keep the current term)",
)

BLOB = 3_000_000  # incompressible bytes in the state: a take or restore lasts long enough to hit


class Writes:
    """Sequential transfers through whichever follower currently carries the writer."""

    def __init__(self) -> None:
        self.next = 0
        self.acked: set[int] = set()
        self.uncertain: set[int] = set()
        self.on: Any = None

    def start(self, proc: Any) -> None:
        assert self.on is None
        proc.ok("writer_start", first=self.next)
        self.on = proc

    def stop(self) -> None:
        if self.on is None:
            return
        answer = self.on.ok("writer_stop")
        self.acked.update(answer["acked"])
        self.uncertain.update(answer["uncertain"])
        self.next = answer["next"]
        self.on = None

    def acked_now(self) -> set[int]:
        answer = self.on.ok("acked") if self.on is not None else {"acked": []}
        return self.acked | set(answer["acked"])


def _save(client: Client, path: Path, **kwargs: Any) -> tuple[rsp.SnapshotMeta | None, str]:
    try:
        return client.save(path, **kwargs), ""
    except (RemoteError, rsp.ArchiveError) as exc:
        return None, str(exc)


def _save_into(results: dict[str, Any], key: str, url: str, path: Path, stale: bool) -> None:
    results[key] = _save(Client(url, TOKEN, timeout=10), path, stale=stale)


def _restore_into(box: dict[str, Any], url: str, path: Path) -> None:
    box["answer"] = _try_restore(Client(url, TOKEN, timeout=60), path)


def _save_from_leader(pc: ProcCluster, path: Path, seconds: float = 20.0) -> rsp.SnapshotMeta:
    deadline = time.monotonic() + seconds
    while True:
        leader = pc.leader()
        meta, error = _save(Client(leader.url, TOKEN, timeout=10), path)
        if meta is not None:
            return meta
        assert time.monotonic() < deadline, error
        time.sleep(0.1)


@pytest.mark.parametrize("rounds", [3, pytest.param(20, marks=pytest.mark.slow)])
def test_leader_killed_during_take(tmp_path: Path, rounds: int) -> None:
    figures = {"rounds": rounds, "kills": 0, "leader_saves_whole": 0, "leader_saves_refused": 0,
               "stale_saves_whole": 0, "stale_saves_refused": 0, "torn": 0, "partial_files": 0}
    rng = random.Random(9)
    writes = Writes()
    with proc_cluster(tmp_path / "c") as pc:
        pc.leader().ok("put", key="blob", random_bytes=BLOB)
        for r in range(rounds):
            leader = pc.leader()
            follower, other = pc.followers()
            writes.start(follower)
            time.sleep(0.3)
            results: dict[str, tuple[rsp.SnapshotMeta | None, str]] = {}
            paths = {"leader": tmp_path / f"leader{r}.snap", "stale": tmp_path / f"stale{r}.snap"}
            threads = [
                threading.Thread(target=_save_into, args=(results, "leader", leader.url,
                                                          paths["leader"], False)),
                threading.Thread(target=_save_into, args=(results, "stale", other.url,
                                                          paths["stale"], True)),
            ]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.0, 0.25))
            pc.kill(pc.index(leader))
            figures["kills"] += 1
            for t in threads:
                t.join(30)
            for kind in ("leader", "stale"):
                meta, _ = results[kind]
                if meta is None:
                    figures[f"{kind}_saves_refused"] += 1
                    assert not paths[kind].exists()
                else:
                    figures[f"{kind}_saves_whole"] += 1
                    check_consistent(archive_attributes(paths[kind]), writes.uncertain | set(
                        range(writes.next, writes.next + 100_000)))
            # the new leader answers with a consistent snapshot holding every acknowledged write
            acked_before = writes.acked_now()
            meta = _save_from_leader(pc, tmp_path / f"after{r}.snap")
            writes.stop()
            history = check_consistent(archive_attributes(tmp_path / f"after{r}.snap"),
                                       writes.uncertain)
            assert acked_before <= set(history), "an acknowledged write is missing"
            assert meta.index >= len(history)
            pc.start(pc.index(leader))  # back, empty: it catches up from the new leader
        figures["partial_files"] = len([p for p in tmp_path.iterdir() if p.suffix == ".unverified"])
        figures["writes_acked"] = len(writes.acked)
        final = pc.states()
        assert all(s["state"] == final[0]["state"] for s in final)
        figures["lost_writes"] = len(writes.acked - set(final[0]["state"]["history"]))
    print(f"\nleader killed during take: {figures}")
    assert figures["partial_files"] == 0 and figures["lost_writes"] == 0
    assert figures["torn"] == 0  # a torn snapshot fails check_consistent above
    assert pc.exit_codes and all(code == 0 for code in pc.exit_codes)


def _new_state_archive(source: Path, target: Path, note: str) -> dict[str, Any]:
    """``source``'s archive with a note and an incompressible blob added; return its attributes."""
    state = io.BytesIO()
    meta = read_archive(source, state)
    state.seek(0)
    attributes, consumers = load_state(state)
    attributes["blob"] = os.urandom(2 * BLOB)
    attributes["note"] = note
    out = io.BytesIO()
    dump_state(attributes, consumers, out)
    with rsp.Snapshot.create(dataclasses.replace(meta, id="", peers=b""), out.getvalue()) as snap:
        snap.save(target)
    return attributes


def _same_everywhere(pc: ProcCluster, at_least: int = 0, timeout: float = 20.0) -> dict[str, Any]:
    answers = pc.states(at_least=at_least, timeout=timeout)
    states = [a["state"] for a in answers]
    assert all(s == states[0] for s in states), (
        "the nodes disagree (a mix of old and new?) or did not reach the same index in "
        f"{timeout} s: applied {[a['applied'] for a in answers]} (at least {at_least}); keys "
        f"{[sorted(s.get('extra', {})) for s in states]}")
    return answers[0]


@pytest.mark.parametrize("transport", ["direct", "log"])
@pytest.mark.parametrize("runs", [2, pytest.param(10, marks=pytest.mark.slow)])
def test_restoring_process_killed_mid_restore(tmp_path: Path, runs: int, transport: str) -> None:
    """Killed once ``begin`` is applied: with the log transport, after a few chunks; with the
    direct one, while the members fetch or decode (or, at times, once the commit is in)."""
    figures = {"runs": runs, "kills": 0, "old_state_after_kill": 0, "new_state_after_kill": 0,
               "busy_before_lease": 0, "next_restore_ok": 0, "mixed": 0}
    started = 3 if transport == "log" else 0  # chunks the watcher must hold before the kill
    with proc_cluster(tmp_path / "c", lease={0: 2.0}, transport=transport) as pc:
        writer = pc.node(1)
        for seq in range(5):
            writer.ok("put", key=f"k{seq}", value=seq)
        _save_from_leader(pc, tmp_path / "base.snap")
        for run in range(runs):
            via_endpoint = run % 2 == 1
            archive = tmp_path / f"new{run}.snap"
            _new_state_archive(tmp_path / "base.snap", archive, f"new {run}")
            old = _same_everywhere(pc)["state"]
            restorer, watcher = pc.node(0), pc.node(2)
            box: dict[str, Any] = {}
            if via_endpoint:
                thread = threading.Thread(target=_restore_into, args=(box, restorer.url, archive))
                thread.start()
            else:
                restorer.proc.stdin.write(  # type: ignore[union-attr]
                    f'{{"id": 0, "op": "restore", "path": "{archive}", "timeout": 60}}\n'.encode())
                restorer.proc.stdin.flush()  # type: ignore[union-attr]
            deadline = time.monotonic() + 30
            while True:  # begin (and, through the log, some chunks) applied
                seen = watcher.ok("state")
                if seen["restoring"] and seen["parts"] >= started:
                    break
                assert time.monotonic() < deadline, "the restore never started"
                time.sleep(0.005)
            pc.kill(0)
            killed = time.monotonic()
            figures["kills"] += 1
            if via_endpoint:
                thread.join(30)
                assert "error" in box["answer"]
            time.sleep(0.5)
            after = _same_everywhere(pc)
            if after["state"] == old:
                figures["old_state_after_kill"] += 1
                # the abandoned chunks, invisible, wait for the lease (on a loaded machine the
                # look above can come after the 2 s lease, and then they are rightly gone)
                assert after["restoring"] or time.monotonic() - killed >= 2.0
                answer = _try_restore(Client(watcher.url, TOKEN, timeout=60), archive)
                if "error" in answer:
                    assert "another restore" in answer["error"]
                    figures["busy_before_lease"] += 1
            else:
                figures["new_state_after_kill"] += 1
                assert after["state"]["extra"]["note"] == f"new {run}"
            time.sleep(2.2)  # the lease the dead restorer set runs out
            answer = _try_restore(Client(watcher.url, TOKEN, timeout=60), archive)
            assert "error" not in answer, answer
            figures["next_restore_ok"] += 1
            pc.start(0)
            final = _same_everywhere(pc)
            assert final["state"]["extra"]["note"] == f"new {run}" and not final["restoring"]
    print(f"\nrestoring process killed mid-restore: {figures}")
    assert figures["next_restore_ok"] == runs
    assert all(code == 0 for code in pc.exit_codes)


def _try_restore(client: Client, path: Path) -> dict[str, Any]:
    try:
        return {"result": client.restore(path)}
    except RemoteError as exc:
        return {"error": str(exc), "status": exc.status}


@needs_journal_recovery
def test_node_restarted_from_journal_and_dump_after_restore(tmp_path: Path) -> None:
    with proc_cluster(tmp_path / "c", journal=True) as pc:
        leader = pc.leader()
        for seq in range(5):
            leader.ok("put", key=f"k{seq}", value=f"before {seq}")
        _save_from_leader(pc, tmp_path / "base.snap")
        _new_state_archive(tmp_path / "base.snap", tmp_path / "new.snap", "restored")
        for seq in range(5):
            leader.ok("put", key=f"k{seq}", value=f"overwritten {seq}")
        assert "error" not in _try_restore(Client(pc.node(1).url, TOKEN, timeout=60),
                                           tmp_path / "new.snap")
        restored = _same_everywhere(pc)["state"]
        assert restored["extra"]["note"] == "restored" and restored["extra"]["k0"] == "before 0"
        leader = pc.leader()  # (a direct restore has compacted every log already: add an entry)
        leader.ok("put", key="before", value="compaction")
        _same_everywhere(pc)
        logs = [p.ok("compact")["log_len"] for p in pc.running]
        pc.leader().ok("put", key="after", value="compaction")  # in the journal only
        before_kill = _same_everywhere(pc)
        expected = before_kill["state"]
        dumps = sorted(p.name for p in (tmp_path / "c").glob("*.dump"))
        for i in range(3):
            pc.kill(i)
        for i in range(3):
            pc.start(i)
        pc.leader()
        # all three may agree on an index below the journal's end while they replay it
        back = _same_everywhere(pc, at_least=before_kill["applied"], timeout=60)  # under load
        assert back["state"] == expected
        assert not back["restoring"]
        pc.leader().ok("put", key="later", value="write")
        assert _same_everywhere(pc)["state"]["extra"]["later"] == "write"
    print(f"\nrestart from journal and dump: compacted log lengths {logs}, dumps {dumps}, "
          "3 nodes SIGKILLed and restarted, state equal to the restored one plus the journal")


@needs_journal_recovery
def test_take_and_restore_without_quorum_end_in_time(tmp_path: Path) -> None:
    figures: dict[str, Any] = {}
    with proc_cluster(tmp_path / "c", journal=True, serve_timeout=3.0) as pc:
        leader = pc.leader()
        for seq in range(5):
            leader.ok("put", key=f"k{seq}", value=seq)
        _save_from_leader(pc, tmp_path / "base.snap")
        _new_state_archive(tmp_path / "base.snap", tmp_path / "new.snap", "restored")
        at_start = _same_everywhere(pc)
        before = at_start["state"]
        left = pc.followers()[0]
        for proc in [p for p in pc.running if p is not left]:
            pc.kill(pc.index(proc))  # the leader and a follower: no quorum, no leader
        time.sleep(0.5)

        started = time.monotonic()  # the endpoint without ?stale: 503 at once
        with pytest.raises(RemoteError) as refused:
            Client(left.url, TOKEN, timeout=5).save(tmp_path / "no.snap")
        figures["GET without stale"] = (refused.value.status, round(time.monotonic() - started, 2))
        assert refused.value.status == 503
        assert not (tmp_path / "no.snap").exists()

        started = time.monotonic()  # with ?stale: this node's own state, marked stale
        meta = Client(left.url, TOKEN, timeout=5).save(tmp_path / "stale.snap", stale=True)
        figures["GET ?stale"] = (200, meta.index, round(time.monotonic() - started, 2))
        check_consistent(archive_attributes(tmp_path / "stale.snap"))

        taken = left.ok("take", path=str(tmp_path / "lib.snap"), timeout=3)  # the library's take
        figures["library take"] = taken
        assert taken["stale"] is True

        started = time.monotonic()  # the library's restore: SnapshotTimeoutError within 3 s
        answer = left.call("restore", path=str(tmp_path / "new.snap"), timeout=3)
        figures["library restore"] = (answer.get("error"), round(time.monotonic() - started, 2))
        assert answer.get("error") == "SnapshotTimeoutError", answer
        assert time.monotonic() - started < 3 + 5  # a margin for a busy machine

        started = time.monotonic()  # the endpoint's PUT (serve timeout 3 s): 503 in time
        answer = _try_restore(Client(left.url, TOKEN, timeout=30), tmp_path / "new.snap")
        figures["PUT"] = (answer.get("status"), round(time.monotonic() - started, 2))
        assert answer.get("status") == 503, answer
        assert time.monotonic() - started < 3 + 6  # well before the client gives up (30 s)

        for i in range(3):  # quorum back: nothing of the timed-out restores was applied
            if pc.procs[i] is not left:
                pc.start(i)
        pc.leader()
        assert _same_everywhere(pc, at_least=at_start["applied"])["state"] == before
        started = time.monotonic()  # and nothing holds a lease: the next restore works
        deadline = started + 60
        while True:  # the restarted nodes may still be electing or catching up: retry timeouts
            answer = _try_restore(Client(pc.node(0).url, TOKEN, timeout=60), tmp_path / "new.snap")
            if answer.get("status") != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert "error" not in answer, answer  # never "another restore is in progress"
        figures["restore after quorum returned"] = round(time.monotonic() - started, 2)
        assert _same_everywhere(pc)["state"]["extra"]["note"] == "restored"
        assert pc.tmp_files() == []
    print(f"\nwithout quorum: {figures}")
