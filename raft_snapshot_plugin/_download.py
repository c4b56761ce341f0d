"""A download's body read through the response's ``network_stream`` (``Client.save``).

httpx reads a body 64 KiB at a time (httpcore's fixed read size) and hands every piece through
h11's buffer and several generator layers: for a snapshot, enough CPU to make a save through
the endpoint slower than through the standard library's client (``bench/ENDPOINT.md``). httpx
documents the ``network_stream`` response extension, the connection itself, for reading past
its request/response model: past the first piece, the body is read from it directly, 1 MiB at
a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import httpcore
import httpx

__all__ = ["READ_BYTES", "body_pieces"]

#: The most read from the connection at once.
READ_BYTES: Final = 1 << 20


def body_pieces(response: httpx.Response, total: int, io_timeout: float) -> Iterator[bytes]:
    """The body of ``response``, ``total`` bytes long (fewer when the connection ends first).

    The first piece comes through httpx: everything h11 had received past the response's head,
    which it hands on in one piece (it passes on all it holds, up to the Content-Length, at
    once). The rest is read from the connection, never past ``total``, each read within
    ``io_timeout``; a connection read that way is not reused (httpx closes a response that was
    not read to its end through it). Without a ``network_stream`` (HTTP/2, a mock transport)
    every piece comes through httpx.

    :raises httpx.ReadTimeout: a read waited ``io_timeout`` for nothing.
    :raises httpx.ReadError: the connection failed.
    """
    through_httpx = response.iter_raw()
    done = 0
    for piece in through_httpx:
        done += len(piece)
        yield piece
        break
    stream = response.extensions.get("network_stream")
    if stream is None or done >= total:
        yield from through_httpx
        return
    while done < total:
        try:
            piece = stream.read(min(READ_BYTES, total - done), io_timeout)
        except httpcore.TimeoutException as exc:  # as httpx maps its transport's errors
            raise httpx.ReadTimeout(str(exc) or "timed out", request=response.request) from exc
        except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=response.request) from exc
        if not piece:  # the connection ended early: the caller counts what came
            return
        done += len(piece)
        yield piece
