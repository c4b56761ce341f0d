"""Real PySyncObj clusters on 127.0.0.1 for the tests: start, find the leader, stop everything."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence, Set
from typing import Any, TypeVar

from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, SyncObjException, replicated
from pysyncobj.batteries import ReplCounter, ReplDict
from raft_snapshot_pysyncobj import SnapshotSupport
from raft_snapshot_pysyncobj.applied import APPLY_WAIT
from raft_snapshot_pysyncobj.restore import FailReason
from raft_snapshot_pysyncobj.support import Transport

from raft_snapshot_plugin.ports import free_ports

T = TypeVar("T")

WAIT = 20.0  # seconds any single wait in a test may last

#: What PySyncObj reports for a command it never applied: sent again, it cannot apply twice.
#: (LEADER_CHANGED, for a command forwarded from a follower, and a timeout may mean either.)
NEVER_APPLIED = frozenset({FailReason.QUEUE_FULL, FailReason.MISSING_LEADER,
                           FailReason.DISCARDED, FailReason.NOT_LEADER})


class Bank(SyncObj):  # type: ignore[misc]
    """A state with an invariant: money only moves (the sum stays 1000) and every transfer is logged.

    ``history`` is the sequence numbers of the applied transfers, in order: a consistent snapshot
    holds a prefix of what was submitted, with nothing missing in the middle.
    """

    def __init__(self, address: str, partners: Sequence[str], consumers: Sequence[SyncObjConsumer],
                 **conf: Any) -> None:
        options = {"dynamicMembershipChange": False, "connectionTimeout": 5.0, **conf}
        super().__init__(address, list(partners), conf=SyncObjConf(**options),
                         consumers=list(consumers))
        self.accounts = {f"acct{i}": 100 for i in range(10)}
        self.history: list[int] = []

    @replicated  # type: ignore[untyped-decorator]
    def transfer(self, seq: int, source: str, target: str, amount: int) -> int:
        self.accounts[source] -= amount
        self.accounts[target] += amount
        self.history.append(seq)
        return seq

    @replicated  # type: ignore[untyped-decorator]
    def put(self, key: str, value: Any) -> None:
        setattr(self, key, value)




def default_consumers(transport: Transport = "auto",
                      apply_wait: float = APPLY_WAIT) -> list[SyncObjConsumer]:
    return [ReplCounter(), ReplDict(), SnapshotSupport(transport=transport, apply_wait=apply_wait)]


class Cluster:
    """``size`` Bank nodes on free loopback ports; ``stop()`` destroys every node it started."""

    def __init__(self, size: int = 3, *,
                 consumers: Callable[[], list[SyncObjConsumer]] = default_consumers,
                 node_options: Callable[[int], dict[str, Any]] | None = None,
                 node_class: type[Bank] | None = None, **conf: Any) -> None:
        self.addresses = [f"127.0.0.1:{p}" for p in free_ports(size)]
        self.consumers = consumers
        self.conf = conf
        self.node_options = node_options or (lambda i: {})
        self.node_class = node_class or Bank
        self.nodes: list[Bank | None] = [None] * size
        for i in range(size):
            self.start(i)

    def start(self, i: int, **extra: Any) -> Bank:
        address = self.addresses[i]
        partners = [a for a in self.addresses if a != address]
        node = self.node_class(address, partners, self.consumers(),
                               **{**self.conf, **self.node_options(i), **extra})
        self.nodes[i] = node
        return node

    def node(self, i: int) -> Bank:
        node = self.nodes[i]
        assert node is not None, f"node {i} is stopped"
        return node

    @property
    def running(self) -> list[Bank]:
        return [n for n in self.nodes if n is not None]

    def leader(self, timeout: float = WAIT) -> Bank:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.running:
                if node._isLeader():
                    return node
            time.sleep(0.02)
        raise TimeoutError("no leader elected")

    def commit(self, write: Callable[[Bank], T], timeout: float = WAIT) -> T:
        """``write(leader)``, a ``sync=True`` call, through an election: a command the cluster
        reports it never applied (a new leader discarded it, the node had stopped leading) is sent
        again to whoever leads then, for up to ``timeout`` seconds.

        On 2 shared cores a freshly elected leader is sometimes deposed moments later, and a
        test's first writes failed with DISCARDED.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                return write(self.leader(timeout=max(0.1, deadline - time.monotonic())))
            except SyncObjException as exc:
                if (getattr(exc, "errorCode", None) not in NEVER_APPLIED
                        or time.monotonic() > deadline):
                    raise
            time.sleep(0.05)

    def follower(self) -> Bank:
        leader = self.leader()
        return next(n for n in self.running if n is not leader)

    def stop_node(self, i: int) -> None:
        node = self.nodes[i]
        if node is not None:
            _destroy(node)
            self.nodes[i] = None

    def stop(self) -> None:
        for i in range(len(self.nodes)):
            self.stop_node(i)

    def converged(self, timeout: float = WAIT) -> None:
        """Wait until every running node has applied the highest commit index any of them knows.

        Not one leader's: during an election a deposed leader may still say it leads, with a
        commit index behind the cluster's (a restore's commit then looked applied everywhere
        while a follower had not applied it yet)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.leader(timeout=max(0.1, deadline - time.monotonic()))
            target = max(n.raftCommitIndex for n in self.running)
            if all(n.raftLastApplied >= target for n in self.running):
                return
            time.sleep(0.02)
        raise TimeoutError("the nodes did not converge")

    def states(self) -> list[Any]:
        self.converged()
        return [user_state(n) for n in self.running]


def user_state(node: Bank) -> Any:
    """What an application would call the node's state: its data and its consumers' data."""
    counter = next((c for c in node._SyncObj__consumers if isinstance(c, ReplCounter)), None)
    kv = next((c for c in node._SyncObj__consumers if isinstance(c, ReplDict)), None)
    extra = {k: v for k, v in vars(node).items()
             if k not in node._SyncObj__properies and not k.startswith("_SyncObj__")
             and k not in ("accounts", "history")}
    return {
        "accounts": dict(node.accounts),
        "history": list(node.history),
        "extra": extra,
        "counter": counter.get() if counter is not None else None,
        "kv": dict(kv.items()) if kv is not None else None,
    }


def _destroy(node: SyncObj) -> None:
    thread = node._SyncObj__thread
    node.destroy()
    if thread is not None and thread is not threading.current_thread():
        thread.join(WAIT)
    with contextlib.suppress(Exception):
        node._SyncObj__transport.destroy()


@contextlib.contextmanager
def running_cluster(size: int = 3, **kwargs: Any) -> Iterator[Cluster]:
    cluster = Cluster(size, **kwargs)
    try:
        cluster.leader()
        yield cluster
    finally:
        cluster.stop()


class Writer:
    """A thread submitting transfers through one node, one at a time, recording acknowledgements."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.acked: list[int] = []
        self.uncertain: set[int] = set()  # timed out: applied or not, nobody knows
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(WAIT)

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            try:
                node = self.cluster.leader(timeout=2.0)
                node.transfer(seq, *transfer_args(seq), sync=True, timeout=5.0)
            except Exception:
                self.uncertain.add(seq)
            else:
                self.acked.append(seq)
            seq += 1


class PacedLoad:
    """Submits writes at ``rate`` per second through whichever node leads, on :attr:`thread`,
    until :attr:`stop` is set; a subclass's :meth:`submit` sends write number ``seq``."""

    TICK = 0.005  # seconds between bursts of submissions

    def __init__(self, cluster: Cluster, rate: int) -> None:
        self.cluster = cluster
        self.rate = rate
        self.next = 0  # the number of writes submitted
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - start) * self.rate)
            try:
                leader = self.cluster.leader(timeout=1.0)
            except TimeoutError:
                continue
            while self.next < due:
                seq = self.next
                self.next += 1
                self.submit(leader, seq)
            time.sleep(self.TICK)

    def submit(self, leader: Bank, seq: int) -> None:
        raise NotImplementedError


def fill(cluster: Cluster, writes: int, note: Any = None, *, start: int = 0) -> None:
    """Commit transfers ``start`` to ``start + writes - 1`` through whichever node leads (then
    ``note``, when given), and wait until every node has applied them."""
    for seq in range(start, start + writes):
        cluster.commit(functools.partial(_transfer, seq))
    if note is not None:
        put_note(cluster, note)
    cluster.converged()


def put_note(cluster: Cluster, note: Any) -> None:
    """Commit ``note`` as the state's ``note`` attribute through whichever node leads."""
    cluster.commit(lambda leader: leader.put("note", note, sync=True, timeout=10))


def _transfer(seq: int, leader: Bank) -> Any:
    return leader.transfer(seq, *transfer_args(seq), sync=True, timeout=10)


def transfer_args(seq: int) -> tuple[str, str, int]:
    return f"acct{seq % 10}", f"acct{(seq * 7 + 3) % 10}", seq % 13


def check_consistent(attributes: dict[str, Any], uncertain: Set[int] = frozenset()) -> list[int]:
    """The balances are exactly the replay of the history, and the history has no holes."""
    history: list[int] = list(attributes["history"])
    balances = {f"acct{i}": 100 for i in range(10)}
    for seq in history:
        source, target, amount = transfer_args(seq)
        balances[source] -= amount
        balances[target] += amount
    assert attributes["accounts"] == balances, "balances do not match the history: torn state"
    assert history == sorted(set(history)), "history out of order or duplicated"
    if history:
        missing = set(range(history[-1] + 1)) - set(history) - set(uncertain)
        assert not missing, f"history has holes: {sorted(missing)[:10]}"
    return history
