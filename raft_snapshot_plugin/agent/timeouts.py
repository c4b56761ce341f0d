"""Storage requests bounded in time: a store that stops answering fails the call, never hangs it.

s3fs reaches S3 through aiobotocore on aiohttp. botocore's ``read_timeout`` becomes aiohttp's
``sock_read``, which aiohttp starts only once a request's body is sent. A request with a body
therefore waits without any timer on a server that accepted the connection and then stopped
answering (a stopped process, a hung proxy or load balancer): botocore asks for
``Expect: 100-continue`` on every file body (s3fs's ``put_file``), and aiohttp waits for the
``100 Continue`` before it sends the body, forever; a body larger than the socket buffers blocks
as long. aiohttp's ``total`` is the only bound on that phase and aiobotocore sets none, but its
``http_session_cls`` option takes the session class: the agent gives it aiobotocore's own session
with ``total`` added to the timeouts botocore's options make.

Retries multiply the bound: botocore retries each request (``retries``), and s3fs retries the
call again in a loop of its own (``S3FileSystem.retries``, 5, not a constructor argument), so a
read timing out after 10 s took 104 s with two botocore attempts. The agent sets both to a few
attempts, so that one call on a dead store fails after about
``S3FS_TRIES * S3_ATTEMPTS * timeout`` seconds (every value given in the storage options wins).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULT_REQUEST_TIMEOUT", "S3FS_TRIES", "S3_ATTEMPTS", "bound_store",
           "bounded_options"]

log = logging.getLogger("raft_snapshot_plugin.agent")

#: the longest one storage request may take, in seconds (connect, send, wait, receive)
DEFAULT_REQUEST_TIMEOUT = 60.0
#: botocore's attempts per request (``retries = {"mode": "standard", "total_max_attempts": ..}``)
S3_ATTEMPTS = 2
#: s3fs's tries of one call, each of them making up to ``S3_ATTEMPTS`` requests
S3FS_TRIES = 2
#: no connection takes longer than this to open, whatever ``timeout`` allows a request
_CONNECT = 10.0
_S3 = ("s3", "s3a")


def bounded_options(url: str, options: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    """``options`` for the fsspec store of ``url``, with every request bounded by ``timeout``
    seconds (s3fs: botocore's timeouts and retries, and aiohttp's ``total``); the values
    ``options`` sets itself are kept."""
    if not timeout > 0:
        raise ValueError(f"the storage timeout must be positive, not {timeout!r}")
    if url.split("://", 1)[0] not in _S3 or "://" not in url:
        return dict(options)
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("connect_timeout", min(timeout, _CONNECT))
    config.setdefault("read_timeout", timeout)
    config.setdefault("retries", {"mode": "standard", "total_max_attempts": S3_ATTEMPTS})
    session = _bounded_session(float(timeout))
    if session is not None:
        config.setdefault("http_session_cls", session)
    return {**options, "config_kwargs": config}


def bound_store(fs: Any) -> None:
    """Bound what the options cannot: s3fs's own retry loop (a class attribute)."""
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    if protocols & set(_S3) and isinstance(getattr(fs, "retries", None), int):
        fs.retries = min(fs.retries, S3FS_TRIES)


@functools.cache
def _bounded_session(total: float) -> type[Any] | None:
    """aiobotocore's aiohttp session whose requests last at most ``total`` seconds; ``None``
    (logged once) with an aiobotocore too old to take a session class."""
    import aiohttp
    from aiobotocore.config import AioConfig
    from aiobotocore.httpsession import AIOHTTPSession

    if "http_session_cls" not in inspect.signature(AioConfig).parameters:
        log.warning("aiobotocore %s takes no http_session_cls: an upload to an S3 server that "
                    "stops answering is not bounded in time (upgrade s3fs)", _version())
        return None

    class BoundedSession(AIOHTTPSession):  # type: ignore[misc]  # aiobotocore ships no types
        _timeout: aiohttp.ClientTimeout  # made from connect_timeout and read_timeout

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made = self._timeout
            self._timeout = aiohttp.ClientTimeout(total=total, sock_connect=made.sock_connect,
                                                  sock_read=made.sock_read)

    # fsspec keys its cache of file systems by the options' text: one name per bound
    BoundedSession.__qualname__ = BoundedSession.__name__ = f"SessionBoundedTo{total:g}s"
    return BoundedSession


def _version() -> str:
    from importlib.metadata import version

    return version("aiobotocore")
