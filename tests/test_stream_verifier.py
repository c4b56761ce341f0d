"""The check that runs beside a download (``Client.save``): same verdicts as ``verify``, whatever
the pieces, an early stop on damage, and no thread left behind."""

from __future__ import annotations

import http.server
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from raft_snapshot_plugin import ArchiveError, IntegrityError, Server, SnapshotMeta, verify
from raft_snapshot_plugin._verifier import StreamVerifier
from raft_snapshot_plugin.archive import write_archive
from raft_snapshot_plugin.client import Client
from raft_snapshot_plugin.seal import HmacKey

META = SnapshotMeta(index=7, term=2, servers=(Server(id="n1", address="127.0.0.1:1"),),
                    id="2-7-1700000000000")
STATE = os.urandom(3 << 20)  # incompressible: the archive is ~3 MiB, many 64 KiB pieces


def archive(state: bytes = STATE, seal: HmacKey | None = None) -> bytes:
    out = io.BytesIO()
    write_archive(out, META, state, seal=seal)
    return out.getvalue()


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    return (data[start:start + size] for start in range(0, len(data), size))


def check(data: bytes, size: int, key: HmacKey | None = None) -> SnapshotMeta:
    checker = StreamVerifier(verify_key=key)
    try:
        for piece in pieces(data, size):
            checker.feed(piece)
        return checker.finish()
    finally:
        checker.abandon()


def verifier_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "raft-snapshot-verify"]


@pytest.mark.parametrize("size", [1 << 20, 65536, 4097, 512, 1 << 30])
def test_same_metadata_as_verify_whatever_the_pieces(size: int) -> None:
    data = archive()
    assert check(data, size) == verify(io.BytesIO(data))
    assert verifier_threads() == []


def test_a_seal_is_checked() -> None:
    key = HmacKey(b"a shared secret of some length")
    data = archive(seal=key)
    assert check(data, 65536, key).seal is not None
    with pytest.raises(IntegrityError):
        check(data, 65536, HmacKey(b"another secret, also long enough"))
    with pytest.raises(IntegrityError):
        check(archive(), 65536, key)  # not sealed, and a key is configured


@pytest.mark.parametrize(("damage", "error"), [
    (lambda d: d[: len(d) // 2], IntegrityError),                       # truncated
    (lambda d: d + b"\x1f\x8b\x08" + bytes(20), ArchiveError),           # a member after the end
    (lambda d: d + b"x", ArchiveError),                                  # a byte after the end
    (lambda d: d[:5000] + bytes([d[5000] ^ 1]) + d[5001:], IntegrityError),  # a flipped bit
])
def test_damage_is_refused_as_verify_refuses_it(damage: object, error: type[Exception]) -> None:
    data = damage(archive())  # type: ignore[operator]
    with pytest.raises(error):
        verify(io.BytesIO(data))
    with pytest.raises(error):
        check(data, 65536)
    assert verifier_threads() == []


def test_damage_stops_the_feeding_early() -> None:
    """Garbage fails at its first bytes: the next piece fed raises, long before the end."""
    checker = StreamVerifier()
    fed = 0

    def feed_all() -> None:
        nonlocal fed
        for piece in pieces(b"garbage!" * (8 << 20), 65536):  # 64 MiB
            checker.feed(piece)
            fed += len(piece)

    with pytest.raises(ArchiveError, match="not a gzip stream"):
        feed_all()
    checker.abandon()
    assert fed < 16 << 20
    assert verifier_threads() == []


def test_abandoned_mid_stream_leaves_no_thread() -> None:
    data = archive()
    for cut in (0, 1000, len(data) // 2):
        checker = StreamVerifier()
        for piece in pieces(data[:cut], 65536):
            checker.feed(piece)
        checker.abandon()
        assert verifier_threads() == []


class _Garbage(http.server.BaseHTTPRequestHandler):
    """A server that answers a snapshot GET with 64 MiB that are not an archive."""

    sent = 0

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(64 << 20))
        self.end_headers()
        try:
            for _ in range(64 * 16):
                self.wfile.write(b"not an archive!!" * 4096)
                type(self).sent += 65536
        except OSError:
            pass  # the client hung up: what this test wants

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_client_save_stops_a_bad_download_early_and_leaves_nothing(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        target = tmp_path / "s.snap"
        target.write_bytes(b"an older file stays as it was")
        with pytest.raises(ArchiveError, match="not a gzip stream"):
            Client(f"http://127.0.0.1:{server.server_address[1]}", "t", timeout=30).save(target)
        assert target.read_bytes() == b"an older file stays as it was"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s.snap"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    # the client stopped reading at the first bytes: what the server got out before its writes
    # failed is what the socket buffers and the checker's queue held, not the 64 MiB
    assert _Garbage.sent < 32 << 20, _Garbage.sent
    assert verifier_threads() == []
