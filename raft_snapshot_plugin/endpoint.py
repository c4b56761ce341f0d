"""The snapshot endpoint an application embeds (its client is :mod:`raft_snapshot_plugin.client`).

The endpoint is an ASGI application. A host that serves HTTP already mounts it beside its own
routes (Starlette or FastAPI directly, a WSGI host such as Flask through a2wsgi)::

    from raft_snapshot_plugin.endpoint import snapshot_app

    app.mount("/", snapshot_app(node, token=os.environ["RAFT_SNAPSHOT_TOKEN"]))

and an application that serves nothing runs the same application on uvicorn, in a thread::

    from raft_snapshot_plugin.endpoint import serve

    server = serve(node, token=os.environ["RAFT_SNAPSHOT_TOKEN"])   # 127.0.0.1, a free port
    print(server.url)                                               # usable as --addr
    ...
    server.close()

Both need the ``server`` extra (Starlette and uvicorn): ``pip install 'raft-snapshot-plugin[server]'``.

The protocol, after Consul's ``/v1/snapshot``:

``GET /v1/snapshot``
    Takes a fresh snapshot and streams the archive from its temp file: ``200``, ``Content-Type:
    application/octet-stream``, ``Content-Length``, ``X-Raft-Index`` (the snapshot's index) and
    ``X-Raft-Stale`` (``true`` when the node was not the leader; ``unknown`` when the adapter
    cannot tell). On a follower the answer is ``503`` with ``{"error": ..., "leader": "<leader's
    Raft address or null>"}`` (and ``"leader_url"``, its endpoint, when ``advertise=`` names it)
    unless the query has ``stale`` (``?stale`` or ``?stale=true``). During a restore into the node
    a take is refused at once (``503``), never held behind it.
``PUT /v1/snapshot``
    Restores the uploaded archive (``Content-Length`` required: ``411`` without it, ``413`` above
    ``max_upload_bytes``, both before a byte of the body is asked for). The restore is a resource
    named by ``X-Raft-Restore-Id`` (proposed by the client, 16 to 64 URL-safe characters, or made
    by the endpoint; ``409`` if it is taken), echoed on every answer past those checks. The body
    streams into :func:`raft_snapshot_plugin.restore` on a thread of the restore's own, which
    reads and verifies all of it into a private temp file before the adapter sees anything. The
    answer comes when the restore has ended: ``200`` with the archive's meta.json object (Consul's
    field names) plus a ``"restore"`` object when applied: ``{"index", "waited", "members":
    [{"member", "index", "applied"}, ...]}``, each member of the cluster (its Raft address), the
    index it had applied and whether it holds the restored state when the adapter stopped
    waiting (``"members": null`` when the adapter does not report them; see
    :mod:`raft_snapshot_plugin.restored`). A member that lagged is not a failure: the restore is
    committed. ``400`` when refused (a damaged, cut-off or too slow upload; state
    bytes the adapter refuses), saying nothing was applied; ``503`` (out of time, no quorum) or
    ``500`` when it failed. A client that goes away after its upload does not cancel the restore.
``GET /v1/snapshot/restores/<id>``
    The restore's outcome: ``{"id", "state": "pending" | "applied" | "failed", "started",
    "finished"}``, with ``"index"``, ``"meta"`` and ``"restore"`` (as the ``PUT`` answer's) when
    applied, ``"error"`` and ``"status"``
    (the status its PUT answered) when failed. A finished restore is kept
    ``RESTORE_RETENTION_SECONDS`` (1 hour), and at most the newest ``RESTORE_RETENTION_COUNT``
    (1000); an unknown or forgotten ID is ``404``.

Errors map once (:func:`raft_snapshot_plugin._restores.status_for`): a bad archive, or state bytes
the adapter refuses (``StateRejectedError``), ``400``; not the leader, or out of time, ``503``;
anything else ``500``.

Every request needs ``Authorization: Bearer <token>`` (compared in constant time), checked before
any body is read or ``100 Continue`` sent: ``401`` without it, ``403`` when wrong. Every error is
JSON ``{"error": "..."}``; an unknown path is ``404``, another method ``405``. Blocking work (the
take, the restore, the temp files) runs on threads, never on the event loop. The bounds on slow
and numerous clients: see :mod:`raft_snapshot_plugin._server` for what maps where.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._protocol import (
    DEFAULT_MAX_STATE_BYTES,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_OPERATION_TIMEOUT,
    DEFAULT_TIMEOUT,
    HTTP_IMPLEMENTATIONS,
    PATH,
    RESTORE_ID_HEADER,
    RESTORE_RETENTION_COUNT,
    RESTORE_RETENTION_SECONDS,
    RESTORES_PATH,
)
from .manager import PluginManager, get_plugin_manager
from .seal import SealKey, VerifyKey

if TYPE_CHECKING:
    from ._app import SnapshotApp
    from ._server import SnapshotServer

__all__ = [
    "DEFAULT_MAX_STATE_BYTES",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "HTTP_IMPLEMENTATIONS",
    "PATH",
    "RESTORES_PATH",
    "RESTORE_ID_HEADER",
    "RESTORE_RETENTION_COUNT",
    "RESTORE_RETENTION_SECONDS",
    "Advertise",
    "SnapshotServer",
    "serve",
    "snapshot_app",
]

log = logging.getLogger(__name__)

#: How a node learns its peers' endpoint URLs, to name the leader's in a follower's ``503``: a
#: mapping from each node's Raft address (as the adapter's ``raft_snapshot_leader`` names it) to
#: its endpoint's URL, or a callable taking the Raft address and giving the URL (or ``None``).
Advertise = Mapping[str, str] | Callable[[str], str | None]

_EXTRA_HINT = "pip install 'raft-snapshot-plugin[server]' (from a checkout: pip install '.[server]')"


def __getattr__(name: str) -> Any:
    if name == "SnapshotServer":  # the class lives with uvicorn, which is imported only on demand
        return _server_module().SnapshotServer
    raise AttributeError(name)


def _server_module() -> Any:
    try:
        from . import _server
    except ImportError as exc:
        raise ImportError(f"the snapshot endpoint needs Starlette and uvicorn: {_EXTRA_HINT}") from exc
    return _server


def snapshot_app(
    node: object,
    *,
    token: str,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_state_bytes: int | None = DEFAULT_MAX_STATE_BYTES,
    verify_key: VerifyKey | None = None,
    seal_key: SealKey | None = None,
    advertise: Advertise | None = None,
    manager: PluginManager | None = None,
    backend: str | None = None,
    timeout: float | None = DEFAULT_OPERATION_TIMEOUT,
    io_timeout: float = DEFAULT_TIMEOUT,
    metrics: Any = None,
) -> SnapshotApp:
    """The endpoint for ``node`` as an ASGI application, to mount in a host or to :func:`serve`.

    :param node: a node object an installed adapter claims.
    :param token: the shared secret clients send as ``Authorization: Bearer <token>``; not empty.
    :param max_upload_bytes: the largest archive ``PUT`` accepts (default 1 GiB); a larger
        ``Content-Length`` is answered ``413`` before the body is asked for.
    :param max_state_bytes: the longest state (state.bin, decompressed) ``PUT`` restores (default
        4 GiB): checked from its tar header before a byte of it is written, ``400`` beyond;
        ``None`` for no limit.
    :param verify_key: ``PUT`` accepts only archives sealed with this key.
    :param seal_key: seal every archive ``GET`` serves (see :mod:`.seal`).
    :param advertise: the nodes' endpoint URLs by Raft address (or a callable giving them): a
        follower's ``503`` then names the leader's endpoint (``"leader_url"``), not only its Raft
        address. Give every node the same mapping.
    :param manager: the plugin manager (default: a fresh :func:`get_plugin_manager`).
    :param backend: the backend name, if not the one whose adapter claims ``node``.
    :param timeout: seconds a take or restore may last (passed to the adapter; default 300): a
        restore that cannot finish (a node without quorum) ends and lets go of the node.
        ``None``: no limit.
    :param io_timeout: seconds one piece of an upload, or of a download, may wait (the client
        stalled); an upload slower than 16 KiB/s on average after its first 10 s is dropped.
    :param metrics: an ASGI app to serve at ``/metrics`` (without the token, as Prometheus
        scrapes), e.g. ``raft_snapshot_plugin.agent.metrics_asgi_app(agent.metrics)``.
    :raises ValueError: an empty token or a bad limit.
    :raises BackendNotFoundError: no adapter claims ``node``.
    :raises ImportError: Starlette is not installed (the ``server`` extra).
    """
    if not token:
        raise ValueError("the endpoint needs a non-empty token")
    if max_upload_bytes < 0:
        raise ValueError("max_upload_bytes must not be negative")
    pm = manager if manager is not None else get_plugin_manager()
    name = backend or pm.backend_for(node)
    try:
        from ._app import Config, SnapshotApp
    except ImportError as exc:
        raise ImportError(f"the snapshot endpoint needs Starlette: {_EXTRA_HINT}") from exc
    config = Config(node=node, token=token.encode("utf-8"), backend=name, manager=pm,
                    max_upload_bytes=max_upload_bytes, max_state_bytes=max_state_bytes,
                    timeout=timeout, io_timeout=io_timeout, seal_key=seal_key,
                    verify_key=verify_key, advertise=advertise)
    return SnapshotApp(config, metrics=metrics)


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
    client_cafile: str | os.PathLike[str] | None = None,
    advertise: Advertise | None = None,
    http: str = "auto",
) -> SnapshotServer:
    """Serve :func:`snapshot_app` for ``node`` on uvicorn, on a background thread.

    The arguments :func:`snapshot_app` takes mean what they mean there; besides them:

    :param host: the address to listen on (default loopback only; ``"::1"`` etc. for IPv6).
    :param port: the port; 0 picks a free one (read it from ``.url`` or ``.port``).
    :param certfile: a PEM certificate chain: serve HTTPS (TLS 1.2 or later) instead of HTTP.
    :param keyfile: the certificate's private key, if not inside ``certfile``.
    :param client_cafile: require a client certificate (mutual TLS) signed by one of the
        certificate authorities in this PEM file; a client without one is refused in the TLS
        handshake. Needs ``certfile``.
    :param max_connections: requests served at once; beyond, uvicorn answers ``503``.
    :param http: ``"auto"``: uvicorn's httptools protocol on uvloop (the ``server`` extra's), or
        its h11 protocol on asyncio's loop when they are not installed; ``"h11"``: the latter,
        whatever is installed (the pure-Python fallback, e.g. to rule the fast parts out).
    :return: the running :class:`SnapshotServer`.
    :raises ValueError: an empty token, a bad limit, an unknown ``http``, or a ``keyfile`` or
        ``client_cafile`` without ``certfile``.
    :raises BackendNotFoundError: no adapter claims ``node``.
    :raises OSError: the address cannot be bound, or the certificate cannot be read.
    :raises ssl.SSLError: the certificate or key is not valid.
    :raises ImportError: Starlette or uvicorn is not installed (the ``server`` extra).
    """
    if keyfile is not None and certfile is None:
        raise ValueError("keyfile given without certfile")
    if client_cafile is not None and certfile is None:
        raise ValueError("client_cafile (mutual TLS) given without certfile")
    app = snapshot_app(node, token=token, max_upload_bytes=max_upload_bytes,
                       max_state_bytes=max_state_bytes, verify_key=verify_key, seal_key=seal_key,
                       advertise=advertise, manager=manager, backend=backend, timeout=timeout,
                       io_timeout=io_timeout)
    server: SnapshotServer = _server_module().start(
        app, host=host, port=port, max_connections=max_connections, certfile=certfile,
        keyfile=keyfile, client_cafile=client_cafile, http=http)
    log.info("serving snapshots of %s node at %s%s", app.config.backend, server.url, PATH)
    return server
