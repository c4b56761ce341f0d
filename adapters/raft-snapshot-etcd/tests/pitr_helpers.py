"""Point-in-time helpers for the etcd tests: a paced writer that records every revision it made (the
state at every index), the segments' changes read back, and an archive's keys read from a restore
into a one-member cluster."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from raft_snapshot_etcd import EtcdCluster, NewCluster, start_members
from raft_snapshot_etcd.changes import Event, decode_events

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin.agent import list_segments
from raft_snapshot_plugin.agent.segments import read_segment
from raft_snapshot_plugin.agent.storage import open_store

KEYS = 300


@dataclasses.dataclass(frozen=True)
class Op:
    """One revision the writer made: its events, when the call was sent and acknowledged."""

    revision: int
    events: tuple[Event, ...]
    sent: float
    acked: float


class Recorder:
    """Writes at ``rate`` per second from ``threads`` threads (puts, deletes, two-key txns) through
    ``endpoint`` and records every revision; the state at any revision follows from them."""

    def __init__(self, cluster: EtcdCluster, endpoint: str, rate: int, *, threads: int = 4,
                 seed: int = 7) -> None:
        self.cluster, self.endpoint, self.rate, self.threads = cluster, endpoint, rate, threads
        self.ops: dict[int, Op] = {}
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.paused = threading.Event()
        self._seq = self._base = 0
        self._rng = random.Random(seed)

    def run(self, seconds: float) -> float:
        """Write for ``seconds``; the achieved rate of revisions per second."""
        start, stop = time.monotonic(), time.monotonic() + seconds
        made_before, self._base = len(self.ops), self._seq
        workers = [threading.Thread(target=self._work, args=(start, stop), daemon=True)
                   for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(seconds + 60)
        assert not any(w.is_alive() for w in workers), "a writer hung"
        assert not self.errors, f"writes failed: {self.errors[:3]}"
        return (len(self.ops) - made_before) / (time.monotonic() - start)

    def _work(self, start: float, stop: float) -> None:
        with self.cluster.connect(self.endpoint) as conn:
            while (now := time.monotonic()) < stop:
                with self.lock:
                    seq, self._seq = self._seq, self._seq + 1
                    roll, key, other = (self._rng.random(), self._rng.randrange(KEYS),
                                        self._rng.randrange(KEYS))
                due = start + (seq - self._base) / self.rate
                if due > now:
                    time.sleep(due - now)
                while self.paused.is_set() and time.monotonic() < stop:
                    time.sleep(0.01)
                try:
                    self._one(conn, seq, roll, key, other)
                except Exception as exc:  # recorded: the test fails on any
                    self.errors.append(exc)
                    return

    def _one(self, conn: Any, seq: int, roll: float, key: int, other: int) -> None:
        from aetcd.rpc import rpc_pb2 as pb

        name, value = f"k/{key:03d}".encode(), f"v{seq}".encode()
        sent = time.time()
        if roll < 0.1:
            made = conn.delete(name, 10.0)
            events: tuple[Event, ...] = (Event(False, name),)
        elif roll < 0.2 and key != other:
            second, second_value = f"k/{other:03d}".encode(), f"w{seq}".encode()
            made = conn.txn([pb.RequestOp(request_put=pb.PutRequest(key=name, value=value)),
                             pb.RequestOp(request_put=pb.PutRequest(key=second,
                                                                    value=second_value))], 10.0)
            events = (Event(True, name, value), Event(True, second, second_value))
        else:
            made = conn.put(name, value, 10.0)
            events = (Event(True, name, value),)
        acked = time.time()
        if made is not None:  # a delete of a missing key makes no revision
            with self.lock:
                assert made not in self.ops, f"revision {made} made twice"
                self.ops[made] = Op(made, events, sent, acked)

    def check_contiguous(self, after: int) -> int:
        """Every revision after ``after`` is one of ours, none missing; the last one."""
        revisions = sorted(r for r in self.ops if r > after)
        assert revisions == list(range(after + 1, after + 1 + len(revisions))), "foreign writes"
        return revisions[-1]

    def states_at(self, targets: Iterable[int]) -> dict[int, dict[bytes, bytes]]:
        """The keys and values at each target revision."""
        wanted = sorted(set(targets))
        found: dict[int, dict[bytes, bytes]] = {}
        state: dict[bytes, bytes] = {}
        revision = 1
        for target in wanted:
            while revision < target:
                revision += 1
                for event in self.ops[revision].events if revision in self.ops else ():
                    if event.is_put:
                        state[event.key] = event.value
                    else:
                        state.pop(event.key, None)
            found[target] = dict(state)
        return found


def shipped_changes(url: str, options: dict[str, Any]) -> Iterator[tuple[int, list[Event]]]:
    """Every change in every stored segment, in the segments' order: (revision, events)."""
    fs, root = open_store(url, options)
    for segment in list_segments(fs, root):
        with read_segment(fs, segment) as (_, changes):
            for change in changes:
                yield change.index, decode_events(change.data)


def restored_keys(archive: str, workdir: Path) -> dict[bytes, bytes]:
    """The keys a one-member cluster restored from ``archive`` (offline, like any) serves."""
    new = NewCluster.on_loopback(1, workdir, name="check", extra_args=("--log-level=warn",))
    rsp.restore(new, archive)
    with ExitStack() as stack:
        stack.enter_context(start_members(new.plan()))
        return new.cluster().items()


def restart_member(procs: Any, index: int, down: float = 1.0) -> None:
    """Stop member ``index`` of a started plan (SIGTERM), wait ``down`` s, start it again on its
    data dir (etcd ignores ``--initial-cluster-state new`` for an existing one)."""
    import subprocess

    proc, launch = procs.processes[index], procs.plan.launches[index]
    proc.terminate()
    proc.wait(30)
    time.sleep(down)
    with open(launch.log_file, "ab") as log_out:
        procs.processes[index] = subprocess.Popen(launch.command, stdin=subprocess.DEVNULL,
                                                  stdout=log_out, stderr=subprocess.STDOUT)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
