"""Point-in-time recovery under load, for the tests and ``bench/pysyncobj_pitr_bench.py``.

:class:`LedgerBank` is a :class:`~cluster.Bank` whose ``move`` also tells a recorder, on the node
that applies it, the index it was applied at and when: the recorder is an attribute set before
``SyncObj.__init__`` (so never part of the state), absent from the detached copy a replay runs.
:meth:`Recorder.state_at` folds the recorded moves into the state at any index, independently of
the capture and the segments. :class:`Load` submits moves at a steady rate; :class:`ShipWatch`
notes when the agent's stored segments reach each index (the recovery point).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from cluster import Bank, Cluster, PacedLoad, transfer_args
from pysyncobj import SyncObjConsumer, replicated


class Recorder:
    """``(index, seq, time)`` of every move one node applied, in index order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.applied: list[tuple[int, int, float]] = []

    def snapshot(self) -> list[tuple[int, int, float]]:
        with self.lock:
            return list(self.applied)

    def state_at(self, index: int) -> dict[str, Any]:
        """The accounts and history after every move applied at or before ``index``."""
        accounts = {f"acct{i}": 100 for i in range(10)}
        history = []
        for at, seq, _ in self.snapshot():
            if at > index:
                break
            source, target, amount = transfer_args(seq)
            accounts[source] -= amount
            accounts[target] += amount
            history.append(seq)
        return {"accounts": accounts, "history": history}


class LedgerBank(Bank):
    """A Bank whose moves are recorded, with their index and time, as they are applied."""

    def __init__(self, address: str, partners: Sequence[str],
                 consumers: Sequence[SyncObjConsumer], **conf: Any) -> None:
        self.recorder = Recorder()  # before SyncObj.__init__: PySyncObj never dumps it
        super().__init__(address, partners, consumers, **conf)

    @replicated  # type: ignore[untyped-decorator]
    def move(self, seq: int, source: str, target: str, amount: int) -> int:
        self.accounts[source] -= amount
        self.accounts[target] += amount
        self.history.append(seq)
        recorder = self.__dict__.get("recorder")  # the detached copy of a replay has none
        if recorder is not None:
            with recorder.lock:
                recorder.applied.append((self.raftLastApplied + 1, seq, time.time()))
        return seq


class Load(PacedLoad):
    """Submits moves at ``rate`` per second through the leader, asynchronously."""

    def __init__(self, cluster: Cluster, rate: int) -> None:
        super().__init__(cluster, rate)
        self.acked = 0
        self.failed = 0

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(20)

    def submit(self, leader: Bank, seq: int) -> None:
        leader.move(seq, *transfer_args(seq), callback=self._done)

    def _done(self, result: Any, error: int) -> None:
        with self.lock:
            if error == 0:
                self.acked += 1
            else:
                self.failed += 1


class ShipWatch:
    """Polls the index the agent's stored segments reach, noting when each new one was seen."""

    def __init__(self, reached: Callable[[], int | None], period: float = 0.02) -> None:
        self.reached = reached
        self.period = period
        self.seen: list[tuple[int, float]] = []  # (index reached, first seen at), rising
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ShipWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def _run(self) -> None:
        while not self.stop.wait(self.period):
            index = self.reached() or 0
            if not self.seen or index > self.seen[-1][0]:
                self.seen.append((index, time.time()))

    def delays(self, applied: list[tuple[int, int, float]]) -> list[float]:
        """Per recorded change: seconds from its commit (applied on the leader) to the first look
        that saw a stored segment holding it (changes never seen stored are left out)."""
        reached = [index for index, _ in self.seen]
        found = []
        for index, _, at in applied:
            position = bisect.bisect_left(reached, index)
            if position < len(reached):
                found.append(max(0.0, self.seen[position][1] - at))
        return found


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")
