"""An upload's body as the endpoint reads it: never past Content-Length, and not too slowly."""

from __future__ import annotations

import time

from .archive import Readable

__all__ = ["MIN_UPLOAD_RATE", "RATE_GRACE_SECONDS", "Body", "UploadBrokenError"]

#: After the first ``RATE_GRACE_SECONDS`` of an upload, a client sending slower than this (bytes
#: per second, on average) is dropped: a slow upload holds a thread and the restore's temp file.
MIN_UPLOAD_RATE = 16 << 10
RATE_GRACE_SECONDS = 10.0


class UploadBrokenError(Exception):
    """The client stopped sending before ``Content-Length`` bytes arrived."""


class Body:
    """The request body as a stream that never reads past ``Content-Length``."""

    def __init__(self, raw: Readable, length: int) -> None:
        self._raw = raw
        self.length = length
        self.remaining = length
        self._started = time.monotonic()

    def read(self, size: int = -1, /) -> bytes:
        if self.remaining <= 0:
            return b""
        self._check_rate()
        n = self.remaining if size is None or size < 0 else min(size, self.remaining)
        try:
            data = self._raw.read(n)
        except OSError as exc:  # reset, timeout, TLS failure
            raise UploadBrokenError(
                f"the upload broke off after {self.length - self.remaining} of {self.length} "
                f"bytes: {exc}"
            ) from exc
        self.remaining -= len(data)
        if len(data) < n:
            raise UploadBrokenError(
                f"the upload ended after {self.length - self.remaining} of {self.length} bytes"
            )
        return data

    def _check_rate(self) -> None:
        elapsed = time.monotonic() - self._started
        done = self.length - self.remaining
        if elapsed > RATE_GRACE_SECONDS and done < MIN_UPLOAD_RATE * elapsed:
            raise UploadBrokenError(
                f"the upload was dropped: {done} of {self.length} bytes in {elapsed:.0f} s, slower "
                f"than {MIN_UPLOAD_RATE} bytes/s")
