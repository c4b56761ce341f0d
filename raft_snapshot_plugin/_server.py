"""``serve()``'s server: the endpoint's ASGI application on uvicorn, in a thread of its own.

What the standard library's server did by hand maps onto uvicorn's options, and onto a small
subclass of its h11 protocol where uvicorn has no option:

========================================  =================================================
the bound                                 where it lives
========================================  =================================================
connections served at once                uvicorn ``limit_concurrency`` (503 beyond it)
idle time between requests                uvicorn ``timeout_keep_alive``
request line and headers: 64 KiB          uvicorn ``h11_max_incomplete_event_size``; the
                                          protocol answers 431 (JSON) itself
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
from uvicorn.protocols.http.h11_impl import H11Protocol

from ._protocol import content_length, printable

__all__ = ["DRAIN_SECONDS", "HEADER_SECONDS", "MAX_HEAD_BYTES", "SnapshotServer", "start"]

log = logging.getLogger("raft_snapshot_plugin.endpoint")

#: A client has this long to send its request line and headers, however it trickles them.
HEADER_SECONDS = 10.0
#: The longest request line and headers accepted.
MAX_HEAD_BYTES = 64 << 10
#: A body left unread (a refused upload) is read and dropped this long before the connection
#: closes: closing a socket with unread input resets it, and the client would lose the answer.
DRAIN_SECONDS = 2.0
#: Seconds an idle connection stays open between two requests.
KEEP_ALIVE_SECONDS = 5.0

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:([^\r\n]*)", re.IGNORECASE)


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus the bounds it lacks (see the module's table)."""

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._arm_header_deadline()
            head = self.conn.trailing_data[0] + data
            refusal = _head_refusal(bytes(head))
            if refusal is not None:
                self._cancel_header_deadline()
                self._answer_and_close(*refusal)
                return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_header_deadline()

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
        self._answer_and_close(400, f"malformed request: {msg}")

    def _arm_header_deadline(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(HEADER_SECONDS, self._too_slow)

    def _cancel_header_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info("dropped %s: no complete request in %.0f s",
                     self.client[0] if self.client else "?", HEADER_SECONDS)
            self.transport.close()

    def _answer_and_close(self, status: int, message: str) -> None:
        log.info("%s", printable(f"{self.client[0] if self.client else '?'} refused {status}: "
                                 f"{message}"))
        body = json.dumps({"error": message}).encode() + b"\n"
        phrase = {400: "Bad Request", 431: "Request Header Fields Too Large"}.get(status, "Error")
        head = (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        self.transport.write(head + body)
        self.transport.close()


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

    def __init__(self, server: uvicorn.Server, sock: socket.socket, scheme: str) -> None:
        self._server = server
        host, port = sock.getsockname()[:2]
        self.host: str = str(host)
        self.port: int = int(port)
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"{scheme}://{shown}:{self.port}"
        self._sock = sock
        self._closed = False
        self._failed: BaseException | None = None
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
            asyncio.run(self._server.serve(sockets=[self._sock]))
        except BaseException as exc:  # reported by the constructor, or logged once serving
            self._failed = exc
            if self._server.started:
                log.error("the endpoint on %s stopped", self.url, exc_info=exc)

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
    client_cafile: str | os.PathLike[str] | None,
) -> SnapshotServer:
    """Bind ``host:port`` (errors raised here, at once) and serve ``app`` there on uvicorn."""
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
        app, http=_Protocol, lifespan="off", log_config=None, access_log=False,
        limit_concurrency=max_connections, timeout_keep_alive=int(KEEP_ALIVE_SECONDS),
        timeout_graceful_shutdown=3, h11_max_incomplete_event_size=MAX_HEAD_BYTES + 1,
        ssl_certfile=os.fspath(certfile) if certfile is not None else None,
        ssl_keyfile=os.fspath(keyfile) if keyfile is not None else None,
        ssl_ca_certs=os.fspath(client_cafile) if client_cafile is not None else None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if client_cafile is not None else ssl.CERT_NONE,
        server_header=False,
    )
    try:
        return SnapshotServer(uvicorn.Server(config), sock, "https" if tls else "http")
    except BaseException:
        sock.close()
        raise
