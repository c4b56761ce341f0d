"""The log transport's chunks: the compressed state as base64 text, cut so that each command stays
under the node's ``appendEntriesBatchSizeBytes`` (PySyncObj 0.3.10 and 0.3.12 lose followers'
tick threads on a single bigger command), ``WINDOW`` of them in flight at once.

PySyncObj pickles commands with protocol 2, where a ``str`` of ASCII costs one byte a character
and ``bytes`` up to two: hence text.

A chunk's result can be lost (a leader change in PySyncObj before 0.3.17 may never call the
callback), so a window that hears nothing for ``SILENCE_SECONDS`` ends the round as a failure:
the cluster is then asked how many chunks it holds and sending resumes from there (chunks are
idempotent, so a late duplicate is harmless).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from typing import IO, Any, Protocol

from pysyncobj import SyncObj
from pysyncobj import pickle as pso_pickle

from raft_snapshot_plugin.errors import BackendError

from . import _node
from .support import SnapshotSupport

try:
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover
    import zlib as _zlib  # type: ignore[no-redef]

__all__ = ["MAX_RESUMES", "SILENCE_SECONDS", "WINDOW", "chunk_chars", "compress", "send_chunks"]

log = logging.getLogger(__name__)

#: Chunks in flight at once.
WINDOW = 32
#: How often sending may resume after chunks were lost (to leader changes, say).
MAX_RESUMES = 10
#: Seconds a full window (or the last chunks) may go without a single result before the round is
#: taken as lost. In a full tox run on PySyncObj 0.3.10 the results of a window never came: the
#: restore, with no timeout, waited for them until long after its lease had run out.
SILENCE_SECONDS = 10.0
_PIECE = 1 << 20  # bytes compressed at a time: the tick thread gets the GIL in between
_COMMAND_OVERHEAD = 512  # the pickled (funcID, (rid, seq, text, issued_at)) around the text


class Sender(Protocol):
    """What a restore offers its chunks: its id, node and support, replicated calls, its clock."""

    rid: str
    node: SyncObj
    support: SnapshotSupport

    def call(self, method: Any, *args: Any) -> Any: ...

    def remaining(self) -> float | None: ...


def compress(source: IO[bytes]) -> bytes:
    """A zlib stream (level 1) of what ``source`` holds from its position, read and compressed in
    1 MiB pieces so that the tick thread gets the GIL between them."""
    compressor = _zlib.compressobj(1)
    parts = []
    while piece := source.read(_PIECE):
        parts.append(compressor.compress(piece))
    parts.append(compressor.flush())
    return b"".join(parts)


def chunk_chars(node: SyncObj) -> int:
    """Characters of base64 per chunk so that each command stays under the batch size."""
    budget = _node.batch_size(node) - _COMMAND_OVERHEAD
    probe = len(pso_pickle.dumps((999, ("0" * 32, 10**9, "", 1e9))))
    return max(4, (budget - probe) // 4 * 4)


def send_chunks(restore: Sender, compressed: bytes) -> None:
    """Stream ``compressed`` as base64 text, chunk by chunk: each chunk encodes its own slice
    (a multiple of 3 bytes), so the chunks join into exactly the base64 of the whole.

    A round that fails (a chunk refused, or results lost) is not fatal: once it has settled or
    fallen silent, the cluster is asked through the log how many chunks it holds, and sending
    resumes from there.
    """
    step = chunk_chars(restore.node) // 4 * 3
    total = (len(compressed) + step - 1) // step
    start = 0
    for _ in range(MAX_RESUMES + 1):
        failure = _Round(restore, memoryview(compressed), step).send(start, total)
        if failure is None:
            return
        held = restore.call(restore.support.progress, restore.rid)
        if held < 0:
            raise BackendError(f"the restore was lost ({failure})", backend=_node.BACKEND)
        log.info("restore %s: %s; resuming at chunk %d of %d", restore.rid, failure, held,
                       total)
        start = held
    raise BackendError(f"the restore failed after {MAX_RESUMES} resumes: {failure}",
                       backend=_node.BACKEND)


class _Round:
    """One pass over the chunks from a given one, ``WINDOW`` in flight."""

    def __init__(self, restore: Sender, view: memoryview, step: int) -> None:
        self.restore = restore
        self.view = view
        self.step = step
        self.slots = threading.BoundedSemaphore(WINDOW)
        self.lock = threading.Lock()
        self.failures: list[str] = []
        self.in_flight = 0
        self.heard = time.monotonic()  # the last result, or the round's start
        self.settled = threading.Event()
        self.settled.set()

    def on_result(self, result: Any, error: int) -> None:
        with self.lock:
            self.heard = time.monotonic()
            if error != 0 or result is not True:
                self.failures.append(f"chunk refused (result {result!r}, PySyncObj error {error})")
            self.in_flight -= 1
            if self.in_flight == 0:
                self.settled.set()
        self.slots.release()

    def send(self, start: int, total: int) -> str | None:
        """Send chunks ``start..total-1``; the first failure, or None once all were accepted."""
        restore = self.restore
        for seq in range(start, total):
            while not self.slots.acquire(timeout=0.1):
                if silent := self._silence():
                    return silent
            with self.lock:
                if self.failures:
                    self.slots.release()
                    break
                self.in_flight += 1
                self.settled.clear()
            text = base64.b64encode(self.view[seq * self.step:(seq + 1) * self.step]).decode("ascii")
            restore.support.chunk(restore.rid, seq, text, time.time(), callback=self.on_result)
        while not self.settled.wait(0.1):
            if silent := self._silence():
                return silent
        return self.failures[0] if self.failures else None

    def _silence(self) -> str | None:
        """Raise when the restore is out of time; a failure when no result came for too long."""
        self.restore.remaining()
        with self.lock:
            quiet = time.monotonic() - self.heard
            if quiet < SILENCE_SECONDS:
                return None
            return (f"no result for {self.in_flight} chunks in flight for {quiet:.0f} s "
                    "(lost to a leader change?)")
