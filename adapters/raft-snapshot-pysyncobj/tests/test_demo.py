"""``raft-snapshot demo`` as a user runs it: the real command, in a process of its own."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time

from raft_snapshot_pysyncobj.demo import run_demo


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
