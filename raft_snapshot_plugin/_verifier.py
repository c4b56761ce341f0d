"""An archive checked in a thread of its own while its bytes arrive (``Client.save``).

Checking a download after it has landed reads the file again and leaves a core idle while the
bytes come in; fed as they arrive, the check (decompression and SHA-256, which let go of the GIL)
runs beside the download and ends moments after it. The bytes checked are the bytes written: the
caller writes each piece to its file and feeds the same piece here.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Final

from .errors import ArchiveError
from .meta import SnapshotMeta
from .seal import VerifyKey
from .snapshot import verify

#: Pieces waiting for the checker at most (a download's are 1 MiB at most: 8 MiB held): when
#: the check lags, it holds up the download, not memory.
QUEUE_PIECES: Final = 8
#: How often a feeder blocked on a full queue looks whether the checker has stopped.
_POLL_SECONDS: Final = 0.5


class _AbandonedError(Exception):
    """Raised inside the checker's reads when the download ended without its last byte."""


class StreamVerifier:
    """Verify an archive from the pieces fed to it, in a daemon thread.

    ``feed`` each piece in order, then ``finish()`` for the metadata (or the check's error);
    ``abandon()`` when the download fails. A piece fed after the check has failed raises that
    failure at once, so a damaged archive stops its download early.
    """

    def __init__(self, *, verify_key: VerifyKey | None = None) -> None:
        self._verify_key = verify_key
        self._pieces: queue.Queue[bytes | None] = queue.Queue(QUEUE_PIECES)
        self._piece = b""
        self._offset = 0
        self._ended = False
        self._abandoned = threading.Event()
        self._meta: SnapshotMeta | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._check, name="raft-snapshot-verify",
                                        daemon=True)
        self._thread.start()

    # --- the download's side ----------------------------------------------------------------

    def feed(self, piece: bytes) -> None:
        """Queue the next piece of the archive; raise the check's error if it has failed."""
        if piece:
            self._put(piece)

    def finish(self) -> SnapshotMeta:
        """Mark the end of the archive and wait for the check; return the archive's metadata.

        :raises ArchiveError: the archive is malformed or refused, or has bytes after its end.
        :raises IntegrityError: a checksum, length or seal does not match.
        """
        self._put(None)
        self._thread.join()
        self._raise_if_stopped()
        assert self._meta is not None
        return self._meta

    def abandon(self) -> None:
        """Stop the check without a result (the download failed); safe to call at any time."""
        self._abandoned.set()
        # wake a checker waiting for a piece; a full queue means it is busy, not waiting
        with contextlib.suppress(queue.Full):
            self._pieces.put_nowait(None)
        self._thread.join()

    def _put(self, piece: bytes | None) -> None:
        while True:
            self._raise_if_stopped()
            try:
                self._pieces.put(piece, timeout=_POLL_SECONDS)
                return
            except queue.Full:
                continue

    def _raise_if_stopped(self) -> None:
        """Raise what ended the check, if it has ended short of a whole archive."""
        if not self._thread.is_alive():
            if self._error is not None:
                raise self._error
            # the reader reads to the end; this keeps that promise should it ever stop short
            if self._meta is not None and not self._ended:
                raise ArchiveError("gzip", "bytes after the end of the archive")

    # --- the checker's side -----------------------------------------------------------------

    def _check(self) -> None:
        try:
            self._meta = verify(self, verify_key=self._verify_key)
        except _AbandonedError:
            pass
        except BaseException as exc:  # handed to the download's thread, which raises it
            self._error = exc

    def read(self, size: int = -1, /) -> bytes:
        """The checker's input: ``size`` bytes of what was fed (fewer only at the end; without a
        size, what is left of one piece), ``b""`` at the end. Pieces are joined up to ``size``:
        the reader decodes large reads faster than a socket's small pieces."""
        parts: list[bytes] = []
        wanted = size if size >= 0 else 1  # no size: what is left of one piece
        while wanted > 0 and not self._ended:
            if self._offset >= len(self._piece):
                piece = self._pieces.get()
                if self._abandoned.is_set():
                    raise _AbandonedError
                if piece is None:
                    self._ended = True
                    break
                self._piece, self._offset = piece, 0
            start = self._offset
            end = len(self._piece) if size < 0 else min(len(self._piece), start + wanted)
            parts.append(self._piece if start == 0 and end == len(self._piece)
                         else self._piece[start:end])
            self._offset = end
            wanted -= end - start
        return parts[0] if len(parts) == 1 else b"".join(parts)
