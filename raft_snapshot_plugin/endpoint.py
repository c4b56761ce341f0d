"""The snapshot endpoint an application embeds (its client is :mod:`raft_snapshot_plugin.client`).

An application serves its node::

    from raft_snapshot_plugin.endpoint import serve

    server = serve(node, token=os.environ["RAFT_SNAPSHOT_TOKEN"])   # 127.0.0.1, a free port
    print(server.url)                                               # usable as --addr
    ...
    server.close()

The protocol, after Consul's ``/v1/snapshot``:

``GET /v1/snapshot``
    Takes a fresh snapshot and streams the archive: ``200``, ``Content-Type:
    application/octet-stream``, ``Content-Length``, ``X-Raft-Index`` (the snapshot's index) and
    ``X-Raft-Stale`` (``true`` when the node was not the leader; ``unknown`` when the adapter
    cannot tell). On a follower the answer is
    ``503`` with ``{"error": ..., "leader": "<leader's Raft address or null>"}`` unless the query
    has ``stale`` (``?stale`` or ``?stale=true``).
``PUT /v1/snapshot``
    Restores the uploaded archive (``Content-Length`` required: ``411`` without it, ``413`` above
    ``max_upload_bytes``, refused before a byte of the body is read). The body streams into
    :func:`raft_snapshot_plugin.restore`, which reads and verifies all of it into a private temp
    file before the adapter sees anything: a damaged or cut-off upload is answered ``400`` and never
    applied. Success is ``200`` with the archive's meta.json object (Consul's field names).

Errors map once (:func:`raft_snapshot_plugin._handler.status_for`): a bad archive, or state bytes the
adapter refuses (``StateRejectedError``), ``400``; not the leader, or out of time, ``503``; anything
else ``500``.

Every request needs ``Authorization: Bearer <token>`` (compared in constant time): ``401`` without
it, ``403`` when wrong. Every error is JSON ``{"error": "..."}``; an unknown path is ``404``, another
method ``405``. Each connection carries one request and runs on its own thread; both directions
stream in 1 MiB chunks. A client that goes away mid-transfer is logged, its snapshot or partial
upload discarded, and the server keeps serving.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from types import TracebackType

from ._handler import Config, Server
from ._protocol import (
    DEFAULT_MAX_STATE_BYTES,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_OPERATION_TIMEOUT,
    DEFAULT_TIMEOUT,
    PATH,
)
from .manager import PluginManager, get_plugin_manager
from .seal import SealKey, VerifyKey

__all__ = ["DEFAULT_MAX_STATE_BYTES", "DEFAULT_MAX_UPLOAD_BYTES", "PATH", "SnapshotServer", "serve"]

log = logging.getLogger(__name__)


class SnapshotServer:
    """A running endpoint: ``.url`` to give clients, ``.close()`` (or ``with``) to stop it."""

    def __init__(self, server: Server, scheme: str) -> None:
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
    max_state_bytes: int | None = DEFAULT_MAX_STATE_BYTES,
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
    manager: PluginManager | None = None,
    backend: str | None = None,
    timeout: float | None = DEFAULT_OPERATION_TIMEOUT,
    io_timeout: float = DEFAULT_TIMEOUT,
    max_connections: int = 1024,
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
    :param max_state_bytes: the longest state (state.bin, decompressed) ``PUT`` restores (default
        4 GiB): checked from its tar header before a byte of it is written, ``400`` beyond;
        ``None`` for no limit.
    :param certfile: a PEM certificate chain: serve HTTPS (TLS 1.2 or later) instead of HTTP.
    :param keyfile: the certificate's private key, if not inside ``certfile``.
    :param manager: the plugin manager (default: a fresh :func:`get_plugin_manager`).
    :param backend: the backend name, if not the one whose adapter claims ``node``.
    :param timeout: seconds a take or restore may last (passed to the adapter; default 300): a
        restore that cannot finish (a node without quorum) ends and lets go of the node.
        ``None``: no limit.
    :param io_timeout: seconds a connection may sit idle in one read or write before it is dropped.
        Request headers must arrive within 10 s however they trickle, and an upload slower than
        16 KiB/s on average (after its first 10 s) is dropped.
    :param max_connections: connections served at once (each on a thread); more are closed at
        once.
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
    config = Config(node=node, token=token.encode("utf-8"), backend=name, manager=pm,
                     max_upload_bytes=max_upload_bytes, max_state_bytes=max_state_bytes,
                     timeout=timeout, io_timeout=io_timeout, max_connections=max_connections,
                     seal_key=seal_key, verify_key=verify_key)
    server = SnapshotServer(Server((host, port), config, context),
                            "https" if context is not None else "http")
    log.info("serving snapshots of %s node at %s%s", name, server.url, PATH)
    return server
