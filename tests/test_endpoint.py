"""The snapshot endpoint and its client, in process, over loopback, on the reference backend."""

from __future__ import annotations

import functools
import http.client
import io
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
from apps.tlscert import make_cert

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin import hookimpl
from raft_snapshot_plugin.client import Client
from raft_snapshot_plugin.endpoint import (
    DEFAULT_MAX_UPLOAD_BYTES,
    HTTP_IMPLEMENTATIONS,
    PATH,
    SnapshotServer,
    serve,
)
from raft_snapshot_plugin.errors import RemoteError
from raft_snapshot_plugin.manager import PluginManager, get_plugin_manager
from raft_snapshot_plugin.testing import MemoryCluster, MemoryNode, MemoryPlugin

TOKEN = "token-for-tests"
#: The hostile-request tests run against both of serve()'s HTTP implementations (httptools on
#: uvloop, and the h11 fallback): each has its own code for malformed requests.
BOTH_HTTP = pytest.mark.parametrize("servers", HTTP_IMPLEMENTATIONS, indirect=True)


@pytest.fixture
def cluster() -> MemoryCluster:
    cluster = MemoryCluster(3, name="http")
    for i in range(10):
        cluster.nodes[0].set(f"k{i}", f"v{i}")
    return cluster


@pytest.fixture
def servers(
    cluster: MemoryCluster, snapshot_manager: PluginManager, private_tmpdir: Path,
    request: pytest.FixtureRequest,
) -> Iterator[list[SnapshotServer]]:
    """One endpoint per node; the leader's first. The private temp folder must end up empty.

    ``serve(http=...)`` is the test's indirect parameter when it has one (:data:`BOTH_HTTP`)."""
    http_impl: str = getattr(request, "param", "auto")
    started = [serve(node, token=TOKEN, manager=snapshot_manager, max_upload_bytes=1 << 20,
                     http=http_impl) for node in cluster.nodes]
    yield started
    for server in started:
        server.close()


def request(
    url: str, method: str = "GET", path: str = PATH, *, token: str | None = TOKEN,
    body: bytes | None = None, headers: dict[str, str] | None = None,
) -> tuple[http.client.HTTPResponse, bytes]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def root_cause(exc: BaseException) -> BaseException:
    """The error at the bottom of the chain (httpx wraps httpcore's, which wraps the socket's)."""
    while (inner := exc.__cause__ or exc.__context__) is not None:
        exc = inner
    return exc


def error_of(data: bytes) -> str:
    doc = json.loads(data)
    assert isinstance(doc, dict) and isinstance(doc["error"], str) and doc["error"]
    return doc["error"]


def states(cluster: MemoryCluster) -> list[dict[str, str]]:
    return [dict(node.data) for node in cluster.nodes]


# ==================================================================================================
# The server
# ==================================================================================================

def test_url_close_and_context_manager(
    cluster: MemoryCluster, snapshot_manager: PluginManager
) -> None:
    with serve(cluster.nodes[0], token=TOKEN, manager=snapshot_manager) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert request(server.url)[0].status == 200
    assert server.closed
    server.close()  # twice is fine
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()


def test_serve_refuses_bad_arguments(cluster: MemoryCluster, snapshot_manager: PluginManager) -> None:
    node = cluster.nodes[0]
    with pytest.raises(ValueError, match="token"):
        serve(node, token="", manager=snapshot_manager)
    with pytest.raises(ValueError, match="keyfile"):
        serve(node, token=TOKEN, keyfile="key.pem", manager=snapshot_manager)
    with pytest.raises(rsp.BackendNotFoundError):
        serve(object(), token=TOKEN, manager=snapshot_manager)
    with pytest.raises(ValueError, match="'h2'"):
        serve(node, token=TOKEN, manager=snapshot_manager, http="h2")
    assert DEFAULT_MAX_UPLOAD_BYTES == 1 << 30


def test_get_streams_a_verified_archive(servers: list[SnapshotServer], cluster: MemoryCluster) -> None:
    response, data = request(servers[0].url)
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/octet-stream"
    assert int(response.getheader("Content-Length") or -1) == len(data)
    meta = rsp.verify(_stream(data))
    assert response.getheader("X-Raft-Index") == str(meta.index) == str(cluster.nodes[0].applied)
    assert response.getheader("X-Raft-Stale") == "false"
    assert meta.backend == "memory"


def test_follower_answers_503_naming_the_leader(
    servers: list[SnapshotServer], cluster: MemoryCluster
) -> None:
    response, data = request(servers[1].url)
    assert response.status == 503
    doc = json.loads(data)
    assert doc["leader"] == cluster.nodes[0].address
    assert cluster.nodes[0].address in doc["error"]

    cluster.elect(cluster.nodes[2])
    response, data = request(servers[0].url)
    assert response.status == 503 and json.loads(data)["leader"] == cluster.nodes[2].address

    for query in ("?stale", "?stale=true", "?stale=1"):
        response, data = request(servers[0].url, path=PATH + query)
        assert response.status == 200 and response.getheader("X-Raft-Stale") == "true"
        assert rsp.verify(_stream(data)).index == cluster.nodes[0].applied
    response, _ = request(servers[0].url, path=PATH + "?stale=false")
    assert response.status == 503


def test_leader_unknown_without_the_hook(cluster: MemoryCluster, private_tmpdir: Path) -> None:
    """An adapter without raft_snapshot_leader: the refusal carries ``"leader": null``."""
    manager = get_plugin_manager(load_entrypoints=False)
    manager.register(_NoLeaderHook(), name="noleader")
    assert manager.leader("noleader", cluster.nodes[1]) is None
    with serve(cluster.nodes[1], token=TOKEN, manager=manager) as server:
        response, data = request(server.url)
    assert response.status == 503
    assert json.loads(data)["leader"] is None and "no leader is known" in error_of(data)


def test_leader_hook_answers_through_the_manager(
    cluster: MemoryCluster, snapshot_manager: PluginManager
) -> None:
    """raft_snapshot_leader, as the reference backend implements it."""
    assert snapshot_manager.leader("memory", cluster.nodes[2]) == cluster.nodes[0].address
    manager = get_plugin_manager(load_entrypoints=False)
    manager.register(_BadLeaderHook(), name="noleader")
    with pytest.raises(rsp.BackendError, match="raft_snapshot_leader"):
        manager.leader("noleader", cluster.nodes[0])


# --- authentication and routing -------------------------------------------------------------------

@BOTH_HTTP
def test_token_is_required_and_checked(servers: list[SnapshotServer]) -> None:
    url = servers[0].url
    response, data = request(url, token=None)
    assert response.status == 401 and "missing token" in error_of(data)
    assert (response.getheader("WWW-Authenticate") or "").startswith("Bearer")
    response, data = request(url, token=None, headers={"Authorization": f"Basic {TOKEN}"})
    assert response.status == 401 and "malformed" in error_of(data)
    response, data = request(url, token=None, headers={"Authorization": "Bearer"})
    assert response.status == 401
    for wrong in ("nope", TOKEN + "x", TOKEN[:-1], "é" * 5):
        response, data = request(url, token=wrong) if wrong.isascii() else request(
            url, token=None, headers={"Authorization": "Bearer " + wrong})
        assert response.status == 403 and error_of(data) == "wrong token"
        assert response.getheader("Content-Type") == "application/json"
    response, _ = request(url, token=None, headers={"Authorization": f"bearer  {TOKEN} "})
    assert response.status == 200
    response, data = request(url, "PUT", token="nope", body=b"x" * 1000)
    assert response.status == 403


@BOTH_HTTP
def test_unknown_path_and_method(servers: list[SnapshotServer]) -> None:
    url = servers[0].url
    for path in ("/", "/v1/snapshots", "/v1/snapshot/x", "/v2/snapshot"):
        response, data = request(url, path=path)
        assert response.status == 404 and PATH in error_of(data)
    for method in ("POST", "DELETE", "PATCH", "OPTIONS"):
        response, data = request(url, method)
        assert response.status == 405 and method in error_of(data)
        assert response.getheader("Allow") == "GET, PUT"
    response, data = request(url, "HEAD")
    assert response.status == 405 and data == b""
    response, data = request(url, "BREW")
    assert response.status == 501 and error_of(data)


@BOTH_HTTP
def test_malformed_request_gets_json(servers: list[SnapshotServer]) -> None:
    parts = urllib.parse.urlsplit(servers[0].url)
    with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=10) as sock:
        sock.sendall(b"GET /v1/snapshot HTTP/1.1\r\nX-Long: " + b"x" * 70000 + b"\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 431 and error_of(response.read())


# --- uploads --------------------------------------------------------------------------------------

def test_put_restores_and_answers_the_meta(
    servers: list[SnapshotServer], cluster: MemoryCluster, tmp_path: Path
) -> None:
    expected = states(cluster)
    saved = Client(servers[0].url, TOKEN).save(tmp_path / "s.snap")
    cluster.nodes[0].set("k0", "changed")
    response, data = request(servers[0].url, "PUT", body=(tmp_path / "s.snap").read_bytes())
    assert response.status == 200
    index = cluster.log[-1].index  # the restore's own entry, applied by every member
    members = [{"member": n.address, "index": index, "applied": True} for n in cluster.nodes]
    assert json.loads(data) == {**saved.to_dict(),
                                "restore": {"index": index, "waited": 0.0, "members": members}}
    assert states(cluster) == expected


@BOTH_HTTP
def test_put_needs_a_length_within_the_limit(
    servers: list[SnapshotServer], cluster: MemoryCluster, tmp_path: Path
) -> None:
    before = states(cluster)
    url = servers[0].url
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request("PUT", PATH, body=iter([b"abc"]), encode_chunked=True,
                     headers={"Authorization": f"Bearer {TOKEN}", "Transfer-Encoding": "chunked"})
        response = conn.getresponse()
        assert response.status == 411 and "Content-Length" in error_of(response.read())
    finally:
        conn.close()
    response, data = request(url, "PUT", headers={"Content-Length": "-5"})
    assert response.status in (400, 411)
    response, data = request(url, "PUT", body=b"x" * ((1 << 20) + 1))
    assert response.status == 413 and str(1 << 20) in error_of(data)
    assert states(cluster) == before


def test_damaged_upload_never_applied(
    servers: list[SnapshotServer], cluster: MemoryCluster, tmp_path: Path, private_tmpdir: Path
) -> None:
    Client(servers[0].url, TOKEN).save(tmp_path / "s.snap")
    cluster.nodes[0].set("k0", "after the save")
    before = states(cluster)
    raw = (tmp_path / "s.snap").read_bytes()
    (tmp_path / "bad.snap").write_bytes(raw[:-20])
    with pytest.raises(RemoteError) as info:
        Client(servers[0].url, TOKEN).restore(tmp_path / "bad.snap")
    assert info.value.status == 400 and "nothing was applied" in str(info.value)
    (tmp_path / "bad.snap").write_bytes(raw + b"trailing")
    with pytest.raises(RemoteError, match="400"):
        Client(servers[0].url, TOKEN).restore(tmp_path / "bad.snap")
    assert states(cluster) == before
    assert list(private_tmpdir.iterdir()) == []


@BOTH_HTTP
def test_body_is_read_exactly_to_its_length(
    servers: list[SnapshotServer], cluster: MemoryCluster, tmp_path: Path
) -> None:
    """Bytes after Content-Length are not part of the archive (the reader stops at the length)."""
    expected = states(cluster)
    Client(servers[0].url, TOKEN).save(tmp_path / "s.snap")
    cluster.nodes[0].set("k1", "changed")
    data = (tmp_path / "s.snap").read_bytes()
    parts = urllib.parse.urlsplit(servers[0].url)
    with socket.create_connection((parts.hostname or "", parts.port or 0), timeout=10) as sock:
        sock.sendall(f"PUT {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                     f"Content-Length: {len(data)}\r\n\r\n".encode() + data + b"GARBAGE AFTER")
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 200, response.read()
        response.read()
    assert states(cluster) == expected


def test_server_side_io_error_is_a_json_500(
    servers: list[SnapshotServer], cluster: MemoryCluster, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Client(servers[0].url, TOKEN).save(tmp_path / "s.snap")
    cluster.nodes[0].set("k0", "after the save")
    before = states(cluster)
    monkeypatch.setenv("RAFT_SNAPSHOT_TMPDIR", str(tmp_path / "missing"))
    response, data = request(servers[0].url)
    assert response.status == 500 and "I/O error on the server" in error_of(data)
    response, data = request(servers[0].url, "PUT", body=(tmp_path / "s.snap").read_bytes())
    assert response.status == 500 and "nothing was applied" in error_of(data)
    assert states(cluster) == before


# ==================================================================================================
# The client
# ==================================================================================================

def test_client_save_and_restore(
    servers: list[SnapshotServer], cluster: MemoryCluster, tmp_path: Path
) -> None:
    seen: list[tuple[int, int]] = []
    meta = Client(servers[0].url + "/", TOKEN).save(tmp_path / "s.snap",
                                                    progress=lambda d, t: seen.append((d, t)))
    size = (tmp_path / "s.snap").stat().st_size
    assert seen[0] == (0, size) and seen[-1] == (size, size)
    assert meta == rsp.verify(tmp_path / "s.snap")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["s.snap"]

    expected = states(cluster)
    cluster.nodes[0].set("k2", "changed")
    sent: list[tuple[int, int]] = []
    result = Client(servers[2].url, TOKEN).restore(tmp_path / "s.snap",
                                                   progress=lambda d, t: sent.append((d, t)))
    assert result.meta == meta and result.complete
    assert [m.member for m in result.members or ()] == [n.address for n in cluster.nodes]
    assert sent[0] == (0, size) and sent[-1] == (size, size)
    assert states(cluster) == expected


def test_client_save_failure_leaves_nothing(
    servers: list[SnapshotServer], tmp_path: Path, cluster: MemoryCluster
) -> None:
    target = tmp_path / "s.snap"
    target.write_bytes(b"an older file stays as it was")
    with pytest.raises(RemoteError) as info:
        Client(servers[1].url, TOKEN).save(target)
    assert info.value.status == 503 and info.value.leader == cluster.nodes[0].address
    with pytest.raises(RemoteError) as info:
        Client(servers[0].url, "wrong").save(target)
    assert info.value.status == 403 and info.value.url == servers[0].url
    assert target.read_bytes() == b"an older file stays as it was"
    assert not list(tmp_path.glob("s.snap*.unverified"))
    with pytest.raises(FileNotFoundError):
        Client(servers[0].url, TOKEN).save(tmp_path / "no" / "such" / "dir.snap")


def test_client_unreachable(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RemoteError) as info:
        Client(f"http://127.0.0.1:{port}", TOKEN, timeout=5).save(tmp_path / "s.snap")
    assert info.value.status is None and isinstance(root_cause(info.value), ConnectionRefusedError)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="http"):
        Client("ftp://127.0.0.1:21", TOKEN)


def test_concurrent_downloads_and_a_restore(
    servers: list[SnapshotServer], cluster: MemoryCluster, tmp_path: Path
) -> None:
    Client(servers[0].url, TOKEN).save(tmp_path / "base.snap")
    results: dict[str, object] = {}

    def run(name: str, call: Callable[[], rsp.SnapshotMeta]) -> None:
        try:
            results[name] = call()
        except BaseException as exc:  # reported below
            results[name] = exc

    client = Client(servers[0].url, TOKEN)
    refused: list[str] = []

    def save(i: int) -> rsp.SnapshotMeta:
        """A take that meets the restore holding the node is refused at once, by design (503: a
        GET never waits behind a restore); it is asked again, as a client would."""
        for _ in range(100):
            try:
                return client.save(tmp_path / f"c{i}.snap")
            except RemoteError as exc:
                if exc.status != 503 or "restore into this node is in progress" not in str(exc):
                    raise
                refused.append(str(exc))
                time.sleep(0.01)
        raise AssertionError("the node stayed busy")

    jobs: dict[str, Callable[[], rsp.SnapshotMeta | rsp.RestoreResult]] = {
        f"get{i}": functools.partial(save, i) for i in range(4)
    }
    jobs["put"] = functools.partial(client.restore, tmp_path / "base.snap")
    threads = [threading.Thread(target=run, args=item) for item in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert isinstance(results["put"], rsp.RestoreResult), results
    assert all(isinstance(results[f"get{i}"], rsp.SnapshotMeta) for i in range(4)), results
    for i in range(4):
        assert rsp.verify(tmp_path / f"c{i}.snap") == results[f"get{i}"]
    print(f"\nconcurrent downloads and a restore: {len(refused)} take(s) met the restore (503)")


# ==================================================================================================
# TLS
# ==================================================================================================

def test_tls_round_trip(
    cluster: MemoryCluster, snapshot_manager: PluginManager, tmp_path: Path, private_tmpdir: Path
) -> None:
    cert, key = make_cert(tmp_path)
    expected = states(cluster)
    with serve(cluster.nodes[0], token=TOKEN, manager=snapshot_manager, certfile=cert,
               keyfile=key) as server:
        assert server.url.startswith("https://127.0.0.1:")
        meta = Client(server.url, TOKEN, ca_file=cert).save(tmp_path / "s.snap")
        assert meta == rsp.verify(tmp_path / "s.snap")

        with pytest.raises(RemoteError) as info:
            Client(server.url, TOKEN).save(tmp_path / "untrusted.snap")
        assert isinstance(root_cause(info.value), ssl.SSLCertVerificationError)
        with pytest.raises(RemoteError):
            Client(server.url.replace("https:", "http:"), TOKEN, timeout=5).save(tmp_path / "p.snap")

        cluster.nodes[0].set("k3", "changed")
        assert Client(server.url, TOKEN, ca_file=cert).restore(tmp_path / "s.snap").meta == meta
    assert states(cluster) == expected
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith((".snap", ".unverified"))) \
        == ["s.snap"]


# --- helpers --------------------------------------------------------------------------------------

def _stream(data: bytes) -> IO[bytes]:
    return io.BytesIO(data)


class _NoLeaderHook:
    """An adapter that claims MemoryNodes but does not implement raft_snapshot_leader."""

    @hookimpl
    def raft_snapshot_backend(self, node: object) -> str | None:
        return "noleader"

    @hookimpl
    def raft_snapshot_is_leader(self, backend: str, node: object) -> bool | None:
        return False if backend == "noleader" else None


class _BadLeaderHook(_NoLeaderHook):
    @hookimpl
    def raft_snapshot_leader(self, backend: str, node: object) -> str | None:
        raise RuntimeError("cannot tell")


# --- one mapping of the core's errors to statuses -------------------------------------------------

class _Refusing(MemoryPlugin):
    """The reference backend, whose hooks fail the way the contract lets adapters fail."""

    def __init__(self, take_error: Exception | None, restore_error: Exception | None) -> None:
        self.take_error, self.restore_error = take_error, restore_error

    @hookimpl
    def raft_snapshot_take(self, node: MemoryNode, sink: IO[bytes]) -> rsp.SnapshotMeta:
        if self.take_error is not None:
            raise self.take_error
        return super().raft_snapshot_take(node, sink)

    @hookimpl
    def raft_snapshot_restore(
        self, node: MemoryNode, meta: rsp.SnapshotMeta, source: IO[bytes]
    ) -> rsp.RestoreReport:
        if self.restore_error is not None:
            raise self.restore_error
        return super().raft_snapshot_restore(node, meta, source)


@pytest.mark.parametrize(("take_error", "restore_error", "method", "status", "says"), [
    (TimeoutError("the cluster is slow"), None, "GET", 503, "timed out"),
    (None, TimeoutError("no quorum"), "PUT", 503, "timed out"),
    (None, rsp.StateRejectedError("these bytes are not mine"), "PUT", 400, "not mine"),
    (None, KeyError("adapter bug"), "PUT", 500, "KeyError"),
], ids=["take-timeout", "restore-timeout", "state-rejected", "adapter-bug"])
def test_adapter_errors_map_to_statuses(
    cluster: MemoryCluster, private_tmpdir: Path, take_error: Exception | None,
    restore_error: Exception | None, method: str, status: int, says: str,
) -> None:
    good = get_plugin_manager(load_entrypoints=False)
    good.register(MemoryPlugin(), name="memory")
    with rsp.take(cluster.nodes[0], manager=good) as snap:
        archive = snap.read()
    manager = get_plugin_manager(load_entrypoints=False)
    manager.register(_Refusing(take_error, restore_error), name="memory")
    before = states(cluster)
    with serve(cluster.nodes[0], token=TOKEN, manager=manager) as server:
        response, data = request(server.url, method, body=archive if method == "PUT" else None)
    assert response.status == status and says in error_of(data), error_of(data)
    if method == "PUT" and status == 400:
        assert "nothing was applied" in error_of(data)
    assert states(cluster) == before


def test_client_tells_not_the_leader_from_other_503s(
    cluster: MemoryCluster, private_tmpdir: Path, tmp_path: Path
) -> None:
    """The agent skips a round on a follower but must count a timeout as a failure."""
    good = get_plugin_manager(load_entrypoints=False)
    good.register(MemoryPlugin(), name="memory")
    with serve(cluster.nodes[1], token=TOKEN, manager=good) as server, \
            pytest.raises(RemoteError) as follower:
        Client(server.url, TOKEN).save(tmp_path / "a.snap")
    assert follower.value.status == 503 and follower.value.not_leader
    assert follower.value.leader == cluster.nodes[0].address
    slow = get_plugin_manager(load_entrypoints=False)
    slow.register(_Refusing(TimeoutError("slow"), None), name="memory")
    with serve(cluster.nodes[0], token=TOKEN, manager=slow) as server, \
            pytest.raises(RemoteError) as timeout:
        Client(server.url, TOKEN).save(tmp_path / "b.snap")
    assert timeout.value.status == 503 and not timeout.value.not_leader


class _NoIsLeader:
    """Only the three required hooks: leadership unknown."""

    @hookimpl
    def raft_snapshot_backend(self, node: object) -> str | None:
        return "blind" if isinstance(node, MemoryNode) else None

    @hookimpl
    def raft_snapshot_take(self, node: MemoryNode, sink: IO[bytes]) -> rsp.SnapshotMeta:
        return MemoryPlugin().raft_snapshot_take(node, sink)

    @hookimpl
    def raft_snapshot_restore(self) -> bool:
        return True


def test_stale_header_says_unknown_without_is_leader(
    cluster: MemoryCluster, private_tmpdir: Path
) -> None:
    manager = get_plugin_manager(load_entrypoints=False)
    manager.register(_NoIsLeader(), name="blind")
    with serve(cluster.nodes[1], token=TOKEN, manager=manager) as server:
        response, data = request(server.url)
    assert response.status == 200 and response.getheader("X-Raft-Stale") == "unknown"
    assert rsp.verify(io.BytesIO(data)).backend == "blind"


def test_upload_inflating_past_max_state_bytes_is_refused_before_it_is_written(
    cluster: MemoryCluster, snapshot_manager: PluginManager, private_tmpdir: Path
) -> None:
    """A 64 MiB state of zeros compresses to about 64 KiB, well under max_upload_bytes: the
    decompressed limit refuses it from the tar header, before the temp file grows."""
    meta = rsp.SnapshotMeta(index=1, term=1, backend="memory")
    with rsp.Snapshot.create(meta, bytes(64 << 20), level=9) as snap:
        archive = snap.read()
    assert len(archive) < 1 << 20
    before = states(cluster)
    with serve(cluster.nodes[0], token=TOKEN, manager=snapshot_manager,
               max_upload_bytes=1 << 20, max_state_bytes=1 << 20) as server:
        response, data = request(server.url, "PUT", body=archive)
    assert response.status == 400
    assert f"{64 << 20} bytes, more than the {1 << 20} allowed" in error_of(data)
    assert states(cluster) == before
