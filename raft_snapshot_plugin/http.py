"""The snapshot endpoint an application embeds, and the client the command line uses.

An application serves its node::

    from raft_snapshot_plugin.http import serve

    server = serve(node, token=os.environ["RAFT_SNAPSHOT_TOKEN"])   # 127.0.0.1, a free port
    print(server.url)                                               # usable as --addr
    ...
    server.close()

The protocol, after Consul's ``/v1/snapshot``:

``GET /v1/snapshot``
    Takes a fresh snapshot and streams the archive: ``200``, ``Content-Type:
    application/octet-stream``, ``Content-Length``, ``X-Raft-Index`` (the snapshot's index) and
    ``X-Raft-Stale`` (``true`` when the node was not the leader). On a follower the answer is
    ``503`` with ``{"error": ..., "leader": "<leader's Raft address or null>"}`` unless the query
    has ``stale`` (``?stale`` or ``?stale=true``).
``PUT /v1/snapshot``
    Restores the uploaded archive (``Content-Length`` required: ``411`` without it, ``413`` above
    ``max_upload_bytes``, refused before a byte of the body is read). The body streams into
    :func:`raft_snapshot_plugin.restore`, which reads and verifies all of it into a private temp
    file before the adapter sees anything: a damaged or cut-off upload is answered ``400`` and never
    applied. Success is ``200`` with the archive's meta.json object (Consul's field names).

Every request needs ``Authorization: Bearer <token>`` (compared in constant time): ``401`` without
it, ``403`` when wrong. Every error is JSON ``{"error": "..."}``; an unknown path is ``404``, another
method ``405``. Each connection carries one request and runs on its own thread; both directions
stream in 1 MiB chunks. A client that goes away mid-transfer is logged, its snapshot or partial
upload discarded, and the server keeps serving.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import http.client
import http.server
import json
import logging
import os
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from http import HTTPStatus
from types import TracebackType
from typing import IO, Any

from . import __version__
from ._files import remove_quietly
from .archive import CHUNK, Readable
from .errors import (
    ArchiveError,
    BackendNotFoundError,
    RaftSnapshotError,
    RemoteError,
    SnapshotTimeoutError,
)
from .manager import PluginManager, get_plugin_manager
from .meta import SnapshotMeta
from .seal import SealKey, VerifyKey
from .operations import restore, take
from .snapshot import verify

__all__ = [
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_TIMEOUT",
    "PATH",
    "Client",
    "Progress",
    "SnapshotServer",
    "serve",
]

log = logging.getLogger(__name__)

#: The endpoint's path.
PATH = "/v1/snapshot"
#: The largest upload ``serve`` accepts unless told otherwise: 1 GiB.
DEFAULT_MAX_UPLOAD_BYTES = 1 << 30
#: Seconds a network operation may wait (server: each read or write; client: the same, and the
#: server's take before the first byte arrives).
DEFAULT_TIMEOUT = 120.0

#: ``progress(done_bytes, total_bytes)``, called as a transfer advances (first with ``done == 0``).
Progress = Callable[[int, int], None]

_DRAIN_SECONDS = 2.0
_MAX_ERROR_BODY = 64 << 10


# ==================================================================================================
# The server
# ==================================================================================================

@dataclasses.dataclass(frozen=True)
class _Config:
    node: object
    token: bytes
    backend: str
    manager: PluginManager
    max_upload_bytes: int
    timeout: float | None
    io_timeout: float
    seal_key: SealKey | None = None
    verify_key: VerifyKey | None = None


class _UploadBrokenError(Exception):
    """The client stopped sending before ``Content-Length`` bytes arrived."""


class _Body:
    """The request body as a stream that never reads past ``Content-Length``."""

    def __init__(self, raw: Readable, length: int) -> None:
        self._raw = raw
        self.length = length
        self.remaining = length

    def read(self, size: int = -1, /) -> bytes:
        if self.remaining <= 0:
            return b""
        n = self.remaining if size is None or size < 0 else min(size, self.remaining)
        try:
            data = self._raw.read(n)
        except OSError as exc:  # reset, timeout, TLS failure
            raise _UploadBrokenError(
                f"the upload broke off after {self.length - self.remaining} of {self.length} "
                f"bytes: {exc}"
            ) from exc
        self.remaining -= len(data)
        if len(data) < n:
            raise _UploadBrokenError(
                f"the upload ended after {self.length - self.remaining} of {self.length} bytes"
            )
        return data


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        config: _Config,
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


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = f"raft-snapshot/{__version__}"

    def setup(self) -> None:
        self._unread = 0
        super().setup()
        self.connection.settimeout(self.server.config.io_timeout)

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
        self._unread = _content_length(self.headers.get("Content-Length")) or 0
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
        allow_stale = _flag(urllib.parse.parse_qs(query, keep_blank_values=True), "stale")
        try:
            if not allow_stale and not config.manager.is_leader(config.backend, config.node):
                self._not_leader()
                return
            snap = take(config.node, backend=config.backend, timeout=config.timeout,
                        seal_key=config.seal_key, manager=config.manager)
        except RaftSnapshotError as exc:
            self._failed(exc)
            return
        except OSError as exc:  # the temp folder: full, missing, not writable
            self._local_io_failed(exc)
            return
        with snap:
            if snap.stale and not allow_stale:  # leadership moved between the check and the take
                self._not_leader()
                return
            total = snap.size
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(total))
            self.send_header("X-Raft-Index", str(snap.index))
            self.send_header("X-Raft-Stale", "true" if snap.stale else "false")
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

    def _not_leader(self) -> None:
        config = self.server.config
        try:
            leader = config.manager.leader(config.backend, config.node)
        except RaftSnapshotError:
            log.warning("the adapter could not name the leader", exc_info=True)
            leader = None
        where = f"the leader is {leader}" if leader else "no leader is known"
        self._error(HTTPStatus.SERVICE_UNAVAILABLE,
                    f"this node is not the leader ({where}); ask the leader, or add ?stale to "
                    "snapshot this node's possibly stale state",
                    extra={"leader": leader})

    # --- PUT: verify, then restore --------------------------------------------------------------

    def _put(self, query_string: str) -> None:
        config = self.server.config
        query = urllib.parse.parse_qs(query_string, keep_blank_values=True)
        if "Transfer-Encoding" in self.headers or "Content-Length" not in self.headers:
            self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required (no chunked uploads)")
            return
        length = _content_length(self.headers.get("Content-Length"))
        if length is None:
            self._error(HTTPStatus.BAD_REQUEST, "Content-Length is not a byte count")
            return
        if length > config.max_upload_bytes:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"the upload of {length} bytes exceeds this endpoint's limit of "
                        f"{config.max_upload_bytes} bytes")
            return
        body = _Body(self.rfile, length)
        try:
            meta = restore(config.node, body, backend=config.backend, timeout=config.timeout,
                           verify_key=config.verify_key,
                           allow_incompatible=_flag(query, "allow_incompatible"),
                           manager=config.manager)
        except _UploadBrokenError as exc:
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
        if isinstance(exc, ArchiveError):
            status = HTTPStatus.BAD_REQUEST
        elif isinstance(exc, SnapshotTimeoutError):
            status = HTTPStatus.SERVICE_UNAVAILABLE
        else:
            status = HTTPStatus.INTERNAL_SERVER_ERROR
        if not isinstance(exc, ArchiveError):
            log.warning("%s %s failed: %s", self.command, PATH, exc,
                        exc_info=not isinstance(exc, (SnapshotTimeoutError, BackendNotFoundError)))
        message = str(exc)
        if self.command == "PUT":
            message += "; nothing was applied" if isinstance(exc, ArchiveError) else ""
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


def _content_length(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _flag(query: Mapping[str, list[str]], name: str) -> bool:
    values = query.get(name)
    if values is None:
        return False
    return values[-1].lower() not in ("false", "0", "no")


class SnapshotServer:
    """A running endpoint: ``.url`` to give clients, ``.close()`` (or ``with``) to stop it."""

    def __init__(self, server: _Server, scheme: str) -> None:
        self._server = server
        host, port = server.server_address[:2]
        self.host: str = str(host)
        self.port: int = int(port)
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"{scheme}://{shown}:{self.port}"
        self._closed = False
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"raft-snapshot-http-{self.port}", daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop accepting requests and release the port; safe to call twice.

        Requests already running finish on their own (daemon) threads.
        """
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)

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


def serve(
    node: object,
    *,
    token: str,
    host: str = "127.0.0.1",
    port: int = 0,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    manager: PluginManager | None = None,
    backend: str | None = None,
    timeout: float | None = None,
    io_timeout: float = DEFAULT_TIMEOUT,
    seal_key: SealKey | None = None,
    verify_key: VerifyKey | None = None,
) -> SnapshotServer:
    """Serve ``GET``/``PUT /v1/snapshot`` for ``node`` on a background thread.

    :param node: a node object an installed adapter claims.
    :param token: the shared secret clients send as ``Authorization: Bearer <token>``; not empty.
    :param host: the address to listen on (default loopback only; ``"::1"`` etc. for IPv6).
    :param port: the port; 0 picks a free one (read it from ``.url`` or ``.port``).
    :param max_upload_bytes: the largest archive ``PUT`` accepts (default 1 GiB); a larger
        ``Content-Length`` is answered ``413`` before the body is read.
    :param certfile: a PEM certificate chain: serve HTTPS (TLS 1.2 or later) instead of HTTP.
    :param keyfile: the certificate's private key, if not inside ``certfile``.
    :param manager: the plugin manager (default: a fresh :func:`get_plugin_manager`).
    :param backend: the backend name, if not the one whose adapter claims ``node``.
    :param timeout: seconds a take or restore may last (passed to the adapter); ``None``: no limit.
    :param io_timeout: seconds a connection may sit idle in one read or write before it is dropped.
    :param seal_key: seal every archive ``GET`` serves (see :mod:`.seal`).
    :param verify_key: ``PUT`` accepts only archives sealed with this key.
    :return: the running :class:`SnapshotServer`.
    :raises ValueError: an empty token, a bad limit, or a ``keyfile`` without ``certfile``.
    :raises BackendNotFoundError: no adapter claims ``node``.
    :raises OSError: the address cannot be bound, or the certificate cannot be read.
    :raises ssl.SSLError: the certificate or key is not valid.
    """
    if not token:
        raise ValueError("serve() needs a non-empty token")
    if max_upload_bytes < 0:
        raise ValueError("max_upload_bytes must not be negative")
    if keyfile is not None and certfile is None:
        raise ValueError("keyfile given without certfile")
    pm = manager if manager is not None else get_plugin_manager()
    name = backend or pm.backend_for(node)
    context = None
    if certfile is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certfile, keyfile)
    config = _Config(node=node, token=token.encode("utf-8"), backend=name, manager=pm,
                     max_upload_bytes=max_upload_bytes, timeout=timeout, io_timeout=io_timeout,
                     seal_key=seal_key, verify_key=verify_key)
    server = SnapshotServer(_Server((host, port), config, context),
                            "https" if context is not None else "http")
    log.info("serving snapshots of %s node at %s%s", name, server.url, PATH)
    return server


# ==================================================================================================
# The client
# ==================================================================================================

class Client:
    """Talk to a snapshot endpoint: :meth:`save` a snapshot to a file, :meth:`restore` one.

    :param url: the endpoint's base URL, as :attr:`SnapshotServer.url` gives it
        (``http://127.0.0.1:8500`` or ``https://...``; a path prefix is kept).
    :param token: the endpoint's token; ``None`` sends none (the endpoint then answers 401).
    :param timeout: seconds each network operation may wait (the first byte of a download waits
        for the whole take).
    :param cafile: a PEM file of the certificate authorities to trust for ``https`` (default: the
        system's).
    :param ssl_context: a ready ``ssl.SSLContext``, instead of ``cafile``.

    Every failure to talk to the endpoint raises :class:`~raft_snapshot_plugin.errors.RemoteError`:
    with ``.status`` when the endpoint answered (its JSON ``error`` as the message), with the network
    error chained when it did not. Local file errors are ``OSError``.
    """

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        cafile: str | os.PathLike[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/") + PATH
        self._token = token
        self._timeout = timeout
        if self._https and ssl_context is None:
            ssl_context = ssl.create_default_context(
                cafile=os.fspath(cafile) if cafile is not None else None)
        self._ssl_context = ssl_context

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        stale: bool = False,
        progress: Progress | None = None,
        verify_key: VerifyKey | None = None,
    ) -> SnapshotMeta:
        """Download a fresh snapshot into ``path``; return its metadata.

        The archive goes to ``path + ".unverified"`` first, is verified completely, and is then
        renamed into place (mode 0600), as ``consul snapshot save`` does; on any failure the
        ``.unverified`` file is removed and ``path`` is left as it was.

        :param path: where to save the archive.
        :param stale: accept a snapshot from a node that is not the leader.
        :param progress: called with ``(bytes_received, total_bytes)`` as the download advances.
        :param verify_key: keep the download only if it is sealed with this key.
        :raises RemoteError: the endpoint refused (a follower without ``stale``: ``.leader``) or
            could not be reached, or the download broke off.
        :raises ArchiveError: what arrived is not a valid archive.
        """
        target = os.fspath(path)
        partial = target + ".unverified"
        conn = self._connection()
        try:
            response = self._call(conn, "GET", self._path + ("?stale" if stale else ""))
            total = _content_length(response.getheader("Content-Length"))
            if total is None:
                raise RemoteError("the endpoint sent a snapshot without Content-Length",
                                  status=response.status, url=self.url)
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                with os.fdopen(fd, "wb") as out:
                    self._download(response, out, total, progress)
                    out.flush()
                    os.fsync(out.fileno())
                meta = verify(partial, verify_key=verify_key)
                announced = response.getheader("X-Raft-Index")
                if announced is not None and announced != str(meta.index):
                    raise RemoteError(f"the endpoint announced index {announced} but sent a "
                                      f"snapshot at index {meta.index}", status=response.status,
                                      url=self.url)
                os.replace(partial, target)
            except BaseException:
                remove_quietly(partial)
                raise
        finally:
            conn.close()
        _fsync_folder(os.path.dirname(os.path.abspath(target)))
        return meta

    def restore(
        self, path: str | os.PathLike[str], *, progress: Progress | None = None,
        allow_incompatible: bool = False,
    ) -> SnapshotMeta:
        """Upload the archive at ``path`` and have the endpoint's cluster restore it.

        The endpoint verifies the whole upload before anything is applied.

        :param path: the archive to upload.
        :param progress: called with ``(bytes_sent, total_bytes)`` as the upload advances.
        :param allow_incompatible: ask the endpoint to restore another backend's archive or a
            newer state format (``?allow_incompatible``).
        :return: the restored archive's metadata, as the endpoint read it.
        :raises RemoteError: the endpoint refused (a bad archive is ``.status == 400``, a too
            large one 413) or could not be reached.
        """
        with open(path, "rb") as source:
            total = os.fstat(source.fileno()).st_size
            conn = self._connection()
            try:
                path_query = self._path + ("?allow_incompatible" if allow_incompatible else "")
                response = self._call(conn, "PUT", path_query, body=source, length=total,
                                      progress=progress)
                raw = self._read(response, _MAX_ERROR_BODY)
            finally:
                conn.close()
        try:
            return SnapshotMeta.from_json(raw)
        except ArchiveError as exc:
            raise RemoteError(f"the endpoint answered the restore with unreadable metadata: {exc}",
                              status=response.status, url=self.url) from exc

    # --- plumbing -------------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout,
                                               context=self._ssl_context)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"raft-snapshot/{__version__}"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _call(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        path: str,
        *,
        body: IO[bytes] | None = None,
        length: int = 0,
        progress: Progress | None = None,
    ) -> http.client.HTTPResponse:
        """Send one request; return a 200 response, or raise the endpoint's error."""
        send_error: OSError | None = None
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for key, value in self._headers().items():
                conn.putheader(key, value)
            if body is not None:
                conn.putheader("Content-Type", "application/octet-stream")
                conn.putheader("Content-Length", str(length))
            conn.endheaders()
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from exc
        if body is not None:
            send_error = self._upload(conn, body, length, progress)
        try:
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            cause = send_error or exc
            raise self._unreachable(cause, during="the upload" if send_error else None) from cause
        if response.status != HTTPStatus.OK:
            raise self._refusal(response)
        return response

    def _upload(
        self, conn: http.client.HTTPConnection, body: IO[bytes], total: int,
        progress: Progress | None,
    ) -> OSError | None:
        """Send the body; a network error ends it early (the endpoint may have answered)."""
        done = 0
        if progress is not None:
            progress(0, total)
        while chunk := body.read(CHUNK):
            try:
                conn.send(chunk)
            except OSError as exc:
                return exc
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        return None

    def _download(
        self, response: http.client.HTTPResponse, out: IO[bytes], total: int,
        progress: Progress | None,
    ) -> None:
        done = 0
        if progress is not None:
            progress(0, total)
        while True:
            try:
                chunk = response.read(min(CHUNK, total - done)) if done < total else b""
            except (OSError, http.client.HTTPException) as exc:
                raise self._unreachable(exc, during="the download") from exc
            if not chunk:
                break
            out.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        if done != total:
            raise RemoteError(f"{self.url}: the download ended after {done} of {total} bytes",
                              status=response.status, url=self.url)

    def _read(self, response: http.client.HTTPResponse, limit: int) -> bytes:
        try:
            return response.read(limit)
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from exc

    def _refusal(self, response: http.client.HTTPResponse) -> RemoteError:
        try:
            raw = response.read(_MAX_ERROR_BODY)
        except (OSError, http.client.HTTPException):
            raw = b""
        message, leader = "", None
        with contextlib.suppress(ValueError):
            doc = json.loads(raw)
            if isinstance(doc, dict):
                message = str(doc.get("error") or "")
                leader = doc.get("leader") if isinstance(doc.get("leader"), str) else None
        if not message:
            message = raw.decode("utf-8", "replace").strip()[:200] or response.reason
        if response.status == HTTPStatus.UNAUTHORIZED and self._token is None:
            message += " (give --token or set RAFT_SNAPSHOT_TOKEN)"
        return RemoteError(f"{self.url}: {response.status} {response.reason}: {message}",
                           status=response.status, url=self.url, leader=leader)

    def _unreachable(self, exc: BaseException, during: str | None = None) -> RemoteError:
        what = f"lost the connection during {during}" if during else "cannot reach the endpoint"
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, http.client.IncompleteRead):
            detail = f"the connection closed after {len(exc.partial)} more bytes"
        return RemoteError(f"{self.url}: {what}: {detail}", url=self.url)


def _fsync_folder(folder: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

