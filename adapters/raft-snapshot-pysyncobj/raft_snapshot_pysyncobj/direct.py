"""Direct transfer: a restore's bytes go to every member over TCP, outside the Raft log.

Through the log, every byte of a state is pickled into commands, re-pickled and zlib-compressed
by PySyncObj for each follower, committed, applied and acknowledged in commands under
``appendEntriesBatchSizeBytes``: a large state then took longer to restore than PySyncObj's own
catch-up of one follower (the figures are in ``bench/PYSYNCOBJ.md``).

Here the log carries only ``begin`` (with the payload's address, a token, and the state's length
and SHA-256) and ``commit``. The restoring node serves the state from a
:class:`~raft_snapshot_pysyncobj.serving.PayloadServer`; every member that applies ``begin``
starts a :class:`Stage`: it fetches the payload, checks it against the length and SHA-256 from
the log, decodes it with its own trust settings and reports its verdict. The restoring node's
own copy is a :class:`~raft_snapshot_pysyncobj.serving.LocalStage`, decoded from the file from
before ``begin``. The restoring node submits ``commit`` only once every member has said ``ok``,
so on commit each node swaps in the state it already holds, in log order, in one applied entry.

Wire protocol (one connection per member but the restoring node)::

    member -> server   b"RSP-DIRECT/1 <token> <rid> <member id>\\n"
    server -> member   8-byte big-endian length, then the payload (state.bin as it is)
    member -> server   b"ok\\n", b"error <reason>\\n" (the state is refused)
                       or b"lost <reason>\\n" (the transfer failed)
    member -> server   b"applied\\n" or b"dropped\\n"             (once it applied or aborted)
"""

from __future__ import annotations

import hashlib
import io
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from .record import PendingRestore
from .state import PickleSource, YieldingReader

__all__ = ["LENGTH", "MAGIC", "DirectTransferError", "Stage", "StateRefusedError"]

log = logging.getLogger(__name__)

MAGIC = b"RSP-DIRECT/1"
#: Seconds a member waits to connect to, or to hear from, the restoring node; and how long the
#: restoring node waits for every member to connect after ``begin``.
IO_TIMEOUT = 10.0
#: The most leases a payload is served for after ``begin`` (members normally release it sooner).
LINGER_LEASES = 4
PIECE = 1 << 20
LENGTH = struct.Struct(">Q")

State = tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]


class DirectTransferError(Exception):
    """The direct transfer could not reach every member (not a verdict on the state)."""


class StateRefusedError(Exception):
    """Another member refused the state (its reason is the message)."""


class Stage:
    """One member's copy of a direct restore: fetched, checked and decoded off the tick thread.

    :meth:`start` runs it in a thread (when the member applies ``begin``); :meth:`result` waits
    for the decoded state (the commit); :meth:`finish` tells the restoring node it was applied or
    dropped and hangs up.
    """

    def __init__(self, rid: str, pending: PendingRestore, member: str,
                 decode: Callable[[PickleSource, bool, int], State], *, restricted: bool,
                 alive: Callable[[], bool] = lambda: True) -> None:
        self.decode = decode
        self.alive = alive
        self.restricted = restricted
        self.rid = rid
        self.pending = pending
        self.member = member
        self.state: State | None = None
        self.error: str | None = None
        #: why this node refused the state (not set when the transfer failed)
        self.refusal: Exception | None = None
        self._done = threading.Event()
        self._outcome: str | None = None
        self._settled: Callable[[], bool] = lambda: True
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Stage:
        self._thread = threading.Thread(target=self._run, name=f"rsp-direct-stage-{self.rid[:8]}",
                                        daemon=True)
        self._thread.start()
        return self

    def result(self, timeout: float) -> State:
        """The decoded state. Runs the fetch here when no thread was started.

        :raises DirectTransferError: the payload could not be fetched, or did not decode.
        """
        if self._thread is None:
            self._run(report=False)
        elif not self._done.wait(timeout):
            raise DirectTransferError(f"restore {self.rid}: still fetching after {timeout} s")
        if self.state is None:
            raise DirectTransferError(f"restore {self.rid}: {self.error}")
        return self.state

    def finish(self, outcome: str, settled: Callable[[], bool] = lambda: True) -> None:
        """``outcome`` is ``applied`` or ``dropped``; the decoded state is released. The
        restoring node hears of it once ``settled()`` (polled from the stage's thread) is true:
        until then it keeps serving the payload."""
        self._outcome = outcome
        self._settled = settled
        self.state = None
        self._finished.set()

    def await_outcome(self) -> str:
        """``applied`` or ``dropped``, once :meth:`finish` has said so and it is settled (or the
        node stopped, or ``LINGER_LEASES`` leases passed: ``dropped``)."""
        deadline = time.monotonic() + self.pending.lease * LINGER_LEASES
        while (not (self._finished.is_set() and self._settled()) and self.alive()
               and time.monotonic() < deadline):
            self._finished.wait(0.1)
        return self._outcome or "dropped"

    def _run(self, report: bool = True) -> None:
        assert self.pending.source is not None, "a stage is made for direct restores only"
        host, port, token = self.pending.source
        try:
            with socket.create_connection((host, port), timeout=IO_TIMEOUT) as conn:
                conn.sendall(b" ".join([MAGIC, token.encode(), self.rid.encode(),
                                        self.member.encode()]) + b"\n")
                lost = False
                try:
                    self.state = self._fetch_and_decode(conn)
                except (OSError, DirectTransferError) as exc:
                    self.error, lost = str(exc) or repr(exc), True
                except Exception as exc:  # every failure is a verdict, never a crashed thread
                    self.error, self.refusal = str(exc) or repr(exc), exc
                self._done.set()
                if not report:
                    return
                verdict = ("ok" if self.state is not None
                           else f"{'lost' if lost else 'error'} {self.error}")
                conn.sendall(verdict.encode("utf-8", "replace")[:4000] + b"\n")
                conn.sendall(f"{self.await_outcome()}\n".encode())
        except OSError as exc:
            if self.error is None and self.state is None:
                self.error = f"cannot fetch the state from {host}:{port}: {exc}"
        finally:
            self._done.set()

    def _fetch_and_decode(self, conn: socket.socket) -> State:
        """Read the payload and decode it. The restricted unpickler (which refuses anything but
        plain data and trusted classes, whatever the bytes) decodes while the bytes arrive; an
        unrestricted one only once they match the SHA-256 from ``begin``."""
        started, cpu = time.monotonic(), time.thread_time()
        with conn.makefile("rb") as reader:
            header = reader.read(LENGTH.size)
            if len(header) != LENGTH.size:
                raise DirectTransferError("the restoring node sent no payload")
            (length,) = LENGTH.unpack(header)
            if length != self.pending.size:
                raise DirectTransferError(
                    f"the payload is {length} bytes, not {self.pending.size}")
            payload = _CheckedReader(reader, length)
            if self.restricted:
                try:
                    state = self.decode(payload, False, length)
                finally:
                    payload.drain()
                    payload.check(self.pending.sha256)  # damaged in transit, not refused
            else:
                raw = io.BytesIO()
                while piece := payload.read(PIECE):
                    raw.write(piece)
                payload.check(self.pending.sha256)
                raw.seek(0)
                state = self.decode(YieldingReader(raw), True, length)
        log.info("restore %s: fetched, checked and decoded %d bytes in %.2f s (%.2f s of this "
                 "thread's CPU)", self.rid, length, time.monotonic() - started,
                 time.thread_time() - cpu)
        return state


class _CheckedReader(io.RawIOBase):
    """The next ``length`` bytes of ``reader``, hashed as they are read."""

    def __init__(self, reader: IO[bytes], length: int) -> None:
        super().__init__()
        self._reader = reader
        self._left = length
        self._digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def _take(self, data: bytes) -> bytes:
        if not data and self._left:
            raise DirectTransferError(f"the payload ended {self._left} bytes early")
        self._left -= len(data)
        self._digest.update(data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        size = self._left if size is None or size < 0 else min(size, self._left)
        return self._take(self._reader.read(size)) if size else b""

    def readline(self, size: int | None = -1) -> bytes:
        size = self._left if size is None or size < 0 else min(size, self._left)
        return self._take(self._reader.readline(size)) if size else b""

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(PIECE):
            pass

    def check(self, sha256: str) -> None:
        if self._left or self._digest.hexdigest() != sha256:
            raise DirectTransferError("the state does not match its length and SHA-256")
