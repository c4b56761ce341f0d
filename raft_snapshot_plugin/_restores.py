"""Restores as resources: each upload's restore runs on a thread of its own, fed by the request, and
its outcome stays answerable by ID after the request is gone.

A restore outlives its HTTP request on purpose: a client whose connection drops, whose wait ends,
or whose operator presses Ctrl-C once the upload is in must not cancel a restore that may already
be committing, and must be able to learn what became of it (``GET /v1/snapshot/restores/<id>``).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from ._protocol import RESTORE_RETENTION_COUNT, RESTORE_RETENTION_SECONDS
from .errors import (
    ArchiveError,
    NotLeaderError,
    RaftSnapshotError,
    SnapshotTimeoutError,
    StateRejectedError,
)
from .restored import RestoreResult

__all__ = ["Feed", "RestoreJob", "Restores", "UploadBrokenError", "status_for"]

log = logging.getLogger("raft_snapshot_plugin.endpoint")

#: bytes queued between the request and its restore at most: bounds memory
FEED_BYTES = 4 << 20

#: The one mapping of what the core raises to what the endpoint answers. A refusal of the upload
#: (a bad archive, bytes the adapter will not load, an upload that broke off) is the client's 400;
#: not the leader, or out of time, is 503 (ask again, elsewhere or later); anything else is 500.
_STATUSES: tuple[tuple[type[BaseException], HTTPStatus], ...] = (
    (ArchiveError, HTTPStatus.BAD_REQUEST),
    (StateRejectedError, HTTPStatus.BAD_REQUEST),
    (NotLeaderError, HTTPStatus.SERVICE_UNAVAILABLE),
    (SnapshotTimeoutError, HTTPStatus.SERVICE_UNAVAILABLE),
)


class UploadBrokenError(RaftSnapshotError):
    """The client stopped sending (or sent too slowly) before ``Content-Length`` bytes arrived.

    Private to the endpoint: it ends the restore's reading, and the answer is a 400.
    """


def status_for(exc: BaseException) -> HTTPStatus:
    """The HTTP status the endpoint answers ``exc`` with."""
    if isinstance(exc, UploadBrokenError):
        return HTTPStatus.BAD_REQUEST
    return next((status for kind, status in _STATUSES if isinstance(exc, kind)),
                HTTPStatus.INTERNAL_SERVER_ERROR)


class Feed:
    """The upload as a blocking stream for the restore's thread, fed piece by piece by the request.

    At most ``FEED_BYTES`` wait in it, so memory stays flat however fast the client sends. The
    request offers each piece as it arrives (:meth:`offer`, which never blocks: the event loop
    must not) and waits on a worker thread only when the restore is behind (:meth:`put`). Once
    the reader has stopped (a refused archive) both answer ``None``: the request stops reading.
    """

    def __init__(self, length: int) -> None:
        self.length = length
        self._pieces: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._end: BaseException | None = None
        self._ended = False  # the writer is done: no more pieces will come
        self._abandoned = False  # the reader is done: no more pieces are wanted
        self._cond = threading.Condition()

    # --- the request's side ---------------------------------------------------------------------

    def offer(self, piece: bytes) -> bool | None:
        """Queue ``piece`` if there is room: ``True``; ``False`` when full; ``None`` when the
        reader has stopped."""
        with self._cond:
            if self._abandoned:
                return None
            if self._queued and self._queued + len(piece) > FEED_BYTES:
                return False
            self._pieces.append(piece)
            self._queued += len(piece)
            self._cond.notify_all()
            return True

    def put(self, piece: bytes) -> bool | None:
        """Queue ``piece`` once the restore has read the queue down to half (on a worker thread);
        ``None`` if the reader stopped. Half, not just room for one piece: the request then
        offers many pieces before it needs a thread again (a thread hop per piece costs more CPU
        than the copying, on a machine the restore's own threads keep busy)."""
        with self._cond:
            while not self._abandoned and self._queued > FEED_BYTES // 2:
                self._cond.wait()
            return self.offer(piece)

    def fail(self, exc: BaseException) -> None:
        """End the stream with ``exc`` (a broken upload): the reader raises it."""
        with self._cond:
            self._end, self._ended = exc, True
            self._cond.notify_all()

    def end(self) -> None:
        """All ``Content-Length`` bytes were queued."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    # --- the restore's side ---------------------------------------------------------------------

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes, as a raw stream reads: the next piece as it arrived (split if
        longer), waiting only while nothing is queued; ``b""`` at the end. Pieces are not joined
        into ``size`` bytes: that copied every byte of the upload once more on the restore's
        thread, and the restore's reader takes what it is given (see bench/ENDPOINT.md)."""
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(FEED_BYTES), b""))
        if size == 0:
            return b""
        with self._cond:
            while not self._pieces and not self._ended:
                self._cond.wait()
            if not self._pieces:
                if self._end is not None:
                    raise self._end
                return b""
            piece = self._pieces.popleft()
            if len(piece) > size:  # split: keep the rest first
                self._pieces.appendleft(piece[size:])
                piece = piece[:size]
            self._queued -= len(piece)
            if self._queued <= FEED_BYTES // 2:  # a put() waits for this much room
                self._cond.notify_all()
        return piece

    def abandon(self) -> None:
        """The reader is done, whatever is left: let the request stop feeding."""
        with self._cond:
            self._abandoned = True
            self._pieces.clear()
            self._queued = 0
            self._cond.notify_all()


@dataclasses.dataclass
class RestoreJob:
    """One restore: ``pending`` until its thread ends, then ``applied`` or ``failed``."""

    id: str
    client: str
    started: float = dataclasses.field(default_factory=time.time)
    state: str = "pending"
    finished: float | None = None
    result: RestoreResult | None = None
    status: int = HTTPStatus.OK
    error: str | None = None
    not_leader: dict[str, Any] | None = None
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    _on_done: list[Callable[[], object]] = dataclasses.field(default_factory=list, repr=False)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def on_done(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` (on the restore's thread) once the restore has ended, or now if it
        has; it must not block, and what it raises is logged."""
        with self._lock:
            if not self.done.is_set():
                self._on_done.append(callback)
                return
        _call_quietly(callback)

    def _finish(self) -> None:
        self.finished = time.time()
        with self._lock:
            self.done.set()
            callbacks, self._on_done = self._on_done, []
        for callback in callbacks:
            _call_quietly(callback)

    def to_dict(self) -> dict[str, Any]:
        """The status resource's JSON body."""
        doc: dict[str, Any] = {"id": self.id, "state": self.state, "started": self.started,
                               "finished": self.finished}
        if self.result is not None:
            doc.update(index=self.result.meta.index, meta=self.result.meta.to_dict(),
                       restore=self.result.to_dict())
        if self.error is not None:
            doc.update(error=self.error, status=self.status)
        return doc


def _call_quietly(callback: Callable[[], object]) -> None:
    try:
        callback()
    except Exception:  # a waiter's failure must not end the restore's thread with a traceback
        log.warning("a restore's completion callback failed", exc_info=True)


class Restores:
    """The restores of one endpoint: started, running, and finished ones kept for a while."""

    def __init__(self, retention: float = RESTORE_RETENTION_SECONDS,
                 keep: int = RESTORE_RETENTION_COUNT) -> None:
        self.retention = retention
        self.keep = keep
        self._jobs: collections.OrderedDict[str, RestoreJob] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, restore_id: str) -> RestoreJob | None:
        with self._lock:
            self._prune()
            return self._jobs.get(restore_id)

    def start(
        self, restore_id: str, client: str, run: Callable[[], RestoreResult],
        describe: Callable[[BaseException], str],
    ) -> RestoreJob | None:
        """Run ``run`` on a new thread as restore ``restore_id``; ``None`` if the ID is taken.

        ``describe`` words a failure for the status resource and the answer.
        """
        job = RestoreJob(restore_id, client)
        with self._lock:
            self._prune()
            if restore_id in self._jobs:
                return None
            self._jobs[restore_id] = job
        # a daemon thread, as the request threads of the standard library's server were: a process
        # that exits does not wait for a restore the adapter has not finished
        threading.Thread(target=self._run, args=(job, run, describe), daemon=True,
                         name=f"raft-snapshot-restore-{restore_id[:8]}").start()
        return job

    def _run(self, job: RestoreJob, run: Callable[[], RestoreResult],
             describe: Callable[[BaseException], str]) -> None:
        try:
            result = run()
        except BaseException as exc:  # recorded: the status resource and the request report it
            job.status, job.error = int(status_for(exc)), describe(exc)
            if isinstance(exc, NotLeaderError):
                job.not_leader = {"leader": exc.leader}
            job.state = "failed"
            if not isinstance(exc, (RaftSnapshotError, OSError)):
                log.error("restore %s failed", job.id, exc_info=exc)
        else:
            job.result, job.state = result, "applied"
            meta, lagging = result.meta, result.lagging
            log.info("restored snapshot %s (index %d) uploaded by %s, restore %s%s", meta.id,
                     meta.index, job.client, job.id,
                     "" if result.members is None else f"; members: {'; '.join(result.lines())}")
            if lagging:
                log.warning("restore %s: %d of %d members had not applied it when it returned: %s",
                            job.id, len(lagging), len(result.members or ()),
                            ", ".join(m.member for m in lagging))
        finally:
            job._finish()

    def _prune(self) -> None:
        """Forget finished restores past the retention time, and the oldest beyond ``keep``."""
        now = time.time()
        finished = [j for j in self._jobs.values() if j.finished is not None]
        for job in finished:
            if now - (job.finished or now) > self.retention:
                del self._jobs[job.id]
        extra = len(self._jobs) - self.keep
        for job in finished:
            if extra <= 0:
                break
            if job.id in self._jobs:
                del self._jobs[job.id]
                extra -= 1
