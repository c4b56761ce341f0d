"""A large upload's body read by its restore's own thread, straight from the connection's socket.

Through ``receive()`` every piece of an upload is read by the event loop's thread and handed to
the restore's thread (a :class:`~._restores.Feed`): CPU and hand-offs that the standard library's
server, whose request thread read the socket itself, did not spend. Read on the restore's own
thread, a restore measured ~5% faster at 64 and 256 MiB on 2 vCPUs, with less CPU
(bench/ENDPOINT.md, ``bench/socket_body_bench.py``). ``serve()``'s httptools protocol
offers a large plain-HTTP body this way instead (the ASGI extension :data:`SOCKET_BODY`): once
the application asks for it, the loop stops reading the connection, and the restore's thread
reads what the loop had received, then the rest of the body from a duplicate of the socket. It
keeps the upload's bounds (``io_timeout`` per wait, the minimum rate) and its errors; at the end
of the body, or when the restore stops reading, the connection goes back to the loop.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ._restores import UploadBrokenError
from ._stream import allowed_wait, too_slow
from .archive import CHUNK

__all__ = ["SOCKET_BODY", "SocketBody", "socket_body"]

#: The ASGI extension (``scope["extensions"]``) a server offers a body under: ``{"attach": f}``,
#: where ``f(body)`` (on the loop) calls ``body.connect(...)`` with the connection's socket.
SOCKET_BODY = "raft_snapshot.socket_body"


def socket_body(scope: Any, length: int, io_timeout: float) -> SocketBody | None:
    """The request's body as a :class:`SocketBody` if its server offers it; else ``None`` (read
    it through ``receive()``)."""
    offer = (scope.get("extensions") or {}).get(SOCKET_BODY)
    return None if offer is None else SocketBody(length, io_timeout, offer["attach"])


class SocketBody:
    """The body as a blocking stream for the restore's thread (``read``, ``abandon``), which
    never reads past ``length`` bytes; the request's side calls :meth:`start` and, if it is
    cancelled, :meth:`cancel`. Created before the restore's thread, and inert until started: a
    request refused in between (a restore ID taken) leaves the connection untouched."""

    def __init__(self, length: int, io_timeout: float,
                 attach: Callable[[SocketBody], None]) -> None:
        self.length = length
        self.io_timeout = io_timeout
        self._attach = attach
        self._ready = threading.Event()  # connected (or failed): the restore may read
        self._lock = threading.Lock()  # the socket's close against a cancel's shutdown
        self._first = b""  # what the loop had received before the restore took over
        self._sock: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._left = 0  # of the body, bytes still in the socket
        self._from_socket = 0  # bytes read from the socket: the loop skips them
        self._hand_back: Callable[[int], None] | None = None
        self._done = 0
        self._started = 0.0
        self._error: UploadBrokenError | None = None
        self._abandoned = False  # the reader is done: a connection handed over goes back at once

    # --- the request's side (the event loop's thread) -------------------------------------------

    def start(self) -> None:
        """Take the connection over (the server then sends ``100 Continue`` if it is expected)."""
        self._started = time.monotonic()
        try:
            self._attach(self)
        except OSError as exc:  # the connection went away before its body was asked for
            self._fail(self._broken(str(exc)))
        except BaseException:  # a bug: the restore must not wait for a body that never comes
            self._fail(self._broken("the server failed"))
            raise

    def connect(self, first: bytes, sock: socket.socket, left: int,
                hand_back: Callable[[int], None]) -> None:
        """Called by the server: the body is ``first``, then ``left`` bytes of ``sock`` (a
        duplicate, non-blocking as the loop keeps it); ``hand_back(n)`` returns the connection
        to the loop once ``n`` bytes of it were read here."""
        with self._lock:
            if self._abandoned:  # the restore failed before it read a byte (its temp file)
                sock.close()
                hand_back(0)
                return
            selector = selectors.DefaultSelector()  # poll or epoll: descriptors may pass 1024
            selector.register(sock, selectors.EVENT_READ)
            self._first, self._sock, self._selector = first, sock, selector
            self._left, self._hand_back = left, hand_back
            self._ready.set()

    def cancel(self) -> None:
        """The request ends before its body did (the server stops): the restore must not wait."""
        self._fail(UploadBrokenError(f"the request ended after {self._done} of {self.length} "
                                     "bytes"))

    def _fail(self, error: UploadBrokenError) -> None:
        with self._lock:
            if self._error is None:
                self._error = error
            if self._sock is not None:  # wakes a reader waiting on it: it reads an end of file
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RD)
            self._ready.set()

    # --- the restore's side ---------------------------------------------------------------------

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes, as a raw stream reads: as many as have arrived, waiting only
        while none has; ``b""`` at the end."""
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        self._ready.wait()
        if self._error is not None:
            raise self._error
        if size == 0 or self._done >= self.length:
            return b""
        if self._first:
            piece, self._first = self._first[:size], self._first[size:]
        else:
            piece = self._receive(min(size, self._left))
        self._done += len(piece)
        if self._done >= self.length:
            self.abandon()  # the whole body is in: the loop may read what follows it
        return piece

    def _receive(self, size: int) -> bytes:
        assert self._sock is not None and self._selector is not None
        while True:
            try:
                data = self._sock.recv(size)
            except BlockingIOError:  # nothing yet: wait as long as the upload's bounds allow
                wait = allowed_wait(self._started, self._done, self.io_timeout)
                if not self._selector.select(wait):
                    raise too_slow(self._started, self._done, self.length,
                                   self.io_timeout) from None
                continue
            except OSError as exc:  # reset
                raise self._broken(f"the client disconnected ({exc})") from exc
            if not data:
                raise self._error or self._broken("the client closed the connection")
            self._left -= len(data)
            self._from_socket += len(data)
            return data

    def _broken(self, why: str) -> UploadBrokenError:
        return UploadBrokenError(f"the upload broke off after {self._done} of {self.length} "
                                 f"bytes: {why}")

    def abandon(self) -> None:
        """The reader is done, whatever is left: the connection goes back to the loop, which
        drains or reads what follows as it does for a body read through ``receive()``."""
        with self._lock:
            self._abandoned = True
            sock, self._sock = self._sock, None
            hand_back, self._hand_back = self._hand_back, None
            if sock is None:
                return
            if self._selector is not None:
                self._selector.close()
            sock.close()  # the duplicate only: the loop's own descriptor stays open
        if hand_back is not None:
            hand_back(self._from_socket)
