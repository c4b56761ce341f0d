"""Consistent takes: the state read on the node's own tick thread, between applied entries.

Copying the state from another thread tears it (it changes while being copied), so the read runs
in a tick callback. A large state would block the tick while it is pickled (the node then misses
heartbeats and may lose leadership), so where the platform can fork the callback forks, as
PySyncObj's own compaction does, and the child pickles its copy-on-write image into the sink
while the node goes on serving.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import warnings
from typing import IO, Any

from pysyncobj import SyncObj

from raft_snapshot_plugin import SnapshotMeta
from raft_snapshot_plugin.errors import BackendError, SnapshotTimeoutError

from . import _node
from .appstate import capture_state, user_consumers
from .state import STATE_FORMAT, dump_state
from .support import find_support

__all__ = ["take_state"]


def take_state(node: SyncObj, sink: IO[bytes], timeout: float | None) -> SnapshotMeta:
    """Write the state at the node's last applied entry into ``sink``; return its metadata."""
    support = find_support(node)
    use_fork = _can_fork(sink) if support is None or support.fork is None else support.fork
    shared = support is None or support.shared_references
    if use_fork and not _can_fork(sink):
        raise BackendError("SnapshotSupport(fork=True) needs os.fork and a sink with a file "
                           "descriptor", backend=_node.BACKEND)
    deadline = None if timeout is None else time.monotonic() + timeout
    if use_fork:
        sink.flush()
        index, term, child = _node.run_on_tick(node, lambda: _fork_dump(node, sink, shared), timeout)
        try:
            _reap(child, deadline)
        finally:
            sink.seek(0, io.SEEK_END)  # the child wrote through a shared descriptor
    else:
        def read() -> tuple[int, int]:
            index = node.raftLastApplied
            dump_state(*capture_state(node), sink, shared_references=shared,
                       outside=_owners(node))
            return index, _node.log_term(node, index)

        index, term = _node.run_on_tick(node, read, timeout)
    return SnapshotMeta(index=index, term=term, servers=_node.servers(node),
                        state_format=STATE_FORMAT)


def _can_fork(sink: IO[bytes]) -> bool:
    if not hasattr(os, "fork"):
        return False
    try:
        sink.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return False
    return True


class _Child:
    def __init__(self, pid: int, errors: int) -> None:
        self.pid = pid
        self.errors = errors  # read end of a pipe the child writes its error to


def _fork_dump(node: SyncObj, sink: IO[bytes], shared: bool) -> tuple[int, int, _Child]:
    """On the tick thread: note index and term, fork; the child pickles and exits."""
    index = node.raftLastApplied
    term = _node.log_term(node, index)
    attributes, consumers = capture_state(node)
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork in a threaded process; the child only pickles and exits.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: no locks, no logging, no return
        code = 1
        try:
            os.close(read_end)
            with os.fdopen(os.dup(sink.fileno()), "wb", buffering=1 << 20) as out:
                dump_state(attributes, consumers, out, shared_references=shared,
                           outside=_owners(node))
            code = 0
        except BaseException as exc:
            with contextlib.suppress(BaseException):
                os.write(write_end, repr(exc).encode("utf-8", "replace")[:4000])
        finally:
            os._exit(code)
    os.close(write_end)
    return index, term, _Child(pid, read_end)


def _owners(node: SyncObj) -> list[dict[str, Any]]:
    """Where the state's top-level values live: the node's and its consumers' ``__dict__``."""
    return [node.__dict__, *(consumer.__dict__ for consumer in user_consumers(node))]


def _reap(child: _Child, deadline: float | None) -> None:
    try:
        while True:
            pid, status = os.waitpid(child.pid, os.WNOHANG)
            if pid == child.pid:
                break
            if deadline is not None and time.monotonic() > deadline:
                os.kill(child.pid, 9)
                os.waitpid(child.pid, 0)
                raise SnapshotTimeoutError("the forked take did not finish in time")
            time.sleep(0.005)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            message = os.read(child.errors, 4000).decode("utf-8", "replace")
            raise BackendError(f"the forked take failed (exit status {code}): {message}",
                               backend=_node.BACKEND)
    finally:
        os.close(child.errors)
