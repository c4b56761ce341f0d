"""The endpoint's restores as resources, the leader's advertised URL, and mutual TLS: a real uvicorn
server on 127.0.0.1, real clients (httpx, raw sockets, the command line), the reference backend."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from apps.tlscert import make_ca_chain

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin import hookimpl
from raft_snapshot_plugin.client import Client, new_restore_id
from raft_snapshot_plugin.endpoint import PATH, RESTORE_ID_HEADER, RESTORES_PATH, SnapshotServer, serve
from raft_snapshot_plugin.errors import RemoteError, RestorePendingError
from raft_snapshot_plugin.manager import PluginManager, get_plugin_manager
from raft_snapshot_plugin.memory import MemoryCluster, MemoryNode, MemoryPlugin

TOKEN = "token-for-restores"


@pytest.fixture
def cluster() -> MemoryCluster:
    cluster = MemoryCluster(3, name="restores")
    for i in range(5):
        cluster.nodes[0].set(f"k{i}", f"v{i}")
    return cluster


class _Slow(MemoryPlugin):
    """The reference backend, whose restores take ``seconds`` (a big state, a slow cluster)."""

    def __init__(self, seconds: float, error: Exception | None = None) -> None:
        self.seconds, self.error = seconds, error

    @hookimpl
    def raft_snapshot_restore(
        self, node: MemoryNode, meta: rsp.SnapshotMeta, source: IO[bytes]
    ) -> rsp.RestoreReport:
        time.sleep(self.seconds)
        if self.error is not None:
            raise self.error
        return super().raft_snapshot_restore(node, meta, source)


def _manager(plugin: MemoryPlugin) -> PluginManager:
    manager = get_plugin_manager(load_entrypoints=False)
    manager.register(plugin, name="memory")
    return manager


@pytest.fixture
def archive(cluster: MemoryCluster, tmp_path: Path) -> Path:
    with rsp.take(cluster.nodes[0], manager=_manager(MemoryPlugin())) as snap:
        snap.save(tmp_path / "s.snap")
    cluster.nodes[0].set("k0", "changed after the save")
    return tmp_path / "s.snap"


def _call(server: SnapshotServer, method: str, path: str, *, body: bytes | None = None,
          headers: dict[str, str] | None = None, token: str | None = TOKEN,
          ) -> tuple[http.client.HTTPResponse, dict[str, object]]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return response, json.loads(response.read() or b"{}")
    finally:
        conn.close()


@pytest.fixture
def slow_server(cluster: MemoryCluster, private_tmpdir: Path) -> Iterator[SnapshotServer]:
    with serve(cluster.nodes[0], token=TOKEN, manager=_manager(_Slow(1.5))) as server:
        yield server


def test_a_put_names_its_restore_and_the_status_tells_its_outcome(
    slow_server: SnapshotServer, archive: Path, cluster: MemoryCluster
) -> None:
    rid = new_restore_id()
    response, doc = _call(slow_server, "PUT", PATH, body=archive.read_bytes(),
                          headers={RESTORE_ID_HEADER: rid})
    assert response.status == 200 and response.getheader(RESTORE_ID_HEADER) == rid
    assert doc["Index"] == rsp.verify(archive).index
    response, doc = _call(slow_server, "GET", f"{RESTORES_PATH}/{rid}")
    assert response.status == 200 and doc["state"] == "applied" and doc["id"] == rid
    assert doc["index"] == rsp.verify(archive).index and isinstance(doc["finished"], float)
    assert cluster.nodes[0].data["k0"] == "v0"
    # the same ID again is refused, before the body is read
    response, doc = _call(slow_server, "PUT", PATH, body=archive.read_bytes(),
                          headers={RESTORE_ID_HEADER: rid})
    assert response.status == 409 and rid in str(doc["error"])
    # an ID the endpoint makes itself, when the client proposes none
    response, _ = _call(slow_server, "PUT", PATH, body=archive.read_bytes())
    made = response.getheader(RESTORE_ID_HEADER) or ""
    assert response.status == 200 and len(made) >= 16 and made != rid


def test_generated_restore_ids_never_read_as_a_command_line_option() -> None:
    # `raft-snapshot restore-status ID` takes an ID that starts with "-" for an option; URL-safe
    # tokens started with one once in 64
    ids = {new_restore_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(i[0].isalnum() and i.isalnum() and i.isascii() for i in ids)


def test_status_refusals(slow_server: SnapshotServer) -> None:
    response, doc = _call(slow_server, "GET", f"{RESTORES_PATH}/{'x' * 24}")
    assert response.status == 404 and "1 hour" in str(doc["error"])
    response, doc = _call(slow_server, "GET", f"{RESTORES_PATH}/{'x' * 24}", token=None)
    assert response.status == 401
    response, doc = _call(slow_server, "GET", f"{RESTORES_PATH}/{'x' * 24}", token="wrong")
    assert response.status == 403
    response, _ = _call(slow_server, "DELETE", f"{RESTORES_PATH}/{'x' * 24}")
    assert response.status == 405 and response.getheader("Allow") == "GET"
    response, doc = _call(slow_server, "PUT", PATH, body=b"x", headers={RESTORE_ID_HEADER: "a/b"})
    assert response.status == 400 and RESTORE_ID_HEADER in str(doc["error"])


def test_a_restore_outlives_a_client_that_goes_away(
    slow_server: SnapshotServer, archive: Path, cluster: MemoryCluster
) -> None:
    rid = new_restore_id()
    data = archive.read_bytes()
    with socket.create_connection((slow_server.host, slow_server.port), timeout=10) as sock:
        sock.sendall(f"PUT {PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                     f"{RESTORE_ID_HEADER}: {rid}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                     + data)
        time.sleep(0.3)  # the upload is in; the restore runs (1.5 s): hang up
    response, doc = _call(slow_server, "GET", f"{RESTORES_PATH}/{rid}")
    assert response.status == 200 and doc["state"] == "pending"
    client = Client(slow_server.url, TOKEN)
    with pytest.raises(RestorePendingError) as pending:
        client.outcome(rid)
    assert pending.value.restore_id == rid and pending.value.confirmed
    deadline = time.monotonic() + 20
    while client.restore_status(rid).state == "pending" and time.monotonic() < deadline:
        time.sleep(0.05)
    outcome = client.outcome(rid)
    assert outcome.meta == rsp.verify(archive)
    # the status resource carries the members as the PUT's answer would have
    assert outcome == client.restore_status(rid).result and outcome.complete
    assert outcome.index == cluster.log[-1].index
    assert cluster.nodes[0].data["k0"] == "v0"


def test_the_client_wait_ends_before_the_restore(
    slow_server: SnapshotServer, archive: Path, cluster: MemoryCluster
) -> None:
    client = Client(slow_server.url, TOKEN, timeout=0.3)
    with pytest.raises(RestorePendingError) as pending:
        client.restore(archive)
    rid = pending.value.restore_id
    assert rid is not None and pending.value.confirmed and "still applying" in str(pending.value)
    assert cluster.nodes[0].data["k0"] == "changed after the save"  # not yet
    deadline = time.monotonic() + 20
    while client.restore_status(rid).state == "pending" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.restore_status(rid).state == "applied"
    assert cluster.nodes[0].data["k0"] == "v0"


def test_a_failed_restore_is_reported_by_its_answer_and_its_status(
    cluster: MemoryCluster, archive: Path, private_tmpdir: Path
) -> None:
    manager = _manager(_Slow(0.1, TimeoutError("no quorum")))
    with serve(cluster.nodes[0], token=TOKEN, manager=manager) as server:
        client = Client(server.url, TOKEN)
        rid = new_restore_id()
        with pytest.raises(RemoteError) as failed:
            client.restore(archive, restore_id=rid)
        assert failed.value.status == 503 and failed.value.restore_id == rid
        assert f"restore {rid} failed" in str(failed.value)
        found = client.restore_status(rid)
        assert found.state == "failed" and found.status == 503 and "timed out" in (found.error or "")
        with pytest.raises(RemoteError, match="failed"):
            client.outcome(rid)
    assert cluster.nodes[0].data["k0"] == "changed after the save"


@pytest.mark.parametrize("form", ["mapping", "callable"])
def test_a_follower_names_the_leaders_endpoint_when_advertised(
    cluster: MemoryCluster, snapshot_manager: PluginManager, private_tmpdir: Path, form: str
) -> None:
    urls: dict[str, str] = {}
    advertise = urls if form == "mapping" else urls.get
    servers = [serve(node, token=TOKEN, manager=snapshot_manager, advertise=advertise)
               for node in cluster.nodes]
    try:
        for node, server in zip(cluster.nodes, servers, strict=True):
            urls[node.address] = server.url
        response, doc = _call(servers[1], "GET", PATH)
        assert response.status == 503
        assert doc["leader"] == cluster.nodes[0].address and doc["leader_url"] == servers[0].url
        assert servers[0].url in str(doc["error"])
        with pytest.raises(RemoteError) as refused:
            Client(servers[2].url, TOKEN).save(private_tmpdir.parent / "x.snap")
        assert refused.value.not_leader and refused.value.leader_url == servers[0].url
    finally:
        for server in servers:
            server.close()


# --- mutual TLS -----------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFT_SNAPSHOT_")}
    return subprocess.run([sys.executable, "-m", "raft_snapshot_plugin", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_mutual_tls_refuses_a_client_without_a_certificate(
    cluster: MemoryCluster, snapshot_manager: PluginManager, tmp_path: Path, private_tmpdir: Path
) -> None:
    pki = make_ca_chain(tmp_path)
    with serve(cluster.nodes[0], token=TOKEN, manager=snapshot_manager,
               certfile=pki["server_cert"], keyfile=pki["server_key"],
               client_cafile=pki["ca"]) as server:
        with pytest.raises(RemoteError) as refused:
            Client(server.url, TOKEN, ca_file=pki["ca"]).save(tmp_path / "no-cert.snap")
        assert refused.value.status is None
        print(f"\nwithout a client certificate: {refused.value}")
        client = Client(server.url, TOKEN, ca_file=pki["ca"], cert=pki["client_cert"],
                        key=pki["client_key"])
        meta = client.save(tmp_path / "s.snap")
        cluster.nodes[0].set("k0", "changed")
        assert client.restore(tmp_path / "s.snap").meta == meta
        assert cluster.nodes[0].data["k0"] == "v0"

        tls = ["--ca-file", str(pki["ca"]), "--addr", server.url, "--token", TOKEN]
        done = _cli("save", str(tmp_path / "cli.snap"), *tls)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        done = _cli("save", str(tmp_path / "cli.snap"), *tls, "--cert", str(pki["client_cert"]),
                    "--key", str(pki["client_key"]))
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        cluster.nodes[0].set("k0", "changed again")
        done = _cli("restore", str(tmp_path / "cli.snap"), *tls, "--cert", str(pki["client_cert"]),
                    "--key", str(pki["client_key"]))
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
        assert cluster.nodes[0].data["k0"] == "v0"
        # the certificate names localhost and 127.0.0.1: another name must be asked for
        done = _cli("save", str(tmp_path / "sni.snap"), *tls, "--cert", str(pki["client_cert"]),
                    "--key", str(pki["client_key"]), "--tls-server-name", "elsewhere.example")
        assert done.returncode == 1 and "elsewhere.example" in done.stderr, done.stderr
