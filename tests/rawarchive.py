"""Build snapshot archives byte by byte, independently of the library's writer.

Used by the archive tests and by ``tests/data/make_damaged.py`` to make damaged archives: raw USTAR
headers, hand-written gzip members and a table of damaged cases with what the reader must say about
each one. Nothing here imports ``raft_snapshot_plugin``.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import struct
import zlib
from collections.abc import Callable, Sequence

BLOCK = 512
END = bytes(2 * BLOCK)
MTIME = 1_700_000_000

#: The meta.json of every hand-built archive: Consul's format, Size filled in by :func:`meta_json`.
META_TEMPLATE = (
    '{"Version":1,"ID":"2-14-1700000000123","Index":14,"Term":2,"Peers":"kaVub2RlMA==",'
    '"Configuration":{"Servers":[{"Suffrage":0,"ID":"node0","Address":"node0"}]},'
    '"ConfigurationIndex":1,"Size":%d}\n'
)
#: A state.bin of 700 bytes: more than one block, so a cut can land inside it.
STATE = (b'{"k":"' + b"v" * 691 + b'"}\n')[:700]


def meta_json(size: int) -> bytes:
    """meta.json for a state of ``size`` bytes."""
    return (META_TEMPLATE % size).encode("ascii")


def ustar_header(
    name: str,
    size: int,
    *,
    typeflag: bytes = b"0",
    mode: int = 0o600,
    mtime: int = MTIME,
    linkname: str = "",
    prefix: str = "",
    magic: bytes = b"ustar\x0000",
) -> bytes:
    """One 512-byte USTAR header block with a correct checksum."""
    header = bytearray(BLOCK)

    def put(offset: int, value: bytes) -> None:
        header[offset:offset + len(value)] = value

    put(0, name.encode("utf-8")[:100])
    put(100, b"%07o\x00" % mode)
    put(108, b"0000000\x00")
    put(116, b"0000000\x00")
    put(124, b"%011o\x00" % size)
    put(136, b"%011o\x00" % mtime)
    put(148, b" " * 8)
    put(156, typeflag)
    put(157, linkname.encode("utf-8")[:100])
    put(257, magic)
    put(329, b"0000000\x00")
    put(337, b"0000000\x00")
    put(345, prefix.encode("utf-8")[:155])
    put(148, b"%06o\x00 " % sum(header))
    return bytes(header)


def pad(data: bytes) -> bytes:
    """``data`` zero-padded to whole blocks."""
    return data + bytes(-len(data) % BLOCK)


def member(name: str, data: bytes, *, typeflag: bytes = b"0", linkname: str = "") -> bytes:
    """A header and its padded data."""
    return ustar_header(name, len(data), typeflag=typeflag, linkname=linkname) + pad(data)


def pax_member(records: Sequence[tuple[str, str]]) -> bytes:
    """A PAX extended header (typeflag ``x``) applying ``records`` to the next member."""
    body = b""
    for key, value in records:
        payload = f" {key}={value}\n".encode()
        length = len(payload) + 1
        while len(str(length)) + len(payload) != length:
            length += 1
        body += str(length).encode("ascii") + payload
    return member("PaxHeaders.0/meta.json", body, typeflag=b"x")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sums_for(meta: bytes, state: bytes) -> bytes:
    """SHA256SUMS exactly as the writer makes it."""
    return f"{sha256_hex(meta)}  meta.json\n{sha256_hex(state)}  state.bin\n".encode("ascii")


def parts(state: bytes = STATE) -> tuple[bytes, bytes, bytes]:
    """(meta.json, state.bin, SHA256SUMS) of a consistent archive."""
    meta = meta_json(len(state))
    return meta, state, sums_for(meta, state)


def good_tar(state: bytes = STATE) -> bytes:
    """A well-formed tar of a consistent archive, with its two end blocks."""
    meta, state, sums = parts(state)
    return member("meta.json", meta) + member("state.bin", state) + member("SHA256SUMS", sums) + END


def gzip_member(data: bytes) -> bytes:
    """A gzip member of ``data`` that is the same bytes on every platform (stored blocks)."""
    return gzip_stored(data)


def gzip_compressed(data: bytes) -> bytes:
    """A compressed gzip member (mtime 0) from Python's gzip module; its bytes depend on zlib."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def gzip_stored(data: bytes) -> bytes:
    """A gzip member of stored (uncompressed) deflate blocks: byte ``i`` of ``data`` sits at
    ``stored_offset(i)`` in the result, so a cut lands exactly where it is meant to."""
    out = bytearray(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")
    blocks = [data[i:i + 0xFFFF] for i in range(0, len(data), 0xFFFF)] or [b""]
    for number, block in enumerate(blocks):
        final = 1 if number == len(blocks) - 1 else 0
        out += bytes([final]) + struct.pack("<HH", len(block), len(block) ^ 0xFFFF) + block
    out += struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return bytes(out)


def stored_offset(i: int) -> int:
    """Where byte ``i`` of the data lands in :func:`gzip_stored`'s output."""
    return 10 + 5 * (i // 0xFFFF + 1) + i


# --- the damaged cases ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Case:
    """A hand-built archive and what a reader must say about it.

    ``error`` is ``None`` when the archive must be accepted, else the name of the error class
    (``"ArchiveError"`` or its subclass ``"IntegrityError"``) and ``member`` the member it names.
    """

    name: str
    build: Callable[[], bytes]
    error: str | None = None
    member: str | None = None
    #: saved under tests/data (False for a case whose bytes are large or depend on zlib's version)
    committed: bool = True


def _tar_with(*members: bytes, end: bytes = END) -> bytes:
    return b"".join(members) + end


def _missing(skip: str) -> bytes:
    meta, state, sums = parts()
    chosen = {"meta.json": meta, "state.bin": state, "SHA256SUMS": sums}
    return gzip_member(_tar_with(*(member(n, d) for n, d in chosen.items() if n != skip)))


def _renamed(name: str) -> bytes:
    meta, state, sums = parts()
    return gzip_member(_tar_with(member(name, meta), member("state.bin", state),
                                 member("SHA256SUMS", sums)))


def _with_sums(sums: bytes, *, meta: bytes | None = None, state: bytes = STATE) -> bytes:
    meta = meta_json(len(state)) if meta is None else meta
    return gzip_member(_tar_with(member("meta.json", meta), member("state.bin", state),
                                 member("SHA256SUMS", sums)))


def _sum_lines() -> tuple[bytes, bytes]:
    meta, state, _ = parts()
    return (f"{sha256_hex(meta)}  meta.json\n".encode(), f"{sha256_hex(state)}  state.bin\n".encode())


def _special(typeflag: bytes, name: str, linkname: str = "") -> bytes:
    meta, state, sums = parts()
    odd = ustar_header(name, 0, typeflag=typeflag, linkname=linkname)
    return gzip_member(_tar_with(odd, member("meta.json", meta), member("state.bin", state),
                                 member("SHA256SUMS", sums)))


def _big_meta() -> bytes:
    text = meta_json(len(STATE))
    meta = text[:-2] + b" " * ((1 << 20) + 1 - len(text)) + text[-2:]
    assert len(meta) == (1 << 20) + 1
    tar = _tar_with(member("meta.json", meta), member("state.bin", STATE),
                    member("SHA256SUMS", sums_for(meta, STATE)))
    return gzip_compressed(tar)


def _size_mismatch() -> bytes:
    meta = meta_json(len(STATE) + 1)
    return _with_sums(sums_for(meta, STATE), meta=meta)


def _cut_tar(offset_of: Callable[[bytes, bytes, bytes], int]) -> bytes:
    meta, state, sums = parts()
    tar = good_tar()
    return gzip_stored(tar)[:stored_offset(offset_of(meta, state, sums))]


def _pax(records: Sequence[tuple[str, str]]) -> bytes:
    meta, state, sums = parts()
    return gzip_member(_tar_with(pax_member(records), member("meta.json", meta),
                                 member("state.bin", state), member("SHA256SUMS", sums)))


def _meta_at(meta: bytes, state: bytes, sums: bytes) -> int:
    return BLOCK + len(meta) // 2


def _state_at(meta: bytes, state: bytes, sums: bytes) -> int:
    return 2 * BLOCK + len(pad(meta)) + len(state) // 2


def _sums_at(meta: bytes, state: bytes, sums: bytes) -> int:
    return 3 * BLOCK + len(pad(meta)) + len(pad(state)) + len(sums) // 2


def _state_header_at(meta: bytes, state: bytes, sums: bytes) -> int:
    return BLOCK + len(pad(meta)) + 100


def _blank_line() -> bytes:
    meta_line, state_line = _sum_lines()
    return _with_sums(meta_line + b"\n" + state_line)


def _unknown_name() -> bytes:
    meta_line, state_line = _sum_lines()
    return _with_sums(meta_line + state_line + f"{sha256_hex(b'')}  other.txt\n".encode())


def _bad_hex() -> bytes:
    meta_line, state_line = _sum_lines()
    return _with_sums(b"zz" + meta_line[2:] + state_line)


def _wrong_hash() -> bytes:
    meta_line = _sum_lines()[0]
    return _with_sums(meta_line + sha256_hex(b"other").encode() + b"  state.bin\n")


def _missing_line() -> bytes:
    return _with_sums(_sum_lines()[0])


def _uppercase() -> bytes:
    meta_line, state_line = _sum_lines()
    return _with_sums(meta_line[:64].upper() + meta_line[64:] + state_line[:64].upper()
                      + state_line[64:])


def _reversed() -> bytes:
    meta_line, state_line = _sum_lines()
    return _with_sums(state_line + meta_line)


def _good() -> bytes:
    return gzip_member(good_tar())


CASES: tuple[Case, ...] = (
    Case("reference", _good),
    Case("missing_meta", lambda: _missing("meta.json"), "ArchiveError", "meta.json"),
    Case("missing_state", lambda: _missing("state.bin"), "ArchiveError", "state.bin"),
    Case("missing_sums", lambda: _missing("SHA256SUMS"), "ArchiveError", "SHA256SUMS"),
    Case("duplicate_meta",
         lambda: gzip_member(member("meta.json", parts()[0]) + good_tar()),
         "ArchiveError", "meta.json"),
    Case("duplicate_state",
         lambda: gzip_member(member("state.bin", STATE) + good_tar()), "ArchiveError", "state.bin"),
    Case("symlink_member", lambda: _special(b"2", "meta.json", "/etc/passwd"),
         "ArchiveError", "meta.json"),
    Case("hardlink_member", lambda: _special(b"1", "state.bin", "meta.json"),
         "ArchiveError", "state.bin"),
    Case("directory_member", lambda: _special(b"5", "SHA256SUMS/"), "ArchiveError", "SHA256SUMS/"),
    Case("fifo_member", lambda: _special(b"6", "state.bin"), "ArchiveError", "state.bin"),
    Case("absolute_meta", lambda: _renamed("/meta.json"), "ArchiveError", "/meta.json"),
    Case("dotdot_meta", lambda: _renamed("../meta.json"), "ArchiveError", "../meta.json"),
    Case("dot_slash_meta", lambda: _renamed("./meta.json"), "ArchiveError", "./meta.json"),
    Case("evil_member",
         lambda: gzip_member(good_tar()[:-len(END)] + member("evil.txt", b"x") + END),
         "ArchiveError", "evil.txt"),
    Case("sums_blank_line", _blank_line, "ArchiveError", "SHA256SUMS"),
    Case("sums_unknown_name", _unknown_name, "ArchiveError", "SHA256SUMS"),
    Case("sums_bad_hex", _bad_hex, "ArchiveError", "SHA256SUMS"),
    Case("sums_wrong_hash", _wrong_hash, "IntegrityError", "state.bin"),
    Case("sums_missing_line", _missing_line, "ArchiveError", "SHA256SUMS"),
    Case("sums_uppercase_hex", _uppercase),
    Case("sums_reversed_order", _reversed),
    Case("meta_over_1mib", _big_meta, "ArchiveError", "meta.json", committed=False),
    Case("compressed_reference", lambda: gzip_compressed(good_tar()), committed=False),
    Case("size_mismatch", _size_mismatch, "IntegrityError", "state.bin"),
    Case("truncated_in_meta", lambda: _cut_tar(_meta_at), "IntegrityError", "meta.json"),
    Case("truncated_in_state", lambda: _cut_tar(_state_at), "IntegrityError", "state.bin"),
    Case("truncated_in_sums", lambda: _cut_tar(_sums_at), "IntegrityError", "SHA256SUMS"),
    Case("truncated_in_tar_header", lambda: _cut_tar(_state_header_at), "IntegrityError", "tar"),
    Case("truncated_in_gzip_trailer", lambda: gzip_member(good_tar())[:-3],
         "IntegrityError", "gzip"),
    Case("truncated_in_gzip_header", lambda: gzip_member(good_tar())[:6], "ArchiveError", "gzip"),
    Case("data_after_tar_end", lambda: gzip_member(good_tar() + b"left over"),
         "ArchiveError", "tar"),
    Case("zero_block_after_tar_end", lambda: gzip_member(good_tar() + bytes(BLOCK)),
         "ArchiveError", "tar"),
    Case("zeros_after_gzip", lambda: gzip_member(good_tar()) + bytes(16), "ArchiveError", "gzip"),
    Case("garbage_after_gzip", lambda: gzip_member(good_tar()) + b"garbage!",
         "ArchiveError", "gzip"),
    Case("empty_gzip_member_appended", lambda: gzip_member(good_tar()) + gzip_member(b"")),
    Case("no_tar_end_blocks", lambda: gzip_member(good_tar()[:-len(END)])),
    Case("pax_header_accepted", lambda: _pax([("mtime", "1700000000.5"), ("comment", "hello")])),
    Case("pax_path_evil", lambda: _pax([("path", "evil.txt")]), "ArchiveError", "evil.txt"),
    Case("plain_tar", good_tar, "ArchiveError", "gzip"),
    Case("empty_file", lambda: b"", "ArchiveError", "gzip"),
)

CASES_BY_NAME = {case.name: case for case in CASES}
