"""Direct transfer: a restore's bytes go to every member over TCP, outside the Raft log.

Through the log, every byte of a state is pickled into commands, re-pickled and zlib-compressed
by PySyncObj for each follower (level 3, about 45 MB/s of one core on the leader), committed,
applied and acknowledged in commands under ``appendEntriesBatchSizeBytes``: about 9 MB/s, and a
100 MB state then took longer to restore than PySyncObj's own catch-up of one follower.

Here the log carries only ``begin`` (with the payload's address, a token, and the state's length
and SHA-256) and ``commit``. The restoring node serves the state from a
:class:`PayloadServer`; every member that applies ``begin`` starts a :class:`Stage`: it fetches
the payload, checks it against the length and SHA-256 from the log, decodes it with its own trust
settings and reports its verdict. The restoring node submits ``commit`` only once every member has
said ``ok``, so on commit each node swaps in the state it already holds, in log order, in one
applied entry.

Wire protocol (one connection per member)::

    member -> server   b"RSP-DIRECT/1 <token> <rid> <member id>\\n"
    server -> member   8-byte big-endian length, then the payload (state.bin as it is)
    member -> server   b"ok\\n", b"error <reason>\\n" (the state is refused)
                       or b"lost <reason>\\n" (the transfer failed)
    member -> server   b"applied\\n" or b"dropped\\n"             (once it applied or aborted)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import io
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import IO, Any

from .state import PickleSource, YieldingReader

__all__ = ["DirectTransferError", "Payload", "PayloadServer", "Stage", "StateRefusedError"]

log = logging.getLogger(__name__)

MAGIC = b"RSP-DIRECT/1"
#: Seconds a member waits to connect to, or to hear from, the restoring node; and how long the
#: restoring node waits for every member to connect after ``begin``.
IO_TIMEOUT = 10.0
#: The most leases a payload is served for after ``begin`` (members normally release it sooner).
LINGER_LEASES = 4
_PIECE = 1 << 20
_LENGTH = struct.Struct(">Q")

State = tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]


class DirectTransferError(Exception):
    """The direct transfer could not reach every member (not a verdict on the state)."""


class StateRefusedError(Exception):
    """Another member refused the state (its reason is the message)."""


class Payload:
    """What a :class:`PayloadServer` serves: bytes, or a range of a file read piece by piece with
    ``os.pread``, so that a restore of any size costs the restoring process no memory for it.

    A file payload keeps a descriptor of its own (its owner may close and remove the file while
    members still fetch: the server lingers after the commit). Reads name their offset, so any
    number of senders share the descriptor without sharing a file position, and it is closed
    only once the last sender is done with it.
    """

    def __init__(self, data: bytes = b"", *, fd: int | None = None, start: int = 0,
                 size: int | None = None) -> None:
        self._data = data
        self._fd = fd
        self._start = start
        self.size = len(data) if size is None else size
        self._lock = threading.Lock()
        self._senders = 0
        self._closed = False

    @classmethod
    def of_file(cls, file: IO[bytes]) -> Payload:
        """The bytes of ``file`` from its position to its end (its position is left as it was)."""
        start = file.tell()
        size = os.fstat(file.fileno()).st_size - start
        return cls(fd=os.dup(file.fileno()), start=start, size=size)

    def pieces(self) -> Iterator[bytes]:
        """The payload, ``_PIECE`` bytes at a time.

        :raises OSError: the payload was closed, or its file is shorter than it was.
        """
        if self._fd is None:
            yield self._data
            return
        with self._sending() as fd:
            offset, end = self._start, self._start + self.size
            while offset < end:
                piece = os.pread(fd, min(_PIECE, end - offset), offset)
                if not piece:
                    raise OSError(f"the payload's file ended {end - offset} bytes early")
                offset += len(piece)
                yield piece

    def read(self) -> bytes:
        """The whole payload in memory: for small ones (and tests), never a restore's path."""
        return b"".join(self.pieces())

    @contextlib.contextmanager
    def _sending(self) -> Iterator[int]:
        with self._lock:
            if self._closed or self._fd is None:
                raise OSError("the payload is no longer served")
            self._senders += 1
            fd = self._fd
        try:
            yield fd
        finally:
            with self._lock:
                self._senders -= 1
                self._release_if_unused()

    def close(self) -> None:
        """Stop serving: the descriptor is closed now, or when its last sender is done."""
        with self._lock:
            self._closed = True
            self._data = b""
            self._release_if_unused()

    def _release_if_unused(self) -> None:
        if self._closed and self._senders == 0 and self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)


class PayloadServer:
    """Serves ``payload`` to the members named in ``members`` and collects their verdicts.

    Use as a context manager while the restore runs; after a commit, :meth:`linger` keeps serving
    (in a daemon thread) until every member has applied the commit, or ``grace`` seconds.
    """

    def __init__(self, host: str, payload: bytes | Payload, token: str, rid: str,
                 members: Collection[str], ports: Iterable[int] = (0,)) -> None:
        self._payload = payload if isinstance(payload, Payload) else Payload(payload)
        self.token = token
        self.started = time.monotonic()
        self._rid = rid.encode()
        self.members = frozenset(members)
        self.connected: set[str] = set()
        self.verdicts: dict[str, str] = {}
        self.applied: set[str] = set()
        self.ended: set[str] = set()  # members whose connection is over, whatever the outcome
        self._changed = threading.Condition()
        try:
            self._sock = _listen(host, ports)
        except BaseException:
            self._payload.close()
            raise
        self._sock.settimeout(0.2)
        self.address: tuple[str, int] = (host, self._sock.getsockname()[1])
        self._closed = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="rsp-direct-server",
                                          daemon=True)
        self._acceptor.start()

    def __enter__(self) -> PayloadServer:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="rsp-direct-send",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        member = None
        try:
            with conn, conn.makefile("rb") as reader:
                conn.settimeout(IO_TIMEOUT)
                words = reader.readline(1024).split()
                if (len(words) != 4 or words[0] != MAGIC or words[2] != self._rid
                        or not hmac.compare_digest(words[1], self.token.encode())):
                    return  # not a member of this restore: say nothing
                member = words[3].decode("utf-8", "replace")
                with self._changed:
                    self.connected.add(member)
                conn.sendall(_LENGTH.pack(self._payload.size))
                for piece in self._payload.pieces():
                    conn.sendall(piece)
                conn.settimeout(None)  # decoding a large state takes a while
                verdict = reader.readline(4096).decode("utf-8", "replace").strip()
                self._record(self.verdicts, member, verdict or "lost: the member hung up")
                if reader.readline(64).strip() == b"applied":
                    with self._changed:
                        self.applied.add(member)
                        self._changed.notify_all()
        except OSError as exc:
            if member is not None:
                self._record(self.verdicts, member, f"lost: connection lost ({exc})")
        finally:
            if member is not None:
                with self._changed:
                    self.ended.add(member)
                    self._changed.notify_all()

    def _record(self, verdicts: dict[str, str], member: str, verdict: str) -> None:
        with self._changed:
            verdicts.setdefault(member, verdict)
            self._changed.notify_all()

    def wait_verdicts(self, check: Callable[[set[str]], None]) -> dict[str, str]:
        """The verdicts, once every member has given one or one has refused.

        ``check(missing)`` runs every 0.2 s until then, and raises to give up (out of time, a
        member gone).
        """

        def settled() -> bool:
            return (self.members <= self.verdicts.keys()
                    or any(v != "ok" for v in self.verdicts.values()))

        while True:
            with self._changed:
                if self._changed.wait_for(settled, timeout=0.2):
                    return dict(self.verdicts)
                missing = set(self.members - self.verdicts.keys())
            check(missing)

    def linger(self, grace: float) -> None:
        """Close once every member is done with the payload (it applied the commit, or its node
        stopped), or after ``grace`` seconds."""

        def wait_then_close() -> None:
            deadline = time.monotonic() + grace
            with self._changed:
                while not self.members <= self.ended and time.monotonic() < deadline:
                    self._changed.wait(0.2)
            self.close()

        threading.Thread(target=wait_then_close, name="rsp-direct-linger", daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        self._payload.close()


def _listen(host: str, ports: Iterable[int]) -> socket.socket:
    """A listening socket on the first port of ``ports`` that is free on ``host`` (0: any).

    :raises DirectTransferError: every one is taken (the restore then goes through the log).
    """
    tried = []
    for port in ports:
        try:
            return socket.create_server((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise DirectTransferError(f"cannot listen on {host}:{port}: {exc}") from exc
            tried.append(port)
    raise DirectTransferError(f"no free port to serve the state from on {host}: tried "
                              f"{_ranges(tried)}")


def _ranges(ports: list[int]) -> str:
    """``[7000, 7001, 7002, 7005]`` -> ``"7000-7002, 7005"``."""
    spans: list[list[int]] = []
    for port in ports:
        if spans and port == spans[-1][1] + 1:
            spans[-1][1] = port
        else:
            spans.append([port, port])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans) or "no port"


class Stage:
    """One member's copy of a direct restore: fetched, checked and decoded off the tick thread.

    :meth:`start` runs it in a thread (when the member applies ``begin``); :meth:`result` waits
    for the decoded state (the commit); :meth:`finish` tells the restoring node it was applied or
    dropped and hangs up.
    """

    def __init__(self, rid: str, pending: dict[str, Any], member: str,
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

    def _run(self, report: bool = True) -> None:
        host, port, token = self.pending["source"]
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
                deadline = time.monotonic() + self.pending["lease"] * LINGER_LEASES
                while (not (self._finished.is_set() and self._settled()) and self.alive()
                       and time.monotonic() < deadline):
                    self._finished.wait(0.1)
                conn.sendall(f"{self._outcome or 'dropped'}\n".encode())
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
            header = reader.read(_LENGTH.size)
            if len(header) != _LENGTH.size:
                raise DirectTransferError("the restoring node sent no payload")
            (length,) = _LENGTH.unpack(header)
            if length != self.pending["size"]:
                raise DirectTransferError(
                    f"the payload is {length} bytes, not {self.pending['size']}")
            payload = _CheckedReader(reader, length)
            if self.restricted:
                try:
                    state = self.decode(payload, False, length)
                finally:
                    payload.drain()
                    payload.check(self.pending["sha256"])  # damaged in transit, not refused
            else:
                raw = io.BytesIO()
                while piece := payload.read(_PIECE):
                    raw.write(piece)
                payload.check(self.pending["sha256"])
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
        while self.read(_PIECE):
            pass

    def check(self, sha256: str) -> None:
        if self._left or self._digest.hexdigest() != sha256:
            raise DirectTransferError("the state does not match its length and SHA-256")
