"""What the endpoint and its client agree on: the path, the defaults, the error body's limit."""

from __future__ import annotations

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
