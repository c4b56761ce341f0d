"""A large upload read by its restore's thread from the socket (``_socket_body``), under clients
that stall, disconnect or send too much: the same answers as through ``receive()``, the archive
still verified, nothing applied from a broken upload. Real sockets against a real server.

Each test runs against both of ``serve()``'s HTTP implementations; only httptools on plain HTTP
takes the socket path, which each test checks it did (or did not) take."""

from __future__ import annotations

import base64
import http.client
import importlib.util
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin import _socket_body
from raft_snapshot_plugin._http_bounds import PASSTHROUGH_BYTES
from raft_snapshot_plugin.endpoint import (
    HTTP_IMPLEMENTATIONS,
    PATH,
    RESTORE_ID_HEADER,
    RESTORES_PATH,
    SnapshotServer,
    serve,
)
from raft_snapshot_plugin.manager import PluginManager
from raft_snapshot_plugin.memory import MemoryCluster

TOKEN = "token-for-socket-bodies"
IO_TIMEOUT = 1.0


@pytest.fixture
def cluster() -> MemoryCluster:
    return MemoryCluster(3, name="socket-body")


@pytest.fixture(params=HTTP_IMPLEMENTATIONS)
def http_impl(request: pytest.FixtureRequest) -> str:
    impl: str = request.param
    return impl


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The socket bytes each body read from the socket was to have (the real method, counted)."""
    seen: list[int] = []
    real = _socket_body.SocketBody.connect

    def counted(self: _socket_body.SocketBody, first: bytes, sock: socket.socket, left: int,
                hand_back: object) -> None:
        seen.append(len(first) + left)
        real(self, first, sock, left, hand_back)  # type: ignore[arg-type]

    monkeypatch.setattr(_socket_body.SocketBody, "connect", counted)
    return seen


@pytest.fixture
def server(cluster: MemoryCluster, snapshot_manager: PluginManager, private_tmpdir: Path,
           http_impl: str) -> Iterator[SnapshotServer]:
    """The private temp folder must be empty at the end: no restore's temp file outlives it."""
    with serve(cluster.nodes[0], token=TOKEN, manager=snapshot_manager, max_upload_bytes=8 << 20,
               io_timeout=IO_TIMEOUT, http=http_impl) as running:
        yield running


@pytest.fixture
def archive(cluster: MemoryCluster, snapshot_manager: PluginManager) -> bytes:
    """An archive past PASSTHROUGH_BYTES; the state changes after its take."""
    cluster.nodes[0].set("big", base64.b64encode(os.urandom(PASSTHROUGH_BYTES * 2)).decode())
    with rsp.take(cluster.nodes[0], manager=snapshot_manager) as snap:
        data = snap.read()
    cluster.nodes[0].set("big", "changed after the take")
    assert len(data) > PASSTHROUGH_BYTES
    return data


def _socket_path(http_impl: str) -> bool:
    return http_impl == "auto" and importlib.util.find_spec("httptools") is not None


def _head(length: int, restore_id: str, extra: str = "") -> bytes:
    return (f"PUT {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"{RESTORE_ID_HEADER}: {restore_id}\r\nContent-Length: {length}\r\n{extra}\r\n"
            ).encode()


def _answer(sock: socket.socket) -> tuple[int, dict[str, object]]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    doc = json.loads(response.read())
    assert isinstance(doc, dict)
    return response.status, doc


def _status(server: SnapshotServer, restore_id: str) -> dict[str, object]:
    """The restore's status resource, once it is no longer pending (10 s at most)."""
    deadline = time.monotonic() + 10
    while True:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        try:
            conn.request("GET", f"{RESTORES_PATH}/{restore_id}",
                         headers={"Authorization": f"Bearer {TOKEN}"})
            doc = json.loads(conn.getresponse().read())
        finally:
            conn.close()
        assert isinstance(doc, dict)
        if doc["state"] != "pending" or time.monotonic() > deadline:
            return doc
        time.sleep(0.05)


def test_a_client_that_stalls_mid_body_gets_a_400_and_nothing_is_applied(
    server: SnapshotServer, cluster: MemoryCluster, archive: bytes, http_impl: str,
    connects: list[int],
) -> None:
    restore_id = "stalls-mid-body-0001"
    with socket.create_connection((server.host, server.port), timeout=20) as sock:
        sock.sendall(_head(len(archive), restore_id) + archive[: len(archive) // 2])
        asked = time.monotonic()
        status, doc = _answer(sock)  # and the rest never comes
        waited = time.monotonic() - asked
    assert status == 400, doc
    assert "stalled after" in str(doc["error"]) and "nothing was applied" in str(doc["error"])
    assert IO_TIMEOUT * 0.5 < waited < IO_TIMEOUT + 5, waited
    assert _status(server, restore_id)["state"] == "failed"
    assert cluster.nodes[0].data["big"] == "changed after the take"
    assert connects == ([len(archive)] if _socket_path(http_impl) else [])


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_client_that_disconnects_mid_body_applies_nothing(
    server: SnapshotServer, cluster: MemoryCluster, archive: bytes, http_impl: str,
    connects: list[int], how: str,
) -> None:
    restore_id = f"disconnects-{how}-0001"
    sock = socket.create_connection((server.host, server.port), timeout=20)
    sock.sendall(_head(len(archive), restore_id) + archive[: len(archive) // 2])
    time.sleep(0.2)  # the restore is reading
    if how == "reset":  # an abortive close: the server's next read fails with a reset
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
    doc = _status(server, restore_id)
    assert doc["state"] == "failed" and doc["status"] == 400, doc
    assert "broke off" in str(doc["error"]) or "ended after" in str(doc["error"]), doc
    assert cluster.nodes[0].data["big"] == "changed after the take"
    assert connects == ([len(archive)] if _socket_path(http_impl) else [])


def test_bytes_after_the_body_are_not_read_as_the_body(
    server: SnapshotServer, cluster: MemoryCluster, archive: bytes, http_impl: str,
    connects: list[int],
) -> None:
    """The restore's thread stops at Content-Length: the bytes after it stay the loop's (never
    another request on httptools, which closes after a large body), and the restore applies."""
    taken_state = None
    with socket.create_connection((server.host, server.port), timeout=20) as sock:
        sock.sendall(_head(len(archive), "extra-bytes-after-01", "Expect: 100-continue\r\n"))
        assert sock.recv(100).startswith(b"HTTP/1.1 100"), "no 100 Continue"
        for start in range(0, len(archive), 300_000):  # in pieces, as a network brings them
            sock.sendall(archive[start:start + 300_000])
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"garbage " * 1000)
        status, doc = _answer(sock)
        assert status == 200, doc
        taken_state = doc
    assert taken_state is not None
    assert cluster.nodes[0].data["big"] != "changed after the take"
    assert all(node.data == cluster.nodes[0].data for node in cluster.nodes)
    assert connects == ([len(archive)] if _socket_path(http_impl) else [])


def test_a_damaged_upload_is_still_verified_and_applies_nothing(
    server: SnapshotServer, cluster: MemoryCluster, archive: bytes, http_impl: str,
    connects: list[int],
) -> None:
    damaged = bytearray(archive)
    damaged[len(damaged) // 2] ^= 0xFF  # inside the compressed state: a checksum fails
    with socket.create_connection((server.host, server.port), timeout=20) as sock:
        sock.sendall(_head(len(damaged), "damaged-upload-0001") + bytes(damaged))
        status, doc = _answer(sock)
    assert status == 400 and "nothing was applied" in str(doc["error"]), doc
    assert cluster.nodes[0].data["big"] == "changed after the take"
    assert connects == ([len(archive)] if _socket_path(http_impl) else [])
    # the connection after it is served as ever (the loop got the socket back)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", PATH, headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        response.read()
        assert response.status == 200
    finally:
        conn.close()


def test_a_restore_that_fails_before_reading_gives_the_connection_back(
    server: SnapshotServer, cluster: MemoryCluster, archive: bytes, tmp_path: Path,
    private_tmpdir: Path,
    monkeypatch: pytest.MonkeyPatch, http_impl: str, connects: list[int],
) -> None:
    """No temp folder: the restore fails before it reads the socket; the answer still comes
    (the rest of the body drained by the loop), and the next upload is served."""
    monkeypatch.setenv("RAFT_SNAPSHOT_TMPDIR", str(tmp_path / "missing"))
    with socket.create_connection((server.host, server.port), timeout=20) as sock:
        sock.sendall(_head(len(archive), "no-temp-folder-0001") + archive)
        status, doc = _answer(sock)
    assert status == 500 and "I/O error on the server" in str(doc["error"]), doc
    monkeypatch.setenv("RAFT_SNAPSHOT_TMPDIR", str(private_tmpdir))
    with socket.create_connection((server.host, server.port), timeout=20) as sock:
        sock.sendall(_head(len(archive), "after-the-failure-01") + archive)
        status, doc = _answer(sock)
    assert status == 200, doc
    assert cluster.nodes[0].data["big"] != "changed after the take"
    assert len(connects) == (2 if _socket_path(http_impl) else 0)


def test_tls_uploads_keep_the_receive_path(
    cluster: MemoryCluster, snapshot_manager: PluginManager, private_tmpdir: Path,
    archive: bytes, tmp_path: Path, connects: list[int],
) -> None:
    """On TLS the socket's bytes are not the body's: a large upload goes through receive()."""
    from apps.tlscert import make_cert

    from raft_snapshot_plugin.client import Client

    cert, key = make_cert(tmp_path)
    (tmp_path / "big.snap").write_bytes(archive)
    with serve(cluster.nodes[0], token=TOKEN, manager=snapshot_manager, certfile=cert,
               keyfile=key, max_upload_bytes=8 << 20) as running:
        Client(running.url, TOKEN, ca_file=cert).restore(tmp_path / "big.snap")
    assert cluster.nodes[0].data["big"] != "changed after the take"
    assert connects == []
