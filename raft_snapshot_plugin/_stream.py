"""The endpoint's two streams: a snapshot's archive out of its temp file (``GET``), and an upload's
body into its restore (``PUT``), each in chunks, never whole in memory, and neither too slow."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import anyio
import anyio.to_thread
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ._restores import Feed, UploadBrokenError
from .archive import CHUNK
from .snapshot import Snapshot

__all__ = ["MIN_UPLOAD_RATE", "RATE_GRACE_SECONDS", "ArchiveResponse", "allowed_wait", "pump_body",
           "too_slow"]

log = logging.getLogger("raft_snapshot_plugin.endpoint")

#: After the first ``RATE_GRACE_SECONDS`` of an upload, a client sending slower than this (bytes
#: per second, on average) is dropped: a slow upload holds the restore's temp file and the node.
MIN_UPLOAD_RATE = 16 << 10
RATE_GRACE_SECONDS = 10.0


def allowed_wait(started: float, done: int, io_timeout: float) -> float:
    """Seconds the next piece of the body may take: ``io_timeout``, or less when the average rate
    would fall under ``MIN_UPLOAD_RATE`` sooner."""
    rate_deadline = max(RATE_GRACE_SECONDS, done / MIN_UPLOAD_RATE)
    return max(0.0, min(io_timeout, started + rate_deadline - time.monotonic()))


async def pump_body(receive: Receive, feed: Feed, io_timeout: float) -> None:
    """Read the request's body into ``feed`` as it arrives, then end it; a body that breaks off,
    stalls or trickles fails it instead (its restore then applies nothing)."""
    started = time.monotonic()
    done = 0
    try:
        # one cancel scope whose deadline moves with each piece: a scope per receive() would cost
        # the event loop more than the piece's bytes do
        with anyio.CancelScope() as scope:
            while done < feed.length:
                scope.deadline = anyio.current_time() + allowed_wait(started, done, io_timeout)
                message = await receive()
                if message["type"] == "http.disconnect":
                    feed.fail(UploadBrokenError(f"the upload broke off after {done} of "
                                                f"{feed.length} bytes: the client disconnected"))
                    return
                body: bytes = message.get("body", b"")[: feed.length - done]
                done += len(body)
                if body and not await _hand_over(feed, body, scope):
                    return  # the restore stopped reading (a refused archive): the rest is moot
                if not message.get("more_body", False) and done < feed.length:
                    feed.fail(UploadBrokenError(f"the upload ended after {done} of {feed.length} "
                                                "bytes"))
                    return
        if scope.cancelled_caught:
            feed.fail(too_slow(started, done, feed.length, io_timeout))
            return
        feed.end()
    except BaseException:  # cancelled (the server stops): the restore must not wait for more
        feed.fail(UploadBrokenError(f"the request ended after {done} of {feed.length} bytes"))
        raise


async def _hand_over(feed: Feed, body: bytes, scope: anyio.CancelScope) -> bool:
    """Queue ``body`` for the restore; ``False`` once it stopped reading."""
    accepted = feed.offer(body)
    if accepted is False:  # the restore is behind: wait for room off the event loop, however
        scope.deadline = math.inf  # long it takes (the client is not the slow one)
        accepted = await anyio.to_thread.run_sync(feed.put, body)
    return accepted is not None


def too_slow(started: float, done: int, length: int, io_timeout: float) -> UploadBrokenError:
    elapsed = time.monotonic() - started
    if elapsed >= RATE_GRACE_SECONDS and done < MIN_UPLOAD_RATE * elapsed:
        return UploadBrokenError(f"the upload was dropped: {done} of {length} bytes in "
                                 f"{elapsed:.0f} s, slower than {MIN_UPLOAD_RATE} bytes/s")
    return UploadBrokenError(f"the upload stalled after {done} of {length} bytes (nothing for "
                             f"{io_timeout:g} s)")


class ArchiveResponse(Response):
    """A taken snapshot's archive, streamed from its temp file, which is removed at the end
    whatever happens (a client gone away, a stalled one, a server that stops)."""

    def __init__(self, snap: Snapshot, io_timeout: float, client: str) -> None:
        super().__init__(status_code=200, media_type="application/octet-stream", headers={
            "Content-Length": str(snap.size),
            "X-Raft-Index": str(snap.index),
            # unknown: the adapter cannot tell (it has no raft_snapshot_is_leader)
            "X-Raft-Stale": {True: "true", False: "false", None: "unknown"}[snap.stale],
        })
        self.snap = snap
        self.io_timeout = io_timeout
        self.client = client
        self.sent = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.sent = 0
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(_watch_disconnect, receive, group)
                await self._stream(send)
                group.cancel_scope.cancel()
            if self.sent < self.snap.size:
                log.warning("client %s went away after %d of %d bytes of snapshot %s had been "
                            "sent", self.client, self.sent, self.snap.size, self.snap.meta.id)
        finally:
            await anyio.to_thread.run_sync(self.snap.close)

    async def _stream(self, send: Send) -> None:
        try:
            with anyio.fail_after(self.io_timeout):
                await send({"type": "http.response.start", "status": self.status_code,
                            "headers": self.raw_headers})
            await anyio.to_thread.run_sync(self.snap.seek, 0)
            while True:
                chunk = await anyio.to_thread.run_sync(self.snap.read, CHUNK)
                more = bool(chunk) and self.sent + len(chunk) < self.snap.size
                with anyio.fail_after(self.io_timeout):
                    await send({"type": "http.response.body", "body": chunk, "more_body": more})
                self.sent += len(chunk)
                if not more:
                    return
        except (TimeoutError, OSError) as exc:  # a client that stopped reading, or a reset
            log.info("sending snapshot %s to %s stopped: %r", self.snap.meta.id, self.client, exc)


async def _watch_disconnect(receive: Receive, group: Any) -> None:
    """Stop the stream when the client goes away (servers drop what is sent after that)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    group.cancel_scope.cancel()
