"""Gzip framing (RFC 1952) for the snapshot archive, written and read by hand with Go's rules.

The writer makes one member as Go's ``compress/gzip`` does (no file name, mtime 0, OS 255, XFL from
the level). The reader is strict: it accepts several members, checks each trailer's CRC-32 and
length, and refuses any bytes after the last member (Go refuses them; Python's ``gzip`` module skips
zero padding there). Both stream in bounded chunks.
"""

from __future__ import annotations

import struct
from typing import Any, Protocol, cast

from .errors import ArchiveError, IntegrityError

try:  # ISA-L: the same deflate format, several times faster
    from isal import isal_zlib as _zlib

    FAST_GZIP = True
except ImportError:  # pragma: no cover - exercised in the tox env without the extra
    import zlib as _zlib  # type: ignore[no-redef]

    FAST_GZIP = False

_DEFLATE_ERRORS = cast("tuple[type[Exception], ...]", (_zlib.error,))

__all__ = ["CHUNK", "FAST_GZIP", "GzipReader", "GzipWriter", "Readable", "Writable"]

CHUNK = 1 << 20


class Writable(Protocol):
    def write(self, data: Any, /) -> Any: ...


class Readable(Protocol):
    """Any binary stream: ``read(n)`` returns up to n bytes, ``b""`` at the end."""

    def read(self, size: int = ..., /) -> bytes: ...


class GzipWriter:
    """One gzip member written by hand: header as Go writes it, raw deflate, CRC-32 and length."""

    def __init__(self, out: Writable, level: int | None) -> None:
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


#: Longest gzip header name or comment accepted (a deliberate refusal: writers put a file name
#: there, or nothing, as Consul does).
MAX_HEADER_FIELD = 64 << 10
_AGE_MAGIC = b"age-encryption.org/"
_AGE_ARMOR = b"-----BEGIN AGE ENC"
#: Most gzip members accepted in one stream (Consul writes one; empty ones may follow it).
MAX_MEMBERS = 1024


class GzipReader:
    """A strict multi-member gzip decoder with Go's rules, decoding on demand in bounded chunks.

    Input is consumed through an offset into the buffered bytes, never by re-slicing what is left,
    so the work is linear in the input however it is cut into members and header fields.
    """

    def __init__(self, raw: Readable) -> None:
        self._raw = raw
        self._buf = b""
        self._pos = 0
        self._raw_eof = False
        self._inflate: Any = None
        self._crc = 0
        self._length = 0
        self._members = 0
        self._finished = False
        #: the archive member being read, named by truncation errors
        self.where = "gzip"
        if not self._fill(1):
            raise ArchiveError("gzip", "empty file, not a gzip stream")
        self._start_member(first=True)

    def _available(self) -> int:
        return len(self._buf) - self._pos

    def _fill(self, n: int) -> bool:
        """Make at least ``n`` input bytes available; False if the source ended first."""
        while self._available() < n and not self._raw_eof:
            chunk = self._raw.read(CHUNK)
            if not chunk:
                self._raw_eof = True
            else:
                self._buf = self._buf[self._pos:] + chunk
                self._pos = 0
        return self._available() >= n

    def _take(self, n: int, what: str) -> bytes:
        if not self._fill(n):
            raise IntegrityError("gzip", f"truncated inside the {what}")
        data = self._buf[self._pos:self._pos + n]
        self._pos += n
        return data

    def _take_zstring(self) -> bytes:
        """A zero-terminated header field, terminator included; at most MAX_HEADER_FIELD long."""
        while (end := self._buf.find(b"\x00", self._pos)) < 0:
            if self._available() > MAX_HEADER_FIELD:
                raise ArchiveError("gzip", f"a header name or comment over {MAX_HEADER_FIELD} bytes")
            if not self._fill(self._available() + 1):
                raise IntegrityError("gzip", "truncated inside the gzip header")
        if end - self._pos > MAX_HEADER_FIELD:
            raise ArchiveError("gzip", f"a header name or comment over {MAX_HEADER_FIELD} bytes")
        return self._take(end - self._pos + 1, "gzip header")

    def _start_member(self, *, first: bool) -> None:
        self._fill(3)
        if self._buf[self._pos:self._pos + 3] != b"\x1f\x8b\x08":
            if first and self._fill(len(_AGE_MAGIC)) and self._buf[self._pos:].startswith(
                    (_AGE_MAGIC, _AGE_ARMOR)):
                raise ArchiveError("gzip", "an age-encrypted file: decrypt it with its identity "
                                           "(--identity KEYFILE, identity=...)")
            if first:
                raise ArchiveError("gzip", "not a gzip stream (invalid header)")
            raise ArchiveError("gzip", "bytes after the last gzip member")
        self._members += 1
        if self._members > MAX_MEMBERS:
            raise ArchiveError("gzip", f"more than {MAX_MEMBERS} gzip members")
        header = self._take(10, "gzip header")
        flags = header[3]
        if flags & 0x04:  # FEXTRA
            extra_length = struct.unpack("<H", self._take(2, "gzip header"))[0]
            header += struct.pack("<H", extra_length) + self._take(extra_length, "gzip header")
        for flag in (0x08, 0x10):  # FNAME, FCOMMENT: zero-terminated
            if flags & flag:
                header += self._take_zstring()
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
            source_ended = not self._available() and not self._fill(1)
            if self._pos:  # hand the decompressor the unread bytes without copying them each call
                self._buf, self._pos = self._buf[self._pos:], 0
            # at the source's end, drain what the decompressor still holds before calling it short
            out = self._inflate_some(b"" if source_ended else self._buf, n)
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
            self._buf, self._pos = self._inflate.unused_data, 0  # what follows this member
        elif data:
            self._buf, self._pos = self._inflate.unconsumed_tail, 0
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
