"""The snapshot archive, byte-compatible with HashiCorp Consul's.

An archive is one gzip member (RFC 1952; no file name, mtime 0, OS 255) holding a plain USTAR tar::

    meta.json          hashicorp/raft's SnapshotMeta as Go writes it (see :mod:`.meta`)
    state.bin          the state machine's bytes, opaque to the core
    SHA256SUMS         "<lowercase hex sha256>  <name>\\n" for meta.json and state.bin
    SHA256SUMS.sealed  optional: a seal over SHA256SUMS, written last

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
import queue
import re
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, Protocol, Union, cast

from ._files import remove_quietly, temp_file
from .errors import ArchiveError, IntegrityError
from .meta import MAX_META_BYTES, SnapshotMeta, Suffrage, encode_peers
from .seal import SealKey, VerifyKey

try:  # ISA-L: the same deflate format, several times faster
    from isal import isal_zlib as _zlib

    FAST_GZIP = True
except ImportError:  # pragma: no cover - exercised in the tox env without the extra
    import zlib as _zlib  # type: ignore[no-redef]

    FAST_GZIP = False

_DEFLATE_ERRORS = cast("tuple[type[Exception], ...]", (_zlib.error,))

__all__ = [
    "FAST_GZIP",
    "MEMBER_META",
    "MEMBER_SEAL",
    "MEMBER_STATE",
    "MEMBER_SUMS",
    "ArchiveContents",
    "Readable",
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
_MAX_PAX_BYTES = 1 << 20

CHUNK = 1 << 20
BLOCK = 512
#: state.bin from this size up is hashed (and, when reading, handed to the sink) on a worker thread
#: while this thread compresses or decompresses: hashlib and ISA-L both release the GIL.
_THREAD_MIN = 4 * CHUNK
#: chunks queued for the worker: bounds memory to about (depth + 2) chunks
_QUEUE_DEPTH = 4
_ZERO_BLOCK = bytes(BLOCK)

#: The source of state.bin: bytes, a path, or a binary file object read from its current position.
StateSource = Union[bytes, bytearray, memoryview, str, "os.PathLike[str]", IO[bytes]]
#: An archive to read: a path, or a binary file object read from its current position.
ArchiveSource = Union[str, "os.PathLike[str]", "Readable"]


class _Writable(Protocol):
    def write(self, data: Any, /) -> Any: ...


class Readable(Protocol):
    """Any binary stream: ``read(n)`` returns up to n bytes, ``b""`` at the end."""

    def read(self, size: int = ..., /) -> bytes: ...


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
) -> SnapshotMeta:
    """Write one archive of ``state`` to the binary stream ``out``; return the meta as written.

    :param out: any object with ``write(bytes)``; it is neither flushed nor closed.
    :param meta: the snapshot's metadata. ``size`` is set to state.bin's length; an empty ``id``
        becomes ``term-index-unixmillis``; empty ``peers`` are encoded from the voters' addresses.
    :param state: state.bin's content: bytes, a path, or a binary file read from where it stands.
        A stream that cannot seek is spooled to a private temp file first (memory stays flat).
    :param level: compression from 0 (fastest) to 9 (smallest), counted as zlib counts; ``None``
        favours speed (level 1). With ISA-L installed the level maps onto its 0 to 3.
    :param seal: a key (see :mod:`.seal`) that seals SHA256SUMS in a fourth member,
        ``SHA256SUMS.sealed``, written last. Without one the archive is exactly Consul's.
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
        meta_bytes = meta.to_json()
        mtime = millis // 1000
        gz = _GzipWriter(out, level)
        meta_sum = hashlib.sha256(meta_bytes).hexdigest()
        gz.write(_tar_header(MEMBER_META, len(meta_bytes), mtime))
        gz.write(meta_bytes)
        gz.write(_padding(len(meta_bytes)))
        gz.write(_tar_header(MEMBER_STATE, size, mtime))
        state_sum = _copy_hashed(stream, size, gz)
        gz.write(_padding(size))
        sums = f"{meta_sum}  {MEMBER_META}\n{state_sum}  {MEMBER_STATE}\n".encode("ascii")
        gz.write(_tar_header(MEMBER_SUMS, len(sums), mtime))
        gz.write(sums)
        gz.write(_padding(len(sums)))
        if seal is not None:
            sealed = seal.seal(sums)
            gz.write(_tar_header(MEMBER_SEAL, len(sealed), mtime))
            gz.write(sealed)
            gz.write(_padding(len(sealed)))
        gz.write(_ZERO_BLOCK * 2)
        gz.close()
    return meta


def _copy_hashed(source: IO[bytes] | memoryview, size: int, gz: _GzipWriter) -> str:
    """Compress ``size`` bytes of ``source`` into ``gz``, hashing them on the way; return the hex."""
    digest = hashlib.sha256()
    if isinstance(source, memoryview):
        with _Worker(digest.update, threaded=size >= _THREAD_MIN) as worker:
            for start in range(0, size, CHUNK):
                worker.put(source[start:start + CHUNK])
                gz.write(source[start:start + CHUNK])
        return digest.hexdigest()
    # A ring of buffers: one is read into and compressed here while the worker hashes the ones
    # before it. A buffer is read into again only once the worker has released it.
    threaded = size >= _THREAD_MIN
    count = _QUEUE_DEPTH + 2 if threaded else 1
    buffers = [memoryview(bytearray(min(CHUNK, max(size, 1)))) for _ in range(count)]
    free = threading.Semaphore(count)
    remaining = size
    with _Worker(digest.update, threaded=threaded, done=free.release) as worker:
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


class _Worker:
    """Feed chunks, in order, to ``consume`` on a worker thread (or inline when not ``threaded``).

    ``done`` is called after each chunk, consumed or skipped after a failure. Leaving the ``with``
    block waits for every chunk put; an exception raised by ``consume`` is raised again in the
    caller's thread, at the next ``put`` or on leaving the block (where it takes precedence over
    an exception the block raised after it: it happened first).
    """

    def __init__(
        self,
        consume: Callable[[Any], object],
        *,
        threaded: bool,
        done: Callable[[], object] | None = None,
    ) -> None:
        self._consume = consume
        self._done = done
        self._error: BaseException | None = None
        self._queue: queue.Queue[Any] = queue.Queue(_QUEUE_DEPTH)
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="raft-snapshot-worker", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            chunk = self._queue.get()
            if chunk is _STOP:
                return
            try:
                if self._error is None:  # after a failure keep draining: the producer never blocks
                    self._consume(chunk)
            except BaseException as exc:  # raised again in the caller's thread
                self._error = exc
            finally:
                if self._done is not None:
                    self._done()

    def put(self, chunk: Any) -> None:
        """Hand over ``chunk``; it must stay unchanged until ``done`` is called for it."""
        if self._thread is None:
            try:
                self._consume(chunk)
            finally:
                if self._done is not None:
                    self._done()
            return
        if self._error is not None:
            self._raise()
        self._queue.put(chunk)

    def _raise(self) -> None:
        error, self._error = self._error, None
        assert error is not None
        try:
            raise error
        finally:
            del error

    def __enter__(self) -> _Worker:
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            self._raise()


_STOP = object()


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


class _GzipWriter:
    """One gzip member written by hand: header as Go writes it, raw deflate, CRC-32 and length."""

    def __init__(self, out: _Writable, level: int | None) -> None:
        zlib_level = 1 if level is None else level
        if not 0 <= zlib_level <= 9:
            raise ValueError(f"compression level must be 0 to 9, not {level}")
        xfl = 4 if zlib_level == 1 else 2 if zlib_level == 9 else 0  # as Go's writer sets it
        if FAST_GZIP:
            zlib_level = min(3, (zlib_level + 2) // 3)
        self._out = out
        self._deflate = _zlib.compressobj(zlib_level, _zlib.DEFLATED, -15)
        self._crc = 0
        self._length = 0
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes([xfl, 255]))

    def write(self, data: bytes | memoryview) -> None:
        self._crc = _zlib.crc32(data, self._crc)
        self._length += len(data)
        compressed = self._deflate.compress(data)
        if compressed:
            self._out.write(compressed)

    def close(self) -> None:
        self._out.write(self._deflate.flush())
        self._out.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._length & 0xFFFFFFFF))


def _tar_header(name: str, size: int, mtime: int) -> bytes:
    header = bytearray(BLOCK)

    def put(offset: int, width: int, value: bytes) -> None:
        header[offset:offset + len(value)] = value[:width]

    put(0, 100, name.encode("utf-8"))
    put(100, 8, b"0000600\x00")
    put(108, 8, b"0000000\x00")
    put(116, 8, b"0000000\x00")
    if size < 8**11:
        put(124, 12, b"%011o\x00" % size)
    else:  # GNU base-256, which Go's reader accepts, for a state of 8 GiB or more
        put(124, 12, b"\x80" + size.to_bytes(11, "big"))
    put(136, 12, b"%011o\x00" % mtime if 0 <= mtime < 8**11 else b"00000000000\x00")
    put(148, 8, b"        ")
    header[156] = ord("0")
    put(257, 6, b"ustar\x00")
    put(263, 2, b"00")
    put(329, 8, b"0000000\x00")
    put(337, 8, b"0000000\x00")
    put(148, 8, b"%06o\x00 " % sum(header))
    return bytes(header)


def _padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


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
    seal: bytes | None
    #: the seal was checked with a verify key and holds: the key's owner made this archive
    trusted: bool = False


class _Sink(Protocol):
    def write(self, data: Any, /) -> Any: ...


def read_archive(
    source: ArchiveSource, sink: _Sink | None, *, verify_key: VerifyKey | None = None
) -> SnapshotMeta:
    """Read and check a whole archive, streaming state.bin into ``sink``; return its metadata.

    :param source: a path, or a binary stream read from where it stands (and not closed).
    :param sink: receives state.bin's bytes as they are read, or ``None`` to discard them. It may
        hold bytes of a bad archive when this raises: use a temp file and discard it on error.
    :param verify_key: require a seal made with this key (see :mod:`.seal`); without one, a
        seal is accepted unchecked, as Consul's reader does.
    :raises ArchiveError: the archive is malformed or refused; ``.member`` names where.
    :raises IntegrityError: a checksum, length or seal does not match, or the seal is missing.
    """
    return read_archive_contents(source, sink, verify_key=verify_key).meta


def read_archive_contents(
    source: ArchiveSource, sink: _Sink | None, *, verify_key: VerifyKey | None = None
) -> ArchiveContents:
    """As :func:`read_archive`, returning everything the read found (for seals and dedup)."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as file:
            return _read(file, sink, verify_key)
    return _read(source, sink, verify_key)


def _read(source: Readable, sink: _Sink | None, verify_key: VerifyKey | None) -> ArchiveContents:
    gz = _GzipReader(source)
    small: dict[str, bytes] = {}
    digests: dict[str, str] = {}
    state_length: int | None = None
    for name, size in _tar_members(gz):
        if name in digests or name in small:
            raise ArchiveError(name, "duplicate member")
        if name == MEMBER_STATE:
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
    if verify_key is not None:
        if MEMBER_SEAL not in small:
            raise IntegrityError(MEMBER_SEAL, "missing: the archive is not sealed, and a verify "
                                              "key is configured")
        verify_key.check(small[MEMBER_SUMS], small[MEMBER_SEAL])
    meta = SnapshotMeta.from_json(small[MEMBER_META])
    if meta.size != state_length:
        raise IntegrityError(
            MEMBER_STATE, f"{state_length} bytes long but meta.json says Size {meta.size}"
        )
    return ArchiveContents(
        meta=meta,
        meta_bytes=small[MEMBER_META],
        sums=small[MEMBER_SUMS],
        state_sha256=digests[MEMBER_STATE],
        seal=small.get(MEMBER_SEAL),
        trusted=verify_key is not None,
    )


def _stream_member(gz: _GzipReader, size: int, sink: _Sink | None) -> str:
    digest = hashlib.sha256()
    if sink is None:
        consume: Callable[[bytes], object] = digest.update
    else:
        def consume(chunk: bytes) -> None:
            digest.update(chunk)
            sink.write(chunk)

    remaining = size
    with _Worker(consume, threaded=size >= _THREAD_MIN) as worker:
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


# --- tar ------------------------------------------------------------------------------------------

def _tar_members(gz: _GzipReader) -> Iterator[tuple[str, int]]:
    """Yield (name, size) of each member; the caller reads its data and padding."""
    pax: dict[str, str] = {}
    long_name: str | None = None
    while True:
        block = gz.read_exact(BLOCK, "tar", allow_eof=True)
        if not block:
            return  # no end blocks inside an intact gzip: Go accepts this
        if block == _ZERO_BLOCK:
            second = gz.read_exact(BLOCK, "tar", allow_eof=True)
            if not second or second == _ZERO_BLOCK:
                return
            raise ArchiveError("tar", "a zero block followed by data")
        _check_header_checksum(block)
        typeflag = block[156:157]
        name = _cstring(block[0:100])
        ustar = block[257:263] == b"ustar\x00"
        if ustar and block[345]:
            name = _cstring(block[345:500]) + "/" + name
        size = _tar_number(block[124:136], name)
        if typeflag in (b"x", b"L", b"K"):  # header extensions, not members
            if size > _MAX_PAX_BYTES:
                raise ArchiveError("tar", f"a {size}-byte extended header")
            data = gz.read_exact(size, "tar")
            gz.read_exact(-size % BLOCK, "tar")
            if typeflag == b"x":
                pax.update(_parse_pax(data))
            elif typeflag == b"L":
                long_name = _cstring(data)
            continue
        if long_name is not None:
            name, long_name = long_name, None
        if "path" in pax:
            name = pax["path"]
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError as exc:
                raise ArchiveError(name, "extended header has an invalid size") from exc
            if size < 0:
                raise ArchiveError(name, "extended header has a negative size")
        pax = {}
        if typeflag not in (b"0", b"\x00") or (typeflag == b"\x00" and name.endswith("/")):
            kind = {b"1": "a hard link", b"2": "a symbolic link", b"5": "a directory"}.get(
                typeflag, f"type {typeflag.decode('latin-1')!r}"
            )
            raise ArchiveError(name, f"not a regular file ({kind})")
        if name not in _KNOWN:
            raise ArchiveError(name, "unexpected member in a snapshot archive")
        yield name, size


def _cstring(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", "replace")


def _check_header_checksum(block: bytes) -> None:
    try:
        stored = int(block[148:156].strip(b" \x00") or b"-1", 8)
    except ValueError:
        stored = -1
    blanked = block[:148] + b" " * 8 + block[156:]
    unsigned = sum(blanked)
    signed = sum(struct.unpack("512b", blanked))
    if stored not in (unsigned, signed):
        raise ArchiveError("tar", "header checksum mismatch (not a tar, or damaged)")


def _tar_number(field: bytes, name: str) -> int:
    if field[0] & 0x80:  # GNU base-256
        if field[0] & 0x40:
            raise ArchiveError(name, "negative size in tar header")
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.strip(b" \x00")
    try:
        return int(text, 8) if text else 0
    except ValueError as exc:
        raise ArchiveError(name, f"invalid size {text!r} in tar header") from exc


def _parse_pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError as exc:
            raise ArchiveError("tar", "malformed extended header") from exc
        record = data[space + 1:pos + length]
        if length <= 0 or space < 0 or not record.endswith(b"\n") or b"=" not in record:
            raise ArchiveError("tar", "malformed extended header")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        pos += length
    return records


# --- gzip -----------------------------------------------------------------------------------------

class _GzipReader:
    """A strict multi-member gzip decoder with Go's rules, decoding on demand in bounded chunks."""

    def __init__(self, raw: Readable) -> None:
        self._raw = raw
        self._input = b""
        self._raw_eof = False
        self._inflate: Any = None
        self._crc = 0
        self._length = 0
        self._finished = False
        #: the archive member being read, named by truncation errors
        self.where = "gzip"
        if not self._fill(1):
            raise ArchiveError("gzip", "empty file, not a gzip stream")
        self._start_member(first=True)

    def _fill(self, n: int) -> bool:
        """Make at least ``n`` input bytes available; False if the source ended first."""
        while len(self._input) < n and not self._raw_eof:
            chunk = self._raw.read(CHUNK)
            if not chunk:
                self._raw_eof = True
            else:
                self._input += chunk
        return len(self._input) >= n

    def _take(self, n: int, what: str) -> bytes:
        if not self._fill(n):
            raise IntegrityError("gzip", f"truncated inside the {what}")
        data, self._input = self._input[:n], self._input[n:]
        return data

    def _start_member(self, *, first: bool) -> None:
        self._fill(3)
        if self._input[:3] != b"\x1f\x8b\x08":
            if first:
                raise ArchiveError("gzip", "not a gzip stream (invalid header)")
            raise ArchiveError("gzip", "bytes after the last gzip member")
        header = self._take(10, "gzip header")
        flags = header[3]
        if flags & 0x04:  # FEXTRA
            extra_length = struct.unpack("<H", self._take(2, "gzip header"))[0]
            header += struct.pack("<H", extra_length) + self._take(extra_length, "gzip header")
        for flag in (0x08, 0x10):  # FNAME, FCOMMENT: zero-terminated
            if flags & flag:
                while True:
                    byte = self._take(1, "gzip header")
                    header += byte
                    if byte == b"\x00":
                        break
        if flags & 0x02:  # FHCRC
            stored = struct.unpack("<H", self._take(2, "gzip header"))[0]
            if stored != _zlib.crc32(header) & 0xFFFF:
                raise IntegrityError("gzip", "header checksum mismatch")
        self._inflate = _zlib.decompressobj(-15)
        self._crc = 0
        self._length = 0

    def read(self, n: int) -> bytes:
        """Up to ``n`` decompressed bytes; ``b""`` only at the clean end of the last member."""
        while not self._finished:
            if self._inflate.eof:
                self._end_member()
                continue
            source_ended = not self._input and not self._fill(1)
            # at the source's end, drain what the decompressor still holds before calling it short
            out = self._inflate_some(b"" if source_ended else self._input, n)
            if out:
                return out
            if source_ended and not self._inflate.eof:
                raise IntegrityError(self.where, "truncated: the compressed stream ends early")
        return b""

    def _inflate_some(self, data: bytes, n: int) -> bytes:
        try:
            out: bytes = self._inflate.decompress(data, n)
        except _DEFLATE_ERRORS as exc:
            raise IntegrityError(self.where, f"corrupt compressed data: {exc}") from exc
        if self._inflate.eof:
            self._input = self._inflate.unused_data  # what follows this member
        elif data:
            self._input = self._inflate.unconsumed_tail
        self._crc = _zlib.crc32(out, self._crc)
        self._length += len(out)
        return out

    def _end_member(self) -> None:
        crc, length = struct.unpack("<II", self._take(8, "gzip trailer"))
        if crc != self._crc & 0xFFFFFFFF:
            raise IntegrityError("gzip", "CRC-32 mismatch in the gzip trailer")
        if length != self._length & 0xFFFFFFFF:
            raise IntegrityError("gzip", "length mismatch in the gzip trailer")
        if not self._fill(1):
            self._finished = True
            return
        self._start_member(first=False)

    def read_exact(self, n: int, what: str, *, allow_eof: bool = False) -> bytes:
        self.where = what
        parts = []
        remaining = n
        while remaining:
            chunk = self.read(remaining)
            if not chunk:
                if allow_eof and remaining == n:
                    return b""
                raise IntegrityError(what, f"truncated: {remaining} of {n} bytes missing")
            parts.append(chunk)
            remaining -= len(chunk)
        return b"".join(parts)

    def expect_end(self) -> None:
        """Require that nothing but the end of the gzip stream follows the tar."""
        if self.read(1):
            raise ArchiveError("tar", "data after the end of the tar")

