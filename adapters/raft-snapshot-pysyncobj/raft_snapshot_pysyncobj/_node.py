"""Everything the adapter reads from a PySyncObj node, in one place.

PySyncObj has no public API for its state, log or consumers; these names are the same in 0.3.10,
0.3.12, 0.3.14 and 0.3.17 (see docs/pysyncobj-internals.md). Every access to a private name goes
through this module so that a future release that renames one breaks here, loudly.

Tick callbacks run at the end of ``_onTick``, after committed entries are applied; nothing else
applies entries. Inside a callback the node's state is therefore exactly the state after
``raftLastApplied``: the adapter reads and swaps state only there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pysyncobj import SyncObj, SyncObjConsumer

from raft_snapshot_plugin import Server
from raft_snapshot_plugin.errors import BackendError, SnapshotTimeoutError

T = TypeVar("T")

BACKEND = "pysyncobj"


def consumers(node: SyncObj) -> list[SyncObjConsumer]:
    """The node's consumers, in constructor order."""
    return list(node._SyncObj__consumers)


def own_attribute_names(node: SyncObj) -> set[str]:
    """Names PySyncObj leaves out of its dump (its own, and those set before its __init__)."""
    return set(node._SyncObj__properies)


def consumer_own_names(consumer: SyncObjConsumer) -> set[str]:
    return set(consumer._SyncObjConsumer__properies)


def user_attributes(node: SyncObj) -> dict[str, Any]:
    """The node's replicated attributes, exactly as PySyncObj's own dump stores them."""
    excluded = own_attribute_names(node)
    return {k: v for k, v in node.__dict__.items() if k not in excluded}


def log_term(node: SyncObj, index: int) -> int:
    """The term of the log entry at ``index`` (the journal always keeps the last applied one)."""
    log = node._SyncObj__raftLog
    first = log[0][1]
    position = index - first
    if not 0 <= position < len(log) or log[position][1] != index:
        raise BackendError(f"entry {index} is not in the node's journal", backend=BACKEND)
    return int(log[position][2])


def log_start(node: SyncObj) -> int:
    """The index of the first entry in the node's journal (log compaction moves it forward)."""
    return int(node._SyncObj__raftLog[0][1])


def servers(node: SyncObj) -> tuple[Server, ...]:
    """The configuration: the node itself and its partners (read-only nodes are not members)."""
    members = set(node.otherNodes)
    if node.selfNode is not None:
        members.add(node.selfNode)
    addresses = sorted(str(getattr(m, "address", m.id)) for m in members)
    return tuple(Server(id=a, address=a) for a in addresses)


def leader_address(node: SyncObj) -> str | None:
    leader = node._getLeader()
    return None if leader is None else str(getattr(leader, "address", leader.id))


def is_leader(node: SyncObj) -> bool:
    return bool(node._isLeader())


def batch_size(node: SyncObj) -> int:
    return int(node.conf.appendEntriesBatchSizeBytes)


def ignore_result(result: Any, error: Any) -> None:
    """The callback of a replicated command nobody waits for (a lost one is sent again)."""


def run_on_tick(node: SyncObj, fn: Callable[[], T], timeout: float | None) -> T:
    """Run ``fn`` once on the node's tick thread, between applied entries; return its result.

    The callback never lets an exception escape (on 0.3.10 and 0.3.12 an exception in a tick
    ends the tick thread for good). It is added and removed from another thread: PySyncObj holds
    its non-reentrant callback lock for a whole round of callbacks, so removing from inside would
    deadlock, and adding or removing from here would wait for a tick that may hang (the timeout
    would then not hold). A timeout cancels the callback unless ``fn`` has already started, in
    which case its result is awaited.
    """
    thread = node._SyncObj__thread
    if thread is None:  # autoTick=False: the application drives doTick() from this thread
        return fn()
    if threading.current_thread() is thread:
        raise BackendError("called on the node's own tick thread", backend=BACKEND)
    done = threading.Event()
    gate = threading.Lock()
    box: dict[str, Any] = {}

    def callback() -> None:
        with gate:
            if "started" in box or "cancelled" in box:
                return
            box["started"] = True
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc
        done.set()

    deadline = None if timeout is None else time.monotonic() + timeout
    adder = threading.Thread(target=node.addOnTickCallback, args=(callback,), daemon=True)
    adder.start()
    try:
        while not done.wait(0.05):
            failure: BaseException | None = None
            if not thread.is_alive():
                failure = BackendError("the node's tick thread is not running", backend=BACKEND)
            elif deadline is not None and time.monotonic() > deadline:
                failure = SnapshotTimeoutError(f"the node's tick did not come within {timeout} s")
            if failure is not None:
                with gate:
                    if "started" not in box:
                        box["cancelled"] = True
                        raise failure
                # fn is running on the tick right now: it cannot be interrupted, wait for it
    finally:
        def remove() -> None:
            adder.join()
            node.removeOnTickCallback(callback)

        threading.Thread(target=remove, daemon=True).start()
    if "error" in box:
        raise box["error"]
    result: T = box["result"]
    return result
