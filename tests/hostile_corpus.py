"""The hostile corpus: archives built to cost more than their size, and what each may cost.

``python tests/hostile_corpus.py`` writes them into ``tests/data/hostile/`` (committed, so the tests
need not build them); ``tests/test_hostile.py`` reads each in a fresh process and checks that it is
refused (or accepted) as the table says, within the bounds the table gives: the temp disk the
state could reach (what the reader hands its sink), the memory above an idle interpreter with the
package loaded, and the CPU. Nothing here imports ``raft_snapshot_plugin``.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import rawarchive

FOLDER = Path(__file__).resolve().parent / "data" / "hostile"
MiB = 1 << 20


@dataclasses.dataclass(frozen=True)
class Case:
    """One hostile archive.

    :param error: a substring of the reader's error, or ``None`` when it must be accepted.
    :param max_state_bytes: the limit the reader is given (``None``: none).
    :param max_sink_bytes: the most of state.bin the reader may hand its sink (the temp disk).
    :param max_cpu_seconds: the CPU the read may take (generous: a bound, not a benchmark).
    """

    name: str
    build: Callable[[], Iterator[bytes]]
    error: str | None
    max_state_bytes: int | None = None
    max_sink_bytes: int = 0
    max_cpu_seconds: float = 2.0


def _deflated(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """One gzip member of the concatenated ``chunks``, streamed (a big state never in memory)."""
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    body = zlib.compressobj(9, zlib.DEFLATED, -15)
    crc, length = 0, 0
    for chunk in chunks:
        crc, length = zlib.crc32(chunk, crc), length + len(chunk)
        yield body.compress(chunk)
    yield body.flush() + struct.pack("<II", crc & 0xFFFFFFFF, length & 0xFFFFFFFF)


def _zeros(size: int) -> Iterator[bytes]:
    while size:
        n = min(size, MiB)
        size -= n
        yield bytes(n)


def _state_archive(state_size: int, declared: int) -> Iterator[bytes]:
    """meta.json declaring ``declared`` bytes, then a state.bin of ``state_size`` zeros and its
    true SHA256SUMS (a whole archive, when the two sizes agree)."""
    meta = rawarchive.meta_json(declared)
    head = rawarchive.member("meta.json", meta) + rawarchive.ustar_header("state.bin", state_size)
    state_sha = hashlib.sha256()
    for chunk in _zeros(state_size):
        state_sha.update(chunk)
    sums = (f"{rawarchive.sha256_hex(meta)}  meta.json\n"
            f"{state_sha.hexdigest()}  state.bin\n").encode("ascii")

    def tar() -> Iterator[bytes]:
        yield head
        yield from _zeros(state_size)
        yield rawarchive.pad(b"\0" * (state_size % rawarchive.BLOCK))
        yield rawarchive.member("SHA256SUMS", sums)
        yield rawarchive.END

    return _deflated(tar())


def _gzip_name() -> Iterator[bytes]:
    tar = rawarchive.good_tar()
    member = gzip.compress(tar, mtime=0)
    yield member[:3] + b"\x08" + member[4:10] + b"n" * MiB + b"\0" + member[10:]


def _empty_members() -> Iterator[bytes]:
    yield gzip.compress(rawarchive.good_tar(), mtime=0)
    yield gzip.compress(b"", mtime=0) * 5000


def _pax_pileup() -> Iterator[bytes]:
    meta, state, sums = rawarchive.parts()
    pax = b"".join(rawarchive.pax_member([(f"k{i}", "v" * 100_000)]) for i in range(40))
    yield gzip.compress(pax + rawarchive.member("meta.json", meta)
                        + rawarchive.member("state.bin", state)
                        + rawarchive.member("SHA256SUMS", sums) + rawarchive.END, mtime=0)


def _giant_sums() -> Iterator[bytes]:
    meta, state, _ = rawarchive.parts()
    tar = (rawarchive.member("meta.json", meta) + rawarchive.member("state.bin", state)
           + rawarchive.ustar_header("SHA256SUMS", 1 << 30))
    yield gzip.compress(tar, mtime=0)


def _deep_meta() -> Iterator[bytes]:
    meta = b"[" * 200_000 + b"]" * 200_000
    state = rawarchive.STATE
    sums = rawarchive.sums_for(meta, state)
    yield gzip.compress(rawarchive.member("meta.json", meta) + rawarchive.member("state.bin", state)
                        + rawarchive.member("SHA256SUMS", sums) + rawarchive.END, mtime=0)


CASES = (
    Case("gzip_name_1mib", _gzip_name, "header name or comment over"),
    Case("gzip_5000_empty_members", _empty_members, "more than 1024 gzip members",
         max_sink_bytes=len(rawarchive.STATE)),
    Case("pax_pileup_40x100k", _pax_pileup, "extended headers over 8"),
    Case("sums_declares_1gib", _giant_sums, "more than the",
         max_sink_bytes=len(rawarchive.STATE)),
    Case("meta_nested_200k_deep", _deep_meta, "meta.json"),
    # Size says 9 bytes; the tar header says 256 MiB: refused from the header, nothing written
    Case("state_256mib_size_says_9", lambda: _state_archive(256 * MiB, 9), "meta.json says Size 9"),
    # honest, but over the caller's limit: refused from the header
    Case("state_256mib_over_limit", lambda: _state_archive(256 * MiB, 256 * MiB),
         "more than the 1048576 allowed", max_state_bytes=MiB),
    # honest and allowed: read in full, streamed (memory flat), CPU linear in the 256 MiB
    Case("state_256mib_allowed", lambda: _state_archive(256 * MiB, 256 * MiB), None,
         max_sink_bytes=256 * MiB, max_cpu_seconds=10.0),
)


def main() -> int:
    FOLDER.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        with open(FOLDER / f"{case.name}.snap", "wb") as out:
            for chunk in case.build():
                out.write(chunk)
        print(f"{case.name}.snap: {(FOLDER / f'{case.name}.snap').stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
