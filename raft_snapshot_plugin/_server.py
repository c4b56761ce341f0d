"""``serve()``'s server: the endpoint's ASGI application on uvicorn, in a thread of its own.

With the ``server`` extra's httptools and uvloop (see bench/ENDPOINT.md: an upload's bytes cost
less CPU through them), uvicorn's httptools protocol on uvloop; without them, its h11 protocol on
asyncio's loop. What the standard library's server did by hand maps onto uvicorn's options, and
onto a small subclass of either protocol where uvicorn has no option (``_http_bounds``,
``_fast_protocol``):

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
a body that stops, or trickles            the application (``io_timeout``, 16 KiB/s), or
                                          for a large plain-HTTP upload on httptools, the
                                          restore's thread that reads it (``_socket_body``)
an answer the client stops reading        the application (``io_timeout`` per chunk)
TLS, and client certificates (mTLS)       uvicorn ``ssl_certfile``, ``ssl_keyfile``,
                                          ``ssl_ca_certs``, ``ssl_cert_reqs``
========================================  =================================================
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import threading
from types import TracebackType
from typing import Any

import uvicorn

try:
    import uvloop  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover  (Windows, PyPy: uvloop's markers leave it out)
    uvloop = None  # type: ignore[assignment,unused-ignore]

from ._fast_protocol import FastProtocol, HttpToolsProtocol
from ._http_bounds import (
    DRAIN_SECONDS,
    HEADER_SECONDS,
    KEEP_ALIVE_SECONDS,
    MAX_HEAD_BYTES,
    PASSTHROUGH_BYTES,
    BoundedH11Protocol,
)
from ._protocol import HTTP_IMPLEMENTATIONS

__all__ = ["DRAIN_SECONDS", "HEADER_SECONDS", "MAX_HEAD_BYTES", "PASSTHROUGH_BYTES",
           "SnapshotServer", "start"]

log = logging.getLogger("raft_snapshot_plugin.endpoint")


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
        app, http=FastProtocol if fast else BoundedH11Protocol, lifespan="off",
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
