"""The endpoint's request handling: routing, the token, GET (take and stream), PUT (verify, then
restore), and the one mapping of the core's errors to HTTP statuses (:func:`status_for`)."""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import http.server
import json
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from . import __version__
from ._protocol import PATH, content_length
from ._upload import Body, UploadBrokenError
from .archive import CHUNK
from .errors import (
    ArchiveError,
    BackendNotFoundError,
    NotLeaderError,
    RaftSnapshotError,
    SnapshotTimeoutError,
    StateRejectedError,
)
from .manager import PluginManager
from .operations import restore, take
from .seal import SealKey, VerifyKey

log = logging.getLogger("raft_snapshot_plugin.endpoint")

_DRAIN_SECONDS = 2.0
#: A client has this long to send its request line and headers, however it trickles them.
HEADER_SECONDS = 10.0

#: The one mapping of what the core raises to what the endpoint answers. A refusal of the upload
#: (a bad archive, bytes the adapter will not load) is the client's 400; not the leader, or out
#: of time, is 503 (ask again, elsewhere or later); anything else is the server's 500.
_STATUSES: tuple[tuple[type[BaseException], HTTPStatus], ...] = (
    (ArchiveError, HTTPStatus.BAD_REQUEST),
    (StateRejectedError, HTTPStatus.BAD_REQUEST),
    (NotLeaderError, HTTPStatus.SERVICE_UNAVAILABLE),
    (SnapshotTimeoutError, HTTPStatus.SERVICE_UNAVAILABLE),
)


def status_for(exc: RaftSnapshotError) -> HTTPStatus:
    """The HTTP status the endpoint answers ``exc`` with."""
    return next((status for kind, status in _STATUSES if isinstance(exc, kind)),
                HTTPStatus.INTERNAL_SERVER_ERROR)


@dataclasses.dataclass(frozen=True)
class Config:
    node: object
    token: bytes
    backend: str
    manager: PluginManager
    max_upload_bytes: int
    max_state_bytes: int | None
    timeout: float | None
    io_timeout: float
    seal_key: SealKey | None = None
    verify_key: VerifyKey | None = None
    max_connections: int = 1024


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's listen backlog is 5: a burst of clients would wait on SYN retries (seconds)
    # before the accept loop, which hands each its own thread at once, even saw them
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        config: Config,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.config = config
        self.ssl_context = ssl_context
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        if self.ssl_context is not None:
            # The handshake happens on the request's own thread (see _Handler.handle), so a slow
            # or hostile client never stalls the accept loop.
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.error("request from %s failed", client_address, exc_info=True)

    # At most max_connections at once, each on its own thread: beyond that a connection is
    # closed at once rather than given a thread.
    _active = 0
    _active_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._active_lock:
            full = self._active >= self.config.max_connections
            if not full:
                self._active += 1
        if full:
            log.warning("refused a connection from %s: %d connections are open already",
                        client_address[0], self.config.max_connections)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._active_lock:
                self._active -= 1


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"
    server_version = f"raft-snapshot/{__version__}"

    def setup(self) -> None:
        self._unread = 0
        self._expect_continue = False
        super().setup()
        self.connection.settimeout(self.server.config.io_timeout)
        # However slowly the request line and headers trickle in, they have HEADER_SECONDS.
        self._header_deadline = threading.Timer(HEADER_SECONDS, self._too_slow)
        self._header_deadline.daemon = True
        self._header_deadline.start()

    def _too_slow(self) -> None:
        log.info("dropped %s: no complete request in %.0f s", self.client_address[0],
                 HEADER_SECONDS)
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        self._header_deadline.cancel()
        super().finish()

    def handle_expect_100(self) -> bool:
        """Hold ``100 Continue`` until the token and the size are checked (see :meth:`_put`)."""
        self._expect_continue = True
        return True

    def handle(self) -> None:
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except (OSError, ValueError) as exc:
                log.info("TLS handshake with %s failed: %s", self.client_address[0], exc)
                return
        super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    # --- routing --------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_GET  # noqa: N815

    def _dispatch(self) -> None:
        self._header_deadline.cancel()
        # a client that waits for 100 Continue sends no body unless asked: nothing to drain
        self._unread = 0 if self._expect_continue else (
            content_length(self.headers.get("Content-Length")) or 0)
        if "Transfer-Encoding" in self.headers:  # refused (411), but drained like any body
            self._unread = CHUNK
        try:
            url = urllib.parse.urlsplit(self.path)
            if url.path != PATH:
                self._error(HTTPStatus.NOT_FOUND, f"no such endpoint {url.path!r}; the endpoint is {PATH}")
            elif self._authorized():
                if self.command == "GET":
                    self._get(url.query)
                elif self.command == "PUT":
                    self._put(url.query)
                else:
                    self._error(HTTPStatus.METHOD_NOT_ALLOWED,
                                f"{self.command} is not allowed on {PATH}; use GET or PUT",
                                headers={"Allow": "GET, PUT"})
        except Exception as exc:  # a bug: answer, log, keep serving
            log.exception("%s %s failed", self.command, self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(exc).__name__}")
        finally:
            self._drain()

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization")
        challenge = {"WWW-Authenticate": 'Bearer realm="raft-snapshot"'}
        if header is None:
            self._error(HTTPStatus.UNAUTHORIZED, "missing token: send Authorization: Bearer <token>",
                        headers=challenge)
            return False
        scheme, _, given = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            self._error(HTTPStatus.UNAUTHORIZED, "malformed Authorization header: want Bearer <token>",
                        headers=challenge)
            return False
        # The header arrives decoded as Latin-1: encoding it back gives the bytes that were sent.
        if not hmac.compare_digest(given.strip().encode("latin-1", "replace"), self.server.config.token):
            self._error(HTTPStatus.FORBIDDEN, "wrong token")
            return False
        return True

    # --- GET: take and stream -------------------------------------------------------------------

    def _get(self, query: str) -> None:
        config = self.server.config
        allow_stale = flag(urllib.parse.parse_qs(query, keep_blank_values=True), "stale")
        try:
            snap = take(config.node, backend=config.backend, timeout=config.timeout,
                        seal_key=config.seal_key, leader_only=not allow_stale,
                        wait_for_restore=False, manager=config.manager)
        except RaftSnapshotError as exc:
            self._failed(exc)
            return
        except OSError as exc:  # the temp folder: full, missing, not writable
            self._local_io_failed(exc)
            return
        with snap:
            total = snap.size
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(total))
            self.send_header("X-Raft-Index", str(snap.index))
            self.send_header("X-Raft-Stale",  # unknown: the adapter cannot tell (no is_leader)
                             {True: "true", False: "false", None: "unknown"}[snap.stale])
            self._close_after()
            sent = 0
            try:
                self.end_headers()
                snap.seek(0)
                while chunk := snap.read(CHUNK):
                    self.wfile.write(chunk)
                    sent += len(chunk)
            except OSError as exc:
                log.warning("client %s went away after %d of %d bytes of snapshot %s had been sent: %s",
                            self.client_address[0], sent, total, snap.meta.id, exc)

    # --- PUT: verify, then restore --------------------------------------------------------------

    def _put(self, query_string: str) -> None:
        config = self.server.config
        query = urllib.parse.parse_qs(query_string, keep_blank_values=True)
        if "Transfer-Encoding" in self.headers or "Content-Length" not in self.headers:
            self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required (no chunked uploads)")
            return
        length = content_length(self.headers.get("Content-Length"))
        if length is None:
            self._error(HTTPStatus.BAD_REQUEST, "Content-Length is not a byte count")
            return
        if length > config.max_upload_bytes:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"the upload of {length} bytes exceeds this endpoint's limit of "
                        f"{config.max_upload_bytes} bytes")
            return
        if self._expect_continue:  # the checks passed: now ask for the body
            self.send_response_only(HTTPStatus.CONTINUE)
            self.end_headers()
        body = Body(self.rfile, length)
        try:
            meta = restore(config.node, body, backend=config.backend, timeout=config.timeout,
                           verify_key=config.verify_key,
                           allow_incompatible=flag(query, "allow_incompatible"),
                           max_state_bytes=config.max_state_bytes,
                           manager=config.manager)
        except UploadBrokenError as exc:
            log.warning("upload from %s not applied: %s", self.client_address[0], exc)
            self._error(HTTPStatus.BAD_REQUEST, f"{exc}; nothing was applied")
            return
        except RaftSnapshotError as exc:
            self._failed(exc)
            return
        except OSError as exc:
            self._local_io_failed(exc)
            return
        finally:
            self._unread = body.remaining
        log.info("restored snapshot %s (index %d) uploaded by %s", meta.id, meta.index,
                 self.client_address[0])
        self._json(HTTPStatus.OK, meta.to_dict())

    # --- answers --------------------------------------------------------------------------------

    def _failed(self, exc: RaftSnapshotError) -> None:
        status = status_for(exc)
        if isinstance(exc, NotLeaderError):
            self._error(status, f"{exc}; ask the leader, or add ?stale to snapshot this node's "
                                "possibly stale state", extra={"leader": exc.leader})
            return
        if status == HTTPStatus.INTERNAL_SERVER_ERROR or isinstance(exc, SnapshotTimeoutError):
            log.warning("%s %s failed: %s", self.command, PATH, exc,
                        exc_info=not isinstance(exc, (SnapshotTimeoutError, BackendNotFoundError)))
        message = str(exc)
        if self.command == "PUT" and status == HTTPStatus.BAD_REQUEST:
            message += "; nothing was applied"
        self._error(status, message)

    def _local_io_failed(self, exc: OSError) -> None:
        log.error("%s %s failed on this server: %s", self.command, PATH, exc)
        suffix = "; nothing was applied" if self.command == "PUT" else ""
        self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"I/O error on the server: {exc}{suffix}")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The base class's answer to a malformed request: JSON, as every other error."""
        self._error(HTTPStatus(code), message or HTTPStatus(code).phrase)

    def _error(
        self,
        status: HTTPStatus,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self._json(status, {"error": message, **(extra or {})}, headers=headers)

    def _json(
        self, status: HTTPStatus, body: Mapping[str, Any], *, headers: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode("utf-8") + b"\n"
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self._close_after()
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except OSError as exc:
            log.info("could not answer %s %s to %s: %s", int(status), status.phrase,
                     self.client_address[0], exc)

    def _close_after(self) -> None:
        self.send_header("Connection", "close")
        self.close_connection = True

    def _drain(self) -> None:
        """Read (and drop) what is left of a refused body for a moment before the socket closes.

        Closing a socket with unread input makes the kernel reset the connection, and a client
        still sending would then lose the answer it has not read yet.
        """
        if self._unread <= 0:
            return
        deadline = time.monotonic() + _DRAIN_SECONDS
        try:
            self.connection.settimeout(_DRAIN_SECONDS)
            while self._unread > 0 and time.monotonic() < deadline:
                data = self.rfile.read1(min(self._unread, CHUNK))
                if not data:
                    break
                self._unread -= len(data)
        except (OSError, ValueError):
            pass


def flag(query: Mapping[str, list[str]], name: str) -> bool:
    values = query.get(name)
    if values is None:
        return False
    return values[-1].lower() not in ("false", "0", "no")
