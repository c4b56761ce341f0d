"""Prototype: consistent capture of a PySyncObj node's state (0.3.10 .. 0.3.17).

Everything here runs on the node's own tick thread through ``addOnTickCallback``.
PySyncObj calls tick callbacks at the end of ``_onTick``, after ``__applyLogEntries``;
entries are applied nowhere else (message handlers only append to the log and move the
commit index; ``__loadDumpFile`` replaces state and ``raftLastApplied`` together), so
inside the callback the user state is exactly the state after ``raftLastApplied``.

Private names used (identical in 0.3.10, 0.3.12, 0.3.14, 0.3.17):
  node._SyncObj__raftLog       journal; ``log[i] == (command: bytes, idx: int, term: int)``
  node._SyncObj__properies     set of attribute names PySyncObj excludes from its dump
  node._SyncObj__consumers     list of SyncObjConsumer objects
  node._SyncObj__thread        the auto-tick thread (None when autoTick=False)
Public names used: addOnTickCallback, removeOnTickCallback, raftLastApplied, selfNode,
otherNodes, conf.
"""
from __future__ import annotations

import os
import pickle
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from pysyncobj import SyncObj

PICKLE_PROTOCOL = 5


class Member(NamedTuple):
    id: str  # Node.id (for TCPNode: 'host:port')
    address: str  # TCPNode.address; Node.id for a non-TCP node
    is_self: bool


@dataclass(frozen=True)
class Captured:
    state: bytes  # pickle (protocol 5) of exactly what PySyncObj's own dump stores as data[0]
    index: int  # raftLastApplied at capture time
    term: int  # term of the log entry at `index`
    members: tuple[Member, ...]  # sorted by id


def _member(node: Any, is_self: bool) -> Member:
    return Member(str(node.id), str(getattr(node, "address", node.id)), is_self)


def dump_data(node: SyncObj) -> Any:
    """The object PySyncObj's ``__tryLogCompaction`` puts in its dump tuple as ``data``.

    ``__dict__`` minus ``_SyncObj__properies`` (every attribute present when SyncObj.__init__
    took that snapshot of ``__dict__``, including attributes a subclass set *before* calling
    ``super().__init__``); a dict when there are no consumers, else
    ``[selfData, consumer1._serialize(), ...]`` in consumer order.
    Must be called on the tick thread.
    """
    excluded: set[str] = node._SyncObj__properies  # type: ignore[attr-defined]
    self_data = {k: v for k, v in node.__dict__.items() if k not in excluded}
    consumers = node._SyncObj__consumers  # type: ignore[attr-defined]
    if not consumers:
        return self_data
    return [self_data] + [c._serialize() for c in consumers]


def log_term(node: SyncObj, index: int) -> int:
    """Term of the log entry at ``index``; the journal always keeps the last applied entry.

    After compaction the journal starts at the entry just before the dump's last applied one
    (``deleteEntriesTo(lastApplied_at_dump - 1)``), after loading a dump it is exactly
    ``[dump[2], dump[1]]``, so ``log[0].idx <= raftLastApplied <= log[-1].idx`` on the tick thread.
    """
    log = node._SyncObj__raftLog  # type: ignore[attr-defined]
    first = log[0][1]
    pos = index - first
    if pos < 0 or pos >= len(log):
        raise LookupError(f"entry {index} not in journal [{first}..{log[-1][1]}]")
    entry = log[pos]
    if entry[1] != index:
        raise LookupError(f"journal position {pos} holds entry {entry[1]}, expected {index}")
    return int(entry[2])


def members(node: SyncObj) -> tuple[Member, ...]:
    out = [_member(n, False) for n in node.otherNodes]
    if node.selfNode is not None:  # None on a read-only node
        out.append(_member(node.selfNode, True))
    return tuple(sorted(out))


def _on_tick_thread(node: SyncObj) -> bool:
    return threading.current_thread() is getattr(node, "_SyncObj__thread", None)


def run_on_tick(node: SyncObj, fn: Callable[[], Any], timeout: float) -> Any:
    """Run ``fn`` once on the node's tick thread; return its result or re-raise its error.

    The callback never lets an exception escape: on 0.3.10 and 0.3.12 an exception in
    ``_onTick`` ends the auto-tick thread for good (0.3.14+ log it and retry every tick).
    Removal happens from the calling thread: ``removeOnTickCallback`` takes the same
    non-reentrant lock that is held while callbacks run, so it must not be called from inside
    a callback (deadlock) and, once it returns, the callback can no longer be running.
    """
    if not node.conf.autoTick:
        return fn()  # the caller drives doTick(); nothing runs concurrently
    if _on_tick_thread(node):
        raise RuntimeError("run_on_tick called on the tick thread: would deadlock")
    done = threading.Event()
    box: dict[str, Any] = {}

    def callback() -> None:
        if done.is_set():
            return
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - must not reach _onTick
            box["error"] = e
        done.set()

    node.addOnTickCallback(callback)
    try:
        if not done.wait(timeout):
            raise TimeoutError(f"tick callback did not run within {timeout}s")
    finally:
        node.removeOnTickCallback(callback)
    if "error" in box:
        raise box["error"]
    return box["result"]


def capture(node: SyncObj, timeout: float) -> tuple[bytes, int, int, tuple[Member, ...]]:
    """(state, index, term, members), read atomically between applied entries."""

    def read() -> Captured:
        index = node.raftLastApplied
        return Captured(
            state=pickle.dumps(dump_data(node), protocol=PICKLE_PROTOCOL),
            index=index,
            term=log_term(node, index),
            members=members(node),
        )

    c: Captured = run_on_tick(node, read, timeout)
    return c.state, c.index, c.term, c.members


@dataclass(frozen=True)
class ForkedCapture:
    pid: int
    path: str
    index: int
    term: int
    members: tuple[Member, ...]
    tick_blocked_s: float  # time spent inside the tick callback (fork included)

    def wait(self, timeout: float) -> None:
        """Reap the child from the calling thread; raise if it failed or overran."""
        deadline = time.monotonic() + timeout
        while True:
            rpid, status = os.waitpid(self.pid, os.WNOHANG)
            if rpid == self.pid:
                code = os.waitstatus_to_exitcode(status)
                if code != 0:
                    raise RuntimeError(f"capture child exited with {code}")
                return
            if time.monotonic() > deadline:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
                raise TimeoutError("capture child did not finish")
            time.sleep(0.01)


def capture_forked(node: SyncObj, path: str, timeout: float) -> ForkedCapture:
    """Like ``capture`` but the state is pickled by a forked child into ``path``.

    Same scheme as PySyncObj's ``Serializer.serialize`` (useFork): fork on the tick thread,
    the child sees a copy-on-write image frozen between two applied entries, writes
    ``path + '.tmp'``, renames it and ``os._exit``s; the parent returns at once and the tick
    goes on. The child runs only the forking (tick) thread: it must not log or take locks
    other threads may have held (PySyncObj's own compaction accepts the same risk).
    The parent reaps the child with ``waitpid(pid)`` on its own pid only, so it does not
    disturb PySyncObj's serializer, which also waits only on its own pid.
    """
    if not hasattr(os, "fork"):
        raise RuntimeError("no fork on this platform")

    def forker() -> ForkedCapture:
        t0 = time.perf_counter()
        index = node.raftLastApplied
        term = log_term(node, index)
        mem = members(node)
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                tmp = path + ".tmp"
                with open(tmp, "wb") as f:
                    pickle.dump(dump_data(node), f, protocol=PICKLE_PROTOCOL)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
                code = 0
            finally:
                os._exit(code)
        return ForkedCapture(pid, path, index, term, mem, time.perf_counter() - t0)

    return run_on_tick(node, forker, timeout)
