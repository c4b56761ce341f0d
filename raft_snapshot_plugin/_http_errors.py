"""The client's one translation of what went wrong on the wire into the project's errors: httpx's
transport errors by kind, and the endpoint's refusals by status (as httpx maps its transport's
exceptions in one place)."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
from http import HTTPStatus

import httpx

from ._protocol import MAX_ERROR_BODY
from .errors import RemoteError

__all__ = ["not_an_endpoint", "refusal", "speaks_tls", "transport_words", "unreachable"]

#: httpx's transport errors, most specific first: what the client says happened, and a fixed
#: detail where the exception's own text says nothing useful (a timeout's is empty or vague).
_TRANSPORT: tuple[tuple[type[httpx.TransportError], str, str | None], ...] = (
    (httpx.ConnectTimeout, "cannot reach the endpoint", "timed out connecting"),
    (httpx.ProxyError, "cannot reach the endpoint through the proxy", None),
    (httpx.ConnectError, "cannot reach the endpoint", None),
    (httpx.UnsupportedProtocol, "cannot reach the endpoint", None),
    (httpx.PoolTimeout, "cannot reach the endpoint", "timed out waiting for a connection"),
    (httpx.ReadTimeout, "no answer in time", "timed out waiting for the node"),
    (httpx.WriteTimeout, "lost the connection", "the endpoint stopped reading (timed out)"),
    (httpx.TransportError, "lost the connection", None),
)

#: What a refusal's status adds to the endpoint's own words, when the client knows more.
_HINTS: dict[int, str] = {
    HTTPStatus.UNAUTHORIZED: " (give --token or set RAFT_SNAPSHOT_TOKEN)",
}


#: TLS failures in plain words, by the OpenSSL reason they carry: (reason, words).
_TLS_WORDS: tuple[tuple[str, str], ...] = (
    ("WRONG_VERSION_NUMBER", "the server does not speak TLS: use http:// (WRONG_VERSION_NUMBER)"),
    ("RECORD_LAYER_FAILURE", "the server does not speak TLS: use http:// (RECORD_LAYER_FAILURE)"),
    ("CERTIFICATE_VERIFY_FAILED", "the server's certificate is not trusted: give --ca-file with "
                                  "its authority, or --tls-server-name with the name it carries "
                                  "(CERTIFICATE_VERIFY_FAILED: {detail})"),
)


def _tls_words(exc: BaseException) -> str | None:
    """Plain words for a TLS failure somewhere in ``exc``'s causes, or None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            reason = str(getattr(seen, "reason", "") or "")
            detail = str(getattr(seen, "verify_message", "") or reason)
            for known, words in _TLS_WORDS:
                if known == reason or known in str(seen):
                    return words.format(detail=detail)
        seen = seen.__cause__ or seen.__context__
    return None


def transport_words(exc: httpx.HTTPError) -> str:
    """``exc`` in a few words: what happened, and its detail."""
    tls = _tls_words(exc)
    if tls is not None:
        return f"cannot reach the endpoint: {tls}"
    what, detail = "failed", None
    for kind, said, fixed in _TRANSPORT:
        if isinstance(exc, kind):
            what, detail = said, fixed
            break
    return f"{what}: {detail or str(exc) or type(exc).__name__}"


def unreachable(url: str, exc: httpx.HTTPError, *, during: str | None = None) -> RemoteError:
    """The error for a request that got no (whole) answer; the caller chains ``exc``."""
    words = transport_words(exc)
    if during is not None and words.startswith(("lost the connection", "no answer")):
        words = f"lost the connection during {during}: {words.split(': ', 1)[1]}"
    return RemoteError(f"{url}: {words}", url=url)


def refusal(url: str, response: httpx.Response, no_token: bool,
            restore_id: str | None = None, what: str | None = None) -> RemoteError:
    """The error for an answer other than 200: the endpoint's JSON ``error`` as the message
    (after ``what`` failed, when given: ``restore <id>``)."""
    raw = _read_some(response)
    message, leader, leader_url, not_leader = "", None, None, False
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        message = str(doc.get("error") or "")
        leader = doc.get("leader") if isinstance(doc.get("leader"), str) else None
        leader_url = doc.get("leader_url") if isinstance(doc.get("leader_url"), str) else None
        # the endpoint's not-the-leader refusal always carries the key, null or not
        not_leader = response.status_code == HTTPStatus.SERVICE_UNAVAILABLE and "leader" in doc
    if not message:  # not the endpoint's JSON: one line of what came, all the same
        message = " ".join(raw.decode("utf-8", "replace").split())[:200] or response.reason_phrase
    if no_token:
        message += _HINTS.get(response.status_code, "")
    if what is not None:
        message = f"{what} failed: {message}"
    return RemoteError(f"{url}: {response.status_code} {response.reason_phrase}: {message}",
                       status=response.status_code, url=url, leader=leader, leader_url=leader_url,
                       not_leader=not_leader, restore_id=restore_id)


def _read_some(response: httpx.Response) -> bytes:
    """The start of the answer's body (an error body is small; a hostile one is cut)."""
    if not response.is_stream_consumed:
        data = b""
        try:
            for chunk in response.iter_raw():
                data += chunk
                if len(data) >= MAX_ERROR_BODY:
                    break
        except httpx.HTTPError:
            pass
        return data[:MAX_ERROR_BODY]
    return response.content[:MAX_ERROR_BODY]


def not_an_endpoint(url: str, response: httpx.Response, probe_id: str,
                    no_token: bool) -> RemoteError | None:
    """The error for an answer to ``GET .../restores/<probe_id>`` that shows ``url`` is not a
    snapshot endpoint (or refuses the token); None when it is one (its 404 names the ID)."""
    if response.status_code in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
        return refusal(url, response, no_token)
    try:
        doc = json.loads(_read_some(response))
    except ValueError:
        doc = None
    if isinstance(doc, dict) and ("error" in doc or doc.get("id") == probe_id):
        return None
    return RemoteError(f"{url}: answered {response.status_code} {response.reason_phrase} but not "
                       "as a raft-snapshot endpoint does: is --addr the snapshot endpoint (not "
                       "a Raft port or another service)?", status=response.status_code, url=url)


def speaks_tls(host: str, port: int, timeout: float) -> bool:
    """Whether a TLS handshake succeeds at ``host:port`` (no certificate checked: this only tells
    an operator who wrote ``http://`` that the server wants ``https://``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout) as sock, \
                context.wrap_socket(sock, server_hostname=host):
        return True
    return False
