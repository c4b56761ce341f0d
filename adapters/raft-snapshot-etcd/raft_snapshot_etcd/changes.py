"""etcd's committed changes for point-in-time recovery: its watch stream, one change per revision.

The index space is etcd's store **revision**, the same number a take records as the snapshot's
index (see :func:`raft_snapshot_etcd.plugin.raft_snapshot_take`): every write transaction that
changes a key (a put, a delete that deletes something, a ``Txn``, a lease expiry deleting its keys)
makes exactly one revision, and nothing else does, so a watch over every key delivers every
revision, each once, in order. Raft indexes are not used: the watch does not carry them, and
entries that change no key (lease grants, member changes, compactions) have no revision.

Each :class:`~raft_snapshot_plugin.changes.Change` is one revision: ``index`` the revision,
``term`` the raft term in the watch response's header, ``time`` when this process received it
(etcd stamps no time on a revision; the watch delivers it once the member has applied it), and
``data`` the revision's events in :data:`CHANGE_FORMAT` (:func:`encode_events`). A time is never
before the commit: within milliseconds of it while the watch follows live, later when revisions
are read back from etcd's history (an agent catching up after a restart). A restore to a time
therefore never includes a change committed after that time; one committed shortly before an
agent's catch-up may count as later than it was.

Revision 1 is etcd's empty store (the first write makes revision 2): from index 0 it is delivered
as a change holding no events. A compacted revision is a :class:`~raft_snapshot_plugin.changes.Gap`
(``"compacted"``): etcd's watch refuses a start below the compaction revision ``C`` and names it;
the changes resume at ``C + 1`` (revision ``C``'s own deletes are gone with the compaction).
"""

from __future__ import annotations

import queue
import struct
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from raft_snapshot_plugin.toolkit import Change, Gap, StateRejectedError

from .errors import EtcdRpcError

if TYPE_CHECKING:
    from ._client import Connection
    from .cluster import EtcdCluster

__all__ = ["CHANGE_FORMAT", "Event", "decode_events", "encode_events", "follow_changes"]

#: ``data``'s encoding: ``b"etcd-events/1\n"``, then per event ``>BqII`` (kind ``P`` put or ``D``
#: delete, lease ID or 0, key length, value length), the key, the value (empty for a delete).
CHANGE_FORMAT = "etcd-events/1"
_MAGIC = (CHANGE_FORMAT + "\n").encode()
_EVENT = struct.Struct(">BqII")
_PUT, _DELETE = ord("P"), ord("D")
#: seconds the watch's first answer ("created", or the compaction refusal) may take per endpoint
_CREATE_WAIT = 5.0
_END = object()
#: how many times in a row a compaction may cancel the watch before the call fails
_MAX_REWATCH = 10


class Event(tuple[bool, bytes, bytes, int]):
    """One event of a revision: ``(is_put, key, value, lease)``."""

    __slots__ = ()

    def __new__(cls, is_put: bool, key: bytes, value: bytes = b"", lease: int = 0) -> Event:
        return super().__new__(cls, (is_put, key, value, lease))

    @property
    def is_put(self) -> bool:
        return self[0]

    @property
    def key(self) -> bytes:
        return self[1]

    @property
    def value(self) -> bytes:
        return self[2]

    @property
    def lease(self) -> int:
        return self[3]


def encode_events(events: Sequence[Event]) -> bytes:
    """A revision's events as a change's ``data`` (:data:`CHANGE_FORMAT`)."""
    parts = [_MAGIC]
    for event in events:
        value = event.value if event.is_put else b""
        parts.append(_EVENT.pack(_PUT if event.is_put else _DELETE, event.lease, len(event.key),
                                 len(value)))
        parts += (event.key, value)
    return b"".join(parts)


def decode_events(data: bytes) -> list[Event]:
    """A change's events. :raises StateRejectedError: the bytes are not :data:`CHANGE_FORMAT`."""
    if not data.startswith(_MAGIC):
        raise StateRejectedError(f"an etcd change is not {CHANGE_FORMAT}: it starts "
                                 f"{data[:16]!r}")
    events, at = [], len(_MAGIC)
    while at < len(data):
        if at + _EVENT.size > len(data):
            raise StateRejectedError("an etcd change's event is truncated")
        kind, lease, key_size, value_size = _EVENT.unpack_from(data, at)
        at += _EVENT.size
        end = at + key_size + value_size
        if kind not in (_PUT, _DELETE) or end > len(data) or not key_size:
            raise StateRejectedError(f"an etcd change's event at byte {at} is malformed")
        events.append(Event(kind == _PUT, data[at:at + key_size], data[at + key_size:end], lease))
        at = end
    return events


def follow_changes(cluster: EtcdCluster, after_index: int,
                   timeout: float | None) -> Iterator[Change | Gap]:
    """The revisions after ``after_index`` (see the module), through a watch on the first endpoint
    that answers; ends after ``timeout`` seconds without one (``None``: follows until closed)."""
    cursor = after_index
    for _ in range(_MAX_REWATCH):
        # from the cursor itself, not the one after: etcd accepts a start at the compaction
        # revision C, whose deletes the compaction erased; a start at C - 1 is refused, naming C
        with _open(cluster, max(cursor, 1)) as watch:
            cursor, compacted = yield from _revisions(watch, cursor, timeout)
        if compacted is None:
            return
        if compacted > cursor:
            yield Gap(cursor, compacted + 1, "compacted")
            cursor = compacted
    raise EtcdRpcError(f"etcd's watch was cancelled {_MAX_REWATCH} times in a row",
                       code="CANCELLED")


def _revisions(watch: _Watch, cursor: int, timeout: float | None
               ) -> Generator[Change | Gap, None, tuple[int, int | None]]:
    """Deliver the watch's revisions after ``cursor``; return the last one delivered, and the
    compaction revision if etcd cancelled the watch for one (``None``: the wait ran out)."""
    while (reply := watch.next(timeout)) is not None:
        if reply.compact_revision:
            return cursor, int(reply.compact_revision)
        if reply.canceled:
            raise EtcdRpcError(f"etcd cancelled the watch: {reply.cancel_reason or 'no reason'}",
                               code="CANCELLED")
        received, term = time.time(), int(reply.header.raft_term)
        by_revision: dict[int, list[Event]] = {}
        for event in reply.events:
            kv = event.kv
            by_revision.setdefault(int(kv.mod_revision), []).append(
                Event(event.type == 0, bytes(kv.key), bytes(kv.value), int(kv.lease)))
        for revision, events in sorted(by_revision.items()):
            if revision <= cursor:
                continue  # the watch starts at the cursor itself (see follow_changes)
            if cursor == 0 and revision > 1:
                # revision 1 is the empty store, never an event; its change holds none
                yield Change(1, term, received, encode_events(()))
                cursor = 1
            if revision > cursor + 1:
                yield Gap(cursor, revision, "not delivered by etcd's watch")
            yield Change(revision, term, received, encode_events(events))
            cursor = revision
    return cursor, None


class _Watch:
    """One watch over every key from a revision: a reader thread feeds a queue, so that waits are
    bounded. It starts once etcd answers that it is created (or, at once, why not)."""

    def __init__(self, conn: Connection, start: int) -> None:
        from aetcd.rpc import rpc_pb2

        self._conn = conn
        self._stop = threading.Event()
        self._replies: queue.Queue[Any] = queue.Queue()
        self._held: Any = None
        create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=b"\0", range_end=b"\0", start_revision=start))
        self._call = conn.open_watch(self._requests(create))
        self._thread = threading.Thread(target=self._read, name="etcd-watch", daemon=True)
        self._thread.start()
        try:
            first = self.next(_CREATE_WAIT)
            if first is None:
                raise TimeoutError(f"etcd's watch on {conn.endpoint} did not start within "
                                   f"{_CREATE_WAIT} s")
        except BaseException:
            self.close()
            raise
        # not the creation (etcd answered the compaction at once): the stream's first reply proper
        self._held = first if first.compact_revision or not first.created else None

    def _requests(self, create: Any) -> Iterator[Any]:
        yield create
        self._stop.wait()  # a request stream that ends would end the watch

    def _read(self) -> None:
        import grpc

        from ._client import rpc_error

        try:
            for reply in self._call:
                self._replies.put(reply)
        except grpc.RpcError as exc:
            if not self._stop.is_set():
                self._replies.put(rpc_error(exc, "Watch", None))
        finally:
            self._replies.put(_END)

    def next(self, timeout: float | None) -> Any:
        """The next reply; ``None`` after ``timeout`` seconds without one. Raises a failed call."""
        if self._held is not None:
            reply, self._held = self._held, None
            return reply
        try:
            reply = self._replies.get(timeout=timeout)
        except queue.Empty:
            return None
        if reply is _END:
            self._replies.put(_END)
            raise EtcdRpcError(f"etcd's watch on {self._conn.endpoint} ended", code="UNAVAILABLE")
        if isinstance(reply, Exception):
            raise reply
        return reply

    def close(self) -> None:
        self._stop.set()
        self._call.cancel()
        self._thread.join(10.0)
        self._conn.close()

    def __enter__(self) -> _Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open(cluster: EtcdCluster, start: int) -> _Watch:
    """A watch from ``start`` on the first endpoint that answers (a member may be restarting)."""
    error: Exception | None = None
    for endpoint in cluster.endpoints:
        conn = cluster.connect(endpoint)
        try:
            return _Watch(conn, start)
        except (ConnectionError, TimeoutError) as exc:
            error = exc
    assert error is not None
    raise error
