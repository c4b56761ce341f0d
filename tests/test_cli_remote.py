"""The real CLI against a real application process serving the snapshot endpoint.

``tests/apps/memory_app.py`` runs a 3-node MemoryCluster with one endpoint per node; the tests drive
``python -m raft_snapshot_plugin`` (the installed command) against it and read the app's state
through the app's own test-only route. The app's ``RAFT_SNAPSHOT_TMPDIR`` is a test folder that
must be empty whenever a request has finished.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import pty
import re
import selectors
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from apps.tlscert import make_cert

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin.cli._common import inspection_table as _inspection_table
from raft_snapshot_plugin.client import Client
from raft_snapshot_plugin.manager import get_plugin_manager
from raft_snapshot_plugin.testing import MEMORY_BACKEND, MemoryPlugin

APP = Path(__file__).resolve().parent / "apps" / "memory_app.py"
TOKEN = "s3cret-token"
CLI = [sys.executable, "-m", "raft_snapshot_plugin"]


@dataclasses.dataclass
class App:
    proc: subprocess.Popen[bytes]
    leader: str
    followers: list[str]
    leader_address: str
    state_url: str
    tmpdir: Path
    log: Path

    def nodes(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.state_url}/state", timeout=10) as answer:
            doc: dict[str, Any] = json.load(answer)
        return list(doc["nodes"])

    def data(self) -> list[dict[str, str]]:
        """Every node's key/value data."""
        return [node["data"] for node in self.nodes()]

    def set(self, key: str, value: str) -> None:
        query = urllib.parse.urlencode({"key": key, "value": value})
        request = urllib.request.Request(f"{self.state_url}/set?{query}", method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()

    def wait_tmpdir_empty(self, seconds: float = 10.0) -> None:
        deadline = time.monotonic() + seconds
        while (left := sorted(p.name for p in self.tmpdir.iterdir())) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, f"temp files left in the app's RAFT_SNAPSHOT_TMPDIR: {left}\n{self.log_text()}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _read_line(proc: subprocess.Popen[bytes], seconds: float) -> bytes:
    assert proc.stdout is not None
    deadline = time.monotonic() + seconds
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise TimeoutError("the app printed no URLs in time")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError("the app exited before printing its URLs")
            buffer += chunk
    return buffer


@pytest.fixture
def start_app(tmp_path: Path) -> Iterator[Callable[..., App]]:
    """Start the app (extra arguments go to memory_app.py); stop it and check its temp folder."""
    started: list[App] = []

    def start(*args: str) -> App:
        n = len(started)
        tmpdir = tmp_path / f"app{n}-tmp"
        tmpdir.mkdir()
        log = tmp_path / f"app{n}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAFT_SNAPSHOT_")}
        env["RAFT_SNAPSHOT_TMPDIR"] = str(tmpdir)
        with log.open("wb") as log_file:
            proc = subprocess.Popen([sys.executable, str(APP), "--token", TOKEN, *args],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file,
                                    env=env)
        try:
            info = json.loads(_read_line(proc, 20.0))
        except BaseException:
            proc.kill()
            proc.wait(10)
            raise
        app = App(proc, info["leader"], info["followers"], info["leader_address"], info["state"],
                  tmpdir, log)
        started.append(app)
        return app

    yield start
    for app in started:
        assert app.proc.stdin is not None and app.proc.stdout is not None
        try:
            app.proc.stdin.close()
            code = app.proc.wait(10)
        except subprocess.TimeoutExpired:
            app.proc.kill()
            app.proc.wait(10)
            raise
        finally:
            app.proc.stdout.close()
        assert code == 0, app.log_text()
        assert "Traceback" not in app.log_text(), app.log_text()
        assert list(app.tmpdir.iterdir()) == []


@pytest.fixture
def app(start_app: Callable[..., App]) -> App:
    return start_app()


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAFT_SNAPSHOT_")}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**base, **(env or {})}, check=False)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("raft-snapshot: error: ")
    return lines[0]


def remote(url: str, token: str | None = TOKEN) -> list[str]:
    return ["--addr", url] + (["--token", token] if token is not None else [])


# ==================================================================================================
# The operator's round trip
# ==================================================================================================

def test_save_verify_inspect_restore(app: App, tmp_path: Path) -> None:
    saved_state = app.data()
    assert saved_state[0] == saved_state[1] == saved_state[2] and len(saved_state[0]) == 20
    target = tmp_path / "backup.snap"

    done = cli("save", str(target), *remote(app.leader))
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    meta = rsp.verify(target)
    assert done.stdout == f"Saved and verified snapshot to index {meta.index}: {target}\n"
    assert meta.backend == "memory" and meta.index == app.nodes()[0]["applied"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".snap" or "unverified" in p.name) \
        == ["backup.snap"]

    done = cli("verify", str(target), "--format", "json")
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout) == {**meta.to_dict(), "Sealed": "not sealed"}

    done = cli("inspect", str(target), "--format", "json")
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout) == rsp.inspect(target).to_dict()
    assert json.loads(done.stdout)["Meta"]["Index"] == meta.index

    done = cli("inspect", str(target))
    assert (done.returncode, done.stderr) == (0, "")
    text = done.stdout
    for key, value in (("ID", meta.id), ("Size", meta.size), ("Index", meta.index),
                       ("Term", meta.term), ("Version", meta.version)):
        assert any(line.split() == [key, str(value)] for line in text.splitlines()), (key, text)
    assert "No breakdown of the state (the memory adapter is not installed)." in text

    # the cluster moves on; restoring the snapshot (through a follower, addr and token from the
    # environment) brings every node back to the saved state
    app.set("key000", "changed")
    app.set("new-key", "new")
    assert app.data()[0] != saved_state[0]
    done = cli("restore", str(target),
               env={"RAFT_SNAPSHOT_ADDR": app.followers[0], "RAFT_SNAPSHOT_TOKEN": TOKEN})
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    first, *members = done.stdout.splitlines()
    # the restore's own entry in the target cluster's log, and every member at it
    found = re.fullmatch(rf"Restored snapshot {meta.id} \(index {meta.index}, term {meta.term}\), "
                         r"committed at index (\d+)", first)
    assert found, first
    assert int(found[1]) > meta.index  # the entries written since the save came first
    assert members == [f"  node memory://app/{i} applied index {found[1]}" for i in range(3)]
    assert app.data() == saved_state
    app.wait_tmpdir_empty()


def test_follower_refuses_without_stale_and_names_the_leader(app: App, tmp_path: Path) -> None:
    target = tmp_path / "f.snap"
    line = one_error_line(cli("save", str(target), *remote(app.followers[0])))
    assert "503" in line and f"the leader is {app.leader_address}" in line and "stale" in line
    assert list(tmp_path.glob("f.snap*")) == []

    done = cli("save", str(target), "--stale", *remote(app.followers[1]))
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert rsp.verify(target).index == app.nodes()[2]["applied"]
    assert list(tmp_path.glob("f.snap*")) == [target]


def test_inspect_table_with_breakdown(app: App, tmp_path: Path) -> None:
    """The text table as Consul prints it, from a breakdown by the (kit-registered) adapter."""
    target = tmp_path / "s.snap"
    assert cli("save", str(target), *remote(app.leader)).returncode == 0
    manager = get_plugin_manager()
    manager.register(MemoryPlugin(), name=MEMORY_BACKEND)
    found = rsp.inspect(target, manager=manager)
    assert found.stats
    lines = _inspection_table(found).splitlines()
    assert lines[0].split() == ["ID", found.meta.id]
    start = lines.index("") + 1
    assert [line.split() for line in lines[start:]] == [
        ["Name", "Count", "Size"], ["----", "-----", "----"],
        *[[s.name, str(s.count), str(s.sum)] for s in found.stats],
        ["----", "-----", "----"], ["Total", str(found.total_size)],
    ]
    assert found.stats[0].count == 20


# ==================================================================================================
# Refusals: nothing applied, nothing left behind, the server still serving
# ==================================================================================================

def test_token_refused(app: App, tmp_path: Path) -> None:
    good = tmp_path / "good.snap"
    assert cli("save", str(good), *remote(app.leader)).returncode == 0
    app.set("after", "save")
    before = app.data()

    line = one_error_line(cli("save", str(tmp_path / "x.snap"), *remote(app.leader, None)))
    assert "401" in line and "RAFT_SNAPSHOT_TOKEN" in line
    line = one_error_line(cli("save", str(tmp_path / "x.snap"), *remote(app.leader, "wrong")))
    assert "403" in line and "wrong token" in line
    line = one_error_line(cli("restore", str(good), *remote(app.leader, "wrong")))
    assert "403" in line
    line = one_error_line(cli("restore", str(good), *remote(app.leader, None)))
    assert "401" in line
    assert list(tmp_path.glob("x.snap*")) == []
    assert app.data() == before
    app.wait_tmpdir_empty()


def test_damaged_upload_refused(app: App, tmp_path: Path) -> None:
    good = tmp_path / "good.snap"
    assert cli("save", str(good), *remote(app.leader)).returncode == 0
    app.set("after", "save")
    before = app.data()
    raw = good.read_bytes()
    damaged = {
        "truncated": raw[: len(raw) // 2],
        "flipped": raw[:60] + bytes([raw[60] ^ 0xFF]) + raw[61:],
        "garbage": b"not an archive at all",
        "empty": b"",
    }
    for label, data in damaged.items():
        bad = tmp_path / f"{label}.snap"
        bad.write_bytes(data)
        line = one_error_line(cli("restore", str(bad), *remote(app.leader)))
        assert "400" in line and "nothing was applied" in line, (label, line)
        assert app.data() == before, label
    app.wait_tmpdir_empty()
    assert cli("save", str(tmp_path / "after.snap"), *remote(app.leader)).returncode == 0


def test_oversized_upload_refused(start_app: Callable[..., App], tmp_path: Path) -> None:
    app = start_app("--max-upload", str(64 << 10))
    before = app.data()
    big = tmp_path / "big.snap"
    big.write_bytes(os.urandom(512 << 10))
    line = one_error_line(cli("restore", str(big), *remote(app.leader)))
    assert "413" in line and str(64 << 10) in line

    # a client announcing a huge body gets its answer before sending any of it
    host, port = _host_port(app.leader)
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(_put_head(host, port, 10 << 30))
        status, body = _read_answer(sock)
    assert status == 413 and "exceeds" in body["error"]
    assert app.data() == before
    app.wait_tmpdir_empty()
    # an archive within the limit still restores
    good = tmp_path / "good.snap"
    assert cli("save", str(good), *remote(app.leader)).returncode == 0
    assert cli("restore", str(good), *remote(app.leader)).returncode == 0


def test_client_disconnects_mid_download(start_app: Callable[..., App], tmp_path: Path) -> None:
    app = start_app("--fill-bytes", str(12 << 20))  # an archive far larger than socket buffers
    host, port = _host_port(app.leader)
    for _ in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(20)
        sock.connect((host, port))
        sock.sendall(f"GET /v1/snapshot HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        sock.close()
    app.wait_tmpdir_empty(20)
    assert "went away" in app.log_text()
    done = cli("save", str(tmp_path / "after.snap"), *remote(app.leader))
    assert (done.returncode, done.stderr) == (0, "")
    app.wait_tmpdir_empty()


@pytest.mark.parametrize("how", ["close", "half-close"])
def test_client_disconnects_mid_upload(app: App, tmp_path: Path, how: str) -> None:
    good = tmp_path / "good.snap"
    assert cli("save", str(good), *remote(app.leader)).returncode == 0
    app.set("after", "save")
    before = app.data()
    data = good.read_bytes()
    host, port = _host_port(app.leader)
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(_put_head(host, port, len(data)) + data[: len(data) // 2])
        if how == "half-close":  # the client still listens: it gets a clear answer
            sock.shutdown(socket.SHUT_WR)
            status, body = _read_answer(sock)
            assert status == 400
            assert f"ended after {len(data) // 2} of {len(data)} bytes" in body["error"]
            assert "nothing was applied" in body["error"]
    app.wait_tmpdir_empty()
    assert app.data() == before
    done = cli("restore", str(good), *remote(app.leader))  # still serving
    assert (done.returncode, done.stderr) == (0, "")


def test_concurrent_downloads(app: App, tmp_path: Path) -> None:
    results: dict[int, rsp.SnapshotMeta | BaseException] = {}

    def fetch(i: int) -> None:
        try:
            results[i] = Client(app.leader, TOKEN, timeout=30).save(tmp_path / f"c{i}.snap")
        except BaseException as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 4 and all(isinstance(r, rsp.SnapshotMeta) for r in results.values()), results
    for i in range(4):
        assert rsp.verify(tmp_path / f"c{i}.snap") == results[i]
    app.wait_tmpdir_empty()


def test_unreachable_endpoint_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    line = one_error_line(cli("save", str(tmp_path / "x.snap"), "--addr", f"http://127.0.0.1:{port}",
                              "--token", TOKEN))
    assert "cannot reach the endpoint" in line
    assert list(tmp_path.iterdir()) == []
    done = cli("save", str(tmp_path / "x.snap"), "--addr", "ftp://example")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "Invalid value for '--addr'" in done.stderr and "ftp://example" in done.stderr


def test_tls_round_trip(start_app: Callable[..., App], tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    app = start_app("--certfile", str(cert), "--keyfile", str(key))
    assert app.leader.startswith("https://127.0.0.1:")
    before = app.data()
    target = tmp_path / "tls.snap"
    done = cli("save", str(target), *remote(app.leader), "--ca-file", str(cert))
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert rsp.verify(target).backend == "memory"

    line = one_error_line(cli("save", str(tmp_path / "untrusted.snap"), *remote(app.leader)))
    assert "CERTIFICATE_VERIFY_FAILED" in line
    line = one_error_line(cli("save", str(tmp_path / "plain.snap"),
                              *remote(app.leader.replace("https:", "http:"))))
    assert line.endswith(": the server speaks TLS: use https://")
    assert not list(tmp_path.glob("untrusted.snap*")) and not list(tmp_path.glob("plain.snap*"))

    app.set("after", "save")
    done = cli("restore", str(target), *remote(app.leader),
               env={"RAFT_SNAPSHOT_CACERT": str(cert)})
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert app.data() == before


def test_progress_bar_on_a_terminal_only(app: App, tmp_path: Path) -> None:
    piped = cli("save", str(tmp_path / "piped.snap"), *remote(app.leader))
    assert (piped.returncode, piped.stderr) == (0, "")

    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen([*CLI, "save", str(tmp_path / "tty.snap"), *remote(app.leader)],
                                stdout=subprocess.PIPE, stderr=secondary, stdin=subprocess.DEVNULL)
        os.close(secondary)
        shown = b""
        deadline = time.monotonic() + 30
        with selectors.DefaultSelector() as selector:
            selector.register(primary, selectors.EVENT_READ)
            while time.monotonic() < deadline and selector.select(max(deadline - time.monotonic(), 0)):
                try:
                    chunk = os.read(primary, 4096)
                except OSError:  # the terminal's other end closed
                    break
                if not chunk:
                    break
                shown += chunk
        assert proc.wait(10) == 0
        assert proc.stdout is not None
        assert proc.stdout.read().startswith(b"Saved and verified")
        proc.stdout.close()
    finally:
        os.close(primary)
    text = shown.decode(errors="replace")
    assert "Saving" in text and "/s" in text and "100%" in text, text


# --- raw HTTP helpers -----------------------------------------------------------------------------

def _host_port(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _put_head(host: str, port: int, length: int) -> bytes:
    return (f"PUT /v1/snapshot HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n").encode()


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    body: dict[str, Any] = json.loads(response.read())
    return response.status, body


# ==================================================================================================
# Encrypted at rest: save --encrypt-to, verify/inspect/restore --identity, encrypt, decrypt
# ==================================================================================================

def test_encrypted_save_and_restore(app: App, age: str, tmp_path: Path) -> None:
    identity = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True, timeout=30)
    recipient = subprocess.run(["age-keygen", "-y", str(identity)], check=True, text=True,
                               capture_output=True, timeout=30).stdout.strip()
    target = tmp_path / "backup.snap.age"
    done = cli("save", str(target), *remote(app.leader), "--encrypt-to", recipient)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert "encrypted to 1 recipient" in done.stdout
    assert target.read_bytes().startswith(b"age-encryption.org/v1\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if "backup" in p.name) == ["backup.snap.age"]
    refused = one_error_line(cli("verify", str(target)))
    assert "age-encrypted" in refused and "--identity" in refused
    done = cli("verify", str(target), "--format", "json", env={"RAFT_SNAPSHOT_IDENTITY": str(identity)})
    assert json.loads(done.stdout)["Index"] == app.nodes()[0]["applied"]
    done = cli("inspect", str(target), "--identity", str(identity), "--format", "json")
    assert json.loads(done.stdout)["Meta"]["Index"] == app.nodes()[0]["applied"]
    # the CLI's decrypt gives back a plain archive, atomically and privately
    done = cli("decrypt", str(target), "--identity", str(identity))
    assert done.returncode == 0, done.stderr
    plain = tmp_path / "backup.snap"
    assert rsp.verify(plain).index == app.nodes()[0]["applied"]
    assert stat.S_IMODE(plain.stat().st_mode) == 0o600
    # and encrypt wraps it again, for the age tool
    done = cli("encrypt", str(plain), "--recipient", recipient, "--out", str(tmp_path / "again.age"))
    assert done.returncode == 0, done.stderr
    back = subprocess.run([age, "-d", "-i", str(identity), str(tmp_path / "again.age")],
                          capture_output=True, check=True, timeout=60).stdout
    assert back == plain.read_bytes()
    app.set("after", "the save")
    done = cli("restore", str(target), *remote(app.leader), "--identity", str(identity))
    assert done.returncode == 0, done.stderr
    assert all("after" not in node for node in app.data())
    app.wait_tmpdir_empty()
