"""The client of a snapshot endpoint (:mod:`raft_snapshot_plugin.endpoint`): what the command
line and the agent use to save a snapshot to a file and to restore one."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import ssl
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from typing import IO

from . import __version__
from ._files import remove_quietly
from ._protocol import DEFAULT_TIMEOUT, MAX_ERROR_BODY, PATH, content_length
from .archive import CHUNK
from .errors import ArchiveError, RemoteError
from .meta import SnapshotMeta
from .seal import VerifyKey
from .snapshot import verify

__all__ = ["DEFAULT_TIMEOUT", "Client", "Progress"]

log = logging.getLogger(__name__)

#: ``progress(done_bytes, total_bytes)``, called as a transfer advances (first with ``done == 0``).
Progress = Callable[[int, int], None]


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
            total = content_length(response.getheader("Content-Length"))
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
                raw = self._read(response, MAX_ERROR_BODY)
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
            raw = response.read(MAX_ERROR_BODY)
        except (OSError, http.client.HTTPException):
            raw = b""
        message, leader, not_leader = "", None, False
        with contextlib.suppress(ValueError):
            doc = json.loads(raw)
            if isinstance(doc, dict):
                message = str(doc.get("error") or "")
                leader = doc.get("leader") if isinstance(doc.get("leader"), str) else None
                # the endpoint's not-the-leader refusal always carries the key, null or not
                not_leader = response.status == HTTPStatus.SERVICE_UNAVAILABLE and "leader" in doc
        if not message:
            message = raw.decode("utf-8", "replace").strip()[:200] or response.reason
        if response.status == HTTPStatus.UNAUTHORIZED and self._token is None:
            message += " (give --token or set RAFT_SNAPSHOT_TOKEN)"
        return RemoteError(f"{self.url}: {response.status} {response.reason}: {message}",
                           status=response.status, url=self.url, leader=leader,
                           not_leader=not_leader)

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
