"""Segment objects: the committed changes between snapshots, stored beside them.

A segment is ``<prefix>/changes/<first>-<last>.seg`` (indexes zero-padded to 20 digits, so names
sort as the indexes do; ``.seg.age`` when the agent encrypts): an ordinary archive (meta.json with a
``Segment`` key, state.bin of change records, SHA256SUMS), sealed and age-encrypted exactly as the
agent's snapshots are, and verified like any archive when it is read (see :mod:`..changes`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
from collections.abc import Iterator, Sequence
from typing import IO, Any

from .._files import remove_quietly, temp_file
from ..archive import CHUNK, peek_meta, write_archive
from ..changes import SEGMENT_STATE_FORMAT, Change, Gap, SegmentRange, encode_change, read_changes
from ..errors import ArchiveError, StorageError
from ..meta import SnapshotMeta
from ..seal import SealKey, VerifyKey
from ..snapshot import Identities, open_verified
from .storage import modified_time, storage_errors

__all__ = [
    "CHANGES_FOLDER",
    "SEGMENT_PATTERN",
    "StoredSegment",
    "list_segments",
    "peek_range",
    "read_segment",
    "segment_name",
    "write_segment",
]

#: The folder under the prefix that holds the segments.
CHANGES_FOLDER = "changes"
#: A segment object's name: the first and last index it covers.
SEGMENT_PATTERN = re.compile(r"^(?P<first>\d{20})-(?P<last>\d{20})\.seg(?P<age>\.age)?$")
#: A segment's state.bin may not be longer than this when it is read back (hostile input).
MAX_SEGMENT_STATE_BYTES = 1 << 30


@dataclasses.dataclass(frozen=True)
class StoredSegment:
    """One segment object: the indexes its name covers, where it is, and its size."""

    name: str
    path: str
    url: str
    first: int
    last: int
    size: int | None = None
    modified: float | None = None

    @property
    def encrypted(self) -> bool:
        return self.name.endswith(".age")


def segment_name(first: int, last: int, *, encrypted: bool = False) -> str:
    """``<first>-<last>.seg`` with both indexes zero-padded to 20 digits."""
    return f"{first:020d}-{last:020d}.seg" + (".age" if encrypted else "")


def list_segments(fs: Any, root: str) -> list[StoredSegment]:
    """The segments under ``root/changes``, by first index (then last); other objects ignored."""
    folder = f"{root}/{CHANGES_FOLDER}"
    with contextlib.suppress(Exception):
        fs.invalidate_cache(folder)
    try:
        entries = fs.ls(folder, detail=True)
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        path = str(entry["name"]).rstrip("/")
        match = SEGMENT_PATTERN.match(path.rsplit("/", 1)[-1])
        if match is None or entry.get("type") == "directory":
            continue
        first, last = int(match["first"]), int(match["last"])
        if first > last:
            continue
        found.append(StoredSegment(match.group(0), path, str(fs.unstrip_protocol(path)), first,
                                   last, entry.get("size"), modified_time(entry)))
    return sorted(found, key=lambda s: (s.first, s.last, s.name))


def write_segment(out: IO[bytes], backend: str, first: int, changes: Sequence[Change],
                  gaps: Sequence[Gap], *, seal_key: SealKey | None = None) -> SnapshotMeta:
    """Write one segment archive holding ``changes`` and ``gaps`` (together every index from
    ``first`` on, in order) to ``out``; its metadata.

    :raises ValueError: the changes and gaps leave an index out, or repeat one.
    """
    last = max([c.index for c in changes] + [g.last_missing for g in gaps])
    found = SegmentRange(first, last, changes[0].time if changes else None,
                         changes[-1].time if changes else None, tuple(gaps))
    try:
        found.check()
        state = b"".join(encode_change(c) for c in changes)
        meta = SnapshotMeta(index=last, term=changes[-1].term if changes else 0, backend=backend,
                            state_format=SEGMENT_STATE_FORMAT, segment=found)
        for _ in read_changes(io.BytesIO(state), found):  # the reader's rules, before storing
            pass
    except ArchiveError as exc:
        raise ValueError(f"segment {first}-{last}: {exc.reason}") from exc
    return write_archive(out, meta, state, seal=seal_key)


def peek_range(fs: Any, segment: StoredSegment) -> SegmentRange:
    """A segment's range from its meta.json alone (the archive's first member: the first few KiB
    of the object), not verified: for listing and planning. An encrypted segment is read whole.

    :raises StorageError: the object could not be read.
    :raises ArchiveError: it does not start with a segment's meta.json matching its name.
    """
    with storage_errors(f"reading {segment.url}", segment.url), \
            fs.open(segment.path, "rb", block_size=64 << 10) as source:
        return _range_of(peek_meta(source), segment)


@contextlib.contextmanager
def read_segment(fs: Any, segment: StoredSegment, *, verify_key: VerifyKey | None = None,
                 identity: Identities | None = None, backend: str | None = None
                 ) -> Iterator[tuple[SegmentRange, Iterator[Change]]]:
    """Download and verify a segment whole (decrypting it first when it is ``.seg.age``); yield
    its range and its changes (checked against the range as they are read).

    :raises StorageError: the object could not be read.
    :raises ArchiveError: it is not a valid segment (damaged, another backend's, not a segment,
        a range other than its name's).
    """
    with temp_file(prefix="raft-snapshot-segment-") as (local, path):
        try:
            with storage_errors(f"downloading {segment.url}", segment.url), \
                    fs.open(segment.path, "rb") as source:
                copied = 0
                while chunk := source.read(CHUNK):
                    copied += len(chunk)
                    if copied > MAX_SEGMENT_STATE_BYTES:  # compressed, it is smaller than that
                        raise ArchiveError("gzip", f"{segment.name} is larger than "
                                                   f"{MAX_SEGMENT_STATE_BYTES} bytes")
                    local.write(chunk)
            local.flush()
            local.seek(0)
            if segment.encrypted and identity is None:
                raise StorageError(f"{segment.url} is age-encrypted: give an identity",
                                   url=segment.url)
            with open_verified(local, verify_key=verify_key, identity=identity,
                               prefix="raft-snapshot-segment-", backend=backend,
                               max_state_bytes=MAX_SEGMENT_STATE_BYTES) as verified:
                found = _range_of(verified.meta, segment)
                yield found, read_changes(verified.file, found)
        finally:
            local.close()
            remove_quietly(path)


def _range_of(meta: SnapshotMeta, segment: StoredSegment) -> SegmentRange:
    found = meta.segment
    if found is None or meta.state_format.rpartition("/")[0] != SEGMENT_STATE_FORMAT.rpartition(
            "/")[0]:
        raise ArchiveError("meta.json", f"{segment.name} is not a segment of changes")
    if (found.first, found.last) != (segment.first, segment.last):
        raise ArchiveError("meta.json", f"{segment.name} holds {found.first}-{found.last}, not "
                                        "what its name says")
    return found

