"""A download's body read past httpx (``_download.body_pieces``), against a raw server that cuts
the body where it likes: every byte once and in order, a stall within the I/O timeout, an early
end counted by the caller."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from apps.tlscert import make_cert

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin import client as client_module
from raft_snapshot_plugin._download import READ_BYTES, body_pieces
from raft_snapshot_plugin.client import Client
from raft_snapshot_plugin.endpoint import serve
from raft_snapshot_plugin.manager import PluginManager
from raft_snapshot_plugin.memory import MemoryCluster

BODY = os.urandom(6 << 20)


@contextlib.contextmanager
def raw_server(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """One connection on 127.0.0.1, answered by ``answer`` after the request's head is read."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            with contextlib.suppress(OSError):  # the client hung up
                answer(conn)
            done.wait(30)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    finally:
        done.set()
        thread.join(30)
        listener.close()


def head(length: int) -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n".encode()


def download(url: str, io_timeout: float = 10.0) -> list[bytes]:
    with httpx.Client() as client, client.stream("GET", url) as response:
        return list(body_pieces(response, int(response.headers["Content-Length"]), io_timeout))


def test_every_byte_once_in_order_past_what_httpx_buffered() -> None:
    """The head and the body's first bytes in one segment (h11 holds them), the rest in pieces
    of odd sizes: nothing lost, nothing twice, and the rest read in pieces larger than httpx's
    64 KiB."""

    def answer(conn: socket.socket) -> None:
        conn.sendall(head(len(BODY)) + BODY[:1000])
        time.sleep(0.05)
        for start in range(1000, len(BODY), 700_001):
            conn.sendall(BODY[start:start + 700_001])

    with raw_server(answer) as url:
        pieces = download(url)
    assert b"".join(pieces) == BODY
    assert max(map(len, pieces)) > 64 << 10
    assert max(map(len, pieces)) <= READ_BYTES


def test_nothing_read_past_the_content_length() -> None:
    def answer(conn: socket.socket) -> None:
        conn.sendall(head(len(BODY)) + BODY + b"NOT THE BODY" * 1000)

    with raw_server(answer) as url:
        assert b"".join(download(url)) == BODY


def test_a_stall_is_a_read_timeout_within_the_io_timeout() -> None:
    def answer(conn: socket.socket) -> None:
        conn.sendall(head(len(BODY)) + BODY[: 2 << 20])

    with raw_server(answer) as url:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            download(url, io_timeout=0.5)
        assert time.monotonic() - started < 10


def test_an_early_end_yields_what_came() -> None:
    def answer(conn: socket.socket) -> None:
        conn.sendall(head(len(BODY)) + BODY[: 3 << 20])
        conn.shutdown(socket.SHUT_WR)

    with raw_server(answer) as url:
        assert b"".join(download(url)) == BODY[: 3 << 20]


def test_a_body_that_fits_the_first_piece_ends_through_httpx() -> None:
    def answer(conn: socket.socket) -> None:
        conn.sendall(head(5) + b"hello")

    with raw_server(answer) as url:
        assert download(url) == [b"hello"]


def test_a_large_save_over_tls_reads_past_httpx(
    snapshot_manager: PluginManager, private_tmpdir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through ``serve()`` on TLS: the connection's reads give the decrypted body, whole."""
    cluster = MemoryCluster(3, name="tls-download")
    cluster.nodes[0].set("big", base64.b64encode(os.urandom(4 << 20)).decode())
    sizes: list[int] = []

    def counted(response: httpx.Response, total: int, io_timeout: float) -> Iterator[bytes]:
        for piece in body_pieces(response, total, io_timeout):
            sizes.append(len(piece))
            yield piece

    monkeypatch.setattr(client_module, "body_pieces", counted)
    cert, key = make_cert(tmp_path)
    with serve(cluster.nodes[0], token="t", manager=snapshot_manager, certfile=cert,
               keyfile=key) as server:
        meta = Client(server.url, "t", ca_file=cert).save(tmp_path / "s.snap")
    assert meta == rsp.verify(tmp_path / "s.snap")
    assert sum(sizes) == (tmp_path / "s.snap").stat().st_size > 4 << 20
    assert len(sizes) > 1
