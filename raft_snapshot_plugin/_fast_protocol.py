"""uvicorn's httptools protocol with the endpoint's bounds, and a large upload's body past it.

A body of ``PASSTHROUGH_BYTES`` or more skips the parser (``_start_passthrough``); on plain HTTP
its restore's thread may also read it from the socket itself (``_socket_body``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT

try:  # the server extra's faster parts; h11 and asyncio's own loop otherwise
    import httptools  # type: ignore[import-not-found,unused-ignore]
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover  (httptools is not installed)
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

from ._http_bounds import (
    DRAIN_SECONDS,
    PASSTHROUGH_BYTES,
    TOKEN,
    BoundedH11Protocol,
    answer_and_close,
    arm_header_deadline,
    cancel_header_deadline,
    drop_slow,
    head_refusal,
    plain_length,
)
from ._socket_body import SOCKET_BODY, SocketBody

__all__ = ["FastProtocol", "HttpToolsProtocol"]


class FastProtocol(HttpToolsProtocol if HttpToolsProtocol is not None else object):  # type: ignore[misc,unused-ignore]
    """uvicorn's httptools protocol with the same bounds as :class:`_Protocol`.

    The body goes to the application as the parser cuts it, without the copies into and out of
    uvicorn's body buffer when the application keeps up (the restore's upload: see
    bench/ENDPOINT.md).
    """

    _deadline: asyncio.TimerHandle | None = None
    _in_head = True  # between requests, or reading a request's line and headers
    _head = b""  # what arrived of the request's head, checked before the parser sees it
    _raw_length = 0  # a large body's Content-Length, until its passthrough starts
    _parsed_body = 0  # of the current body, the bytes the parser handed on
    _raw_left = 0  # of a body past the parser, the bytes still to come
    _passed = False  # a body went past the parser: nothing more is read on this connection
    _socket_body: SocketBody | None = None  # a body its restore's thread reads from the socket

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        arm_header_deadline(self)

    def connection_lost(self, exc: Exception | None) -> None:
        cancel_header_deadline(self)
        if self._socket_body is not None:  # the loop closed it (the server stops): no more body
            self._socket_body.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._raw_left or self._passed:
            self._pass_body(data)
            return
        if self._in_head:
            arm_header_deadline(self)
            self._head += data
            refusal = head_refusal(self._head)
            if refusal is not None:
                cancel_header_deadline(self)
                answer_and_close(self, *refusal)
                return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._refuse(exc)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()
        else:
            if self._raw_length:
                self._start_passthrough()

    # --- a large body past the parser ---------------------------------------------------------
    # The parser hands the body on as a copy of each piece; a large upload's pieces go to the
    # application as the loop read them instead (one copy and one allocation less per byte: see
    # bench/ENDPOINT.md). The parser then never sees the body, so the connection closes after the
    # answer, as a client uploading a snapshot expects anyway.

    def _start_passthrough(self) -> None:
        left, self._raw_length = self._raw_length - self._parsed_body, 0
        cycle = self.cycle
        if left > 0 and cycle is not None and not cycle.response_complete and cycle.more_body:
            self._raw_left = left

    def _pass_body(self, data: bytes) -> None:
        if self._raw_left <= 0:  # after the body: never parsed (the connection closes after the answer)
            self.flow.pause_reading()
            return
        piece = data if len(data) <= self._raw_left else data[: self._raw_left]
        self._raw_left -= len(piece)
        self.on_body(piece)
        if self._raw_left == 0:
            # closed after the answer, once the body is in: a refusal answered before then
            # still drains the body first (see on_response_complete), as the parser's path does
            self._passed = True
            self.cycle.keep_alive = False
            self.on_message_complete()
            if len(piece) < len(data):
                self.flow.pause_reading()

    # --- a large body read by its restore's thread (see _socket_body) --------------------------

    def _attach(self, body: SocketBody) -> None:
        """Hand ``body`` what the loop received of the request's body and a duplicate of the
        socket for the rest; the loop reads nothing more until it is handed back."""
        cycle, raw = self.cycle, self.transport.get_extra_info("socket")
        if (cycle is None or cycle.disconnected or cycle.response_complete or raw is None
                or self.transport.is_closing() or self._socket_body is not None):
            raise ConnectionError("the client disconnected")
        if cycle.waiting_for_100_continue:  # what receive() would send: the client waits for it
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            cycle.waiting_for_100_continue = False
        self.flow.pause_reading()
        first, cycle.body = bytes(cycle.body), bytearray()
        # a duplicate, so that the restore's close never closes the loop's descriptor; its flags
        # are the loop's (non-blocking), and stay so
        sock = socket.fromfd(raw.fileno(), raw.family, raw.type)
        sock.setblocking(False)
        self._socket_body = body
        body.connect(first, sock, self._raw_left, self._hand_back)

    def _hand_back(self, read: int) -> None:
        """(The restore's thread) ``read`` bytes of the socket were the body's: the loop goes
        on from there."""
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to go on with
            self.loop.call_soon_threadsafe(self._socket_body_done, read)

    def _socket_body_done(self, read: int) -> None:
        self._socket_body = None
        self._raw_left -= read
        if self.transport.is_closing():
            return
        if self._raw_left <= 0 and not self._passed:  # the body's end, as _pass_body sees it
            self._passed = True
            self.cycle.keep_alive = False
            self.on_message_complete()
        # reading again: what follows the body (or a refused body's rest, drained) goes through
        # _pass_body, and a client's close is seen
        self.flow.resume_reading()

    def _refuse(self, exc: Exception) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            # bytes after a body (the next request, or garbage): the answer under way goes
            # first, then the connection closes
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        method = self._head.split(b" ", 1)[0]
        if isinstance(exc, httptools.HttpParserInvalidMethodError) and TOKEN.fullmatch(method):
            # a method name llhttp does not know: 501, as the application answers the others
            answer_and_close(self, 501, f"unsupported method {method.decode('ascii')!r}")
            return
        self.send_400_response(str(exc) or "invalid HTTP request")

    def on_headers_complete(self) -> None:
        self._in_head, self._head = False, b""
        cancel_header_deadline(self)
        super().on_headers_complete()
        length = plain_length(self.headers)
        self._parsed_body = 0
        if length is not None and length >= PASSTHROUGH_BYTES and not self.pipeline:
            self._raw_length = length  # past the parser once this feed_data() returns
            # not on TLS (the socket's bytes are not the body's), nor on Windows (a proactor
            # loop's read already under way is not stopped by pausing the transport)
            if self.scheme == "http" and sys.platform != "win32":
                self.scope["extensions"] = {
                    **self.scope.get("extensions", {}), SOCKET_BODY: {"attach": self._attach}}

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        self._parsed_body += len(body)
        if cycle.response_complete or (self.parser.should_upgrade() and self._should_upgrade()):
            return
        # handed over as it is when nothing waits before it: receive() passes bytes on uncopied
        cycle.body = body if not cycle.body else bytes(cycle.body) + body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        self._in_head = True
        super().on_message_complete()

    eof_received = BoundedH11Protocol.eof_received

    def on_response_complete(self) -> None:
        unread = self.cycle is not None and self.cycle.more_body
        super().on_response_complete()
        if unread and not self.transport.is_closing():
            self.loop.call_later(DRAIN_SECONDS, self.transport.close)

    def send_400_response(self, msg: str) -> None:
        answer_and_close(self, 400, f"malformed request: {msg}")

    def _too_slow(self) -> None:
        self._deadline = None
        if self._in_head and not self.transport.is_closing():
            drop_slow(self)
