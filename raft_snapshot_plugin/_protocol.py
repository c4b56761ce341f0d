"""What the endpoint and its client agree on: the path, the defaults, the error body's limit."""

from __future__ import annotations

import secrets

#: The endpoint's path.
PATH = "/v1/snapshot"
#: The largest upload ``serve`` accepts unless told otherwise: 1 GiB.
DEFAULT_MAX_UPLOAD_BYTES = 1 << 30
#: The longest state (decompressed) ``serve`` restores unless told otherwise: 4 GiB. A small
#: upload can inflate far beyond ``max_upload_bytes``; this bounds the temp disk it may take.
DEFAULT_MAX_STATE_BYTES = 4 << 30
#: Seconds a network operation may wait (server: each read or write; client: the same, and the
#: server's take before the first byte arrives).
DEFAULT_TIMEOUT = 120.0
#: Seconds ``serve``'s takes and restores may last unless told otherwise: a restore on a node
#: without quorum ends (and lets go of the node) instead of holding it.
DEFAULT_OPERATION_TIMEOUT = 300.0
#: The longest error answer a client reads.
MAX_ERROR_BODY = 64 << 10


def content_length(value: str | None) -> int | None:
    """A Content-Length header's byte count, or ``None`` when it is not one: ASCII digits only
    (``str.isdigit`` also takes ``²``), and no more of them than a 64-bit length needs."""
    text = (value or "").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    return int(text)


#: The restores' status resources live under this path: ``GET {RESTORES_PATH}/<id>``.
RESTORES_PATH = PATH + "/restores"
#: The header naming a restore: proposed by the client on ``PUT``, echoed on every answer to it.
RESTORE_ID_HEADER = "X-Raft-Restore-Id"
#: ``serve(http=...)``: ``auto`` is uvicorn's httptools protocol on uvloop when installed, else its
#: h11 protocol on asyncio's loop; ``h11`` is the latter whatever is installed.
HTTP_IMPLEMENTATIONS = ("auto", "h11")
#: Seconds a client waits to connect (TCP and TLS) unless told otherwise.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Seconds a client waits for the node to act (a take before the download's first byte, a restore
#: to be applied after the upload) unless told otherwise: the server's own limit and a margin.
DEFAULT_WAIT = DEFAULT_OPERATION_TIMEOUT + 30.0
#: Seconds a finished restore's outcome stays answerable at its status URL.
RESTORE_RETENTION_SECONDS = 3600.0
#: Finished restores remembered at most (the oldest are forgotten first).
RESTORE_RETENTION_COUNT = 1000

_ID_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def new_restore_id() -> str:
    """A fresh restore ID: 32 hexadecimal digits (128 random bits). Never one that starts with
    ``-``, which a command line (``raft-snapshot restore-status ID``) would read as an option."""
    return secrets.token_hex(16)


def valid_restore_id(value: str) -> bool:
    """Whether ``value`` can name a restore: 16 to 64 URL-safe characters (a random token)."""
    return 16 <= len(value) <= 64 and set(value) <= _ID_CHARACTERS


def printable(text: str, limit: int = 300) -> str:
    """``text`` fit for one log line: control and other unprintable characters escaped (a TLS
    handshake sent to a plain port is bytes, not words), at most ``limit`` characters."""
    text = text if len(text) <= limit else text[:limit] + "..."
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)

