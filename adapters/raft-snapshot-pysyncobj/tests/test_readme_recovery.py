"""The README's disaster-recovery walkthrough for PySyncObj, run as written: the agent stored a
snapshot of a 3-node cluster in S3 (moto's server), the cluster is destroyed, and the README's
marked blocks (``<!-- recovery: pysyncobj -->``) run in order in one shell, with only the
variables the README names set to 127.0.0.1 ports and a temp folder; every key must be back."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from raft_snapshot_pysyncobj.demo import demo_cluster, free_ports
from raft_snapshot_pysyncobj.state import load_state

from raft_snapshot_plugin.agent import Agent
from raft_snapshot_plugin.toolkit import open_verified

ROOT = Path(__file__).resolve().parents[3]
#: What demo_cluster() writes.
DEMO_KEYS = {f"{('users', 'orders')[i % 2]}/{i:03d}": f"value {i}" for i in range(20)}


def readme_blocks(backend: str) -> list[str]:
    """The README's fenced blocks marked ``<!-- recovery: BACKEND -->``, in order."""
    text = (ROOT / "README.md").read_text()
    pattern = rf"<!-- recovery: {re.escape(backend)} -->\n```bash\n(.*?)```"
    return re.findall(pattern, text, flags=re.DOTALL)



def _commands_on_path(tmp_path: Path) -> str:
    """``raft-snapshot`` and ``python`` for this interpreter, so the README's commands run the code
    under test whichever environment runs the tests."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, command in (("raft-snapshot", f"{sys.executable} -m raft_snapshot_plugin"),
                          ("python", sys.executable)):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\nexec {command} \"$@\"\n")
        script.chmod(0o755)
    return str(bin_dir)


def test_readme_recovery_pysyncobj(s3: Any, tmp_path: Path) -> None:
    blocks = readme_blocks("pysyncobj")
    assert len(blocks) == 3 and "restore-offline" in blocks[0]
    s3.create_bucket("backups")
    with demo_cluster() as (urls, token, _):
        stored = Agent(None, "s3://backups/prod", addr=urls[0], token=token,
                       storage_options=s3.options()).run_once()
    assert stored is not None and stored.startswith("s3://backups/prod/")  # and the cluster is gone

    recovery = tmp_path / "recovery"
    recovery.mkdir()
    ports = free_ports(6)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFT_SNAPSHOT_")}
    env.update(s3.env(), SNAPSHOTS="s3://backups/prod", RECOVERY=str(recovery),
               PATH=f"{_commands_on_path(tmp_path)}:{env['PATH']}")
    for i in range(3):
        env[f"N{i + 1}"] = f"127.0.0.1:{ports[i]}"
        env[f"N{i + 1}_ENDPOINT"] = f"127.0.0.1:{ports[i + 3]}"
    shell = subprocess.Popen(["bash", "-euo", "pipefail", "-c", "\n".join(blocks)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             start_new_session=True)
    try:
        out, err = shell.communicate(timeout=240)
        assert shell.returncode == 0, (out, err)
        rows = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
                if line.startswith(" data/")}
        assert rows == {"data/orders": 10, "data/users": 10}, out  # the README's own inspect
        with open_verified(recovery / "check.snap") as verified:
            attributes, _consumers = load_state(verified.file, size=verified.meta.size)
        assert attributes["data"] == DEMO_KEYS
    finally:
        _stop_group(shell.pid)


def _stop_group(pgid: int) -> None:
    """Stop what the README's shell started (its nodes, in its process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
