"""Drive node processes (``node.py``) from a test: start, command, kill, restart, stop."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from raft_snapshot_pysyncobj.state import load_state

from raft_snapshot_plugin.archive import read_archive
from raft_snapshot_plugin.ports import free_ports

NODE = Path(__file__).resolve().parent / "node.py"
TOKEN = "fault-token"
WAIT = 20.0


class NodeProc:
    """One ``node.py`` process: ``call(op, ...)`` sends a command and waits for its answer."""

    def __init__(self, address: str, partners: list[str], folder: Path, *, journal: bool,
                 lease: float | None, serve_timeout: float | None, generation: int,
                 transport: str = "auto") -> None:
        self.address = address
        name = address.rsplit(":", 1)[1]
        self.log = folder / f"node-{name}-{generation}.log"
        args = [sys.executable, str(NODE), "--address", address, "--partners", ",".join(partners),
                "--token", TOKEN]
        if journal:
            args += ["--journal", str(folder / f"{name}.journal"), "--dump", str(folder / f"{name}.dump")]
        if lease is not None:
            args += ["--lease", str(lease)]
        if serve_timeout is not None:
            args += ["--serve-timeout", str(serve_timeout)]
        args += ["--transport", transport]
        env = dict(os.environ)
        env["RAFT_SNAPSHOT_TMPDIR"] = str(folder / "tmp")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, env=env)
        self._answers: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._first: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            info = self._first.get(timeout=WAIT)
        except queue.Empty:
            self.kill()
            raise TimeoutError(f"node {address} did not start:\n{self.log_text()}") from None
        self.url: str = info["url"]
        self.pid: int = info["pid"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        first = True
        for line in self.proc.stdout:
            doc = json.loads(line)
            if first:
                self._first.put(doc)
                first = False
                continue
            with self._lock:
                box = self._answers.get(doc["id"])
            if box is not None:
                box.put(doc)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def call(self, op: str, *, wait: float = WAIT, **args: Any) -> dict[str, Any]:
        """Run ``op`` in the node (``args`` are the command's); return its answer (``"error"`` set
        when it raised), waiting at most ``wait`` seconds."""
        cid = next(self._ids)
        box: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._lock:
            self._answers[cid] = box
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"id": cid, "op": op, **args}) + "\n").encode())
        self.proc.stdin.flush()
        try:
            return box.get(timeout=wait)
        except queue.Empty:
            raise TimeoutError(f"{op} on {self.address} gave no answer:\n{self.log_text()}") from None
        finally:
            with self._lock:
                del self._answers[cid]

    def ok(self, op: str, *, wait: float = WAIT, **args: Any) -> dict[str, Any]:
        answer = self.call(op, wait=wait, **args)
        assert "error" not in answer, f"{op} failed on {self.address}: {answer}\n{self.log_text()}"
        return answer

    def kill(self) -> None:
        """SIGKILL, then reap."""
        if self.alive:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(WAIT)
        self._close_pipes()

    def stop(self) -> int:
        """Close stdin (the node stops itself); kill it if it does not; return its exit status."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            code = self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.kill()
            code = -9
        self._close_pipes()
        return code

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._reader.join(5.0)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


class ProcCluster:
    """``size`` node processes on free loopback ports; ``close()`` stops every one it started."""

    def __init__(self, folder: Path, size: int = 3, *, journal: bool = False,
                 lease: dict[int, float] | None = None, serve_timeout: float | None = None,
                 transport: str = "auto") -> None:
        self.folder = folder
        (folder / "tmp").mkdir(parents=True, exist_ok=True)
        self.addresses = [f"127.0.0.1:{p}" for p in free_ports(size)]
        self.journal = journal
        self.lease = lease or {}
        self.serve_timeout = serve_timeout
        self.transport = transport
        self.procs: list[NodeProc | None] = [None] * size
        self.generation = 0
        self.exit_codes: list[int] = []
        for i in range(size):
            self.start(i)

    def start(self, i: int) -> NodeProc:
        assert self.procs[i] is None or not self.procs[i].alive  # type: ignore[union-attr]
        self.generation += 1
        address = self.addresses[i]
        proc = NodeProc(address, [a for a in self.addresses if a != address], self.folder,
                        journal=self.journal, lease=self.lease.get(i),
                        serve_timeout=self.serve_timeout, generation=self.generation,
                        transport=self.transport)
        self.procs[i] = proc
        return proc

    def node(self, i: int) -> NodeProc:
        proc = self.procs[i]
        assert proc is not None and proc.alive, f"node {i} is not running"
        return proc

    @property
    def running(self) -> list[NodeProc]:
        return [p for p in self.procs if p is not None and p.alive]

    def index(self, proc: NodeProc) -> int:
        return self.procs.index(proc)

    def leader(self, timeout: float = WAIT) -> NodeProc:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.running:
                if proc.call("role").get("leader"):
                    return proc
            time.sleep(0.05)
        raise TimeoutError("no leader elected")

    def followers(self) -> list[NodeProc]:
        leader = self.leader()
        return [p for p in self.running if p is not leader]

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None:
            proc.kill()

    def states(self, timeout: float = WAIT, at_least: int = 0) -> list[dict[str, Any]]:
        """Every running node's state once they have applied the same index, ``at_least`` it."""
        deadline = time.monotonic() + timeout
        while True:
            answers = [p.ok("state") for p in self.running]
            applied = {a["applied"] for a in answers}
            if (len(applied) == 1 and min(applied) >= at_least) or time.monotonic() > deadline:
                return answers
            time.sleep(0.05)

    def tmp_files(self) -> list[str]:
        return sorted(p.name for p in (self.folder / "tmp").iterdir())

    def close(self) -> None:
        live = [p for p in self.procs if p is not None and p.proc.returncode is None]
        for proc in live:  # ask all at once, then wait for each
            if proc.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.proc.stdin.close()
        for proc in live:
            self.exit_codes.append(proc.stop())


@contextlib.contextmanager
def proc_cluster(folder: Path, size: int = 3, **kwargs: Any) -> Iterator[ProcCluster]:
    cluster = ProcCluster(folder, size, **kwargs)
    try:
        yield cluster
    finally:
        cluster.close()


def archive_attributes(source: str | os.PathLike[str] | IO[bytes]) -> dict[str, Any]:
    """The application attributes inside an archive (verified whole on the way)."""
    state = io.BytesIO()
    read_archive(source, state)
    state.seek(0)
    attributes, _ = load_state(state)
    return attributes
