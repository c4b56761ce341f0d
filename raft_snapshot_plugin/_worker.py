"""A one-thread pipeline stage: state.bin's chunks hashed (and, when reading, sunk) off the caller's
thread while it compresses or decompresses; hashlib and ISA-L both release the GIL."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["QUEUE_DEPTH", "Worker"]

#: chunks queued for the worker: bounds memory to about (depth + 2) chunks
QUEUE_DEPTH = 4


class Worker:
    """Feed chunks, in order, to ``consume`` on a worker thread (or inline when not ``threaded``).

    ``done`` is called after each chunk, consumed or skipped after a failure. Leaving the ``with``
    block waits for every chunk put; an exception raised by ``consume`` is raised again in the
    caller's thread, at the next ``put`` or on leaving the block (where it takes precedence over
    an exception the block raised after it: it happened first).
    """

    def __init__(
        self,
        consume: Callable[[Any], object],
        *,
        threaded: bool,
        done: Callable[[], object] | None = None,
    ) -> None:
        self._consume = consume
        self._done = done
        self._error: BaseException | None = None
        self._queue: queue.Queue[Any] = queue.Queue(QUEUE_DEPTH)
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="raft-snapshot-worker", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            chunk = self._queue.get()
            if chunk is _STOP:
                return
            try:
                if self._error is None:  # after a failure keep draining: the producer never blocks
                    self._consume(chunk)
            except BaseException as exc:  # raised again in the caller's thread
                self._error = exc
            finally:
                if self._done is not None:
                    self._done()

    def put(self, chunk: Any) -> None:
        """Hand over ``chunk``; it must stay unchanged until ``done`` is called for it."""
        if self._thread is None:
            try:
                self._consume(chunk)
            finally:
                if self._done is not None:
                    self._done()
            return
        if self._error is not None:
            self._raise()
        self._queue.put(chunk)

    def _raise(self) -> None:
        error, self._error = self._error, None
        assert error is not None
        try:
            raise error
        finally:
            del error

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            self._raise()


_STOP = object()
