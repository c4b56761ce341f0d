"""What the endpoint tests run around the nodes: web hosts in threads (an ASGI one on uvicorn, a WSGI
one on werkzeug's server), the command line in a process, a relay that cuts a connection, and
archives whose restore takes a while. Everything on 127.0.0.1; everything started is stopped."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from raft_snapshot_pysyncobj.state import dump_state, load_state
from werkzeug.serving import make_server

import raft_snapshot_plugin as rsp
from raft_snapshot_plugin.archive import read_archive

TOKEN = "endpoint-token"
CLI = [sys.executable, "-m", "raft_snapshot_plugin"]
WAIT = 60.0


@contextlib.contextmanager
def asgi_host(app: Any) -> Iterator[str]:
    """Serve the ASGI application ``app`` on uvicorn in a thread; yield its base URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="off", log_config=None, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: server.run(sockets=[sock]), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextlib.contextmanager
def wsgi_host(app: Any) -> Iterator[str]:
    """Serve the WSGI application ``app`` on werkzeug's threaded server; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def cli(*args: str, timeout: float = WAIT) -> subprocess.CompletedProcess[str]:
    """The installed command line, in a process of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFT_SNAPSHOT_")}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)


#: The command line as an operator's shell starts it: Ctrl-C (SIGINT) at Python's default. A
#: child inherits ignored signals, and CI handed the whole test run SIGINT and SIGQUIT ignored
#: (/proc's SigIgn): a shell without job control starts a command run in the background (`cmd &`)
#: that way, so the command under test saw no Ctrl-C.
_AS_FROM_A_SHELL = [
    sys.executable, "-c",
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('raft_snapshot_plugin', run_name='__main__', alter_sys=True)",
]


def start_cli(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFT_SNAPSHOT_")}
    return subprocess.Popen([*_AS_FROM_A_SHELL, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def signal_state(pid: int) -> str:
    """A process's thread count and blocked, ignored and caught signals, as /proc shows them (for
    a failing test's message)."""
    with open(f"/proc/{pid}/status") as status:
        masks = [line for line in status.read().splitlines()
                 if line.startswith(("SigBlk", "SigIgn", "SigCgt", "Threads"))]
    return "; ".join(masks)


def remote(url: str) -> list[str]:
    return ["--addr", url, "--token", TOKEN]


def pending_id(stderr: str) -> str:
    """The restore ID in the command line's "still applying" line."""
    found = re.search(r"still applying restore (\S+); check with `raft-snapshot restore-status "
                      r"(\S+) --addr ", stderr)
    assert found is not None and found.group(1) == found.group(2), stderr
    return found.group(1)


def final_status(restore_id: str, url: str, seconds: float = WAIT) -> subprocess.CompletedProcess[str]:
    """``restore-status`` asked until it no longer says pending (exit 3)."""
    deadline = time.monotonic() + seconds
    while True:
        done = cli("restore-status", restore_id, *remote(url))
        if done.returncode != 3 or time.monotonic() > deadline:
            return done
        assert "pending" in done.stdout, done.stdout
        time.sleep(0.2)


def big_archive(source: Path, target: Path, size: int, note: str) -> None:
    """``source``'s archive with ``size`` incompressible bytes and a note added: its restore
    through the log takes seconds (16 MB: about 3 s here)."""
    state = io.BytesIO()
    meta = read_archive(source, state)
    state.seek(0)
    attributes, consumers = load_state(state)
    attributes["big"] = os.urandom(size)
    attributes["note"] = note
    out = io.BytesIO()
    dump_state(attributes, consumers, out)
    with rsp.Snapshot.create(dataclasses.replace(meta, id="", peers=b""), out.getvalue(),
                             level=1) as snap:
        snap.save(target)


class Relay:
    """A TCP relay on 127.0.0.1 to ``upstream``: the first connection whose client sent at least
    ``cut_after`` bytes and then went quiet for a moment (its upload is in) is cut, both ways;
    every other connection is relayed untouched."""

    def __init__(self, host: str, port: int, cut_after: int) -> None:
        self.upstream = (host, port)
        self.cut_after = cut_after
        self.cuts = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._spawn(self._accept)

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(self.upstream, timeout=10)
            self._sockets += [client, server]
            self._spawn(self._pump, client, server, self.cuts == 0)
            self._spawn(self._pump, server, client, False)

    def _pump(self, source: socket.socket, target: socket.socket, may_cut: bool) -> None:
        sent = 0
        source.settimeout(0.3)
        with contextlib.suppress(OSError):
            while not self._stop.is_set():
                try:
                    data = source.recv(1 << 16)
                except TimeoutError:
                    if may_cut and sent >= self.cut_after and self.cuts == 0:
                        self.cuts += 1
                        for sock in (source, target):
                            sock.shutdown(socket.SHUT_RDWR)
                            sock.close()
                        return
                    continue
                if not data:
                    target.shutdown(socket.SHUT_WR)
                    return
                target.sendall(data)
                sent += len(data)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
