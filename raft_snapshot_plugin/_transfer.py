"""The bytes of a transfer to or from a snapshot endpoint, apart from the HTTP: an archive as an
upload's body counting what was sent, a path or an open file as one file object, and the folder's
fsync that makes a rename durable."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import IO

from .archive import CHUNK

__all__ = ["Progress", "Upload", "fsync_folder", "opened"]

#: ``progress(done_bytes, total_bytes)``, called as a transfer advances (first with ``done == 0``).
Progress = Callable[[int, int], None]


class Upload:
    """An archive's bytes as the request's body, counting what was sent."""

    def __init__(self, file: IO[bytes], progress: Progress | None) -> None:
        self.file = file
        start = file.tell()
        self.total = file.seek(0, os.SEEK_END) - start
        file.seek(start)
        self.progress = progress
        self.sent = 0
        self.finished = False
        self.finished_at = 0.0

    def chunks(self) -> Iterator[bytes]:
        if self.progress is not None:
            self.progress(0, self.total)
        while self.sent < self.total and (chunk := self.file.read(min(CHUNK, self.total - self.sent))):
            yield chunk  # resumed once the transport has written it
            self.sent += len(chunk)
            if self.progress is not None:
                self.progress(self.sent, self.total)
        self.finished = self.sent == self.total
        self.finished_at = time.monotonic()

    def during(self) -> str | None:
        if self.sent == 0:
            return None
        return f"the upload, after {self.sent} of {self.total} bytes (nothing was applied)"


@contextlib.contextmanager
def opened(source: str | os.PathLike[str] | IO[bytes]) -> Iterator[IO[bytes]]:
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as file:
            yield file
    else:
        yield source


def fsync_folder(folder: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
