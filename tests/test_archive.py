"""The archive format: Consul's vectors, the writing rules (checked by an independent reader),
both gzip implementations, damaged archives, temp-file hygiene and flat memory."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import re
import struct
import subprocess
import sys
import tarfile
import threading
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rawarchive
from conftest import vector_names

from raft_snapshot_plugin import (
    ArchiveError,
    IntegrityError,
    Server,
    Snapshot,
    SnapshotMeta,
    Suffrage,
    _gzip,
    verify,
)
from raft_snapshot_plugin.archive import read_archive, read_archive_contents, write_archive

DATA = Path(__file__).resolve().parent / "data"
FIXED_ID = "3-120-1700000000999"
META = SnapshotMeta(
    index=120,
    term=3,
    servers=(
        Server(id="n1", address="127.0.0.1:4321"),
        Server(id="n2", address="127.0.0.2:4321", suffrage=Suffrage.NONVOTER),
        Server(id="n3", address="127.0.0.3:4321"),
    ),
    configuration_index=7,
    id=FIXED_ID,
)
ERRORS: dict[str, type[ArchiveError]] = {"ArchiveError": ArchiveError,
                                         "IntegrityError": IntegrityError}



# --- helpers --------------------------------------------------------------------------------------

class HashSink:
    """A sink that keeps only the SHA-256 and length of what it is given."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.length = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.length += len(data)
        return len(data)


@dataclasses.dataclass
class Parsed:
    """What the independent reader found in an archive."""

    gzip_header: bytes
    tar: bytes
    names: list[str]
    members: dict[str, bytes]
    headers: list[bytes]


def independent_read(data: bytes) -> Parsed:
    """Check an archive with zlib, tarfile, hashlib and byte checks of our own: never the library."""
    header = data[:10]
    assert header[:3] == b"\x1f\x8b\x08", "not a gzip deflate member"
    assert header[3] == 0, f"gzip flags {header[3]:#x}: want no FNAME/FEXTRA/FCOMMENT/FHCRC"
    assert header[4:8] == b"\x00\x00\x00\x00", "gzip mtime is not 0"
    assert header[9] == 255, "gzip OS byte is not 255 (unknown)"
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    tar = inflate.decompress(data) + inflate.flush()
    assert inflate.eof, "gzip member not finished"
    assert inflate.unused_data == b"", "more than one gzip member, or bytes after it"

    names: list[str] = []
    members: dict[str, bytes] = {}
    headers: list[bytes] = []
    pos = 0
    while tar[pos:pos + 512] != bytes(512):
        block = tar[pos:pos + 512]
        assert len(block) == 512, "tar ends inside a header"
        stored = int(block[148:154], 8)
        assert block[154:156] == b"\x00 "
        assert stored == sum(block[:148]) + 8 * 32 + sum(block[156:]), "bad header checksum"
        name = block[:100].rstrip(b"\x00").decode()
        assert block[100:108] == b"0000600\x00", f"{name}: mode {block[100:108]!r}"
        assert block[108:116] == b"0000000\x00", f"{name}: uid"
        assert block[116:124] == b"0000000\x00", f"{name}: gid"
        assert block[156:157] == b"0", f"{name}: typeflag {block[156:157]!r}"
        assert block[157:257] == bytes(100), f"{name}: linkname"
        assert block[257:265] == b"ustar\x0000", f"{name}: magic/version {block[257:265]!r}"
        assert block[265:297] == bytes(32), f"{name}: uname"
        assert block[297:329] == bytes(32), f"{name}: gname"
        assert block[345:500] == bytes(155), f"{name}: prefix"
        size = int(block[124:136].rstrip(b"\x00"), 8)
        body = tar[pos + 512:pos + 512 + size]
        assert len(body) == size, f"{name}: truncated"
        padding = tar[pos + 512 + size:pos + 512 + size + (-size % 512)]
        assert padding == bytes(-size % 512), f"{name}: padding is not zeros"
        names.append(name)
        members[name] = body
        headers.append(block)
        pos += 512 + size + (-size % 512)
    assert tar[pos:] == bytes(1024), "the tar must end with exactly two zero blocks, nothing after"
    assert len(tar) == sum(512 + len(b) + (-len(b) % 512) for b in members.values()) + 1024

    # Python's tarfile must agree with the byte-level parse.
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as tf:
        infos = tf.getmembers()
        assert [i.name for i in infos] == names
        for info in infos:
            assert info.isreg() and info.mode == 0o600 and info.uid == 0 and info.gid == 0
            assert info.uname == "" and info.gname == ""
            extracted = tf.extractfile(info)
            assert extracted is not None
            assert extracted.read() == members[info.name]
    return Parsed(header, tar, names, members, headers)


def expected_sums(parsed: Parsed) -> bytes:
    meta, state = parsed.members["meta.json"], parsed.members["state.bin"]
    return (f"{hashlib.sha256(meta).hexdigest()}  meta.json\n"
            f"{hashlib.sha256(state).hexdigest()}  state.bin\n").encode()


def written(state: Any, *, meta: SnapshotMeta = META, level: int | None = None) -> tuple[bytes, SnapshotMeta]:
    out = io.BytesIO()
    result = write_archive(out, meta, state, level=level)
    return out.getvalue(), result


def roundtrip(data: bytes) -> tuple[SnapshotMeta, bytes]:
    sink = io.BytesIO()
    meta = read_archive(io.BytesIO(data), sink)
    return meta, sink.getvalue()


def use_gzip(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make the library use ISA-L ("isal") or the stdlib zlib module ("zlib")."""
    if name == "zlib":
        monkeypatch.setattr(_gzip, "_zlib", zlib)
        monkeypatch.setattr(_gzip, "FAST_GZIP", False)
    else:
        pytest.importorskip("isal", reason="the 'fast' extra (isal) is not installed")
        from isal import isal_zlib

        monkeypatch.setattr(_gzip, "_zlib", isal_zlib)
        monkeypatch.setattr(_gzip, "FAST_GZIP", True)


READERS = ["isal", "zlib"]


def check_refused(exc: ArchiveError, error: str, member: str) -> None:
    assert isinstance(exc, ERRORS[error]), f"{type(exc).__name__} is not a {error}: {exc}"
    assert isinstance(exc, ValueError)
    assert exc.member == member, f"names {exc.member!r}, want {member!r}: {exc}"
    assert exc.reason and str(exc).startswith(f"{member}: ")


# --- Consul's vectors -----------------------------------------------------------------------------

def sidecar(vectors_dir: Path, name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((vectors_dir / f"{name}.expected.json").read_text("utf-8"))
    return result


@pytest.mark.parametrize("name", vector_names("valid"))
def test_valid_vector_is_accepted(vectors_dir: Path, name: str) -> None:
    expected = sidecar(vectors_dir, name)
    assert expected["valid"] is True
    sink = HashSink()
    contents = read_archive_contents(vectors_dir / f"{name}.snap", sink)
    assert contents.meta.to_dict() == expected["meta"]
    assert contents.meta.peer_addresses == tuple(expected["peers_decoded"])
    assert contents.state_sha256 == expected["state_sha256"]
    assert sink.digest.hexdigest() == expected["state_sha256"]
    assert sink.length == expected["state_size"] == contents.meta.size
    assert contents.sums.decode() == expected["sha256sums"]
    assert hashlib.sha256(contents.meta_bytes).hexdigest() == expected["meta_json_sha256"]
    assert contents.meta.seal is None and contents.vault_seal is None
    with open(vectors_dir / f"{name}.snap", "rb") as stream:  # a stream as well as a path
        assert verify(stream) == contents.meta


def expected_member(consul_error: str) -> str:
    """The member a refusal must name, from what Consul said about the archive."""
    for pattern in (r'unexpected file "(.*)"', r'hash check failed for "(.*)"'):
        found = re.search(pattern, consul_error)
        if found:
            return found.group(1)
    if "unread uncompressed bytes remain" in consul_error:
        return "tar"
    if "gzip: invalid header" in consul_error:
        return "gzip"
    if "failed to read or write snapshot data" in consul_error:
        return "state.bin"
    raise AssertionError(f"no rule for Consul's error {consul_error!r}: extend expected_member")


def _invalid_params() -> list[Any]:
    params = []
    for name in vector_names("bad"):
        params.append(pytest.param(name))
    return params


@pytest.mark.parametrize("name", _invalid_params())
def test_invalid_vector_is_refused(vectors_dir: Path, name: str, private_tmpdir: Path) -> None:
    expected = sidecar(vectors_dir, name)
    assert expected["valid"] is False
    with pytest.raises(ArchiveError) as caught:
        verify(vectors_dir / f"{name}.snap")
    member = expected_member(expected["consul_error"])
    error = "IntegrityError" if "hash check failed" in expected["consul_error"] else "ArchiveError"
    check_refused(caught.value, error, member)


@pytest.mark.parametrize("name", vector_names("valid"))
def test_writer_reproduces_consul_tar(vectors_dir: Path, name: str) -> None:
    """Same meta and state give Consul's tar byte for byte, but for header times and checksums
    (Consul stamps the tar with its own clock, we with the ID's) and the order of the sum lines."""
    expected = sidecar(vectors_dir, name)
    consul = independent_read((vectors_dir / f"{name}.snap").read_bytes())
    meta = SnapshotMeta.from_json(consul.members["meta.json"])
    data, _ = written(consul.members["state.bin"], meta=meta)
    ours = independent_read(data)
    assert ours.names == consul.names == expected["members"]
    assert ours.members["meta.json"] == consul.members["meta.json"]
    assert ours.members["state.bin"] == consul.members["state.bin"]
    assert sorted(ours.members["SHA256SUMS"].splitlines()) == sorted(
        consul.members["SHA256SUMS"].splitlines())
    for mine, theirs in zip(ours.headers, consul.headers, strict=True):
        assert mine[:136] + mine[156:] == theirs[:136] + theirs[156:]
    assert consul.gzip_header[9] == ours.gzip_header[9] == 255


# --- the writing rules ----------------------------------------------------------------------------

@pytest.mark.parametrize("writer", ["isal", "zlib"])
@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 70_000])
def test_written_archive_follows_the_format(
    monkeypatch: pytest.MonkeyPatch, writer: str, size: int
) -> None:
    use_gzip(monkeypatch, writer)
    state = os.urandom(size)
    data, meta = written(state)
    parsed = independent_read(data)
    assert parsed.names == ["meta.json", "state.bin", "SHA256SUMS"]
    assert parsed.members["state.bin"] == state
    assert parsed.members["meta.json"] == meta.to_json()
    assert parsed.members["SHA256SUMS"] == expected_sums(parsed)
    assert re.fullmatch(rb"([0-9a-f]{64}  (meta\.json|state\.bin)\n){2}",
                        parsed.members["SHA256SUMS"])
    for header in parsed.headers:
        assert int(header[136:148].rstrip(b"\x00"), 8) == 1_700_000_000_999 // 1000
    assert meta.size == size
    assert meta.id == FIXED_ID
    assert meta.peer_addresses == ("127.0.0.1:4321", "127.0.0.3:4321")  # voters only


def test_written_meta_fills_id_size_and_peers() -> None:
    bare = SnapshotMeta(index=9, term=4, servers=(Server(id="a", address="127.0.0.1:4321"),))
    data, meta = written(b"abc", meta=bare)
    assert re.fullmatch(r"4-9-\d{13}", meta.id)
    assert meta.size == 3
    assert meta.peers == bytes.fromhex("91ae3132372e302e302e313a34333231")
    parsed = independent_read(data)
    millis = int(meta.id.rsplit("-", 1)[1])
    assert all(int(h[136:148].rstrip(b"\x00"), 8) == millis // 1000 for h in parsed.headers)
    assert parsed.members["meta.json"] == meta.to_json()
    given = dataclasses.replace(bare, peers=b"\x90")  # given peers are kept as they are
    assert written(b"", meta=given)[1].peers == b"\x90"


@pytest.mark.parametrize(("level", "xfl"), [(None, 4), (1, 4), (5, 0), (6, 0), (9, 2)])
@pytest.mark.parametrize("writer", ["isal", "zlib"])
def test_compression_levels(
    monkeypatch: pytest.MonkeyPatch, writer: str, level: int | None, xfl: int
) -> None:
    use_gzip(monkeypatch, writer)
    state = b"compressible " * 5000
    data, _ = written(state, level=level)
    parsed = independent_read(data)
    assert parsed.members["state.bin"] == state
    assert parsed.gzip_header[8] == xfl  # XFL as Go's compress/gzip sets it


@pytest.mark.parametrize("level", [-1, 10])
def test_bad_compression_level(level: int) -> None:
    with pytest.raises(ValueError, match="level"):
        written(b"x", level=level)


def test_level_zero_stores() -> None:
    state = os.urandom(1000)
    data, _ = written(state, level=0)
    assert independent_read(data).members["state.bin"] == state


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 5 * 1024 * 1024 + 3])
@pytest.mark.parametrize("reader", READERS)
def test_state_round_trips(monkeypatch: pytest.MonkeyPatch, reader: str, size: int) -> None:
    state = os.urandom(size // 2) + bytes(size - size // 2)
    data, meta = written(state)
    use_gzip(monkeypatch, reader)
    got_meta, got_state = roundtrip(data)
    assert got_meta == meta
    assert got_state == state


@pytest.mark.parametrize("writer", ["isal", "zlib"])
@pytest.mark.parametrize("reader", READERS)
def test_cross_implementation(monkeypatch: pytest.MonkeyPatch, writer: str, reader: str) -> None:
    state = os.urandom(300_000) + b"z" * 300_000
    use_gzip(monkeypatch, writer)
    data, meta = written(state, level=6)
    use_gzip(monkeypatch, reader)
    assert roundtrip(data) == (meta, state)


def test_state_sources_give_identical_archives(tmp_path: Path, private_tmpdir: Path) -> None:
    state = os.urandom(200_000)
    path = tmp_path / "state.bin"
    path.write_bytes(state)
    expected, _ = written(state)
    assert written(bytearray(state))[0] == expected
    assert written(memoryview(state))[0] == expected
    assert written(str(path))[0] == expected
    assert written(path)[0] == expected
    with open(path, "rb") as file:
        assert written(file)[0] == expected
        assert not file.closed  # code handed a file never closes it
    with open(path, "rb") as file:  # a stream is read from where it stands
        file.read(1000)
        assert written(file)[0] == written(state[1000:])[0]

    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with open(write_fd, "wb") as pipe_out:
            for start in range(0, len(state), 7000):
                pipe_out.write(state[start:start + 7000])

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        with open(read_fd, "rb") as pipe_in:
            assert not pipe_in.seekable()
            from_pipe, meta = written(pipe_in)
    finally:
        writer.join()
    assert from_pipe == expected
    assert meta.size == len(state)


# --- damaged archives -----------------------------------------------------------------------------

def _case_params(*, committed_only: bool) -> list[Any]:
    params = []
    for case in rawarchive.CASES:
        if committed_only and not case.committed:
            continue
        params.append(pytest.param(case, id=case.name))
    return params


def judge(data: bytes, error: str | None, member: str | None) -> None:
    if error is None:
        meta, state = roundtrip(data)
        assert state == rawarchive.STATE
        assert meta.size == len(rawarchive.STATE) and meta.index == 14
        return
    assert member is not None
    with pytest.raises(ArchiveError) as caught:
        verify(io.BytesIO(data))
    check_refused(caught.value, error, member)


@pytest.mark.parametrize("case", _case_params(committed_only=False))
def test_hand_built_archive(case: rawarchive.Case, private_tmpdir: Path) -> None:
    judge(case.build(), case.error, case.member)


def _manifest() -> dict[str, dict[str, str | None]]:
    result: dict[str, dict[str, str | None]] = json.loads(
        (DATA / "damaged.json").read_text("utf-8"))
    return result


@pytest.mark.parametrize("case", _case_params(committed_only=True))
def test_committed_damaged_file(case: rawarchive.Case, private_tmpdir: Path) -> None:
    expected = _manifest()[case.name]
    judge((DATA / f"{case.name}.snap").read_bytes(), expected["error"], expected["member"])


def test_committed_files_match_the_script(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(DATA / "make_damaged.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    fresh = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in DATA.iterdir() if p.suffix in (".snap", ".json"))
    assert fresh == committed
    for name in fresh:
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name


def test_meta_of_exactly_one_mib_is_accepted() -> None:
    text = rawarchive.meta_json(len(rawarchive.STATE))
    meta = text[:-2] + b" " * ((1 << 20) - len(text)) + text[-2:]
    tar = (rawarchive.member("meta.json", meta) + rawarchive.member("state.bin", rawarchive.STATE)
           + rawarchive.member("SHA256SUMS", rawarchive.sums_for(meta, rawarchive.STATE))
           + rawarchive.END)
    assert roundtrip(rawarchive.gzip_compressed(tar))[1] == rawarchive.STATE


def test_crlf_sum_lines_are_accepted() -> None:
    meta, state, sums = rawarchive.parts()
    crlf = sums.replace(b"\n", b"\r\n")
    tar = (rawarchive.member("meta.json", meta) + rawarchive.member("state.bin", state)
           + rawarchive.member("SHA256SUMS", crlf) + rawarchive.END)
    assert roundtrip(rawarchive.gzip_member(tar))[1] == state  # Go's bufio.Scanner drops the \r


def test_members_in_any_order_are_accepted() -> None:
    meta, state, sums = rawarchive.parts()
    tar = (rawarchive.member("SHA256SUMS", sums) + rawarchive.member("state.bin", state)
           + rawarchive.member("meta.json", meta) + rawarchive.END)
    assert roundtrip(rawarchive.gzip_member(tar))[1] == state


def test_flipped_byte_in_gzip_body_is_refused() -> None:
    data = bytearray(rawarchive.gzip_member(rawarchive.good_tar()))
    data[rawarchive.stored_offset(1536 + 10)] ^= 0x01  # inside state.bin's data
    with pytest.raises(ArchiveError):
        verify(io.BytesIO(bytes(data)))


def test_pax_negative_size_is_an_archive_error() -> None:
    meta, state, sums = rawarchive.parts()
    tar = (rawarchive.pax_member([("size", "-1")]) + rawarchive.member("meta.json", meta)
           + rawarchive.member("state.bin", state) + rawarchive.member("SHA256SUMS", sums)
           + rawarchive.END)
    with pytest.raises(ArchiveError):
        verify(io.BytesIO(rawarchive.gzip_member(tar)))


# --- temp files on error paths --------------------------------------------------------------------

class BrokenPipeStream(io.RawIOBase):
    """A non-seekable stream that fails after delivering some bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.served >= 100_000:
            raise OSError("the state source broke")
        n = min(len(buffer), 10_000)
        buffer[:n] = b"s" * n
        self.served += n
        return n


class ShortSeekableStream(io.RawIOBase):
    """A seekable stream that claims 100 bytes but delivers 10."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return 100 if whence == io.SEEK_END else 0

    def tell(self) -> int:
        return 0

    def readinto(self, buffer: Any) -> int:
        return 0


def test_create_with_a_failing_stream_leaves_nothing(private_tmpdir: Path) -> None:
    with pytest.raises(OSError, match="broke"):
        Snapshot.create(META, io.BufferedReader(BrokenPipeStream()))
    with pytest.raises(ArchiveError) as caught:
        Snapshot.create(META, io.BufferedReader(ShortSeekableStream()))
    assert caught.value.member == "state.bin"
    assert os.listdir(private_tmpdir) == []


def test_create_from_a_pipe_leaves_nothing(private_tmpdir: Path) -> None:
    read_fd, write_fd = os.pipe()
    with open(write_fd, "wb") as pipe_out:
        pipe_out.write(b"piped state")
    with open(read_fd, "rb") as pipe_in, Snapshot.create(META, pipe_in) as snap:
        assert snap.meta.size == len(b"piped state")
        assert os.listdir(private_tmpdir) == [os.path.basename(snap.path)]


@pytest.mark.parametrize("name", [c.name for c in rawarchive.CASES if c.error])
def test_snapshot_of_bad_archive_verify_leaves_nothing(name: str, private_tmpdir: Path) -> None:
    path = private_tmpdir.parent / f"{name}.snap"
    path.write_bytes(rawarchive.CASES_BY_NAME[name].build())
    with pytest.raises(ArchiveError):
        verify(path)
    with pytest.raises(ArchiveError), open(path, "rb") as stream:
        read_archive(stream, io.BytesIO())


# --- memory ---------------------------------------------------------------------------------------

@pytest.fixture
def big_state(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "big-state.bin"
    with open(path, "wb") as file:
        for _ in range(64):
            file.write(os.urandom(512 * 1024) + bytes(512 * 1024))
    yield path
    path.unlink()


def test_memory_stays_flat(big_state: Path, tmp_path: Path) -> None:
    target = tmp_path / "big.snap"
    limit = 8 * 1024 * 1024
    tracemalloc.start()
    try:
        with open(big_state, "rb") as state, open(target, "wb") as out:
            meta = write_archive(out, META, state)
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        assert verify(target) == meta
        _, verify_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert meta.size == 64 * 1024 * 1024
    assert write_peak < limit, f"write_archive peaked at {write_peak / 2**20:.1f} MiB"
    assert verify_peak < limit, f"verify peaked at {verify_peak / 2**20:.1f} MiB"


# --- bounded work on hostile input -----------------------------------------------------------------

def _deflated_member(tar: bytes, *, name: bytes = b"") -> bytes:
    body = zlib.compressobj(6, zlib.DEFLATED, -15)
    deflated = body.compress(tar) + body.flush()
    flags = 0x08 if name else 0
    header = b"\x1f\x8b\x08" + bytes([flags]) + b"\0\0\0\0\0\xff" + (name + b"\0" if name else b"")
    return header + deflated + struct.pack("<II", zlib.crc32(tar), len(tar))


class _Counting(io.BytesIO):
    """A source that counts what the reader took from it: the work done, without a clock."""

    taken = 0

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        self.taken += len(data)
        return data


def _taken_before_refusal(raw: bytes) -> int:
    source = _Counting(raw)
    with pytest.raises(ArchiveError):
        verify(source)
    return source.taken


def test_gzip_header_name_is_bounded_and_linear() -> None:
    tar = rawarchive.good_tar()
    ok = _deflated_member(tar, name=b"n" * 60_000)
    assert verify(io.BytesIO(ok)).size == len(rawarchive.STATE)  # a long name, still accepted
    hostile = _deflated_member(tar, name=b"n" * (8 << 20))
    with pytest.raises(ArchiveError, match="header name or comment over"):
        verify(io.BytesIO(hostile))
    # refused once the limit is passed: one read chunk, not the 8 MiB (a 1 MiB name took 35 s
    # of CPU when it was parsed byte by byte, re-slicing the buffer each time)
    assert _taken_before_refusal(hostile) <= _gzip.CHUNK


def test_gzip_members_are_bounded_in_count() -> None:
    first = _deflated_member(rawarchive.good_tar())
    empty = gzip.compress(b"", mtime=0)
    assert verify(io.BytesIO(first + empty * 100)).index  # a few empty members: Go accepts them
    hostile = first + empty * ((8 << 20) // len(empty))  # 8 MiB of them took 22.5 s of CPU
    with pytest.raises(ArchiveError, match="more than 1024 gzip members"):
        verify(io.BytesIO(hostile))
    assert _taken_before_refusal(hostile) <= _gzip.CHUNK


def test_extended_headers_cannot_pile_up() -> None:
    """Successive PAX headers, each under the 1 MiB cap, once verified at 1.5 GB of memory."""
    meta, state, sums = rawarchive.parts()
    pax = b"".join(rawarchive.pax_member([(f"k{i}", "v" * 1000)]) for i in range(9))
    tar = (pax + rawarchive.member("meta.json", meta) + rawarchive.member("state.bin", state)
           + rawarchive.member("SHA256SUMS", sums) + rawarchive.END)
    with pytest.raises(ArchiveError, match="extended headers over 8"):
        verify(io.BytesIO(gzip.compress(tar, mtime=0)))


def test_state_refused_from_its_header_before_a_byte_is_written() -> None:
    """meta.json comes first: a state.bin whose header disagrees with Size, or is over the
    caller's limit, is refused before any of it reaches the sink."""
    meta, _, _ = rawarchive.parts()
    big = b"\0" * (4 << 20)
    tar = (rawarchive.member("meta.json", meta) + rawarchive.member("state.bin", big)
           + rawarchive.member("SHA256SUMS", rawarchive.sums_for(meta, big)) + rawarchive.END)
    sink = HashSink()
    with pytest.raises(IntegrityError, match=r"meta\.json says Size 700"):
        read_archive_contents(io.BytesIO(gzip.compress(tar, mtime=0)), sink)
    assert sink.length == 0
    good = gzip.compress(rawarchive.good_tar(), mtime=0)
    with pytest.raises(ArchiveError, match="700 bytes, more than the 699 allowed"):
        read_archive_contents(io.BytesIO(good), sink, max_state_bytes=699)
    assert sink.length == 0
    assert read_archive_contents(io.BytesIO(good), None, max_state_bytes=700).meta.size == 700
