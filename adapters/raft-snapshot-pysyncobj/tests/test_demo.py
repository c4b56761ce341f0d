"""``raft-snapshot demo`` as a user runs it: the real command, in a process of its own."""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from raft_snapshot_pysyncobj.demo import run_demo

CLI = [sys.executable, "-m", "raft_snapshot_plugin"]


def test_demo_command_passes_within_a_minute() -> None:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "raft_snapshot_plugin", "demo"],
                            capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every node of the fresh cluster holds the 5000 keys: yes" in result.stdout
    # the restore's answer: all three members of the fresh cluster at the restore's own index
    committed = re.search(r"committed at index (\d+)", result.stdout)
    assert committed, result.stdout
    applied = re.findall(r"^restore: node (\S+) applied index (\d+)$", result.stdout, re.M)
    assert len({node for node, _ in applied}) == 3, result.stdout
    assert {index for _, index in applied} == {committed[1]}, result.stdout
    assert "demo passed" in result.stdout
    assert elapsed < 60


def test_demo_stops_everything_it_started() -> None:
    before = {t.ident for t in threading.enumerate()}
    lines: list[str] = []
    assert run_demo(lines.append, keys=500)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
        if not left:
            break
        time.sleep(0.05)
    assert not left, f"threads left running: {left}"
    assert any("passed" in line for line in lines)


def _read_until(proc: subprocess.Popen[bytes], marker: bytes, seconds: float) -> bytes:
    assert proc.stdout is not None
    deadline = time.monotonic() + seconds
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while marker not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise TimeoutError(f"the demo printed no {marker!r} in time: {buffer!r}")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"the demo exited early: {buffer!r}")
            buffer += chunk
    return buffer


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, env=env,
                          check=False)


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_demo_keep_running_serves_pysyncobj_until_ctrl_c(tmp_path: Path) -> None:
    """The README's `raft-snapshot demo --keep-running`: three PySyncObj nodes and their endpoints
    up; the printed export line drives save, verify and restore; SIGINT stops all of it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFT_SNAPSHOT_")}
    env["RAFT_SNAPSHOT_TMPDIR"] = str(tmp_path)
    proc = subprocess.Popen([*CLI, "demo", "--keep-running"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        head = _read_until(proc, b"raft-snapshot restore backup.snap\n", 60).decode()
        export, about = head.splitlines()[:2]
        assert export.startswith("export RAFT_SNAPSHOT_ADDR=http://127.0.0.1:")
        exported = dict(part.split("=", 1) for part in export.split()[1:])
        assert about.startswith("# a 3-node PySyncObj cluster (Raft 127.0.0.1:")
        ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", about)]
        assert len(ports) == 6  # three Raft ports, three endpoints
        target = tmp_path / "demo.snap"
        done = _cli("save", str(target), env={**env, **exported})
        assert done.returncode == 0, done.stderr
        done = _cli("verify", str(target), env=env)
        assert done.returncode == 0 and "pysyncobj" in done.stdout, done.stderr
        done = _cli("restore", str(target), env={**env, **exported})
        assert done.returncode == 0 and done.stdout.startswith("Restored snapshot "), done.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert err.decode().endswith("raft-snapshot demo: stopped\n") and b"Traceback" not in err
    assert all(_refused(port) for port in ports), ports
