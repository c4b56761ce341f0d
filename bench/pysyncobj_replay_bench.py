"""PySyncObj replay speed for point-in-time recovery: changes per second replayed offline by the
adapter's ``raft_snapshot_replay``, against applying the same commands through a live 3-node
PySyncObj cluster on 127.0.0.1, in the same run.

    flock /tmp/bench.lock timeout 1800 python -m bench.pysyncobj_replay_bench \\
        --changes 20000 --runs 3 --out bench/results/pysyncobj-replay.json

Per run: a fresh 3-node cluster (real TCP on loopback, default PySyncObj timings, each node with
``SnapshotSupport``) is snapshotted, then takes ``--changes`` replicated ``move`` commands through
its leader, asynchronously with at most ``--in-flight`` unanswered (``live``: from the first
submission until every node has applied the last one). The changes after the snapshot are read
back through ``raft_snapshot_changes`` on the leader, then replayed onto the snapshot's state by
``raft_snapshot_replay`` (``replay``: the detached copy, no network; writing the state at the
last index included). The replayed state is checked against the cluster's. Medians of ``--runs``
go to ``--out``; the ratio is ``replay`` changes/s over ``live`` changes/s.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, replicated
from raft_snapshot_pysyncobj import SnapshotSupport
from raft_snapshot_pysyncobj.replay import replay_state
from raft_snapshot_pysyncobj.state import load_state

from raft_snapshot_plugin.archive import read_archive
from raft_snapshot_plugin.changes import Change
from raft_snapshot_plugin.manager import get_plugin_manager
from raft_snapshot_plugin.operations import take
from raft_snapshot_plugin.ports import free_ports


class Ledger(SyncObj):  # type: ignore[misc]
    """Ten accounts and the history of the moves between them."""

    def __init__(self, address: str, partners: list[str]) -> None:
        super().__init__(address, partners, conf=SyncObjConf(dynamicMembershipChange=False),
                         consumers=[SnapshotSupport()])
        self.accounts = {f"acct{i}": 1000 for i in range(10)}
        self.history: list[int] = []

    @replicated  # type: ignore[untyped-decorator]
    def move(self, seq: int, source: str, target: str, amount: int) -> int:
        self.accounts[source] -= amount
        self.accounts[target] += amount
        self.history.append(seq)
        return seq


def _args(seq: int) -> tuple[str, str, int]:
    return f"acct{seq % 10}", f"acct{(seq * 7 + 3) % 10}", seq % 13


@contextlib.contextmanager
def _cluster() -> Any:
    addresses = [f"127.0.0.1:{p}" for p in free_ports(3)]
    nodes = [Ledger(a, [b for b in addresses if b != a]) for a in addresses]
    try:
        deadline = time.monotonic() + 30
        while not any(n._isLeader() for n in nodes):
            if time.monotonic() > deadline:
                raise TimeoutError("no leader")
            time.sleep(0.02)
        yield nodes
    finally:
        for node in nodes:
            node.destroy()


def _live(nodes: list[Ledger], count: int, in_flight: int) -> tuple[float, int]:
    leader = next(n for n in nodes if n._isLeader())
    window = threading.Semaphore(in_flight)
    failed: list[int] = []

    def done(result: Any, error: int) -> None:
        if error:
            failed.append(error)
        window.release()

    start = time.perf_counter()
    for seq in range(count):
        window.acquire()
        leader.move(seq, *_args(seq), callback=done)
    for _ in range(in_flight):
        window.acquire()
    target = leader.raftLastApplied
    while min(n.raftLastApplied for n in nodes) < target:
        time.sleep(0.001)
    elapsed = time.perf_counter() - start
    if failed:
        raise RuntimeError(f"{len(failed)} moves failed: {failed[:5]}")
    return elapsed, target


def one_run(count: int, in_flight: int) -> dict[str, Any]:
    pm = get_plugin_manager()
    with _cluster() as nodes:
        leader = next(n for n in nodes if n._isLeader())
        with take(leader, manager=pm) as snap:
            base = snap.meta
            state = io.BytesIO()
            snap.seek(0)
            read_archive(snap, state)
        live_seconds, last = _live(nodes, count, in_flight)
        changes: list[Change] = []
        found = pm.changes("pysyncobj", leader, base.index, 2.0)
        assert found is not None
        with contextlib.closing(found):
            for item in found:
                assert isinstance(item, Change), f"a gap: {item}"
                changes.append(item)
                if item.index >= last:
                    break
        expected = (dict(leader.accounts), list(leader.history))
    sink = io.BytesIO()
    start = time.perf_counter()
    replay_state(base, io.BytesIO(state.getvalue()), changes, sink, last)
    replay_seconds = time.perf_counter() - start
    attributes, _ = load_state(io.BytesIO(sink.getvalue()))
    if (attributes["accounts"], attributes["history"]) != expected:
        raise AssertionError("the replayed state is not the cluster's")
    applied = len(changes)
    return {"changes": applied, "live_s": live_seconds, "replay_s": replay_seconds,
            "live_per_s": applied / live_seconds, "replay_per_s": applied / replay_seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    runs = [one_run(args.changes, args.in_flight) for _ in range(args.runs)]
    live = statistics.median(r["live_per_s"] for r in runs)
    replay = statistics.median(r["replay_per_s"] for r in runs)
    result = {"changes": args.changes, "runs": runs, "in_flight": args.in_flight,
              "live_changes_per_s": round(live), "replay_changes_per_s": round(replay),
              "replay_over_live": round(replay / live, 1), "python": sys.version.split()[0]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
