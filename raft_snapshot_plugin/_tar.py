"""The tar layer of the snapshot archive: USTAR headers written as Consul writes them, and parsed.

Headers have mode 0600, uid/gid 0, empty owner names and the snapshot time in whole seconds; the tar
ends with exactly two zero blocks (Consul rejects the padding Python's ``tarfile`` adds). The parser
reads headers the way Go's ``archive/tar`` does, PAX and GNU long names included, and yields only
regular files with one of the names it is given.
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING

from .errors import ArchiveError

if TYPE_CHECKING:
    from ._gzip import GzipReader

__all__ = ["BLOCK", "ZERO_BLOCK", "padding", "tar_header", "tar_members"]

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
_MAX_PAX_BYTES = 1 << 20
#: Most extended headers (PAX, GNU long names) before one member.
_MAX_EXTENSIONS = 8


# --- writing --------------------------------------------------------------------------------------

def tar_header(name: str, size: int, mtime: int) -> bytes:
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


def padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


# --- reading --------------------------------------------------------------------------------------

def tar_members(gz: GzipReader, known: Collection[str]) -> Iterator[tuple[str, int]]:
    """Yield (name, size) of each member; the caller reads its data and padding.

    A member that is not a regular file, or whose name is not in ``known``, is refused.
    """
    pax: dict[str, str] = {}
    long_name: str | None = None
    extensions = extension_bytes = 0  # before the current member: bounded, whatever they hold
    while True:
        block = gz.read_exact(BLOCK, "tar", allow_eof=True)
        if not block:
            return  # no end blocks inside an intact gzip: Go accepts this
        if block == ZERO_BLOCK:
            second = gz.read_exact(BLOCK, "tar", allow_eof=True)
            if not second or second == ZERO_BLOCK:
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
            extensions += 1
            extension_bytes += size
            if extensions > _MAX_EXTENSIONS or extension_bytes > _MAX_PAX_BYTES:
                raise ArchiveError("tar", f"extended headers over {_MAX_EXTENSIONS} or "
                                          f"{_MAX_PAX_BYTES} bytes before one member")
            data = gz.read_exact(size, "tar")
            gz.read_exact(-size % BLOCK, "tar")
            if typeflag == b"x":
                pax.update(_parse_pax(data))
            elif typeflag == b"L":
                long_name = _cstring(data)
            continue
        if long_name is not None:
            name, long_name = long_name, None
        name, size = _apply_pax(pax, name, size)
        pax, extensions, extension_bytes = {}, 0, 0
        _check_regular_file(typeflag, name)
        if name not in known:
            raise ArchiveError(name, "unexpected member in a snapshot archive")
        yield name, size


def _apply_pax(pax: dict[str, str], name: str, size: int) -> tuple[str, int]:
    """The member's name and size once the PAX records before it are applied."""
    if "path" in pax:
        name = pax["path"]
    if "size" in pax:
        try:
            size = int(pax["size"])
        except ValueError as exc:
            raise ArchiveError(name, "extended header has an invalid size") from exc
        if size < 0:
            raise ArchiveError(name, "extended header has a negative size")
    return name, size


def _check_regular_file(typeflag: bytes, name: str) -> None:
    if typeflag not in (b"0", b"\x00") or (typeflag == b"\x00" and name.endswith("/")):
        kind = {b"1": "a hard link", b"2": "a symbolic link", b"5": "a directory"}.get(
            typeflag, f"type {typeflag.decode('latin-1')!r}"
        )
        raise ArchiveError(name, f"not a regular file ({kind})")


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
