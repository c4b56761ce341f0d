"""``serve()``'s server: the endpoint's ASGI application on uvicorn, in a thread of its own.

With the ``server`` extra's httptools and uvloop (see bench/ENDPOINT.md: an upload's bytes cost
less CPU through them), uvicorn's httptools protocol on uvloop; without them, its h11 protocol on
asyncio's loop. What the standard library's server did by hand maps onto uvicorn's options, and
onto a small subclass of either protocol where uvicorn has no option:

========================================  =================================================
the bound                                 where it lives
========================================  =================================================
connections served at once                uvicorn ``limit_concurrency`` (503 beyond it)
idle time between requests                uvicorn ``timeout_keep_alive``
request line and headers: 64 KiB          the protocol answers 431 (JSON) itself (and h11's
                                          ``h11_max_incomplete_event_size``)
request line and headers within 10 s      the protocol (:data:`HEADER_SECONDS`)
Content-Length ASCII digits only          the protocol (400, JSON) and the application
a refused body drained for 2 s at most    the protocol (:data:`DRAIN_SECONDS`)
a body that stops, or trickles            the application (``io_timeout``, 16 KiB/s)
an answer the client stops reading        the application (``io_timeout`` per chunk)
TLS, and client certificates (mTLS)       uvicorn ``ssl_certfile``, ``ssl_keyfile``,
                                          ``ssl_ca_certs``, ``ssl_cert_reqs``
========================================  =================================================
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import ssl
import threading
from types import TracebackType
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # the server extra's faster parts; h11 and asyncio's own loop otherwise
    import httptools  # type: ignore[import-not-found,unused-ignore]
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover  (httptools is not installed)
    HttpToolsProtocol = None  # type: ignore[assignment,misc]
try:
    import uvloop  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover  (Windows, PyPy: uvloop's markers leave it out)
    uvloop = None  # type: ignore[assignment,unused-ignore]

from ._protocol import HTTP_IMPLEMENTATIONS, content_length, printable

__all__ = ["DRAIN_SECONDS", "HEADER_SECONDS", "MAX_HEAD_BYTES", "SnapshotServer", "start"]

log = logging.getLogger("raft_snapshot_plugin.endpoint")

#: A client has this long to send its request line and headers, however it trickles them.
HEADER_SECONDS = 10.0
#: The longest request line and headers accepted.
MAX_HEAD_BYTES = 64 << 10
#: A body left unread (a refused upload) is read and dropped this long before the connection
#: closes: closing a socket with unread input resets it, and the client would lose the answer.
DRAIN_SECONDS = 2.0
#: A body at least this long goes to the application past the httptools parser (see
#: ``_FastProtocol``): an upload of a snapshot, not a small request.
PASSTHROUGH_BYTES = 1 << 20
#: Seconds an idle connection stays open between two requests.
KEEP_ALIVE_SECONDS = 5.0

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:([^\r\n]*)", re.IGNORECASE)


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus the bounds it lacks (see the module's table)."""

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _arm_header_deadline(self)

    def connection_lost(self, exc: Exception | None) -> None:
        _cancel_header_deadline(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            _arm_header_deadline(self)
            head = self.conn.trailing_data[0] + data
            refusal = _head_refusal(bytes(head))
            if refusal is not None:
                _cancel_header_deadline(self)
                _answer_and_close(self, *refusal)
                return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            _cancel_header_deadline(self)

    def eof_received(self) -> bool | None:  # type: ignore[override]  # True keeps it open
        """A client that half-closes mid-upload still gets its answer (a 400 for the cut body)."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.more_body:
            cycle.more_body = False
            cycle.message_event.set()
            return True
        return None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self.loop.call_later(DRAIN_SECONDS, self.transport.close)

    def send_400_response(self, msg: str) -> None:
        _answer_and_close(self, 400, f"malformed request: {msg}")

    def _too_slow(self) -> None:
        self._deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            _drop_slow(self)


# --- what both protocols share -----------------------------------------------------------------

def _arm_header_deadline(protocol: Any) -> None:
    if protocol._deadline is None:
        protocol._deadline = protocol.loop.call_later(HEADER_SECONDS, protocol._too_slow)


def _cancel_header_deadline(protocol: Any) -> None:
    if protocol._deadline is not None:
        protocol._deadline.cancel()
        protocol._deadline = None


def _drop_slow(protocol: Any) -> None:
    log.info("dropped %s: no complete request in %.0f s",
             protocol.client[0] if protocol.client else "?", HEADER_SECONDS)
    protocol.transport.close()


def _answer_and_close(protocol: Any, status: int, message: str) -> None:
    log.info("%s", printable(f"{protocol.client[0] if protocol.client else '?'} refused {status}: "
                             f"{message}"))
    body = json.dumps({"error": message}).encode() + b"\n"
    phrase = {400: "Bad Request", 431: "Request Header Fields Too Large"}.get(status, "Error")
    head = (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    protocol.transport.write(head + body)
    protocol.transport.close()


class _FastProtocol(HttpToolsProtocol if HttpToolsProtocol is not None else object):  # type: ignore[misc,unused-ignore]
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

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        _arm_header_deadline(self)

    def connection_lost(self, exc: Exception | None) -> None:
        _cancel_header_deadline(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._raw_left or self._passed:
            self._pass_body(data)
            return
        if self._in_head:
            _arm_header_deadline(self)
            self._head += data
            refusal = _head_refusal(self._head)
            if refusal is not None:
                _cancel_header_deadline(self)
                _answer_and_close(self, *refusal)
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

    def _refuse(self, exc: Exception) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            # bytes after a body (the next request, or garbage): the answer under way goes
            # first, then the connection closes
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        method = self._head.split(b" ", 1)[0]
        if isinstance(exc, httptools.HttpParserInvalidMethodError) and _TOKEN.fullmatch(method):
            # a method name llhttp does not know: 501, as the application answers the others
            _answer_and_close(self, 501, f"unsupported method {method.decode('ascii')!r}")
            return
        self.send_400_response(str(exc) or "invalid HTTP request")

    def on_headers_complete(self) -> None:
        self._in_head, self._head = False, b""
        _cancel_header_deadline(self)
        super().on_headers_complete()
        length = _plain_length(self.headers)
        self._parsed_body = 0
        if length is not None and length >= PASSTHROUGH_BYTES and not self.pipeline:
            self._raw_length = length  # past the parser once this feed_data() returns

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

    eof_received = _Protocol.eof_received

    def on_response_complete(self) -> None:
        unread = self.cycle is not None and self.cycle.more_body
        super().on_response_complete()
        if unread and not self.transport.is_closing():
            self.loop.call_later(DRAIN_SECONDS, self.transport.close)

    def send_400_response(self, msg: str) -> None:
        _answer_and_close(self, 400, f"malformed request: {msg}")

    def _too_slow(self) -> None:
        self._deadline = None
        if self._in_head and not self.transport.is_closing():
            _drop_slow(self)


def _plain_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """A request's one valid Content-Length, when no Transfer-Encoding comes with it."""
    lengths = [value for name, value in headers if name == b"content-length"]
    if len(lengths) != 1 or any(name == b"transfer-encoding" for name, _ in headers):
        return None
    return content_length(lengths[0].decode("latin-1"))


def _head_refusal(head: bytes) -> tuple[int, str] | None:
    """A request head the endpoint refuses before h11 parses it: too long, or a Content-Length
    that is not a byte count (h11 would refuse it too, with a plain-text 400)."""
    end = head.find(b"\r\n\r\n")
    if (end if end >= 0 else len(head)) > MAX_HEAD_BYTES:
        return 431, f"the request line and headers exceed {MAX_HEAD_BYTES} bytes"
    if end < 0:
        return None
    for value in _CONTENT_LENGTH.findall(head[: end + 2]):
        if content_length(value.decode("latin-1")) is None:
            return 400, "Content-Length is not a byte count"
    return None


class SnapshotServer:
    """A running endpoint: ``.url`` to give clients, ``.close()`` (or ``with``) to stop it."""

    def __init__(self, server: uvicorn.Server, sock: socket.socket, scheme: str, *,
                 fast_loop: bool = True) -> None:
        self._server = server
        self._fast_loop = fast_loop and uvloop is not None
        host, port = sock.getsockname()[:2]
        self.host: str = str(host)
        self.port: int = int(port)
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"{scheme}://{shown}:{self.port}"
        self._sock = sock
        self._closed = False
        self._failed: BaseException | None = None
        #: the event loop serving, once started (uvloop's or asyncio's: see ``serve(http=...)``)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name=f"raft-snapshot-http-{self.port}",
                                        daemon=True)
        self._thread.start()
        while not server.started and self._thread.is_alive():
            self._thread.join(0.01)
        if not server.started:
            sock.close()
            raise OSError(f"the endpoint on {self.url} did not start") from self._failed

    def _run(self) -> None:
        try:
            serving = self._serve()
            if self._fast_loop:  # its transports move an upload's bytes with less CPU
                uvloop.run(serving)
            else:
                asyncio.run(serving)  # type: ignore[unreachable,unused-ignore]
        except BaseException as exc:  # reported by the constructor, or logged once serving
            self._failed = exc
            if self._server.started:
                log.error("the endpoint on %s stopped", self.url, exc_info=exc)

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self._server.serve(sockets=[self._sock])

    def close(self) -> None:
        """Stop accepting requests and release the port; safe to call twice.

        Requests still running get a few seconds; restores still running go on, on their own
        threads, and their outcome is lost with the server.
        """
        if self._closed:
            return
        self._closed = True
        self._server.should_exit = True
        self._thread.join(10.0)
        self._sock.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> SnapshotServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SnapshotServer {self.url}{' closed' if self._closed else ''}>"


def start(
    app: Any, *, host: str, port: int, max_connections: int,
    certfile: str | os.PathLike[str] | None, keyfile: str | os.PathLike[str] | None,
    client_cafile: str | os.PathLike[str] | None, http: str = "auto",
) -> SnapshotServer:
    """Bind ``host:port`` (errors raised here, at once) and serve ``app`` there on uvicorn.

    ``http="h11"`` serves on h11 and asyncio's own loop even when httptools and uvloop are
    installed: the fallback, chosen (tests run the hostile ones against both).
    """
    if http not in HTTP_IMPLEMENTATIONS:
        raise ValueError(f"http must be one of {', '.join(HTTP_IMPLEMENTATIONS)}, not {http!r}")
    fast = http == "auto" and HttpToolsProtocol is not None
    tls = certfile is not None
    if tls:  # load it here, so that a bad certificate or key raises from serve()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)  # type: ignore[arg-type]
        if client_cafile is not None:
            context.load_verify_locations(client_cafile)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # the listen backlog: a burst of clients must not wait on SYN retries before the loop sees them
    sock = socket.create_server((host, port), family=family, backlog=1024)
    # no uvicorn access log: the app logs each answer itself, with a refusal's reason
    config = uvicorn.Config(
        app, http=_FastProtocol if fast else _Protocol, lifespan="off",
        log_config=None, access_log=False,
        limit_concurrency=max_connections, timeout_keep_alive=int(KEEP_ALIVE_SECONDS),
        timeout_graceful_shutdown=3, h11_max_incomplete_event_size=MAX_HEAD_BYTES + 1,
        ssl_certfile=os.fspath(certfile) if certfile is not None else None,
        ssl_keyfile=os.fspath(keyfile) if keyfile is not None else None,
        ssl_ca_certs=os.fspath(client_cafile) if client_cafile is not None else None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if client_cafile is not None else ssl.CERT_NONE,
        server_header=False,
    )
    try:
        return SnapshotServer(uvicorn.Server(config), sock, "https" if tls else "http",
                              fast_loop=fast)
    except BaseException:
        sock.close()
        raise
