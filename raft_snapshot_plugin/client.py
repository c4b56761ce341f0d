"""The client of a snapshot endpoint (:mod:`raft_snapshot_plugin.endpoint`), on httpx: what the
command line and the agent use to save a snapshot to a file, to restore one, and to ask what became
of a restore.

Three waits are apart: connecting (``connect_timeout``), each piece of an upload or a download
(``io_timeout``: the other side stalled), and the node's own work (``timeout``: a take before the
download's first byte, a restore being applied after the upload). When the connection drops or the
wait ends after the whole upload was sent, the client asks the restore's status resource and
reports what the node says: applied (the metadata and the members' report are returned), failed
(:class:`RemoteError`), or still pending (:class:`RestorePendingError`, with the ID to ask about later).
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import IO

import httpx

from . import __version__
from ._download import body_pieces
from ._files import replace_locked, unverified_output
from ._http_errors import not_an_endpoint, refusal, speaks_tls, transport_words, unreachable
from ._protocol import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    DEFAULT_WAIT,
    PATH,
    RESTORE_ID_HEADER,
    RESTORES_PATH,
    content_length,
    new_restore_id,
)
from ._restore_answers import RestoreStatus, read_applied, read_status
from ._transfer import Progress, Upload, fsync_folder, opened
from ._verifier import StreamVerifier
from .archive import CHUNK
from .errors import RemoteError, RestorePendingError
from .meta import SnapshotMeta
from .restored import RestoreResult
from .seal import VerifyKey

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "DEFAULT_TIMEOUT", "DEFAULT_WAIT", "Client", "Progress",
           "RestoreStatus", "new_restore_id"]

log = logging.getLogger(__name__)

#: Seconds between two questions about a restore whose answer was lost.
_POLL_SECONDS = 0.5

class Client:
    """Talk to a snapshot endpoint: :meth:`save` a snapshot to a file, :meth:`restore` one.

    :param url: the endpoint's base URL, as :attr:`SnapshotServer.url` gives it
        (``http://127.0.0.1:8500`` or ``https://...``; a path prefix is kept).
    :param token: the endpoint's token; ``None`` sends none (the endpoint then answers 401).
    :param ca_file: a PEM file of the certificate authorities to trust for ``https`` (default: the
        system's).
    :param cert: a PEM client certificate (chain) for mutual TLS; ``key``: its private key, if not
        inside ``cert``.
    :param tls_server_name: the name to expect on the server's certificate (and send as SNI), when
        the URL's host is not it (an IP address, a tunnel).
    :param connect_timeout: seconds to connect (TCP and TLS).
    :param timeout: seconds to wait for the node's work: a take before the download's first byte,
        a restore to be applied once the upload is in.
    :param io_timeout: seconds any one read or write may stall mid-transfer.
    :param ssl_context: a ready ``ssl.SSLContext``, instead of ``ca_file``, ``cert`` and ``key``.

    Proxies come from the environment (``HTTPS_PROXY``, ``NO_PROXY``...). Every failure to talk to
    the endpoint raises :class:`~raft_snapshot_plugin.errors.RemoteError`: with ``.status`` when
    the endpoint answered (its JSON ``error`` as the message), with the network error chained when
    it did not. Local file errors are ``OSError``.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        ca_file: str | os.PathLike[str] | None = None,
        cert: str | os.PathLike[str] | None = None,
        key: str | os.PathLike[str] | None = None,
        tls_server_name: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        timeout: float = DEFAULT_WAIT,
        io_timeout: float = DEFAULT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        if key is not None and cert is None:
            raise ValueError("a client key given without its certificate")
        self.url = url
        self._base = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"),
                                              "", ""))
        self._token = token
        self._timeouts = (connect_timeout, timeout, io_timeout)
        self._extensions = {"sni_hostname": tls_server_name} if tls_server_name else {}
        if ssl_context is None and parts.scheme == "https":
            ssl_context = ssl.create_default_context(
                cafile=os.fspath(ca_file) if ca_file is not None else None)
            if cert is not None:
                ssl_context.load_cert_chain(cert, key)
        self._ssl_context = ssl_context

    # --- check ----------------------------------------------------------------------------------

    def check(self) -> None:
        """Make sure the URL is a snapshot endpoint that takes the token, quickly: one question
        about an unknown restore, whose answer must come within ``connect_timeout``.

        Before a save or a restore, this turns a port that accepts and says nothing (a Raft port)
        into an error at once rather than after the node's whole wait, and an ``http://`` URL of
        a server that speaks TLS into "use https://".

        :raises RemoteError: not an endpoint, the token refused, or unreachable.
        """
        probe_id = f"probe-{new_restore_id()}"
        connect = self._timeouts[0]
        try:
            with self._http(wait=False, read=connect) as http:
                response = http.get(f"{self._base}{RESTORES_PATH}/{probe_id}",
                                    headers=self._headers(), extensions=self._extensions)
        except httpx.ReadTimeout as exc:
            raise RemoteError(f"{self.url}: connected, but nothing answered within {connect:g} s: "
                              "is --addr the snapshot endpoint (not a Raft port)?",
                              url=self.url) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise RemoteError(self._closed_words(), url=self.url) from exc
        except httpx.HTTPError as exc:
            raise unreachable(self.url, exc) from exc
        failure = not_an_endpoint(self.url, response, probe_id, self._token is None)
        if failure is not None:
            raise failure

    def _closed_words(self) -> str:
        parts = urllib.parse.urlsplit(self._base)
        if parts.scheme == "http" and parts.hostname and speaks_tls(
                parts.hostname, parts.port or 80, self._timeouts[0]):
            return f"{self.url}: the server speaks TLS: use https://"
        return (f"{self.url}: the server closed the connection without an answer: is --addr a "
                "raft-snapshot endpoint?")

    # --- save -----------------------------------------------------------------------------------

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        stale: bool = False,
        progress: Progress | None = None,
        verify_key: VerifyKey | None = None,
    ) -> SnapshotMeta:
        """Download a fresh snapshot into ``path``; return its metadata.

        The archive goes to ``<path>.<pid>.<random>.unverified`` first, is verified completely (as
        its bytes arrive, in a thread beside the download), and is then renamed into place (mode
        0600), as ``consul snapshot save`` does; on any failure the ``.unverified`` file is
        removed and ``path`` is left as it was. One left by a killed process is removed by the
        next save into the same folder.

        :param path: where to save the archive.
        :param stale: accept a snapshot from a node that is not the leader.
        :param progress: called with ``(bytes_received, total_bytes)`` as the download advances.
        :param verify_key: keep the download only if it is sealed with this key.
        :raises RemoteError: the endpoint refused (a follower without ``stale``: ``.leader``) or
            could not be reached, or the download broke off.
        :raises ArchiveError: what arrived is not a valid archive.
        """
        target = os.fspath(path)
        with self._http(wait=True) as http, unverified_output(target, buffering=CHUNK) as (out, partial):
            try:
                with http.stream("GET", self._base + PATH + ("?stale" if stale else ""),
                                 headers=self._headers(), extensions=self._extensions) as response:
                    if response.status_code != 200:
                        raise refusal(self.url, response, self._token is None)
                    meta = self._download(response, out, progress, verify_key)
            except httpx.HTTPError as exc:
                raise unreachable(self.url, exc) from exc
            replace_locked(out, partial, target)
        fsync_folder(os.path.dirname(os.path.abspath(target)))
        return meta

    def _download(self, response: httpx.Response, out: IO[bytes],
                  progress: Progress | None, verify_key: VerifyKey | None) -> SnapshotMeta:
        total = content_length(response.headers.get("Content-Length"))
        if total is None:
            raise RemoteError("the endpoint sent a snapshot without Content-Length",
                              status=response.status_code, url=self.url)
        done = 0
        if progress is not None:
            progress(0, total)
        checker = StreamVerifier(verify_key=verify_key)  # checks the bytes as they arrive
        try:
            try:
                for chunk in body_pieces(response, total, self._timeouts[2]):
                    out.write(chunk)
                    checker.feed(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
            except httpx.HTTPError as exc:
                raise unreachable(self.url, exc, during="the download") from exc
            if done != total:
                raise RemoteError(f"{self.url}: the download ended after {done} of {total} "
                                  "bytes", status=response.status_code, url=self.url)
            meta = checker.finish()
        finally:
            checker.abandon()
        out.flush()
        os.fsync(out.fileno())
        announced = response.headers.get("X-Raft-Index")
        if announced is not None and announced != str(meta.index):
            raise RemoteError(f"the endpoint announced index {announced} but sent a snapshot "
                              f"at index {meta.index}", status=response.status_code,
                              url=self.url)
        return meta

    # --- restore --------------------------------------------------------------------------------

    def restore(
        self, source: str | os.PathLike[str] | IO[bytes], *, progress: Progress | None = None,
        allow_incompatible: bool = False, restore_id: str | None = None,
    ) -> RestoreResult:
        """Upload an archive and have the endpoint's cluster restore it; return once applied.

        The endpoint verifies the whole upload before anything is applied.

        :param source: the archive: a path, or a binary file open for reading (read from its
            current position to its end; not closed).
        :param progress: called with ``(bytes_sent, total_bytes)`` as the upload advances; once
            it reports ``total_bytes`` sent, the restore's outcome belongs to the node.
        :param allow_incompatible: ask the endpoint to restore another backend's archive or a
            newer state format (``?allow_incompatible``).
        :param restore_id: the restore's ID (default: :func:`new_restore_id`), to ask about it
            later if this call ends without an outcome.
        :return: the restored archive's metadata, as the endpoint read it (``.meta``), and the
            members of the cluster and whether each had applied it (``.members``; ``None`` when
            the node's adapter does not report them).
        :raises RemoteError: the endpoint refused (a bad archive is ``.status == 400``, a too
            large one 413), could not be reached, or the restore failed (``.restore_id``).
        :raises RestorePendingError: the upload is in, but the restore had not ended when the wait
            (``timeout``) or the connection did.
        """
        rid = restore_id or new_restore_id()
        with opened(source) as file:
            upload = Upload(file, progress)
            headers = {**self._headers(), "Content-Type": "application/octet-stream",
                       "Content-Length": str(upload.total), RESTORE_ID_HEADER: rid}
            query = "?allow_incompatible" if allow_incompatible else ""
            with self._http(wait=True) as http:
                try:
                    response = http.request("PUT", self._base + PATH + query, headers=headers,
                                            content=upload.chunks(), extensions=self._extensions)
                except httpx.HTTPError as exc:
                    if not upload.finished:
                        raise unreachable(self.url, exc, during=upload.during()) from exc
                    log.info("restore %s: %s after the upload; asking its status", rid, exc)
                    # the wait's budget runs from the upload's end; a timeout has spent it
                    deadline = (upload.finished_at + self._timeouts[1]
                                if not isinstance(exc, httpx.TimeoutException) else 0.0)
                    return self._outcome_after(rid, exc, deadline)
        if response.status_code != 200:
            # an answer naming the restore is its outcome; any other refused it before it began
            named = response.headers.get(RESTORE_ID_HEADER) == rid
            raise refusal(self.url, response, self._token is None,
                          restore_id=rid if named else None, what=f"restore {rid}" if named else None)
        try:
            return read_applied(response.content)
        except ValueError as exc:
            raise RemoteError(f"the endpoint answered the restore with an unreadable report: {exc}",
                              status=response.status_code, url=self.url, restore_id=rid) from exc

    def restore_status(self, restore_id: str) -> RestoreStatus:
        """What the node says of restore ``restore_id``.

        :raises RemoteError: the node does not know it (``.status == 404``: it never arrived, or
            finished longer ago than the endpoint keeps outcomes), or could not be asked.
        """
        with self._http(wait=False) as http:
            try:
                response = http.get(f"{self._base}{RESTORES_PATH}/{restore_id}",
                                    headers=self._headers(), extensions=self._extensions)
            except httpx.HTTPError as exc:
                raise unreachable(self.url, exc) from exc
        if response.status_code != 200:
            raise refusal(self.url, response, self._token is None, restore_id=restore_id)
        try:
            return read_status(response.json())
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RemoteError(f"{self.url}: unreadable status of restore {restore_id}: {exc}",
                              status=response.status_code, url=self.url,
                              restore_id=restore_id) from exc

    def outcome(self, restore_id: str) -> RestoreResult:
        """Restore ``restore_id``'s outcome as :meth:`restore` reports it: the result when
        applied, :class:`RemoteError` when failed, :class:`RestorePendingError` while pending."""
        found = self.restore_status(restore_id)
        if found.state == "applied" and found.result is not None:
            return found.result
        if found.state == "failed":
            raise RemoteError(f"{self.url}: restore {restore_id} failed: {found.error}",
                              status=found.status, url=self.url, restore_id=restore_id)
        raise RestorePendingError(f"{self.url}: the node is still applying restore {restore_id}",
                                  restore_id=restore_id, url=self.url)

    def _outcome_after(self, restore_id: str, cause: httpx.HTTPError,
                       deadline: float) -> RestoreResult:
        """The outcome of a restore whose answer was lost: asked of its status resource while the
        node says pending and ``deadline`` (``time.monotonic()``) has not passed. A node that
        cannot be asked (gone, restarted) leaves the outcome unknown at once."""
        while True:
            try:
                return self.outcome(restore_id)
            except RestorePendingError:
                if time.monotonic() >= deadline:
                    raise
            except RemoteError as exc:
                if exc.restore_id == restore_id and exc.status not in (None, 404):
                    raise  # the node's word: the restore failed
                raise RestorePendingError(
                    f"{self.url}: the outcome of restore {restore_id} is unknown: the upload was "
                    f"sent, then {transport_words(cause)}; asking its status: {exc}",
                    restore_id=restore_id, url=self.url, confirmed=False) from exc
            time.sleep(max(0.0, min(_POLL_SECONDS, deadline - time.monotonic())))

    # --- plumbing -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _http(self, *, wait: bool, read: float | None = None) -> Iterator[httpx.Client]:
        connect, node_wait, io = self._timeouts
        if read is None:
            read = node_wait if wait else io
        timeout = httpx.Timeout(connect=connect, read=read, write=io, pool=connect)
        verify: ssl.SSLContext | bool = self._ssl_context if self._ssl_context is not None else True
        if self._ssl_context is None and not urllib.request.getproxies():
            # plain http and no proxy: no TLS is spoken, so there is no certificate to check, and
            # loading the system's authorities would cost every command ~40 ms for nothing
            verify = False
        with httpx.Client(timeout=timeout, verify=verify, trust_env=True) as http:
            yield http

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"raft-snapshot/{__version__}", "Accept-Encoding": "identity"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers
