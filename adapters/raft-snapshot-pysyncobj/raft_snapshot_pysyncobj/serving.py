"""The restoring node's side of a direct restore: the state served to every member, and the
restoring node's own copy (:class:`LocalStage`), decoded from the file rather than over loopback.

The protocol and the members' side are in ``direct.py``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import io
import logging
import mmap
import os
import socket
import threading
import time
from collections.abc import Callable, Collection, Generator, Iterable, Iterator
from typing import IO, Any

from .direct import IO_TIMEOUT, LENGTH, MAGIC, PIECE, DirectTransferError, Stage, State
from .record import PendingRestore
from .state import PickleSource, YieldingReader

__all__ = ["LocalStage", "Payload", "PayloadServer", "measure", "payload_of"]

log = logging.getLogger(__name__)


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

    def pieces(self) -> Generator[bytes, None, None]:
        """The payload, ``PIECE`` bytes at a time.

        :raises OSError: the payload was closed, or its file is shorter than it was.
        """
        if self._fd is None:
            yield self._data
            return
        with self._sending() as fd:
            offset, end = self._start, self._start + self.size
            while offset < end:
                piece = os.pread(fd, min(PIECE, end - offset), offset)
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
                conn.sendall(LENGTH.pack(self._payload.size))
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

    def record_local(self, member: str, message: str) -> None:
        """What the restoring node's own copy (``member``) says, without a connection: its
        verdict (``ok``, ``error ...``, ``lost ...``), then ``applied`` or ``dropped``."""
        with self._changed:
            self.connected.add(member)
        if message not in ("applied", "dropped"):
            self._record(self.verdicts, member, message)
            return
        with self._changed:
            if message == "applied":
                self.applied.add(member)
            self.ended.add(member)
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


def payload_of(source: IO[bytes]) -> Payload:
    """What the direct transfer serves: ``source`` from its position, from its file if it has
    one."""
    if isinstance(source, io.BytesIO):
        return Payload(source.read())
    return Payload.of_file(source)


def measure(source: IO[bytes]) -> tuple[int, str]:
    """(length, SHA-256 hex) of what ``source`` holds from its position: a file's hashed in one
    call on a map of it, which needs the GIL only to start (this node's own decode runs
    meanwhile, and reading in pieces waited for the GIL at every piece); else read in pieces."""
    start = source.tell()
    mapped = _mapped_digest(source, start)
    if mapped is not None:
        source.seek(start + mapped[0])
        return mapped
    digest, size = hashlib.sha256(), 0
    while piece := source.read(PIECE):
        digest.update(piece)
        size += len(piece)
    return size, digest.hexdigest()


def _mapped_digest(source: IO[bytes], start: int) -> tuple[int, str] | None:
    """(length, SHA-256 hex) of ``source``'s file from ``start``, or None if it cannot be
    mapped (not a file, or empty)."""
    try:
        mapped = mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        return None
    with mapped, memoryview(mapped) as view, view[start:] as state:
        return len(state), hashlib.sha256(state).hexdigest()


class LocalStage(Stage):
    """The restoring node's own copy of its restore, decoded from the payload's file in a thread
    started before ``begin``: while this process hashes the state and replicates ``begin`` (when
    the other members have nothing to decode yet), and without sending the state to itself over
    loopback and hashing it again. The file is the core's private temp file, whose every byte
    the core checked against the archive's sums and the SHA-256 ``begin`` carries was computed
    from; its verdict and outcome go to ``report`` rather than over a connection.
    """

    def __init__(self, rid: str, payload: Payload, member: str,
                 decode: Callable[[PickleSource, bool, int], State], *, restricted: bool,
                 lease: float, report: Callable[[str, str], None],
                 alive: Callable[[], bool] = lambda: True) -> None:
        record = PendingRestore(rid=rid, size=payload.size, sha256="", lease=lease,
                                expires=float("inf"))
        super().__init__(rid, record, member, decode, restricted=restricted, alive=alive)
        self._payload = payload
        self._report = report

    def _run(self, report: bool = True) -> None:
        lost = False
        started, cpu = time.monotonic(), time.thread_time()
        reader = io.BufferedReader(_PayloadReader(self._payload), PIECE)
        try:
            self.state = self.decode(YieldingReader(reader), not self.restricted,
                                     self._payload.size)
            log.info("restore %s: decoded this node's own %d bytes from its file in %.2f s "
                     "(%.2f s of this thread's CPU)", self.rid, self._payload.size,
                     time.monotonic() - started, time.thread_time() - cpu)
        except OSError as exc:
            self.error, lost = f"cannot read the state's file: {exc}", True
        except Exception as exc:  # every failure is a verdict, never a crashed thread
            self.error, self.refusal = str(exc) or repr(exc), exc
        finally:
            self._payload.close()
            reader.close()
            self._done.set()
        if not report:
            return
        self._report(self.member, "ok" if self.state is not None
                     else f"{'lost' if lost else 'error'} {self.error}")
        self._report(self.member, self.await_outcome())


class _PayloadReader(io.RawIOBase):
    """A :class:`Payload` read in order, as a raw binary stream."""

    def __init__(self, payload: Payload) -> None:
        super().__init__()
        self._pieces = payload.pieces()
        self._piece = memoryview(b"")

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._pieces.close()  # its sender's hold on the payload's descriptor ends here
        super().close()

    def readinto(self, buffer: Any) -> int:
        if not self._piece:
            self._piece = memoryview(next(self._pieces, b""))
        count = min(len(buffer), len(self._piece))
        buffer[:count] = self._piece[:count]
        self._piece = self._piece[count:]
        return count
