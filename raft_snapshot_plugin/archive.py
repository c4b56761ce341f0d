"""The snapshot archive, byte-compatible with HashiCorp Consul's.

An archive is one gzip member (RFC 1952; no file name, mtime 0, OS 255) holding a plain USTAR tar::

    meta.json          hashicorp/raft's SnapshotMeta as Go writes it (see :mod:`.meta`); a sealed
                       archive's carries a ``Seal`` key (see :mod:`.seal`)
    state.bin          the state machine's bytes, opaque to the core
    SHA256SUMS         "<lowercase hex sha256>  <name>\\n" for meta.json and state.bin

The reader also accepts the fourth member Vault and OpenBao write, ``SHA256SUMS.sealed``: verified by
the sums like the rest, its seal reported and not checked.

Headers have mode 0600, uid/gid 0, empty owner names and the snapshot time in whole seconds; the tar
ends with exactly two zero blocks (Consul rejects the padding Python's ``tarfile`` adds).

Reading rejects what Consul's reader rejects and, on purpose, also: a duplicate member, a member that
is not a regular file, any other name, a meta.json over 1 MiB, and a ``Size`` that is not state.bin's
length. Members may come in any order; sums are checked once the whole archive has been read. Data
after the tar's end, and any bytes after the last gzip member, are refused (Go refuses them; Python's
``gzip`` module skips zero padding there). Both directions stream: state.bin is hashed as it passes
and never held in memory whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, Protocol, Union

from ._files import remove_quietly, temp_file
from ._gzip import CHUNK as CHUNK  # re-exported: the chunk size the other modules stream in
from ._gzip import FAST_GZIP, GzipReader, GzipWriter, Readable
from ._gzip import Writable as _Writable
from ._tar import BLOCK as BLOCK  # re-exported
from ._tar import ZERO_BLOCK, padding, tar_header, tar_members
from ._worker import QUEUE_DEPTH, Worker
from .errors import ArchiveError, IntegrityError
from .meta import MAX_META_BYTES, SnapshotMeta, Suffrage, encode_peers
from .seal import SealKey, VerifyKey, check_seal, seal_meta, seal_status

__all__ = [
    "FAST_GZIP",
    "MEMBER_META",
    "MEMBER_SEAL",
    "MEMBER_STATE",
    "MEMBER_SUMS",
    "ArchiveContents",
    "Readable",
    "peek_meta",
    "read_archive",
    "read_archive_contents",
    "write_archive",
]

MEMBER_META = "meta.json"
MEMBER_STATE = "state.bin"
MEMBER_SUMS = "SHA256SUMS"
MEMBER_SEAL = "SHA256SUMS.sealed"
_KNOWN = (MEMBER_META, MEMBER_STATE, MEMBER_SUMS, MEMBER_SEAL)
_MAX_SMALL_MEMBER = {MEMBER_META: MAX_META_BYTES, MEMBER_SUMS: 64 << 10, MEMBER_SEAL: 64 << 10}

# CHUNK (1 MiB, the unit every stream is read and handed on in) comes from ._gzip, BLOCK (512) from
# ._tar; both stay importable from here.
#: state.bin from this size up is hashed (and, when reading, handed to the sink) on a worker thread
#: while this thread compresses or decompresses: hashlib and ISA-L both release the GIL.
_THREAD_MIN = 4 * CHUNK

#: The source of state.bin: bytes, a path, or a binary file object read from its current position.
StateSource = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", IO[bytes]]
#: An archive to read: a path, or a binary file object read from its current position.
ArchiveSource = Union[str, "os.PathLike[str]", "Readable"]


# ==================================================================================================
# Writing
# ==================================================================================================

def write_archive(
    out: _Writable,
    meta: SnapshotMeta,
    state: StateSource,
    *,
    level: int | None = None,
    seal: SealKey | None = None,
    state_sha256: str | None = None,
) -> SnapshotMeta:
    """Write one archive of ``state`` to the binary stream ``out``; return the meta as written.

    :param out: any object with ``write(bytes)``; it is neither flushed nor closed.
    :param meta: the snapshot's metadata. ``size`` is set to state.bin's length; an empty ``id``
        becomes ``term-index-unixmillis``; empty ``peers`` are encoded from the voters' addresses.
    :param state: state.bin's content: bytes, a path, or a binary file read from where it stands.
        A stream that cannot seek is spooled to a private temp file first (memory stays flat).
    :param level: compression from 0 (fastest) to 9 (smallest), counted as zlib counts; ``None``
        favours speed (level 1). With ISA-L installed the level maps onto its 0 to 3.
    :param seal: a key (see :mod:`.seal`) that seals the archive: meta.json gets a ``Seal`` key.
        The archive keeps Consul's three members either way.
    :param state_sha256: state.bin's SHA-256 (hex), when the caller hashed it on the way in; a
        seal needs it before meta.json is written, and without it the state is read twice.
    """
    with _open_state(state) as (stream, size):
        millis = _millis_from_id(meta.id)
        if millis is None:
            millis = time.time_ns() // 1_000_000
        meta = dataclasses.replace(
            meta,
            size=size,
            id=meta.id or f"{meta.term}-{meta.index}-{millis}",
            peers=meta.peers or encode_peers(
                s.address for s in meta.servers if s.suffrage == Suffrage.VOTER
            ),
        )
        if seal is not None:
            if state_sha256 is None:
                state_sha256 = _hash_state(stream, size)
            meta = seal_meta(meta, state_sha256, seal)
        meta_bytes = meta.to_json()
        mtime = millis // 1000
        gz = GzipWriter(out, level)
        meta_sum = hashlib.sha256(meta_bytes).hexdigest()
        _write_member(gz, MEMBER_META, meta_bytes, mtime)
        gz.write(tar_header(MEMBER_STATE, size, mtime))
        state_sum = _copy_hashed(stream, size, gz)
        gz.write(padding(size))
        sums = f"{meta_sum}  {MEMBER_META}\n{state_sum}  {MEMBER_STATE}\n".encode("ascii")
        _write_member(gz, MEMBER_SUMS, sums, mtime)
        if state_sha256 is not None and state_sum != state_sha256:
            raise IntegrityError(MEMBER_STATE, "the state changed while it was written: its hash "
                                               "is not the one given (or sealed)")
        gz.write(ZERO_BLOCK * 2)
        gz.close()
    return meta


def _hash_state(source: IO[bytes] | memoryview, size: int) -> str:
    """SHA-256 of the ``size`` bytes at ``source``'s position, which is put back."""
    if isinstance(source, memoryview):
        return hashlib.sha256(source).hexdigest()
    start = source.tell()
    digest = hashlib.sha256()
    remaining = size
    while remaining and (chunk := source.read(min(CHUNK, remaining))):
        digest.update(chunk)
        remaining -= len(chunk)
    source.seek(start)
    return digest.hexdigest()


def _write_member(gz: GzipWriter, name: str, data: bytes, mtime: int) -> None:
    """One small member: its tar header, ``data`` and the padding to a whole block."""
    gz.write(tar_header(name, len(data), mtime))
    gz.write(data)
    gz.write(padding(len(data)))


def _copy_hashed(source: IO[bytes] | memoryview, size: int, gz: GzipWriter) -> str:
    """Compress ``size`` bytes of ``source`` into ``gz``, hashing them on the way; return the hex."""
    digest = hashlib.sha256()
    if isinstance(source, memoryview):
        with Worker(digest.update, threaded=size >= _THREAD_MIN) as worker:
            for start in range(0, size, CHUNK):
                worker.put(source[start:start + CHUNK])
                gz.write(source[start:start + CHUNK])
        return digest.hexdigest()
    # A ring of buffers: one is read into and compressed here while the worker hashes the ones
    # before it. A buffer is read into again only once the worker has released it.
    threaded = size >= _THREAD_MIN
    count = QUEUE_DEPTH + 2 if threaded else 1
    buffers = [memoryview(bytearray(min(CHUNK, max(size, 1)))) for _ in range(count)]
    free = threading.Semaphore(count)
    remaining = size
    with Worker(digest.update, threaded=threaded, done=free.release) as worker:
        turn = 0
        while remaining:
            free.acquire()
            buffer = buffers[turn % count]
            turn += 1
            n = source.readinto(buffer[: min(remaining, len(buffer))])  # type: ignore[attr-defined]
            if not n:
                raise ArchiveError(MEMBER_STATE, f"the state ended {remaining} bytes early while writing")
            worker.put(buffer[:n])
            gz.write(buffer[:n])
            remaining -= n
    return digest.hexdigest()




@contextlib.contextmanager
def _open_state(state: StateSource) -> Iterator[tuple[IO[bytes] | memoryview, int]]:
    """Yield state.bin's content as a memoryview or a readable stream, and its length."""
    if isinstance(state, (bytes, bytearray, memoryview)):
        view = memoryview(state).cast("B")
        yield view, len(view)
    elif isinstance(state, (str, os.PathLike)):
        with open(state, "rb") as file:
            yield file, os.fstat(file.fileno()).st_size
    elif _seekable(state):
        start = state.tell()
        end = state.seek(0, io.SEEK_END)
        state.seek(start)
        yield state, end - start
    else:  # a pipe or socket: spool to a private temp file so the length is known up front
        with temp_file(prefix="raft-snapshot-state-") as (file, path):
            try:
                shutil.copyfileobj(state, file, CHUNK)
                size = file.tell()
                file.seek(0)
                yield file, size
            finally:
                file.close()
                remove_quietly(path)


def _seekable(stream: IO[bytes]) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _millis_from_id(snapshot_id: str) -> int | None:
    match = re.fullmatch(r"\d+-\d+-(\d+)", snapshot_id)
    return int(match.group(1)) if match else None


# ==================================================================================================
# Reading
# ==================================================================================================

@dataclasses.dataclass(frozen=True)
class ArchiveContents:
    """What a full read of an archive found, every check passed."""

    meta: SnapshotMeta
    meta_bytes: bytes
    sums: bytes
    state_sha256: str
    #: Vault's and OpenBao's ``SHA256SUMS.sealed`` member, when present: read, not checked
    vault_seal: bytes | None = None
    #: the seal was checked with a verify key and holds: the key's owner made this archive
    trusted: bool = False

    @property
    def seal_status(self) -> str:
        """``HMAC key 053e…, checked`` / ``not sealed`` / ``…, not checked (no key given)``."""
        return seal_status(self.meta, checked=self.trusted, vault_layout=self.vault_seal is not None)


class _Sink(Protocol):
    def write(self, data: Any, /) -> Any: ...


def read_archive(
    source: ArchiveSource, sink: _Sink | None, *, verify_key: VerifyKey | None = None,
    max_state_bytes: int | None = None,
) -> SnapshotMeta:
    """Read and check a whole archive, streaming state.bin into ``sink``; return its metadata.

    :param source: a path, or a binary stream read from where it stands (and not closed).
    :param sink: receives state.bin's bytes as they are read, or ``None`` to discard them. It may
        hold bytes of a bad archive when this raises: use a temp file and discard it on error.
    :param verify_key: require a seal made with this key (see :mod:`.seal`); without one, a
        seal is accepted unchecked, as Consul's reader does.
    :param max_state_bytes: refuse a state.bin longer than this (decompressed), from its tar
        header, before a byte of it reaches ``sink``.
    :raises ArchiveError: the archive is malformed or refused; ``.member`` names where.
    :raises IntegrityError: a checksum, length or seal does not match, or the seal is missing.
    """
    return read_archive_contents(source, sink, verify_key=verify_key,
                                 max_state_bytes=max_state_bytes).meta


def read_archive_contents(
    source: ArchiveSource, sink: _Sink | None, *, verify_key: VerifyKey | None = None,
    max_state_bytes: int | None = None,
) -> ArchiveContents:
    """As :func:`read_archive`, returning everything the read found (for seals and dedup)."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as file:
            return _read(file, sink, verify_key, max_state_bytes)
    return _read(source, sink, verify_key, max_state_bytes)


def _check_state_header(size: int, small: dict[str, bytes], limit: int | None) -> None:
    """Refuse state.bin from its tar header, before its bytes are read: over the caller's limit,
    or not the length meta.json (when it came first, as every writer puts it) declares."""
    if limit is not None and size > limit:
        raise ArchiveError(MEMBER_STATE, f"{size} bytes, more than the {limit} allowed")
    if MEMBER_META in small:
        declared = SnapshotMeta.from_json(small[MEMBER_META]).size
        if declared != size:
            raise IntegrityError(MEMBER_STATE,
                                 f"{size} bytes long but meta.json says Size {declared}")


def _read(source: Readable, sink: _Sink | None, verify_key: VerifyKey | None,
          max_state_bytes: int | None) -> ArchiveContents:
    gz = GzipReader(source)
    small: dict[str, bytes] = {}
    digests: dict[str, str] = {}
    state_length: int | None = None
    for name, size in tar_members(gz, _KNOWN):
        if name in digests or name in small:
            raise ArchiveError(name, "duplicate member")
        if name == MEMBER_STATE:
            _check_state_header(size, small, max_state_bytes)
            gz.where = name
            digests[name], state_length = _stream_member(gz, size, sink), size
        else:
            if size > _MAX_SMALL_MEMBER[name]:
                raise ArchiveError(name, f"{size} bytes, more than the {_MAX_SMALL_MEMBER[name]} allowed")
            small[name] = gz.read_exact(size, name)
            if name == MEMBER_META:
                digests[name] = hashlib.sha256(small[name]).hexdigest()
        gz.read_exact(-size % BLOCK, name)
    gz.where = "gzip"
    gz.expect_end()
    for name in (MEMBER_META, MEMBER_STATE, MEMBER_SUMS):
        if name not in small and name not in digests:
            raise ArchiveError(name, "missing from the archive")
    _check_sums(small[MEMBER_SUMS], digests)
    meta = SnapshotMeta.from_json(small[MEMBER_META])
    if verify_key is not None:
        if meta.seal is None and MEMBER_SEAL in small:
            raise IntegrityError(MEMBER_SEAL, "sealed in Vault's layout, which this key cannot "
                                              "check; a verify key is configured")
        check_seal(meta, digests[MEMBER_STATE], verify_key)
    if meta.size != state_length:
        raise IntegrityError(
            MEMBER_STATE, f"{state_length} bytes long but meta.json says Size {meta.size}"
        )
    return ArchiveContents(
        meta=meta,
        meta_bytes=small[MEMBER_META],
        sums=small[MEMBER_SUMS],
        state_sha256=digests[MEMBER_STATE],
        vault_seal=small.get(MEMBER_SEAL),
        trusted=verify_key is not None,
    )


def peek_meta(source: Readable) -> SnapshotMeta:
    """meta.json of an archive that starts with it (ours always do), read from the first member
    alone: nothing else is read, so nothing is verified. For planning only (which segments a
    restore would read); anything used is read again with :func:`read_archive`.

    :raises ArchiveError: the archive does not start with a valid meta.json.
    """
    gz = GzipReader(source)
    for name, size in tar_members(gz, _KNOWN):
        if name != MEMBER_META:
            raise ArchiveError(name, "the first member, not meta.json")
        if size > MAX_META_BYTES:
            raise ArchiveError(name, f"{size} bytes, more than the {MAX_META_BYTES} allowed")
        return SnapshotMeta.from_json(gz.read_exact(size, name))
    raise ArchiveError(MEMBER_META, "missing from the archive")


def _stream_member(gz: GzipReader, size: int, sink: _Sink | None) -> str:
    digest = hashlib.sha256()
    if sink is None:
        consume: Callable[[bytes], object] = digest.update
    else:
        def consume(chunk: bytes) -> None:
            digest.update(chunk)
            sink.write(chunk)

    remaining = size
    with Worker(consume, threaded=size >= _THREAD_MIN) as worker:
        while remaining:
            chunk = gz.read(min(remaining, CHUNK))
            if not chunk:
                raise IntegrityError(MEMBER_STATE, f"truncated: {remaining} of {size} bytes missing")
            worker.put(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


_SUM_LINE = re.compile(r"([0-9a-fA-F]{64})  (\S+)\r?")


def _check_sums(text: bytes, digests: dict[str, str]) -> None:
    seen = set()
    lines = text.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the newline that ends the last line
    for number, raw in enumerate(lines, 1):
        match = _SUM_LINE.fullmatch(raw.decode("utf-8", "replace"))
        if not match:
            raise ArchiveError(MEMBER_SUMS, f"line {number} is not '<sha256>  <name>'")
        expected, name = match.group(1).lower(), match.group(2)
        if name not in digests:
            raise ArchiveError(MEMBER_SUMS, f"line {number} names {name!r}, not a hashed member")
        if digests[name] != expected:
            raise IntegrityError(name, "SHA-256 does not match SHA256SUMS")
        seen.add(name)
    for name in digests:
        if name not in seen:
            raise ArchiveError(MEMBER_SUMS, f"no checksum for {name}")
