"""The request bounds both of ``serve()``'s protocols share, and uvicorn's h11 protocol with them.

See ``_server``'s table for where each bound lives; ``_fast_protocol`` holds the httptools one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from ._protocol import content_length, printable

__all__ = ["DRAIN_SECONDS", "HEADER_SECONDS", "KEEP_ALIVE_SECONDS", "MAX_HEAD_BYTES",
           "PASSTHROUGH_BYTES", "BoundedH11Protocol"]

log = logging.getLogger("raft_snapshot_plugin.endpoint")

#: A client has this long to send its request line and headers, however it trickles them.
HEADER_SECONDS = 10.0
#: The longest request line and headers accepted.
MAX_HEAD_BYTES = 64 << 10
#: A body left unread (a refused upload) is read and dropped this long before the connection
#: closes: closing a socket with unread input resets it, and the client would lose the answer.
DRAIN_SECONDS = 2.0
#: A body at least this long goes to the application past the httptools parser (see
#: ``_FastProtocol``): an upload of a snapshot, not a small request.
PASSTHROUGH_BYTES = 1 << 20
#: Seconds an idle connection stays open between two requests.
KEEP_ALIVE_SECONDS = 5.0

TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:([^\r\n]*)", re.IGNORECASE)


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus the bounds it lacks (see the module's table)."""

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        arm_header_deadline(self)

    def connection_lost(self, exc: Exception | None) -> None:
        cancel_header_deadline(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            arm_header_deadline(self)
            head = self.conn.trailing_data[0] + data
            refusal = head_refusal(bytes(head))
            if refusal is not None:
                cancel_header_deadline(self)
                answer_and_close(self, *refusal)
                return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            cancel_header_deadline(self)

    def eof_received(self) -> bool | None:  # type: ignore[override]  # True keeps it open
        """A client that half-closes mid-upload still gets its answer (a 400 for the cut body)."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.more_body:
            cycle.more_body = False
            cycle.message_event.set()
            return True
        return None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self.loop.call_later(DRAIN_SECONDS, self.transport.close)

    def send_400_response(self, msg: str) -> None:
        answer_and_close(self, 400, f"malformed request: {msg}")

    def _too_slow(self) -> None:
        self._deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            drop_slow(self)


# --- what both protocols share -----------------------------------------------------------------

def arm_header_deadline(protocol: Any) -> None:
    if protocol._deadline is None:
        protocol._deadline = protocol.loop.call_later(HEADER_SECONDS, protocol._too_slow)


def cancel_header_deadline(protocol: Any) -> None:
    if protocol._deadline is not None:
        protocol._deadline.cancel()
        protocol._deadline = None


def drop_slow(protocol: Any) -> None:
    log.info("dropped %s: no complete request in %.0f s",
             protocol.client[0] if protocol.client else "?", HEADER_SECONDS)
    protocol.transport.close()


def answer_and_close(protocol: Any, status: int, message: str) -> None:
    log.info("%s", printable(f"{protocol.client[0] if protocol.client else '?'} refused {status}: "
                             f"{message}"))
    body = json.dumps({"error": message}).encode() + b"\n"
    phrase = {400: "Bad Request", 431: "Request Header Fields Too Large"}.get(status, "Error")
    head = (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    protocol.transport.write(head + body)
    protocol.transport.close()


def plain_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """A request's one valid Content-Length, when no Transfer-Encoding comes with it."""
    lengths = [value for name, value in headers if name == b"content-length"]
    if len(lengths) != 1 or any(name == b"transfer-encoding" for name, _ in headers):
        return None
    return content_length(lengths[0].decode("latin-1"))


def head_refusal(head: bytes) -> tuple[int, str] | None:
    """A request head the endpoint refuses before h11 parses it: too long, or a Content-Length
    that is not a byte count (h11 would refuse it too, with a plain-text 400)."""
    end = head.find(b"\r\n\r\n")
    if (end if end >= 0 else len(head)) > MAX_HEAD_BYTES:
        return 431, f"the request line and headers exceed {MAX_HEAD_BYTES} bytes"
    if end < 0:
        return None
    for value in _CONTENT_LENGTH.findall(head[: end + 2]):
        if content_length(value.decode("latin-1")) is None:
            return 400, "Content-Length is not a byte count"
    return None
