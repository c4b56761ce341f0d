"""The endpoint's ASGI application, on Starlette: routing, the token, GET (take and stream), PUT
(feed the upload to its restore, wait for the outcome) and the restores' status resources.

Every check on a ``PUT`` (the token, the length) comes before the first ``receive()``: servers send
``100 Continue`` only when the application first asks for the body (uvicorn does), so a refused
client never sends its body.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import Receive, Scope, Send

from . import _socket_body
from ._protocol import (
    PATH,
    RESTORE_ID_HEADER,
    RESTORES_PATH,
    content_length,
    new_restore_id,
    printable,
    valid_restore_id,
)
from ._restores import Feed, RestoreJob, Restores, UploadBrokenError, status_for
from ._socket_body import SocketBody
from ._stream import ArchiveResponse, pump_body
from .errors import (
    BackendNotFoundError,
    NotLeaderError,
    RaftSnapshotError,
    SnapshotTimeoutError,
)
from .manager import PluginManager
from .operations import restore, take
from .seal import SealKey, VerifyKey

log = logging.getLogger("raft_snapshot_plugin.endpoint")

#: How often a PUT looks whether its restore has ended, on an event loop other than asyncio's.
_POLL_SECONDS = 0.005


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
    #: the leader's endpoint URL from its Raft address (the ``advertise=`` of :func:`snapshot_app`)
    advertise: Any = None


class SnapshotApp:
    """The ASGI application :func:`raft_snapshot_plugin.endpoint.snapshot_app` returns."""

    def __init__(self, config: Config, *, metrics: Any = None) -> None:
        self.config = config
        self.restores = Restores()
        routes: list[BaseRoute] = [
            Route(PATH, _Endpoint(self._snapshot)),
            Route(RESTORES_PATH + "/{restore_id}", _Endpoint(self._status)),
        ]
        if metrics is not None:  # the agent's series, beside the endpoint it snapshots
            routes.append(Mount("/metrics", app=metrics))
        self._router = Router(routes=routes, redirect_slashes=False, default=self._not_found)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # nothing to start or stop: a host's lifespan is its own
            message = await receive()
            while message["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
                message = await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        await self._router(scope, receive, send)

    # --- routing and the token ------------------------------------------------------------------

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        response = error(HTTPStatus.NOT_FOUND, f"no such endpoint {path!r}; the endpoint is {PATH}")
        log_answer(Request(scope, receive, send), response)
        await response(scope, receive, send)

    async def _snapshot(self, request: Request) -> Response:
        refused = self._refusal(request, ("GET", "PUT"))
        if refused is not None:
            return refused
        try:
            if request.method == "GET":
                return await self._get(request)
            return await self._put(request)
        except Exception as exc:  # a bug: answer, log, keep serving
            log.exception("%s %s failed", request.method, PATH)
            return error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(exc).__name__}")

    def _refusal(self, request: Request, allowed: tuple[str, ...]) -> Response | None:
        """The answer refusing ``request`` (its token, its method), or ``None`` to serve it."""
        header = request.headers.get("Authorization")
        challenge = {"WWW-Authenticate": 'Bearer realm="raft-snapshot"'}
        if header is None:
            return error(HTTPStatus.UNAUTHORIZED, "missing token: send Authorization: Bearer <token>",
                         headers=challenge)
        scheme, _, given = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return error(HTTPStatus.UNAUTHORIZED, "malformed Authorization header: want Bearer <token>",
                         headers=challenge)
        # ASGI servers decode headers as Latin-1: encoding back gives the bytes that were sent
        if not hmac.compare_digest(given.strip().encode("latin-1", "replace"), self.config.token):
            return error(HTTPStatus.FORBIDDEN, "wrong token")
        if request.method in allowed:
            return None
        if request.method in ("GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "HEAD"):
            return error(HTTPStatus.METHOD_NOT_ALLOWED,
                         f"{request.method} is not allowed on {request.url.path}; use "
                         f"{' or '.join(allowed)}", headers={"Allow": ", ".join(allowed)})
        return error(HTTPStatus.NOT_IMPLEMENTED, f"unsupported method {request.method!r}")

    # --- GET: take and stream -------------------------------------------------------------------

    async def _get(self, request: Request) -> Response:
        config = self.config
        allow_stale = flag(request, "stale")
        try:
            snap = await anyio.to_thread.run_sync(lambda: take(
                config.node, backend=config.backend, timeout=config.timeout,
                seal_key=config.seal_key, leader_only=not allow_stale, wait_for_restore=False,
                manager=config.manager))
        except RaftSnapshotError as exc:
            return self._failed("GET", exc)
        except OSError as exc:  # the temp folder: full, missing, not writable
            return local_io_failed("GET", exc)
        return ArchiveResponse(snap, config.io_timeout, client_of(request))

    # --- PUT: feed the restore, wait for its outcome --------------------------------------------

    async def _put(self, request: Request) -> Response:
        config = self.config
        headers = request.headers
        if "transfer-encoding" in headers or "content-length" not in headers:
            return error(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required (no chunked uploads)")
        length = content_length(headers.get("content-length"))
        if length is None:
            return error(HTTPStatus.BAD_REQUEST, "Content-Length is not a byte count")
        if length > config.max_upload_bytes:
            return error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                         f"the upload of {length} bytes exceeds this endpoint's limit of "
                         f"{config.max_upload_bytes} bytes")
        restore_id = headers.get(RESTORE_ID_HEADER) or new_restore_id()
        if not valid_restore_id(restore_id):
            return error(HTTPStatus.BAD_REQUEST, f"{RESTORE_ID_HEADER} must be 16 to 64 URL-safe "
                                                 "characters")
        # a large plain-HTTP upload on serve()'s server: the restore's thread reads the socket
        # itself (see _socket_body); any other through receive(), fed to it on the event loop
        direct = _socket_body.socket_body(request.scope, length, config.io_timeout)
        source: Feed | SocketBody = direct if direct is not None else Feed(length)
        allow_incompatible = flag(request, "allow_incompatible")

        def run() -> Any:
            try:
                return restore(config.node, source, backend=config.backend, timeout=config.timeout,
                               verify_key=config.verify_key, allow_incompatible=allow_incompatible,
                               max_state_bytes=config.max_state_bytes, manager=config.manager)
            finally:
                source.abandon()

        job = self.restores.start(restore_id, client_of(request), run, self._describe)
        if job is None:
            return error(HTTPStatus.CONFLICT, f"restore {restore_id} exists already: propose a new "
                                              f"{RESTORE_ID_HEADER}", headers={RESTORE_ID_HEADER: restore_id})
        # Only now is the body asked for (and 100 Continue sent). The restore reads it as it comes.
        if isinstance(source, Feed):
            await pump_body(request.receive, source, config.io_timeout)
        else:
            source.start()
        try:
            await _ended(job)
        except BaseException:  # cancelled (the server stops) while the body may still come
            if isinstance(source, SocketBody):
                source.cancel()
            raise
        answer_headers = {RESTORE_ID_HEADER: restore_id}
        if job.result is not None:
            body = {**job.result.meta.to_dict(), "restore": job.result.to_dict()}
            return JSONResponse(body, headers=answer_headers)
        if job.not_leader is not None:
            return error(HTTPStatus(job.status), job.error or "", headers=answer_headers,
                         extra=job.not_leader)
        return error(HTTPStatus(job.status), job.error or "", headers=answer_headers)

    def _describe(self, exc: BaseException) -> str:
        """A failed restore in words, for its answer and its status resource."""
        if isinstance(exc, UploadBrokenError):
            log.warning("upload not applied: %s", exc)
            return f"{exc}; nothing was applied"
        if isinstance(exc, OSError) and not isinstance(exc, RaftSnapshotError):  # (a timeout is both)
            log.error("PUT %s failed on this server: %s", PATH, exc)
            return f"I/O error on the server: {exc}; nothing was applied"
        if not isinstance(exc, RaftSnapshotError):
            return f"internal error: {type(exc).__name__}"
        status = status_for(exc)
        if status == HTTPStatus.INTERNAL_SERVER_ERROR or isinstance(exc, SnapshotTimeoutError):
            log.warning("PUT %s failed: %s", PATH, exc,
                        exc_info=not isinstance(exc, (SnapshotTimeoutError, BackendNotFoundError)))
        return f"{exc}; nothing was applied" if status == HTTPStatus.BAD_REQUEST else str(exc)

    # --- GET /v1/snapshot/restores/<id> ---------------------------------------------------------

    async def _status(self, request: Request) -> Response:
        refused = self._refusal(request, ("GET",))
        if refused is not None:
            return refused
        restore_id = request.path_params["restore_id"]
        job = self.restores.get(restore_id)
        if job is None:
            hours = self.restores.retention / 3600
            return error(HTTPStatus.NOT_FOUND,
                         f"no restore {restore_id} is known here: it never reached this node, or "
                         f"finished more than {hours:g} hour(s) ago", extra={"id": restore_id})
        return JSONResponse(job.to_dict(), headers={RESTORE_ID_HEADER: restore_id})

    # --- answers --------------------------------------------------------------------------------

    def _failed(self, method: str, exc: RaftSnapshotError) -> Response:
        status = status_for(exc)
        if isinstance(exc, NotLeaderError):
            extra: dict[str, Any] = {"leader": exc.leader}
            where = ""
            url = self._leader_url(exc.leader)
            if url is not None:
                extra["leader_url"] = url
                where = f" (its endpoint: {url})"
            return error(status, f"{exc}; ask the leader{where}, or ask with ?stale for this "
                                 "node's possibly stale state", extra=extra)
        if status == HTTPStatus.INTERNAL_SERVER_ERROR or isinstance(exc, SnapshotTimeoutError):
            log.warning("%s %s failed: %s", method, PATH, exc,
                        exc_info=not isinstance(exc, (SnapshotTimeoutError, BackendNotFoundError)))
        return error(status, str(exc))

    def _leader_url(self, leader: str | None) -> str | None:
        advertise = self.config.advertise
        if leader is None or advertise is None:
            return None
        try:
            url = advertise(leader) if callable(advertise) else advertise.get(leader)
        except Exception:  # naming the leader's URL is a courtesy: it must not hide the refusal
            log.warning("advertise= failed for %s", leader, exc_info=True)
            return None
        return str(url) if url else None


async def _ended(job: RestoreJob) -> None:
    """Return once ``job`` has ended. The restore is a plain thread that may outlive this
    request, and a thread parked per waiting PUT would come from the pool the takes need (or from
    a limiter tied to one event loop, when hosts may run several): on asyncio (uvicorn, and
    most hosts) the restore's thread wakes this request through its loop; on another event loop
    (trio) the request looks every few milliseconds."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        while not job.done.is_set():
            await anyio.sleep(_POLL_SECONDS)
        return
    ended = asyncio.Event()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(ended.set)

    job.on_done(wake)
    await ended.wait()


class _Endpoint:
    """A request handler as a plain ASGI application: Starlette then routes every method to it
    (a function endpoint would be GET and HEAD only), and it answers the ones it does not serve."""

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        response = await self.handler(request)
        log_answer(request, response)
        await response(scope, receive, send)


def log_answer(request: Request, response: Response) -> None:
    """One line per request: who, what, the status, and for a refusal its reason."""
    line = f"{client_of(request)} {request.method} {request.url.path} {response.status_code}"
    if response.status_code >= 400 and isinstance(response, JSONResponse):
        with contextlib.suppress(ValueError, KeyError, TypeError):  # not our JSON: no reason
            line += f": {json.loads(bytes(response.body))['error']}"
    log.log(logging.WARNING if response.status_code >= 500 else logging.INFO, "%s",
            printable(line))


def error(
    status: HTTPStatus, message: str, *, headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """Every error the endpoint answers: JSON ``{"error": ...}``."""
    return JSONResponse({"error": message, **(extra or {})}, status_code=int(status),
                        headers=dict(headers or {}))


def local_io_failed(method: str, exc: OSError) -> JSONResponse:
    log.error("%s %s failed on this server: %s", method, PATH, exc)
    return error(HTTPStatus.INTERNAL_SERVER_ERROR, f"I/O error on the server: {exc}")


def flag(request: Request, name: str) -> bool:
    values = request.query_params.getlist(name)
    if not values:
        return False
    return values[-1].lower() not in ("false", "0", "no")


def client_of(request: Request) -> str:
    return request.client.host if request.client is not None else "?"
